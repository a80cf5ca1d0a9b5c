"""The analysis maths on hand-built and random weights: copying, the four-term split, term and head ablation, DLA."""

import pytest
import torch

from prevpos.analysis import ProbeRun
from prevpos.analysis.probe import analysis_mode
from prevpos import circuits
from prevpos.circuits import (QK_TERMS, ablate_terms, decomposable, losses_with_score_edits, qk_terms,
                              run_with_edited_scores, run_with_score_edits, term_ablation)
from prevpos.loss import previous_token_loss
from prevpos.transformer import build_transformer
from prevpos_plugins.adversarial import CASES, AdversarialExamples, adversarial_batch
from prevpos_plugins.attention import AttentionPatterns
from prevpos_plugins.head_ablation import HeadAblation, ablated_logits
from prevpos_plugins.logit_attribution import LogitAttribution, attributions, logit_above_mean
from prevpos_plugins.ov_circuit import OVCircuit, copy_eigen, copy_top1, full_ov_circuit
from prevpos_plugins.qk_terms import QKTermImportance, composition_circuit, full_qk_circuit, sum_check_error


def tokens_for(model, batch: int = 16, seed: int = 0) -> torch.Tensor:
    cfg = model.cfg
    tokens = torch.randint(0, cfg.d_vocab - 1, (batch, cfg.n_ctx), generator=torch.Generator().manual_seed(seed))
    tokens[:, 0] = cfg.d_vocab - 1
    return tokens


def copier(sign: float = 1.0):
    """A 1-layer model whose OV circuit is sign * identity: orthonormal embeddings, W_U = W_Eᵀ, W_V = W_O = I."""
    model = build_transformer(n_layers=1, d_model=16, d_head=16, n_ctx=4, d_vocab=8)
    basis, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        model.W_E.copy_(basis[:8])
        model.W_U.copy_(basis[:8].T)
        model.blocks[0].attn.W_V[0].copy_(torch.eye(16))  # (model.W_V is a stacked copy)
        model.blocks[0].attn.W_O[0].copy_(sign * torch.eye(16))
    return model


def test_identity_ov_copies_perfectly():
    circuit = full_ov_circuit(copier(), 0, 0)
    torch.testing.assert_close(circuit.AB, torch.eye(8), atol=1e-5, rtol=0)
    assert copy_top1(circuit.AB) == 1.0
    assert copy_eigen(circuit) == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        findings = OVCircuit().analyze(ProbeRun(copier(), tokens_for(copier())))
    # With one head it is also the head most on the previous token.
    assert findings.scalars == pytest.approx({"ov/copy_top1/L0H0": 1.0, "ov/copy_eigen/L0H0": 1.0,
                                              "ov/copy_top1/prev_token_head": 1.0}, abs=1e-5)
    assert "ov/full_circuit/L0H0" in findings.figures


def test_a_run_without_bos_is_analysed_without_it():
    """Trained without BOS: OVCircuit counted BOS's never-trained row (copy_top1 at most 100/101 in a real run),
    AdversarialExamples' clean case began with BOS, a token the model never saw, and position 0 was labelled BOS."""
    model = copier()  # d_vocab 8: BOS is 7
    with torch.no_grad():
        model.W_E[7] = -model.W_E[7]  # BOS's row does not copy, as an untrained row would not
    with_bos, without = tokens_for(model), tokens_for(model)
    without[:, 0] = torch.randint(0, 7, (without.shape[0],), generator=torch.Generator().manual_seed(1))
    run = ProbeRun(model, without)
    assert run.bos is False and run.used_tokens.tolist() == list(range(7)) and run.pos_labels[:2] == ["a_0", "a_1"]
    assert ProbeRun(model, with_bos).bos is True and ProbeRun(model, with_bos).pos_labels[0] == "BOS"
    with torch.no_grad():
        assert OVCircuit().analyze(run).scalars["ov/copy_top1/L0H0"] == 1.0
        labels = OVCircuit().analyze(run).figures["ov/full_circuit/L0H0"].data["y_labels"]
        assert labels == ["0", "1", "2", "3", "4", "5", "6"]  # token 6 was labelled BOS
        labels = OVCircuit().analyze(ProbeRun(model, with_bos)).figures["ov/full_circuit/L0H0"].data["y_labels"]
        assert labels[-2:] == ["6", "BOS"]
        assert OVCircuit().analyze(ProbeRun(model, with_bos)).scalars["ov/copy_top1/L0H0"] == pytest.approx(7 / 8)
        adversarial = AdversarialExamples(size=16).analyze(run)
    assert set(adversarial.scalars) == {f"adversarial/{case}/{what}" for case in ("clean", "repeated_pairs", "all_same")
                                        for what in ("loss", "acc")}
    assert adversarial.texts["adversarial/skipped"].startswith("AdversarialExamples skipped part of its analysis: "
                                                               "the run's sequences have no BOS")
    clean = adversarial_batch("clean", 16, 4, 8, seed=0, with_bos=False)
    assert clean.max() < 7  # no BOS anywhere, at position 0 neither
    assert torch.equal(adversarial_batch("clean", 16, 4, 8, seed=0)[:, 1:], clean[:, 1:])


def test_negated_identity_anti_copies():
    circuit = full_ov_circuit(copier(-1.0), 0, 0)
    assert copy_top1(circuit.AB) == 0.0
    assert copy_eigen(circuit) == pytest.approx(-1.0, abs=1e-5)


def test_copy_eigen_of_the_factored_full_circuit_matches_dense_eigenvalues():
    # W_E W_OV W_U is vocab x vocab but kept factored through d_head: its extra eigenvalues must be the zeros.
    model = build_transformer(d_model=32, d_head=16, n_heads=2, d_vocab=20, seed=3)
    circuit = full_ov_circuit(model, 1, 1)
    dense = torch.linalg.eigvals(circuit.AB.double())
    assert copy_eigen(circuit) == pytest.approx((dense.sum().real / dense.abs().sum()).item(), abs=1e-4)


def random_model():
    return build_transformer(n_layers=3, n_heads=2, d_model=32, d_head=16, n_ctx=6, d_vocab=12, seed=1)


@pytest.mark.parametrize("layer, head, heads", [(1, 0, 2), (2, 1, 2), (1, 2, 3)])
def test_four_terms_sum_to_the_scores_on_random_weights(layer, head, heads):
    model = random_model() if heads == 2 else build_transformer(n_layers=2, n_heads=3, d_model=32, d_head=10,
                                                                n_ctx=6, d_vocab=12, seed=1)  # 3 x 10 != 32
    _, cache = model.run_with_cache(tokens_for(model))
    terms = qk_terms(model, cache, layer, head)
    assert set(terms) == set(QK_TERMS)
    assert all(t.abs().max() > 0.01 for t in terms.values())  # no term is trivially zero
    assert sum_check_error(terms, cache["attn_scores", layer][:, head]) < 1e-4


def test_the_split_stays_exact_with_value_output_and_unembedding_biases_but_not_with_query_key_biases():
    # A loaded state_dict may hold biases that prevpos's own models keep at zero (prevpos/weights.py analyses it as
    # saved). b_V, b_O and b_U only move what earlier layers add (c): the four terms still sum to the scores.
    model = build_transformer(d_model=16, d_head=16, n_ctx=5, d_vocab=8, seed=2)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for bias in (model.blocks[0].attn.b_V, model.blocks[0].attn.b_O, model.unembed.b_U):
            bias.copy_(torch.randn(bias.shape, generator=generator))
    _, cache = model.run_with_cache(tokens_for(model))
    assert decomposable(model) is None
    assert sum_check_error(qk_terms(model, cache, 1, 0), cache["attn_scores", 1][:, 0]) < 1e-4
    with torch.no_grad():
        model.blocks[1].attn.b_K.copy_(torch.randn(model.blocks[1].attn.b_K.shape, generator=generator))
    _, cache = model.run_with_cache(tokens_for(model))
    assert sum_check_error(qk_terms(model, cache, 1, 0), cache["attn_scores", 1][:, 0]) > 0.01  # why it is refused
    assert "query/key biases (b_K[1])" in decomposable(model)
    with analysis_mode(model):
        findings = QKTermImportance().analyze(ProbeRun(model, tokens_for(model)))
    assert "b_K[1]" in findings.texts["qk_terms/skipped"] and not findings.scalars


def test_zero_ablating_a_zero_term_changes_nothing():
    model = random_model()
    with torch.no_grad():
        model.blocks[0].attn.W_O.zero_()  # layer 0 writes nothing, so layer 1's composition terms are exactly zero
    tokens = tokens_for(model)
    logits, cache = model.run_with_cache(tokens)
    terms = qk_terms(model, cache, 1, 0)
    assert terms["qk_comp"].abs().max() == 0
    for name in ("k_comp", "q_comp", "qk_comp"):
        torch.testing.assert_close(ablate_terms(model, tokens, 1, 0, terms, [name]), logits)
    assert not torch.allclose(ablate_terms(model, tokens, 1, 0, terms, ["direct"]), logits)


def test_mean_ablating_a_term_that_is_the_same_on_every_sequence_changes_nothing():
    model = random_model()
    tokens = tokens_for(model)[:1].repeat(8, 1)
    logits, cache = model.run_with_cache(tokens)
    terms = qk_terms(model, cache, 2, 1)
    torch.testing.assert_close(ablate_terms(model, tokens, 2, 1, terms, QK_TERMS, "mean"), logits)


def test_ablation_from_the_cached_residual_matches_the_full_run():
    model = random_model()
    tokens = tokens_for(model)
    _, cache = model.run_with_cache(tokens)
    terms = qk_terms(model, cache, 2, 0)
    full = ablate_terms(model, tokens, 2, 0, terms, ["direct", "k_comp"])
    torch.testing.assert_close(ablate_terms(model, tokens, 2, 0, terms, ["direct", "k_comp"],
                                            resid_pre=cache["resid_pre", 2]), full)
    zeroed = run_with_edited_scores(model, tokens, 2, torch.zeros_like)  # uniform attention over the causal past
    assert not torch.allclose(zeroed, full)


def test_several_score_edits_in_one_pass_match_one_pass_each():
    model = random_model()
    tokens = tokens_for(model)
    _, cache = model.run_with_cache(tokens)
    terms = qk_terms(model, cache, 2, 1)
    edits = {"direct": term_ablation(1, terms, ["direct"]), "mean qk": term_ablation(1, terms, ["qk_comp"], "mean"),
             "uniform": torch.zeros_like}
    together = run_with_score_edits(model, tokens, 2, edits, resid_pre=cache["resid_pre", 2])
    assert list(together) == list(edits)
    for name, edit in edits.items():
        torch.testing.assert_close(together[name], run_with_edited_scores(model, tokens, 2, edit))
    assert not torch.allclose(together["direct"], together["uniform"])  # each copy got its own edit


def test_a_large_probe_takes_fewer_edits_a_pass_for_the_same_losses(monkeypatch):
    """All edits in one pass held probe x edits sequences at once: 4.1 GB for the QK-term ablations at 8,192."""
    model = random_model()
    tokens = tokens_for(model)
    _, cache = model.run_with_cache(tokens)
    terms = qk_terms(model, cache, 2, 1)
    edits = {name: term_ablation(1, terms, [name]) for name in QK_TERMS[:3]}
    in_one_pass = losses_with_score_edits(model, tokens, 2, edits, cache["resid_pre", 2])
    passes, run = [], circuits.run_with_score_edits
    monkeypatch.setattr(circuits, "run_with_score_edits", lambda *args: passes.append(list(args[3])) or run(*args))
    monkeypatch.setattr(circuits, "EDITED_SEQUENCES_PER_PASS", 2 * len(tokens) + 1)  # two edits' worth
    assert losses_with_score_edits(model, tokens, 2, edits, cache["resid_pre", 2]) == pytest.approx(in_one_pass)
    assert passes == [["direct", "k_comp"], ["q_comp"]]
    assert len(set(in_one_pass.values())) == 3  # three different ablations


def test_full_circuits_match_the_dense_products():
    model = random_model()
    W_E, W_QK1 = model.W_E, model.W_Q[1, 0] @ model.W_K[1, 0].T
    W_OV0 = model.W_V[0, 1] @ model.W_O[0, 1]
    torch.testing.assert_close(full_qk_circuit(model, 1, 0).AB, W_E @ W_QK1 @ W_E.T)
    torch.testing.assert_close(composition_circuit(model, 1, 0, 0, 1).AB, W_E @ W_OV0 @ W_QK1 @ W_OV0.T @ W_E.T,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape, reason", [(dict(n_layers=1), "one layer"), (dict(attn_only=False), "MLPs")])
def test_qk_terms_plugin_skips_other_shapes_with_one_note(shape, reason):
    model = build_transformer(d_model=16, d_head=16, n_ctx=4, d_vocab=8, **shape)
    plugin, run = QKTermImportance(), ProbeRun(model, tokens_for(model))
    with analysis_mode(model):
        first, second = plugin.analyze(run), plugin.analyze(run)
    assert reason in first.texts["qk_terms/skipped"] and not first.scalars and not first.figures
    assert not (second.texts or second.scalars or second.figures)


def test_adversarial_batches_are_what_they_say():
    batches = {case: adversarial_batch(case, 32, 9, 101, seed=5) for case in CASES}
    bos = 100
    assert all(b.shape == (32, 9) for b in batches.values())
    assert (batches["clean"][:, 0] == bos).all() and (batches["clean"][:, 1:] < bos).all()
    pairs = batches["repeated_pairs"]
    assert (pairs[:, 2:8:2] == pairs[:, 3:9:2]).all() and (pairs[:, 0] == bos).all()
    assert (batches["no_bos"] < bos).all()
    assert (batches["all_same"][:, 1:] == batches["all_same"][:, 1:2]).all()
    assert (batches["bos_mid"][:, [0, 4]] == bos).all() and (batches["bos_mid"][:, 5:] < bos).all()
    assert torch.equal(adversarial_batch("no_bos", 32, 9, 101, seed=5), batches["no_bos"])


@pytest.mark.parametrize("how", ["zero", "mean"])
def test_ablating_a_last_layer_head_removes_exactly_its_own_output(how):
    """In the last layer nothing reads a head's output but the unembedding, so its ablated logits are the clean ones
    minus (its z - the replacement) W_O W_U, from the cached activations."""
    model = random_model()
    last, head = model.cfg.n_layers - 1, 1
    run = ProbeRun(model, tokens_for(model))
    with analysis_mode(model):
        z = run.cache["z", last][:, :, head]
        replacement = torch.zeros_like(z) if how == "zero" else z.mean(0).expand_as(z)
        expected = run.logits - (z - replacement) @ model.W_O[last, head] @ model.W_U
        torch.testing.assert_close(ablated_logits(run, last, head, how), expected, atol=1e-4, rtol=1e-4)
        findings = HeadAblation().analyze(run)
    assert findings.scalars[f"head_ablation/{how}_loss/L{last}H{head}"] == pytest.approx(
        previous_token_loss(expected, run.tokens).item(), rel=1e-4)
    assert len(findings.scalars) == 2 * 2 * len(run.heads()) and "head_ablation/losses" in findings.figures


def silenced(layer: int, head: int) -> ProbeRun:
    """The probe run of random_model() with one head writing nothing (its W_O zero)."""
    model = random_model()
    with torch.no_grad():
        model.blocks[layer].attn.W_O[head].zero_()
    return ProbeRun(model, tokens_for(model))


def test_ablating_a_head_that_writes_nothing_changes_nothing():
    run = silenced(0, 0)
    with analysis_mode(run.model):
        torch.testing.assert_close(ablated_logits(run, 0, 0, "zero"), run.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [dict(), dict(attn_only=False, positional="learned")])
def test_logit_attributions_add_up_to_the_models_own_logits(shape):
    """Embedding, each head, each MLP and the biases: their shares sum to the correct logit above the mean logit
    that the model computes itself, here with non-zero biases and positions too."""
    model = build_transformer(n_layers=2, n_heads=2, d_model=32, d_head=16, n_ctx=6, d_vocab=12, seed=1, **shape)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[-1].startswith("b_") or name == "pos_embed.W_pos":
                param.normal_(generator=torch.Generator().manual_seed(len(name)))
    run = ProbeRun(model, tokens_for(model))
    with analysis_mode(model):
        shares = attributions(run)
        findings = LogitAttribution().analyze(run)
    assert ("L1 mlp" in shares) == (not model.cfg.attn_only) and all(s.abs().max() > 0 for s in shares.values())
    torch.testing.assert_close(torch.stack(list(shares.values())).sum(0), logit_above_mean(run.logits, run.tokens),
                               atol=1e-4, rtol=1e-5)
    assert findings.scalars["dla/sum_check_max_abs_err"] < 1e-4
    assert {"dla/embed", "dla/L1H1", "dla/biases"} <= set(findings.scalars)


def test_a_head_that_writes_nothing_is_attributed_nothing_and_left_out():
    run = silenced(2, 1)
    with analysis_mode(run.model):
        assert attributions(run)["L2H1"].abs().max() == 0
        scalars = LogitAttribution().analyze(run).scalars
    assert "dla/L2H1" not in scalars and "dla/L2H0" in scalars
    assert "dla/biases" not in scalars and "dla/pos_embed" not in scalars  # zero and frozen in prevpos's models


@pytest.mark.parametrize("example, figures", [(0, True), (-1, True), (16, False), (-17, False)])
def test_an_example_past_the_probe_drops_its_figure_not_the_scores(example, figures):
    """AttentionPatterns(example=1000) on a probe of 256 failed every step with an IndexError: no attention scores at
    all in the run."""
    model = build_transformer(n_layers=2, d_model=16, d_head=16, n_ctx=4, d_vocab=8)
    with analysis_mode(model):
        findings = AttentionPatterns(example=example).analyze(ProbeRun(model, tokens_for(model, batch=16)))
    assert "attention/prev_token_score/L1H0" in findings.scalars and "attention/mean_pattern/L1H0" in findings.figures
    assert ("attention/example_pattern/L1H0" in findings.figures) == figures
    assert ("example=" in findings.texts.get("attention/example_pattern", "")) != figures


def test_ov_copying_is_scored_over_the_tokens_the_data_uses():
    """A copier whose tokens 4..6 the data never shows (data.n_tokens 4): their random weights made a run of 50 of 100
    tokens score copy_top1 0.505 at val acc 0.98."""
    model = copier()
    with torch.no_grad():
        model.W_E[4:7] = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    tokens = tokens_for(model).clamp(max=3).index_fill(1, torch.tensor([0]), 7)
    with torch.no_grad():
        everything = OVCircuit().analyze(ProbeRun(model, tokens)).scalars
        used = OVCircuit().analyze(ProbeRun(model, tokens, n_tokens=4)).scalars
    assert everything["ov/copy_top1/L0H0"] < 1.0
    assert used == pytest.approx({"ov/copy_top1/L0H0": 1.0, "ov/copy_eigen/L0H0": 1.0,
                                  "ov/copy_top1/prev_token_head": 1.0}, abs=1e-5)
