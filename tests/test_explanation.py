"""The explanation check: % recovered, the hand-written algorithm, and the plugin on trained and other models."""

import copy

import pytest
import torch
from transformer_lens.utilities import get_act_name

from prevpos.algorithm import AlgorithmParams, PairScores, algorithm_logits, algorithm_patterns, read_params
from prevpos.analysis import ProbeRun
from prevpos.analysis.probe import analysis_mode
from prevpos.circuits import cached_qk_terms
from prevpos.loss import previous_token_loss
from prevpos.sequences import probe_tokens
from prevpos.transformer import build_transformer
from prevpos_plugins.explanation import EXPLAINED, UNEXPLAINED, Explanation, explanation_losses, recovered

PROBE = probe_tokens(512, 10, 101, 100, seed=7)


def test_recovered_is_one_at_the_model_loss_and_zero_at_the_baseline():
    assert recovered(base=3.4, x=0.03, model=0.03) == pytest.approx(1.0)
    assert recovered(base=3.4, x=3.4, model=0.03) == pytest.approx(0.0)
    assert recovered(base=3.4, x=1.715, model=0.03) == pytest.approx(0.5)


def test_pair_scores_read_and_look_up_each_kind_of_pair():
    circuit = torch.full((4, 4), 5.0)  # tokens 0..2 and BOS = 3
    circuit.fill_diagonal_(7.0)
    circuit[3, :3], circuit[:3, 3], circuit[3, 3] = 1.0, 2.0, 3.0
    scores = PairScores.of(circuit)
    assert (scores.bos_bos, scores.bos_tok, scores.tok_bos, scores.same, scores.other) == (3.0, 1.0, 2.0, 7.0, 5.0)
    table = scores.lookup(torch.tensor([[3, 0, 0, 2]]), bos=3)[0]
    assert table[0, 0] == 3.0 and table[0, 1] == 1.0 and table[1, 0] == 2.0
    assert table[2, 1] == 7.0 and table[3, 1] == 5.0


def test_algorithm_params_read_as_a_table_of_their_16_numbers():
    pairs = [PairScores(*(10 * row + column for column in range(5))) for row in range(3)]
    table = AlgorithmParams(*pairs, copy_gain=12.3456).table().splitlines()
    assert table[0].split(" | ")[1:] == ["BOS · BOS", "BOS · token", "token · BOS", "same token", "other token |"]
    assert [line.split(" | ")[1:] for line in table[2:5]] == [
        [f"{10 * row + column:.3f}" for column in range(4)] + [f"{10 * row + 4:.3f} |"] for row in range(3)]
    assert table[-1].endswith("12.346")


@pytest.fixture(scope="module")
def trained(trained_module):
    model = trained_module.model
    with analysis_mode(model):
        run = ProbeRun(model, PROBE)
        findings = Explanation(strict=True).analyze(run)
        params = read_params(model)
        assert findings.texts["explanation/algorithm_params"] == params.table()
        layer0, _ = algorithm_patterns(params, PROBE, 100)
        algorithm_acc = (algorithm_logits(params, PROBE, 101)[:, 1:].argmax(-1) == PROBE[:, :-1]).float().mean()
        bos_weight = run.cache["pattern", 0][:, 0, :, 0].mean(0)
    return findings.scalars, layer0[:, :, 0].mean(0), bos_weight, algorithm_acc


def test_algorithm_from_trained_weights_beats_uniform_attention(trained):
    scalars, _, _, algorithm_acc = trained
    assert scalars["explanation/algorithm_loss"] < 0.5 * scalars["explanation/base_loss"]
    assert scalars["explanation/algorithm_recovered"] > 0.8  # measured 0.96 on a 400-step model
    assert algorithm_acc > 0.8  # 16 numbers, no weights: measured 0.89 (model 0.99)


def test_algorithm_layer0_counts_like_the_model(trained):
    _, algorithm_bos, model_bos, _ = trained
    assert torch.allclose(algorithm_bos, model_bos, atol=0.02)  # three scores per query explain layer 0
    assert (algorithm_bos[1:] < algorithm_bos[:-1]).all()  # and the BOS weight falls with position


def test_explained_terms_are_sufficient_on_a_trained_model(trained):
    scalars, *_ = trained
    assert scalars["explanation/model_loss"] < scalars["explanation/restricted_loss"] < scalars["explanation/base_loss"]
    assert scalars["explanation/restricted_recovered"] > 0.8  # measured 0.93 on a 400-step model
    assert set(scalars) == {f"explanation/{n}_{kind}" for n in ("restricted", "excluded", "algorithm")
                            for kind in ("loss", "recovered")} | {"explanation/base_loss", "explanation/model_loss"}


def test_at_random_init_losses_are_logged_but_no_fraction():
    model = build_transformer()
    with analysis_mode(model):
        findings = Explanation(strict=True).analyze(ProbeRun(model, PROBE))
    assert findings.scalars["explanation/base_loss"] == pytest.approx(4.6, abs=0.1)
    assert not [t for t in findings.scalars if t.endswith("_recovered")]


def test_other_shapes_are_skipped_with_one_line():
    model = build_transformer(n_layers=1)
    with analysis_mode(model):
        findings = Explanation(strict=True).analyze(ProbeRun(model, PROBE))
    assert not findings.scalars and "one layer" in findings.texts["explanation/skipped"]


def test_with_learned_positions_the_terms_are_kept_but_the_algorithm_is_skipped():
    """The algorithm reads W_E alone, so on learned_pos it ignored what the model is given: it 'recovered' -648%."""
    for positional, has_algorithm in [("none", True), ("learned", False)]:
        model = build_transformer(positional=positional)
        with analysis_mode(model):
            findings = Explanation(strict=True).analyze(ProbeRun(model, PROBE))
        assert "explanation/restricted_loss" in findings.scalars
        assert ("explanation/algorithm_loss" in findings.scalars) == has_algorithm
        assert ("reads no positional embedding" in findings.texts.get("explanation/skipped", "")) != has_algorithm


def test_without_bos_the_terms_are_kept_but_the_algorithm_is_skipped():
    """The algorithm's numbers are of BOS at position 0: in a run without BOS, of a token the model never saw."""
    model = build_transformer()
    no_bos = probe_tokens(512, 10, 101, 100, seed=7, bos=False)
    with analysis_mode(model):
        findings = Explanation(strict=True).analyze(ProbeRun(model, no_bos))
    assert "explanation/restricted_loss" in findings.scalars and "explanation/algorithm_loss" not in findings.scalars
    assert findings.texts["explanation/skipped"] == ("Explanation skipped part of its analysis: its hand-written "
                                                     "algorithm, which counts from BOS, and the run's sequences have none")


def test_with_biases_the_terms_are_kept_but_the_algorithm_is_skipped():
    """A loaded state_dict may hold the biases prevpos keeps at zero; the algorithm has no numbers for them."""
    model = build_transformer()
    with torch.no_grad():
        model.blocks[0].attn.b_O.fill_(0.5)
    with analysis_mode(model):
        findings = Explanation(strict=True).analyze(ProbeRun(model, PROBE))
    assert "explanation/restricted_loss" in findings.scalars and "explanation/algorithm_loss" not in findings.scalars
    assert "reads no biases, and this model has non-zero blocks.0.attn.b_O" in findings.texts["explanation/skipped"]


def kept_scores_loss(model, terms: dict, kept: tuple[str, ...]) -> float:
    """The probe loss with each layer-1 head's scores replaced outright by the sum of its `kept` terms."""
    def only_kept(scores, hook):
        heads = [sum(terms[h][name] for name in kept) for h in range(model.cfg.n_heads)]
        return model.blocks[1].attn.apply_causal_mask(torch.stack(heads, 1))

    logits = model.run_with_hooks(PROBE, fwd_hooks=[(get_act_name("attn_scores", 1), only_kept)])
    return previous_token_loss(logits, PROBE).item()


def test_with_two_heads_every_layer1_head_keeps_only_its_explained_terms(trained_two_heads):
    model = trained_two_heads
    with analysis_mode(model):
        run = ProbeRun(model, PROBE)
        terms = {h: cached_qk_terms(run, 1, h) for h in range(2)}
        losses = explanation_losses(model, PROBE, terms, run.cache["resid_pre", 1])
        head0_only = explanation_losses(model, PROBE, {0: terms[0]})
        for name, kept in [("restricted", EXPLAINED), ("excluded", UNEXPLAINED)]:
            assert losses[name] == pytest.approx(kept_scores_loss(model, terms, kept), abs=1e-4)
            assert abs(head0_only[name] - losses[name]) > 0.01  # editing head 0 alone is told apart
    assert "algorithm" not in losses


def test_with_two_heads_the_plugin_logs_the_terms_and_notes_the_algorithm_once(trained_two_heads):
    with analysis_mode(trained_two_heads):
        plugin = Explanation(strict=True)
        first, second = (plugin.analyze(ProbeRun(trained_two_heads, PROBE)) for _ in range(2))
    assert set(first.scalars) == {f"explanation/{n}_{kind}" for n in ("restricted", "excluded")
                                  for kind in ("loss", "recovered")} | {"explanation/base_loss", "explanation/model_loss"}
    assert first.scalars["explanation/restricted_recovered"] > 0.8
    assert first.texts["explanation/skipped"].startswith("Explanation skipped part of its analysis: its hand-written "
                                                         "algorithm") and not first.figures  # read: nothing logged
    assert "one head per layer, not 2" in first.texts["explanation/skipped"]
    assert not second.texts


def with_unused_tokens_scrambled(model, n_tokens: int):
    """A copy of `model` whose tokens n_tokens .. d_vocab - 2 (never in data of n_tokens tokens) have new random
    embeddings and unembeddings, as an untrained model's."""
    scrambled = copy.deepcopy(model)
    unused = slice(n_tokens, model.cfg.d_vocab - 1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        scrambled.W_E[unused] = torch.randn(scrambled.W_E[unused].shape, generator=generator)
        scrambled.W_U[:, unused] = torch.randn(scrambled.W_U[:, unused].shape, generator=generator)
    return scrambled


def test_the_algorithm_reads_its_numbers_over_the_tokens_the_data_uses(trained_module):
    """With data.n_tokens 50 the other 50 tokens keep random weights; the pair means took them in (a run of 50
    tokens at step 200 recovered 0.022 of its loss by the algorithm, 0.535 read over its own tokens)."""
    model = trained_module.model
    scrambled = with_unused_tokens_scrambled(model, 50)
    with analysis_mode(model), analysis_mode(scrambled):
        assert read_params(scrambled, n_tokens=50) == read_params(model, n_tokens=50)
        assert read_params(scrambled) != read_params(model)  # over every token, the scrambled ones count
        assert read_params(model, n_tokens=100) == read_params(model)  # the default: every token but BOS
