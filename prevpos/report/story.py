"""The reverse-engineered algorithm as short claims filled in with this run's numbers, each with its figures."""

import math
from dataclasses import dataclass, field

from prevpos.report.mechanisms import first_position, last_layer, matching, uniform_bos_weight
from prevpos.report.run import RunRecord

TERMS = ["direct", "qk_comp", "k_comp", "q_comp"]


@dataclass
class Claim:
    title: str
    text: str | None  # None: the run did not measure it; `missing` says why
    figures: list[str] = field(default_factory=list)  # image tag globs; {last} = the last layer
    missing: str = ""
    check: tuple[bool, str] | None = None  # (holds in this run?, the criterion), shown next to the claim


def claims(run: RunRecord) -> list[Claim]:
    final = run.final
    head = followed_head(run, final)
    story = [_task(run, final), _counting(run, final), _prev_token(run, final, head), _terms(run, final, head),
             _copying(run, final, head), _explanation(run, final), _adversarial(run, final), _length(run, final)]
    if matching(run, "head_ablation/zero_loss/*") or matching(run, "dla/*"):  # opt-in plugins: no "not measured"
        story.append(_parts(run, final, head))
    return story


def followed_head(run: RunRecord, final: dict) -> str:
    """The last layer's head the story follows, e.g. "L1H0": the one that attends most to the previous token (with
    several heads, not always head 0). A glob over the layer's heads if the run has no prev-token scores."""
    return _highest(run, final, "attention/prev_token_score/L{last}H*") or f"L{last_layer(run)}H*"


def counting_head(run: RunRecord, final: dict) -> str:
    """Layer 0's head the counting claim follows: the one most on BOS (with several heads, not always head 0)."""
    return _highest(run, final, "attention/bos_score/L0H*") or "L0H0"


def _highest(run: RunRecord, final: dict, pattern: str) -> str | None:
    """The head (e.g. "L1H0") whose final score, among the tags `pattern` matches, is highest; None if none match."""
    tags = matching(run, pattern)
    return max(tags, key=lambda tag: final.get(tag, float("-inf"))).rsplit("/", 1)[-1] if tags else None


def _which_head(run: RunRecord, head: str, score: str = "prev_token_score", on: str = "the previous token") -> str:
    """Which head the numbers are of, e.g. ' (head 2, the one most on the previous token)', where the layer has
    several; '' where it has one."""
    several = len(matching(run, f"attention/{score}/{head.split('H')[0]}H*")) > 1
    return f" (head {head.split('H')[1]}, the one most on {on})" if several else ""


def loss(value: float) -> str:
    """Losses to 4 decimals, and small ones (a converged model's) in scientific notation rather than 0.0000."""
    return f"{value:.4f}" if abs(value) >= 1e-3 else f"{value:.2e}"


def _first(run: RunRecord, pattern: str, final: dict) -> float | None:
    tags = matching(run, pattern)
    return final[tags[0]] if tags else None


def _absent(run: RunRecord, title: str, what: str, plugin: str, figures=()) -> Claim:
    config = run.config or {}
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    was_on = any(isinstance(c, dict) and str(c.get("class_path", "")).endswith("." + plugin) for c in callbacks)
    if run.kind == "analyze":  # every plugin, unless --plugins named others
        named = (config.get("analyze") or {}).get("plugins")
        was_on = named is None or any(name.split(".")[-1] == plugin for given in named for name in given.split(","))
    why = f"the {plugin} plugin was on but skips this model" if was_on else f"the {plugin} plugin was off"
    return Claim(title, None, list(figures), f"not measured in this run: no {what} scalars ({why})")


def _task(run: RunRecord, final: dict) -> Claim:
    title = "The task is learned"
    split = "val" if "val/acc" in final else "probe"
    if f"{split}/acc" not in final:
        return _absent(run, title, "val/acc or probe/acc", "training loop")
    text = (f"On the {'held-out' if split == 'val' else 'probe'} set the model outputs the previous token with accuracy "
            f"{final[f'{split}/acc']:.4f}")
    if f"{split}/loss" in final:
        text += (f" and loss {loss(final[f'{split}/loss'])} (chance: ln({run.n_tokens}) = "
                 f"{math.log(run.n_tokens):.3f}, over its {run.n_tokens} tokens)")
    by_pos = {tag: final[tag] for tag in matching(run, "val/acc_pos*")}
    if by_pos:
        worst = min(by_pos, key=by_pos.get)
        text += f"; its weakest position is a_{worst.removeprefix('val/acc_pos')} at {by_pos[worst]:.4f}"
    return Claim(title, text + ".", ["__timeline__"], check=(final[f"{split}/acc"] >= 0.9, "accuracy ≥ 0.9"))


def _counting(run: RunRecord, final: dict) -> Claim:
    title = "1. Layer 0 counts: its attention to BOS falls with position"
    head = counting_head(run, final)
    by_pos = [final[t] for t in sorted(matching(run, f"attention/bos_by_pos/{head}/pos*"),
                                       key=lambda t: int(t[t.rindex("pos") + 3:]))]
    figures = ["attention/mean_pattern/L0H*", "qk_terms/full_qk_circuit/L0H*"]
    if not by_pos:
        return _absent(run, title, "attention/bos_by_pos/L0H0", "AttentionPatterns", figures)
    n = len(by_pos)
    # Without BOS the same scores are attention to the first token, a_0: said so, not called BOS
    first = first_position(run)
    said = "BOS" if first == "BOS" else "a_0 (the first token: these sequences have no BOS)"
    text = (f"Layer 0{_which_head(run, head, 'bos_score', first)} gives {said} attention {by_pos[0]:.3f} at a_1, "
            f"{by_pos[n // 2]:.3f} at a_{n // 2 + 1} and {by_pos[-1]:.3f} at a_{n} (uniform causal attention: "
            f"{1 / 2:.3f}, {1 / (n // 2 + 2):.3f}, {1 / (n + 1):.3f})")
    decay = final.get(f"attention/bos_decay_score/{head}")
    if decay is not None:
        text += f"; it falls at {decay:.0%} of consecutive positions"
    falling = all(b < a for a, b in zip(by_pos, by_pos[1:]))
    # Uniform attention (random init, or no BOS to find) falls too: counting is BOS weight above it, as in the
    # timeline's threshold.
    threshold = uniform_bos_weight(run) + 0.1
    mean = sum(by_pos) / n
    text += f"; on average {mean:.3f} (uniform: {threshold - 0.1:.3f})"
    return Claim(title, text + ". So layer 0's output says how far into the sequence each token is.", figures,
                 check=(falling and mean >= threshold,
                        f"{first} weight falls at every position and is on average ≥ uniform + 0.1 = {threshold:.3f}"))


def _prev_token(run: RunRecord, final: dict, head: str) -> Claim:
    last = _layer(head)
    title = f"2. Layer {last} attends to the previous token"
    prev = _first(run, f"attention/prev_token_score/{head}", final)
    figures = ["attention/mean_pattern/L{last}H*", "attention/example_pattern/L{last}H*"]
    if prev is None:
        return _absent(run, title, "attention/prev_token_score", "AttentionPatterns", figures)
    text = (f"On average layer {last}{_which_head(run, head)} puts {prev:.3f} of each position's attention on the "
            "previous token")
    for name, where in [("self", "itself"), ("bos", first_position(run))]:
        value = _first(run, f"attention/{name}_score/{head}", final)
        text += f", {value:.3f} on {where}" if value is not None else ""
    return Claim(title, text + ".", figures, check=(prev >= 0.5, "prev-token score ≥ 0.5"))


def _terms(run: RunRecord, final: dict, head: str) -> Claim:
    last = _layer(head)
    earlier = {0: "an earlier layer, which this model lacks", 1: "layer 0"}.get(last, f"layers 0-{last - 1}")
    title = (f"3. Layer {last}'s scores: recency (Q/K-composition with {earlier}) plus \"not my own token\" "
             "(direct term)")
    figures = ["qk_terms/ablation_losses/*", "qk_terms/mean_terms/*", "qk_terms/composition_circuit/*",
               "qk_terms/full_qk_circuit/L{last}H*"]
    # The tags name the head only where the plugin split several (qk_terms/zero_ablation_loss/direct/L1H0).
    losses = {term: _first(run, f"qk_terms/zero_ablation_loss/{term}/{head}", final) for term in TERMS}
    if all(value is None for value in losses.values()):
        losses = {term: _first(run, f"qk_terms/zero_ablation_loss/{term}", final) for term in TERMS}
    if any(v is None for v in losses.values()):
        return _absent(run, title, "qk_terms/zero_ablation_loss", "QKTermImportance", figures)
    clean = final.get("qk_terms/clean_loss", final.get("probe/loss"))
    ranked = sorted(losses, key=losses.get, reverse=True)
    text = (f"Zero-ablating one term of the score{_which_head(run, head)} raises the probe loss "
            + (f"from {loss(clean)} " if clean is not None else "")
            + "to " + ", ".join(f"{t} {loss(losses[t])}" for t in TERMS)
            + f": the most important term is {ranked[0]}, then {ranked[1]}")
    err = final.get("qk_terms/sum_check_max_abs_err")
    if err is not None:
        text += f" (the four terms add up to the real scores within {err:.1e})"
    return Claim(title, text + ".", figures,
                 check=(set(ranked[:2]) == {"direct", "qk_comp"}, "direct and qk_comp are the two most important"))


def _copying(run: RunRecord, final: dict, head: str) -> Claim:
    title = f"4. Layer {_layer(head)}'s OV circuit copies what it attends to"
    top1 = _first(run, f"ov/copy_top1/{head}", final)
    figures = ["ov/full_circuit/L{last}H*"]
    if top1 is None:
        return _absent(run, title, "ov/copy_top1", "OVCircuit", figures)
    text = (f"For {top1:.1%} of source tokens the largest logit of W_E W_OV W_U{_which_head(run, head)} is the token "
            "itself")
    eigen = _first(run, f"ov/copy_eigen/{head}", final)
    if eigen is not None:
        text += f"; its eigenvalues are positive in the ratio Σλ/Σ|λ| = {eigen:.3f}"
    return Claim(title, text + ".", figures, check=(top1 >= 0.9, "copy top-1 ≥ 0.9"))


def _parts(run: RunRecord, final: dict, head: str) -> Claim:
    title = "8. Which parts the model needs, and which write the answer"
    zeroed = {tag.rsplit("/", 1)[-1]: final[tag] for tag in matching(run, "head_ablation/zero_loss/*")}
    direct = {tag.removeprefix("dla/"): final[tag] for tag in matching(run, "dla/*") if "sum_check" not in tag}
    sentences = []
    if zeroed:
        clean = final.get("qk_terms/clean_loss", final.get("probe/loss"))
        sentences.append("Zeroing one head's output raises the probe loss to " + ", ".join(
            f"{name} {loss(value)}" for name, value in zeroed.items()) + (f" (clean {loss(clean)})" if clean else ""))
    if direct:
        ranked = sorted(direct, key=direct.get, reverse=True)
        sentences.append("Directly, each part adds this much to the correct logit above the mean logit: " + ", ".join(
            f"{name} {direct[name]:.2f}" for name in ranked))
    check = None
    if direct and "*" not in head:
        # The claims' head, which a control (learned_pos) may not use to look back: named for what it is.
        check = (max(direct, key=direct.get) == head,
                 f"{head}, layer {_layer(head)}'s head most on the previous token, writes the most")
    return Claim(title, ". ".join(sentences) + ".", ["head_ablation/losses", "dla/by_part"], check=check)


def _layer(head: str) -> int:
    return int(head.split("H")[0].removeprefix("L"))


def _explanation(run: RunRecord, final: dict) -> Claim:
    title = "5. The explanation recovers the model's loss"
    figures = ["explanation/*"]
    names = ["restricted", "excluded", "algorithm"]
    values = {n: final.get(f"explanation/{n}_recovered") for n in names}
    if all(v is None for v in values.values()):
        return _absent(run, title, "explanation/*_recovered", "Explanation", figures)
    every = " in every layer-1 head" if len(matching(run, "attention/prev_token_score/L1H*")) > 1 else ""
    parts = {"restricted": f"keeping only the direct and qk_comp terms{every} recovers {{:.1%}} of the loss "
                           "(sufficiency)",
             "excluded": "keeping only k_comp and q_comp recovers {:.1%} (necessity: low means they are not the mechanism)",
             "algorithm": "the hand-written algorithm with a handful of scalars read off the weights recovers {:.1%}"}
    text = "; ".join(parts[n].format(values[n]) for n in names if values[n] is not None)
    check = (values["restricted"] >= 0.9, "restricted ≥ 90%") if values["restricted"] is not None else None
    return Claim(title, text[0].upper() + text[1:] + " (100% = the model's loss, 0% = uniform layer-1 attention).",
                 figures, check=check)


def _adversarial(run: RunRecord, final: dict) -> Claim:
    title = "6. The inputs it predicts will hurt"
    figures = ["adversarial/*"]
    clean = final.get("adversarial/clean/loss")
    if clean is None:
        return _absent(run, title, "adversarial/*/loss", "AdversarialExamples", figures)
    cases = {"repeated_pairs": "consecutive repeated tokens", "no_bos": "no BOS", "all_same": "all tokens the same",
             "bos_mid": "BOS mid-sequence"}
    parts = [f"{words} {loss(final[f'adversarial/{case}/loss'])} ({final[f'adversarial/{case}/loss'] / max(clean, 1e-12):.1f}× clean)"
             for case, words in cases.items() if f"adversarial/{case}/loss" in final]
    # A run without BOS has no no_bos case (its clean data has none): the check is then of repeated pairs alone.
    tests = [(case, times, said) for case, times, said in [("no_bos", 2, "no BOS > 2× clean"),
                                                           ("repeated_pairs", 1, "repeated pairs > clean")]
             if f"adversarial/{case}/loss" in final]
    hurt = [final[f"adversarial/{case}/loss"] > times * clean for case, times, _ in tests]
    return Claim(title, f"Against a clean loss of {loss(clean)}, the inputs the mechanism should fail on give: "
                        + "; ".join(parts) + ".", figures,
                 check=(bool(tests) and all(hurt), " and ".join(said for *_, said in tests) or "no case measured"))


def _length(run: RunRecord, final: dict) -> Claim:
    title = "7. Length generalization: the count gets coarser with position"
    figures = ["length/*"]
    tags = sorted(matching(run, "length/acc_len*"), key=lambda t: int(t.removeprefix("length/acc_len")))
    if not tags:
        return _absent(run, title, "length/acc_len*", "LengthGeneralization", figures)
    text = ("With the same weights on longer sequences, accuracy is "
            + ", ".join(f"{final[t]:.4f} at length {t.removeprefix('length/acc_len')}" for t in tags) + ".")
    if len(tags) == 1:  # e.g. learned positions, which cannot run past the trained length: nothing to compare
        return Claim(title, text + " No other length was run, so there is no trend to check.", figures)
    return Claim(title, text, figures, check=(final[tags[-1]] < final[tags[0]], "accuracy falls with length"))
