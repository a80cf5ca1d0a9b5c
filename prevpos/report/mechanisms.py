"""The mechanism scores a report follows, their thresholds, and when each first crossed it."""

import fnmatch
import re
from dataclasses import dataclass

from prevpos.report.run import RunRecord


@dataclass(frozen=True)
class Mechanism:
    """A score to follow: `pattern` is a tag glob where {last} is the last layer; threshold None = no marker."""

    pattern: str
    label: str
    threshold: float | None = None


# Top to bottom in the order the explanation expects them to form (docs/science.md): layer 0, then layer 1, then
# the whole circuit. A threshold is a crossing the timeline reports: the first step a score reached it, and whether
# it held.
SCORES = [
    Mechanism("val/acc", "val accuracy", 0.9),
    Mechanism("val/acc", "val accuracy", 0.99),
    Mechanism("attention/bos_score/L0H*", "L0 attention to BOS", None),  # threshold set per run: uniform + 0.1
    Mechanism("attention/prev_token_score/L{last}H*", "prev-token attention", 0.5),
    Mechanism("attention/self_score/L{last}H*", "self attention", None),
    Mechanism("ov/copy_top1/L{last}H*", "OV copy top-1", 0.9),
    Mechanism("ov/copy_eigen/L{last}H*", "OV copy eigenvalues", None),
    Mechanism("explanation/restricted_recovered", "recovered: direct+qk_comp", 0.9),
    Mechanism("explanation/algorithm_recovered", "recovered: hand-written algorithm", 0.9),
    Mechanism("explanation/excluded_recovered", "recovered: k_comp+q_comp only", None),
]
LOSSES = [
    Mechanism("val/loss", "val loss"),
    Mechanism("qk_terms/zero_ablation_loss/*", "zero-ablated"),
    Mechanism("adversarial/*/loss", "adversarial"),
]


def last_layer(run: RunRecord) -> int:
    layers = [int(m.group(1)) for tag in run.scalars if (m := re.search(r"/L(\d+)H\d+", tag))]
    return max(layers, default=0)


def first_position(run: RunRecord) -> str:
    """What layer 0's "BOS" scores are attention to: BOS, or in a run without it (data.bos false) its first token."""
    return "a_0" if ((run.config or {}).get("data") or {}).get("bos") is False else "BOS"


def uniform_bos_weight(run: RunRecord) -> float:
    """Mean BOS weight of uniform causal attention over positions 1..n-1: what layer 0 gives BOS at random init."""
    n_ctx = (run.config or {}).get("model", {}).get("n_ctx") or 1 + len(matching(run, "attention/bos_by_pos/L0H0/pos*"))
    return sum(1 / (i + 1) for i in range(1, n_ctx)) / max(n_ctx - 1, 1)


def matching(run: RunRecord, pattern: str, images: bool = False) -> list[str]:
    """The run's scalar (or image) tags that match a glob; {last} stands for the last layer's index."""
    pattern = pattern.replace("{last}", str(last_layer(run)))
    return sorted(tag for tag in (run.images if images else run.scalars) if fnmatch.fnmatchcase(tag, pattern))


def followed(run: RunRecord, mechanisms: list[Mechanism],
             own_words: bool = True) -> list[tuple[str, str, float | None]]:
    """(tag, label, threshold) for every tag of this run that a mechanism matches, deduplicated by (tag, threshold).
    `own_words`: layer 0's BOS score is labelled as attention to a_0 in a run without BOS; not across runs, where one
    column holds every run's (the tutorial's name, as the claims' titles)."""
    rows, seen = [], set()
    for mech in mechanisms:
        threshold = mech.threshold
        if per_run_threshold(mech.pattern):
            threshold = round(uniform_bos_weight(run) + 0.1, 3)
        for tag in matching(run, mech.pattern):
            if (tag, threshold) not in seen:
                seen.add((tag, threshold))
                label = _label(mech, tag)
                if own_words and per_run_threshold(tag):
                    label = label.replace("BOS", first_position(run))
                rows.append((tag, label, threshold))
    return rows


def per_run_threshold(tag: str) -> bool:
    """Layer 0's BOS weight is thresholded against uniform attention, which depends on the run's n_ctx."""
    return tag.startswith("attention/bos_score/L0")


def _label(mech: Mechanism, tag: str) -> str:
    """The mechanism's label plus the parts of the tag its glob's wildcards matched (the head, the case)."""
    wild = [part for glob, part in zip(mech.pattern.split("/"), tag.split("/")) if "*" in glob]
    return f"{mech.label} ({', '.join(wild)})" if wild else mech.label


def first_crossing(series: list[tuple[int, float]], threshold: float) -> int | None:
    """The first step at which the score is at or above the threshold."""
    return next((step for step, value in series if value >= threshold), None)


def crossings(run: RunRecord, own_words: bool = True) -> list[dict]:
    """One row per thresholded score: tag, label, threshold, first step (None: never), ordered by that step."""
    rows = [{"tag": tag, "label": label, "threshold": threshold,
             "step": first_crossing(run.scalars[tag], threshold)}
            for tag, label, threshold in followed(run, SCORES, own_words) if threshold is not None]
    return sorted(rows, key=lambda r: (r["step"] is None, r["step"] or 0))
