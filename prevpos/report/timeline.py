"""The emergence timeline: every mechanism score against training step on shared axes, crossings marked."""

import io

from matplotlib.figure import Figure

from prevpos.report.mechanisms import LOSSES, SCORES, first_crossing, followed
from prevpos.report.run import RunRecord


def timeline_figure(run: RunRecord) -> Figure:
    """Scores in [0, 1] on top (a star where each first crossed its threshold), losses (log scale) below."""
    fig = Figure(figsize=(10, 7.5), dpi=80, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    colors = {}
    for tag, label, threshold in followed(run, SCORES):
        steps, values = zip(*run.scalars[tag])
        if tag not in colors:
            colors[tag] = top.plot(steps, values, marker=".", markersize=4, label=label)[0].get_color()
        step = first_crossing(run.scalars[tag], threshold) if threshold is not None else None
        if step is not None:
            top.plot([step], [dict(run.scalars[tag])[step]], marker="*", markersize=14, color=colors[tag],
                     markeredgecolor="black", linestyle="none")
            top.annotate(f"{threshold:g} @ {step}", (step, dict(run.scalars[tag])[step]), fontsize=7,
                         textcoords="offset points", xytext=(6, -10))
    top.set(title="Emergence: mechanism scores by training step (★ = first step at or above its threshold)",
            ylabel="score", ylim=(-0.03, 1.05))
    top.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for tag, label, _ in followed(run, LOSSES):
        steps, values = zip(*run.scalars[tag])
        bottom.plot(steps, [max(v, 1e-6) for v in values], marker=".", markersize=4, label=label)
    bottom.set(yscale="log", xlabel="training step", ylabel="loss (log)")
    if bottom.lines:
        bottom.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
