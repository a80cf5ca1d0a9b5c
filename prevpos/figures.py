"""Figures for plugins: plain data in, labelled matplotlib Figure out (OO API, no pyplot state, thread-safe).

Margins are fixed, in inches, instead of a layout engine: constrained layout measured every tick label again on
each draw, ~40% of a figure's cost here, and these figures' labels are short and of known length.
"""

import textwrap

import numpy as np
from matplotlib.figure import Figure

DPI = 80
MARGIN = {"left": 0.8, "bottom": 0.85, "top": 0.35, "right": 0.15}  # inches: rotated 7-character ticks + axis label
COLORBAR_MARGIN = 0.75  # inches right of the colour bar for its ticks and label
MAX_TICK_LABELS = 25  # an axis this short shows every label (each position of a sequence)
LONG_AXIS_TICK_LABELS = 12  # a longer one: at most this many, at round steps
TITLE_WIDTH, TITLE_LINE = 50, 0.2  # characters per title line of a 5.2-inch figure; inches per extra line


def heatmap(matrix: np.ndarray, title: str = "", x_labels=None, y_labels=None, xlabel: str = "",
            ylabel: str = "", centered: bool = False, colorbar_label: str = "") -> Figure:
    """A labelled heatmap with a colour bar; `centered` uses a diverging map symmetric around 0."""
    matrix = np.asarray(matrix, dtype=np.float32)
    title, extra_lines = _wrap(title)
    fig = _figure(5.2, 4.2, right=COLORBAR_MARGIN, top=MARGIN["top"] + extra_lines * TITLE_LINE)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", **_colours([matrix], centered))
    fig.colorbar(image, ax=ax, label=colorbar_label, fraction=0.06, pad=0.03)
    _ticks(ax.set_xticks, ax.set_xticklabels, x_labels, rotation=90)
    _ticks(ax.set_yticks, ax.set_yticklabels, y_labels)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


def bars(values: dict, title: str = "", ylabel: str = "", reference: float | None = None,
         reference_label: str = "") -> Figure:
    fig = _figure(5.2, 3.6, bottom=0.65, right=0.5)  # the last slanted label reaches past its bar
    ax = fig.add_subplot()
    ax.bar(list(values), list(values.values()), color="tab:blue")
    if reference is not None:
        ax.axhline(reference, color="tab:red", linestyle="--", label=reference_label)
        ax.legend()
    ax.set(title=title, ylabel=ylabel)
    ax.tick_params(axis="x", rotation=20)
    return fig


def lines(series: dict, title: str = "", xlabel: str = "", ylabel: str = "", x_labels=None) -> Figure:
    """One line per entry of `series` (name -> y values)."""
    fig = _figure(5.2, 3.6)
    ax = fig.add_subplot()
    for name, ys in series.items():
        ax.plot(np.arange(len(ys)), ys, marker="o", markersize=3, label=name)
    if x_labels is not None:
        _ticks(ax.set_xticks, ax.set_xticklabels, x_labels, rotation=90)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    return fig


def heatmap_grid(matrices: dict, title: str = "", labels: dict | None = None, xlabel: str = "", ylabel: str = "",
                 centered: bool = False, colorbar_label: str = "") -> Figure:
    """Heatmaps side by side on one colour scale: panel title -> matrix; `labels` gives each panel's axis labels."""
    values = [np.asarray(m, dtype=np.float32) for m in matrices.values()]
    width = 3.4 * len(values) + 1
    fig = _figure(width, 3.8, top=0.6, right=COLORBAR_MARGIN)  # top: the suptitle above the panel titles
    panel_width = (width - MARGIN["left"] - COLORBAR_MARGIN) / len(values)
    fig.subplots_adjust(wspace=0.6 / panel_width)  # inches: each panel has its own row labels
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    colours = _colours(values, centered)
    for ax, name, matrix in zip(axes, matrices, values):
        image = ax.imshow(matrix, aspect="auto", interpolation="nearest", **colours)
        panel_labels = (labels or {}).get(name)
        _ticks(ax.set_xticks, ax.set_xticklabels, panel_labels, rotation=90)
        _ticks(ax.set_yticks, ax.set_yticklabels, panel_labels)
        ax.set(title=name, xlabel=xlabel)
    axes[0].set_ylabel(ylabel)
    fig.colorbar(image, ax=list(axes), label=colorbar_label, fraction=0.06 / len(values), pad=0.01)
    fig.suptitle(title)
    return fig


def _figure(width: float, height: float, **margins: float) -> Figure:
    """A figure whose axes sit inside fixed margins (inches, MARGIN unless given)."""
    m = {**MARGIN, **margins}
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(left=m["left"] / width, right=1 - m["right"] / width,
                        bottom=m["bottom"] / height, top=1 - m["top"] / height)
    return fig


def _wrap(title: str) -> tuple[str, int]:
    """The title broken into lines that fit a 5.2-inch figure, and how many lines it gained."""
    wrapped = textwrap.wrap(title, TITLE_WIDTH) or [""]
    return "\n".join(wrapped), len(wrapped) - 1


def _colours(matrices: list[np.ndarray], centered: bool) -> dict:
    """One colour scale for all `matrices`: diverging and symmetric around 0 if `centered`."""
    if centered:
        limit = max(float(np.nanmax(np.abs(m))) for m in matrices) or 1.0
        return {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
    return {"cmap": "viridis", "vmin": min(float(np.nanmin(m)) for m in matrices),
            "vmax": max(float(np.nanmax(m)) for m in matrices)}


def _ticks(set_ticks, set_labels, labels, rotation=0) -> None:
    """Every label of a short axis; a long one (the 101 tokens) every 2nd, 5th, 10th, ...: each tick costs a layout."""
    if labels is None:
        return
    labels = list(labels)
    step = 1 if len(labels) <= MAX_TICK_LABELS else next(
        s for s in (2, 5, 10, 20, 50, 100, 200, 500, len(labels)) if len(labels) / s <= LONG_AXIS_TICK_LABELS)
    set_ticks(range(0, len(labels), step))
    set_labels(labels[::step], rotation=rotation, fontsize=7)
