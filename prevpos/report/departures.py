"""Where a run departs from the tutorial's setting, said above the claims: they tell the tutorial's mechanism, so
in a control (learned positions, no BOS, one layer, MLPs) the claims that fail are the finding, not a broken run."""

import re

from prevpos.report.mechanisms import last_layer
from prevpos.report.run import RunRecord

WHAT_FAILS_MEANS = ("the claims below tell the tutorial's mechanism, and those that do not hold show where this one "
                    "differs")


def departures(run: RunRecord) -> list[str]:
    """One line for each way this run's model or data differ from the tutorial's (from its config.yaml), and one if
    its head most on the previous token is outside the last layer; none for the default experiment."""
    config = run.config or {}
    model, data = config.get("model") or {}, config.get("data") or {}
    notes = []
    if model.get("positional", "none") != "none":
        notes.append(f"This model has {model['positional']} positional embeddings: position is given, so nothing has "
                     f"to be counted from BOS; {WHAT_FAILS_MEANS}.")
    if data.get("bos") is False:
        notes.append(f"These sequences have no BOS: layer 0 has nothing fixed to count from; {WHAT_FAILS_MEANS}.")
    layers = model.get("n_layers", 2)
    if layers != 2:
        notes.append(f"This model has {layers} layer{'s' if layers > 1 else ''}, where the mechanism has 2 (layer 0 "
                     f"counts, layer 1 uses the count); the claims below follow its last layer, layer {layers - 1}.")
    if model.get("attn_only") is False:
        notes.append(f"This model has MLPs, where the tutorial's is attention only; {WHAT_FAILS_MEANS}.")
    return notes + [note for note in [_looks_back_elsewhere(run)] if note]


def _looks_back_elsewhere(run: RunRecord) -> str | None:
    """A note if the head most on the previous token is not in the last layer, whose heads the claims follow."""
    scores = {tag.rsplit("/", 1)[-1]: value for tag, value in run.final.items()
              if re.fullmatch(r"attention/prev_token_score/L\d+H\d+", tag)}
    if not scores:
        return None
    last = last_layer(run)
    best = max(scores, key=scores.get)
    in_last = max((v for head, v in scores.items() if head.startswith(f"L{last}H")), default=None)
    if best.startswith(f"L{last}H") or in_last is None:
        return None
    return (f"The head most on the previous token is {best} ({scores[best]:.3f} of its attention on it; layer {last}'s "
            f"most: {in_last:.3f}). The claims below follow layer {last}, where the tutorial's model looks back.")
