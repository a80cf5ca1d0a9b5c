"""Figure -> PNG bytes, and the figure worker's start-up: importable without torch or Lightning.

A spawned worker imports the module of every function it is sent, its initializer's too. From prevpos.analysis
that pulled in Lightning and TransformerLens: ~6 s per worker on our 2-core CPU, longer than a whole GPU run, so
the figures queued up and were drawn at the end. On an H100 (`bench`) (c)/(b) train time was 2.81; 1.35 after.
"""

import io
import os
import sys
import types
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image


def render_png(render: Callable, data: dict) -> bytes:
    """render(**data) -> matplotlib Figure -> PNG bytes: the pixels add_figure would show.

    One canvas draw and a fast PNG setting: savefig lays a constrained-layout figure out in an extra draw pass,
    ~25% more time for identical pixels (measured here).
    """
    canvas = FigureCanvasAgg(render(**data))
    canvas.draw()
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def init_worker() -> None:
    """Lower priority, so a busy machine slows the figures before training; not 19, which starved them outright
    under other load here. One thread in case a render function pulls in torch."""
    os.nice(10)
    os.environ["OMP_NUM_THREADS"] = "1"


class ScriptlessProcess(SpawnProcess):
    """A spawned process that does not import the running script.

    A spawned process imports the parent's `__main__` script, to find functions defined there. Figure workers need
    only this module and the figure functions' modules, and a script's top-level imports (torch, Lightning,
    TransformerLens) cost each worker seconds of CPU to start and ~1.2 s of garbage collection to exit, which the
    end of fit waits for (2-core CPU); an unguarded script would even train again in every worker.
    `python -m prevpos` and notebooks have no script to import: nothing changes there. While a worker starts (a few
    ms, once per worker) other threads see an empty `__main__` module.
    """

    def start(self) -> None:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__ or __spec__: nothing for spawn to import
        try:
            super().start()
        finally:
            sys.modules["__main__"] = main


class ScriptlessSpawnContext(SpawnContext):
    """multiprocessing's spawn context, with ScriptlessProcess: what the figure process pool starts its workers in."""

    Process = ScriptlessProcess
