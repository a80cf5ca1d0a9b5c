"""What a plugin returns: scalars, figures (drawn later, possibly off the training thread) and text."""

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from matplotlib.figure import Figure

from prevpos.workers.png import drawn


def plain(value):
    """Tensors anywhere in `value` (dicts, lists, tuples) as CPU numpy: a worker needs neither torch nor the GPU."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        return value.detach().float().cpu().numpy()
    return value


@dataclass
class FigureSpec:
    """A figure as a function of plain data: `render(**data)` returns a matplotlib Figure.

    Tensors in `data` (nested too) become CPU numpy here, once, so the figure can be drawn later, in a process
    that has neither torch nor the GPU.
    """

    render: Callable[..., Figure]
    data: dict

    def __post_init__(self) -> None:
        self.data = plain(self.data)

    def draw(self) -> Figure:
        return drawn(self.render, self.data)


@dataclass
class Findings:
    scalars: dict[str, float] = field(default_factory=dict)
    figures: dict[str, FigureSpec] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def scalar(self, tag: str, value) -> None:
        # Said here, in the plugin's own line, rather than as torch's "cannot be converted to Scalar".
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise ValueError(f"scalar {tag}: a number or a one-element tensor, not a tensor of shape "
                             f"{tuple(value.shape)}; reduce it first (e.g. .mean()) or log one scalar per element")
        self.scalars[tag] = float(value.item() if isinstance(value, torch.Tensor) else value)

    def figure(self, tag: str, render: Callable[..., Figure], **data) -> None:
        """Record a figure, to be drawn later as render(**data) (see FigureSpec)."""
        if not callable(render):  # else "'str' object is not callable" when drawn, later and elsewhere
            raise TypeError(f"figure {tag}: render must be a function that returns a matplotlib Figure (e.g. "
                            f"prevpos.figures.lines), not {render!r:.40}")
        self.figures[tag] = FigureSpec(render, data)

    def text(self, tag: str, value: str) -> None:
        self.texts[tag] = value

    def update(self, other: "Findings") -> None:
        self.scalars.update(other.scalars)
        self.figures.update(other.figures)
        self.texts.update(other.texts)

    def problems(self) -> list[str]:
        """What is wrong with this output (non-finite scalars, things that are not figures)."""
        bad = [f"scalar {t} is {v}" for t, v in self.scalars.items() if not math.isfinite(v)]
        bad += [f"figure {t} is a {type(s).__name__}, not a FigureSpec" for t, s in self.figures.items()
                if not isinstance(s, FigureSpec)]
        # Not found here, a text that is not a str stopped the whole fit, in the thread that writes TensorBoard.
        bad += [f"text {t} is {v!r:.40}, not a str" for t, v in self.texts.items() if not isinstance(v, str)]
        return bad

