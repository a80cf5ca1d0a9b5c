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
    top.set(title="Emergence: mechanism scores by training step (★ = first step at or above its threshold, table below)",
            ylabel="score", ylim=(-0.03, 1.05))
    if top.lines:  # none in a run without the plugins: a legend of nothing warns
        top.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for tag, label, _ in followed(run, LOSSES):
        steps, values = zip(*run.scalars[tag])
        bottom.plot(steps, [max(v, 1e-6) for v in values], marker=".", markersize=4, label=label)
    bottom.set(yscale="log", ylabel="loss (log)")
    _step_axis(bottom, max(s for series in run.scalars.values() for s, _ in series))
    if bottom.lines:
        bottom.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def _step_axis(ax, last_step: int) -> None:
    """Linear steps up to 100, logarithmic beyond on long runs: the parts form in the first ~100-300 steps."""
    if last_step <= 300:
        ax.set_xlabel("training step")
        return
    ax.set_xscale("symlog", linthresh=100, linscale=2)
    ticks = [t for t in (0, 25, 50, 75, 100, 200, 300, 500, 1000, 2000, 3000, 5000, 10**4, 2 * 10**4, 5 * 10**4)
             if t < 0.8 * last_step] + [last_step]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlim(-5, last_step * 1.02)
    ax.set_xlabel("training step (linear to 100, logarithmic beyond)")


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
