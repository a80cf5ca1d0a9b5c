"""Which logged steps to show figures at: before, during and after the val-accuracy transition, and the end."""

from prevpos.report.run import RunRecord

# Figures worth seeing change: where the heads look, what the last layer copies, which score term matters.
KEY_FIGURES = ["attention/mean_pattern/*", "ov/full_circuit/L{last}H*", "qk_terms/ablation_losses/*"]


def acc_at(run: RunRecord, step: int) -> float | None:
    """Val accuracy logged at or before `step` (None before the first validation)."""
    earlier = [value for s, value in run.scalars.get("val/acc", []) if s <= step]
    return earlier[-1] if earlier else None


def snapshot_steps(run: RunRecord, image_steps: list[int]) -> dict[str, int]:
    """{"before": s, "during": s, "after": s, "end": s}, measured on val acc rescaled to 0 (worst) .. 1 (final).

    before: the last step still < 10% of the way; during: the step nearest 50%; after: the first step at >= 90%.
    A run whose val acc moved by 0.05 or less has no transition: {"start": s, "middle": s, "end": s}.
    Steps that coincide are shown once, under the first name.
    """
    steps = sorted(set(image_steps))
    if not steps:
        return {}
    accs = [value for _, value in run.scalars.get("val/acc", [])]
    chosen = {}
    if accs and max(accs) - min(accs) > 0.05:  # a run that never learned has no transition to show
        low, high = min(accs), accs[-1]
        progress = {s: 0.0 if acc_at(run, s) is None else (acc_at(run, s) - low) / (high - low) for s in steps}
        after = next((s for s in steps if progress[s] >= 0.9), steps[-1])
        before = max((s for s in steps if progress[s] < 0.1 and s < after), default=steps[0])
        between = [s for s in steps if before < s < after] or [before]
        chosen = {"before": before, "during": min(between, key=lambda s: abs(progress[s] - 0.5)), "after": after}
    else:
        chosen = {"start": steps[0], "middle": steps[len(steps) // 2]}
    chosen["end"] = steps[-1]
    unique = {}
    for name, step in chosen.items():
        if step not in unique.values():
            unique[name] = step
    return unique
