"""Draw figures to PNG on a background worker and hand each to the run's sinks (TensorBoard, W&B, files) at its own
step when it is done."""

import os
import pickle
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Callable

from prevpos.notices import warn
from prevpos.workers.png import init_worker, render_png
from prevpos.workers.spawn import ScriptlessSpawnContext, from_running_script

RENDER_MODES = ("process", "thread", "inline")
# Figures waiting for a worker, at most: past it, whoever submits draws the oldest. A default run queues at most 98
# (14 figures at each of steps 0, 20, ..., 120), so it never waits here; a machine too busy for the niced worker
# (a 6,000-step run with other work on both cores: 3,000 steps behind, 30 MB more memory per 1,000 steps) does.
MOST_QUEUED = 128


def worker_count() -> int:
    """Figure processes: every core but two (training, the main loop), at most 4; at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(4, cores - 2))


class BackgroundRenderer:
    """Workers (processes, a thread, or none: `inline`) that turn (render, data) into PNGs for the sinks.

    Spawned, not forked: forking a process that runs torch's threads can deadlock. A render function that cannot
    be pickled (a lambda) or is defined in the running script, or a process pool that broke, falls back to a
    thread. Figures wait in a queue here and go to the workers a few at a time, so `finish()` can draw what is
    still queued on the calling thread too: at the end of a run training no longer needs that core.
    """

    def __init__(self, sinks: list, mode: str = "process"):
        self.sinks = sinks  # each has image(tag, step, png) and flush() (prevpos/analysis/sinks.py)
        self.mode = mode
        self._process: ProcessPoolExecutor | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._outstanding = 0  # figures submitted and not yet written (or given up on)
        self._idle = threading.Condition()  # guards the counts and the queue
        self._queue: deque[tuple] = deque()  # (tag, render, data, step) not yet handed to a worker
        self._in_flight = 0  # handed to a worker, not yet done
        self._failed: set[str] = set()
        self.drawn_for: dict[str, str] = {}  # tag -> the plugin whose figure it is, for the warning if it fails

    def submit(self, tag: str, render: Callable, data: dict, step: int) -> None:
        """Draw render(**data) and write it at `step`; `data` is plain already (a FigureSpec's)."""
        with self._idle:
            self._outstanding += 1
        if self.mode == "inline":
            self._draw_here(tag, render, data, step)  # which reports a draw that fails, as the workers' do
            return
        with self._idle:
            self._queue.append((tag, render, data, step))
            oldest = self._queue.popleft() if len(self._queue) > MOST_QUEUED else None
        if oldest is not None:
            self._draw_here(*oldest)
        self._feed()

    def _feed(self) -> None:
        """Hand queued figures to the workers: one each, and one more waiting, so none idles between figures."""
        while True:
            with self._idle:
                if not self._queue or self._in_flight >= worker_count() + 1:
                    return
                item = self._queue.popleft()
                self._in_flight += 1
            try:
                self._start(*item)
            except RuntimeError:  # no new work for the pool (e.g. the interpreter is shutting down): draw it here
                with self._idle:
                    self._in_flight -= 1
                self._draw_here(*item)

    def _start(self, tag: str, render: Callable, data: dict, step: int) -> None:
        try:
            future = self._executor(render, data).submit(render_png, render, data)
        except BrokenProcessPool as error:  # a worker died while none drew: no figure's future said so
            self._use_a_thread(error)
            future = self._executor(render, data).submit(render_png, render, data)
        future.add_done_callback(partial(self._done, tag, render, data, step))

    def _executor(self, render: Callable, data: dict):
        if self.mode == "process" and self._picklable(render, data):
            return self._worker_processes()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="prevpos-render")
        return self._thread

    def _worker_processes(self) -> ProcessPoolExecutor:
        if self._process is None:  # spawned, without importing the running script (ScriptlessProcess)
            self._process = ProcessPoolExecutor(worker_count(), mp_context=ScriptlessSpawnContext(),
                                                initializer=init_worker)
        return self._process

    @staticmethod
    def _picklable(render: Callable, data: dict) -> bool:
        """Can a worker get render and data? Not a function of the running script: workers do not import it."""
        if from_running_script(render):
            return False
        try:
            pickle.dumps((render, data))
            return True
        except Exception:
            return False

    def _done(self, tag: str, render: Callable, data: dict, step: int, future: Future) -> None:
        error = future.exception()
        if isinstance(error, BrokenProcessPool):  # e.g. a worker the OS killed while it drew
            self._use_a_thread(error)
            try:
                return self._start(tag, render, data, step)
            except RuntimeError as retry_error:  # e.g. the interpreter is already shutting down
                error = retry_error
        try:
            if error is None:
                self._write(tag, step, future.result())
            else:
                self._report(tag, step, error)
        finally:
            with self._idle:
                self._outstanding -= 1
                self._in_flight -= 1
                self._idle.notify_all()
            self._feed()

    def _use_a_thread(self, error: BrokenProcessPool) -> None:
        if self.mode == "process":
            self.mode = "thread"
            warn(f"figure worker process failed ({error}); drawing figures in a thread instead")

    def _draw_here(self, tag: str, render: Callable, data: dict, step: int) -> None:
        try:
            self._write(tag, step, render_png(render, data))
        except Exception as error:
            self._report(tag, step, error)
        finally:
            with self._idle:
                self._outstanding -= 1
                self._idle.notify_all()

    def _report(self, tag: str, step: int, error: BaseException) -> None:
        if tag not in self._failed:
            self._failed.add(tag)
            plugin = self.drawn_for.get(tag)
            # Drawn in a worker, after analyze() returned: no traceback here, and `strict` does not cover it.
            whose = (f" (plugin {plugin}; `python -m prevpos analyze --weights CHECKPOINT --plugins {plugin}` prints "
                     "its traceback)") if plugin else ""
            warn(f"figure {tag} at step {step} could not be drawn{whose}: {error!r}")

    def _write(self, tag: str, step: int, png: bytes) -> None:
        for sink in self.sinks:
            sink.image(tag, step, png)

    def finish(self) -> None:
        """Draw queued figures here while the workers draw theirs; wait for every figure, then flush."""
        while True:
            with self._idle:
                if not self._queue:
                    break
                item = self._queue.popleft()
            self._draw_here(*item)
        with self._idle:
            self._idle.wait_for(lambda: self._outstanding == 0)
        for executor in (self._process, self._thread):
            if executor is not None:
                executor.shutdown(wait=False)  # every figure is written: let the workers exit on their own
        self._process = self._thread = None
        for sink in self.sinks:
            sink.flush()
