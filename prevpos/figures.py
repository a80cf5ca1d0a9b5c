"""Figures for plugins: plain data in, labelled matplotlib Figure out (OO API, no pyplot state, thread-safe)."""

import numpy as np
from matplotlib.figure import Figure


def heatmap(matrix: np.ndarray, title: str = "", x_labels=None, y_labels=None, xlabel: str = "",
            ylabel: str = "", centered: bool = False, colorbar_label: str = "") -> Figure:
    """A labelled heatmap with a colour bar; `centered` uses a diverging map symmetric around 0."""
    matrix = np.asarray(matrix, dtype=np.float32)
    fig = Figure(figsize=(5.2, 4.2), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    kwargs = {"cmap": "viridis"}
    if centered:
        limit = float(np.nanmax(np.abs(matrix))) or 1.0
        kwargs = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", **kwargs)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    _ticks(ax.set_xticks, ax.set_xticklabels, x_labels, rotation=90)
    _ticks(ax.set_yticks, ax.set_yticklabels, y_labels)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


def bars(values: dict, title: str = "", ylabel: str = "", reference: float | None = None,
         reference_label: str = "") -> Figure:
    fig = Figure(figsize=(5.2, 3.6), dpi=80, layout="constrained")
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
    fig = Figure(figsize=(5.2, 3.6), dpi=80, layout="constrained")
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
    limit = max(float(np.nanmax(np.abs(v))) for v in values) or 1.0
    kwargs = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit} if centered else \
        {"cmap": "viridis", "vmin": min(float(np.nanmin(v)) for v in values), "vmax": max(float(np.nanmax(v)) for v in values)}
    fig = Figure(figsize=(3.4 * len(values) + 1, 3.8), dpi=80, layout="constrained")
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    for ax, name, matrix in zip(axes, matrices, values):
        image = ax.imshow(matrix, aspect="auto", interpolation="nearest", **kwargs)
        panel_labels = (labels or {}).get(name)
        _ticks(ax.set_xticks, ax.set_xticklabels, panel_labels, rotation=90)
        _ticks(ax.set_yticks, ax.set_yticklabels, panel_labels)
        ax.set(title=name, xlabel=xlabel)
    axes[0].set_ylabel(ylabel)
    fig.colorbar(image, ax=list(axes), label=colorbar_label)
    fig.suptitle(title)
    return fig


def _ticks(set_ticks, set_labels, labels, rotation=0) -> None:
    if labels is None:
        return
    labels = list(labels)
    step = max(1, len(labels) // 25)  # keep a 101-token axis readable
    set_ticks(range(0, len(labels), step))
    set_labels(labels[::step], rotation=rotation, fontsize=7)
