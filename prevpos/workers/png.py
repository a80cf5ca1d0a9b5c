"""Figure -> PNG bytes, and the figure worker's start-up: importable without torch or Lightning.

A spawned worker imports the module of every function it is sent, its initializer's too. From prevpos.analysis
that pulled in Lightning and TransformerLens: ~6 s per worker on our 2-core CPU, longer than a whole GPU run, so
the figures queued up and were drawn at the end. On an H100 (`bench`) (c)/(b) train time was 2.81; 1.35 after.
"""

import io
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from typing import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def render_png(render: Callable, data: dict) -> bytes:
    """render(**data) -> matplotlib Figure -> PNG bytes: the pixels add_figure would show.

    One canvas draw and a fast PNG setting: savefig lays a constrained-layout figure out in an extra draw pass,
    ~25% more time for identical pixels (measured here).
    """
    canvas = FigureCanvasAgg(drawn(render, data))
    canvas.draw()
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def drawn(render: Callable, data: dict) -> Figure:
    """render(**data), which must be a matplotlib Figure: a plugin's draw function that returned something else
    failed later, inside matplotlib ("'int' object has no attribute 'set_canvas'")."""
    figure = render(**data)
    if not isinstance(figure, Figure):
        name = getattr(render, "__qualname__", repr(render))
        raise TypeError(f"{name} returned {figure!r:.60}, not a matplotlib Figure")
    return figure


def init_worker() -> None:
    """Lower priority, so a busy machine slows the figures before training; not 19, which starved them outright
    under other load here. One thread in case a render function pulls in torch. Ctrl-C is for the training process
    (it reaches the whole process group: each worker printed a KeyboardInterrupt traceback; prevpos/workers/spawn.py
    blocks it from the worker's start, where spawn allows)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(10)
    os.environ["OMP_NUM_THREADS"] = "1"
    end_with_the_parent()


def end_with_the_parent() -> None:
    """Exit when the process that started this one has gone (kill -9, out of memory). A figure worker waits for work
    on a queue whose pipe it holds open itself, so it would wait forever; it ignores the signals sent to the group."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent.sentinel,), daemon=True, name="prevpos-parent").start()


def _exit_after(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)
