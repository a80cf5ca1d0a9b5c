"""Figures drawn off the training thread still land in TensorBoard, at the right steps, before the run ends."""

import gc
import io
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

from prevpos.analysis import render
from prevpos.analysis.findings import Findings
from prevpos.analysis.session import plugin_path
from prevpos.analysis.writer import FindingsWriter
from prevpos.figures import heatmap
from prevpos.module import PrevTokenModel
from prevpos.workers.spawn import ScriptlessSpawnContext
from prevpos_plugins.attention import AttentionPatterns
from prevpos_plugins.ov_circuit import OVCircuit
from tests.conftest import build_data, quiet_trainer


def read_images(log_dir: Path) -> dict[str, dict[int, np.ndarray]]:
    """{tag: {step: decoded RGBA image}} from every event file under log_dir."""
    images: dict[str, dict[int, np.ndarray]] = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={IMAGES: 0}).Reload()
        for tag in accumulator.Tags()[IMAGES]:
            for event in accumulator.Images(tag):
                images.setdefault(tag, {})[event.step] = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
    return images


def assert_real_picture(image: np.ndarray) -> None:
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 20  # axes, labels and colours, not a blank canvas
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50


def test_fit_writes_every_figure_at_every_analysed_step(in_tmp):
    logger = TensorBoardLogger(str(in_tmp), name="run")
    plugin = AttentionPatterns(figure_every_n_epochs=1)  # figures at every analysed step
    trainer = quiet_trainer(max_epochs=2, logger=logger, callbacks=[plugin], log_every_n_steps=1)
    trainer.fit(PrevTokenModel(), build_data(steps_per_epoch=3))
    images = read_images(in_tmp / "run")
    tags = {f"attention/{kind}/L{l}H0" for kind in ("mean_pattern", "example_pattern") for l in (0, 1)}
    assert set(images) == tags
    for tag in tags:
        assert sorted(images[tag]) == [0, 3, 6]  # before training, and after each epoch (the end is epoch 2's)
        for image in images[tag].values():
            assert_real_picture(image)


@pytest.mark.parametrize("mode", ["process", "thread", "inline"])
def test_every_render_mode_writes_the_same_png(in_tmp, mode):
    findings = Findings()
    findings.figure("demo/heatmap", heatmap, matrix=np.arange(12.0).reshape(3, 4), title="demo")
    findings.figure("demo/lambda", lambda **data: heatmap(**data), matrix=np.eye(3))  # unpicklable: falls back
    writer = FindingsWriter([TensorBoardLogger(str(in_tmp), name=mode)], render=mode)
    writer.write(findings, step=7)
    writer.finish()
    writer.finish()  # idempotent
    images = read_images(in_tmp / mode)
    assert {tag: list(steps) for tag, steps in images.items()} == {"demo/heatmap": [7], "demo/lambda": [7]}
    assert_real_picture(images["demo/heatmap"][7])


def test_figures_are_written_even_if_finish_is_never_called(in_tmp):
    """A run that raises skips on_train_end; the writer's finalizer still drains and flushes."""
    findings = Findings()
    findings.figure("demo/heatmap", heatmap, matrix=np.arange(12.0).reshape(3, 4))
    writer = FindingsWriter([TensorBoardLogger(str(in_tmp), name="crash")], render="thread")
    writer.write(findings, step=3)
    del writer
    gc.collect()
    assert list(read_images(in_tmp / "crash")["demo/heatmap"]) == [3]


def test_tensors_nested_in_figure_data_are_drawn(in_tmp):
    """A plugin may pass {name: tensor} (e.g. lines' series); the worker gets numpy, never a (GPU) tensor."""
    import torch

    from prevpos.figures import lines

    findings = Findings()
    findings.figure("demo/lines", lines, series={"a": torch.arange(5.0), "b": torch.ones(5)}, title="nested")
    writer = FindingsWriter([TensorBoardLogger(str(in_tmp), name="nested")], render="thread")
    writer.write(findings, step=2)
    writer.finish()
    assert_real_picture(read_images(in_tmp / "nested")["demo/lines"][2])


def test_a_figure_worker_imports_neither_torch_nor_lightning():
    """What a spawned worker unpickles (its process object, initializer, the PNG step, a figure function) must stay
    light: the whole stack took ~6 s per worker to import, longer than a GPU run, and the figures then waited."""
    sent = pickle.dumps((ScriptlessSpawnContext.Process, render.init_worker, render.render_png, heatmap))
    probe = ("import pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
             "print(sorted(m for m in ('torch', 'lightning', 'transformer_lens') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], input=sent, capture_output=True, check=True)
    assert result.stdout.decode().strip() == "[]"


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_signals_to_the_process_group_leave_a_worker_alone(capfd, sent):
    """Ctrl-C and `timeout` signal the whole process group. A worker that was still importing printed a
    KeyboardInterrupt traceback and died, and SIGTERM killed the figure workers outright: the figures fell back to a
    thread. The training process ends its workers itself."""
    worker = ScriptlessSpawnContext().Process(target=time.sleep, args=(1.0,))
    worker.start()
    os.kill(worker.pid, sent)  # while it starts up
    time.sleep(0.5)
    os.kill(worker.pid, sent)  # while it works
    worker.join(10)
    assert worker.exitcode == 0 and "KeyboardInterrupt" not in capfd.readouterr().err


ORPHANING_SCRIPT = """
import os, signal
from concurrent.futures import ProcessPoolExecutor
from prevpos.workers.png import init_worker
from prevpos.workers.spawn import ScriptlessSpawnContext

pool = ProcessPoolExecutor(1, mp_context=ScriptlessSpawnContext(), initializer=init_worker)
print(pool.submit(os.getpid).result(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or kill -9 ends a training process
"""


def running(pid: int) -> bool:
    """Is the process alive (not gone, nor a zombie that no one has reaped yet)?"""
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_figure_worker_exits_when_the_training_process_is_killed(tmp_path):
    """It waited for work forever, on a queue whose pipe it holds open itself, and ignores the group's signals."""
    script = tmp_path / "orphaning.py"
    script.write_text(ORPHANING_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    worker = int(result.stdout)
    deadline = time.monotonic() + 10
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(worker)


UNGUARDED_SCRIPT = """
import numpy as np
print("top level ran", flush=True)
from prevpos.analysis.render import BackgroundRenderer
from prevpos.figures import heatmap

class Printed:
    def image(self, tag, step, png):
        print("wrote", tag, step, flush=True)
    def flush(self):
        pass

def script_figure(matrix):  # a worker cannot import this script: drawn in a thread
    return heatmap(matrix)

renderer = BackgroundRenderer([Printed()])
renderer.submit("eye", heatmap, {"matrix": np.eye(3)}, 7)
renderer.finish()
renderer.submit("script", script_figure, {"matrix": np.eye(3)}, 8)
renderer.finish()
print(renderer.mode, flush=True)
"""


def test_figure_workers_do_not_import_the_running_script(tmp_path):
    """A spawned worker imports the main script: an unguarded one would train again in every worker, and any one
    costs each worker its top-level imports (torch, Lightning: ~6 s here) to start and ~1.2 s to exit."""
    script = tmp_path / "train.py"
    script.write_text(UNGUARDED_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # "top level ran" once: no worker ran the script; "process": the pool never broke, so "eye" came from a worker
    assert result.stdout.splitlines() == ["top level ran", "wrote eye 7", "wrote script 8", "process"]
    assert "could not be drawn" not in result.stderr and "Warning" not in result.stderr


class RecordedImages:
    """A sink that keeps (tag, step) of the images it is given."""

    def __init__(self):
        self.written = []

    def image(self, tag, step, png):
        self.written.append((tag, step))

    def flush(self):
        pass


def wait_until(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)


def kill_figure_workers(renderer: render.BackgroundRenderer) -> None:
    """Kill the renderer's figure processes (as the OS does when memory runs out) and wait until their pool knows."""
    pool = renderer._process
    for process in list(pool._processes.values()):
        process.kill()
        process.join()
    wait_until(lambda: pool._broken, "the pool to notice")  # set by its manager thread once it sees a worker gone


def test_figure_workers_that_die_hand_drawing_to_a_thread():
    """Workers killed between figures, or while drawing one: every figure is still written, and the rest are drawn in
    a thread, not on the training thread. Killed while idle, no figure's future reports the broken pool; the next
    figure found it and was drawn on the calling thread, and so was every figure after it."""
    events = RecordedImages()
    renderer = render.BackgroundRenderer([events])
    with pytest.warns(UserWarning, match="figure worker process failed"):
        renderer.submit("before", heatmap, {"matrix": np.eye(3)}, 1)
        wait_until(lambda: events.written, "the first figure")  # drawn by a worker, which is then idle
        kill_figure_workers(renderer)
        renderer.submit("after", heatmap, {"matrix": np.eye(3)}, 2)
        renderer.submit("later", heatmap, {"matrix": np.eye(3)}, 3)
        renderer.finish()
    assert renderer.mode == "thread"
    assert sorted(events.written, key=lambda written: written[1]) == [("before", 1), ("after", 2), ("later", 3)]

    events = RecordedImages()
    renderer = render.BackgroundRenderer([events])
    with pytest.warns(UserWarning, match="figure worker process failed"):
        renderer.submit("drawing", heatmap, {"matrix": np.eye(3)}, 4)  # the worker is still starting: in flight
        kill_figure_workers(renderer)
        renderer.finish()
    assert renderer.mode == "thread" and events.written == [("drawing", 4)]


def test_figures_a_busy_worker_cannot_keep_up_with_are_drawn_by_whoever_submits(monkeypatch):
    """With the worker starved (a machine busy with other work), the queue grew without end: figures thousands of
    steps behind training, and more memory every step. Past MOST_QUEUED the submitting thread draws the oldest."""
    monkeypatch.setattr(render, "MOST_QUEUED", 3)
    monkeypatch.setattr(render, "worker_count", lambda: 1)  # in flight: "stuck" and step 1, waiting for the thread
    events, blocked = RecordedImages(), threading.Event()
    renderer = render.BackgroundRenderer([events], mode="thread")

    def stuck(**data):  # the worker's first figure never ends until the test lets it
        blocked.wait(60)
        return heatmap(matrix=np.eye(2))

    renderer.submit("stuck", stuck, {}, 0)
    for step in range(1, 11):
        renderer.submit("queued", heatmap, {"matrix": np.eye(2)}, step)
        assert len(renderer._queue) <= 3
    assert [step for _, step in events.written] == list(range(2, 8))  # the oldest queued, drawn here, in order
    blocked.set()
    renderer.finish()
    assert sorted(step for _, step in events.written) == list(range(11))


@pytest.mark.parametrize("mode", render.RENDER_MODES)
def test_a_draw_that_returns_no_figure_is_one_warning_and_the_other_figures_are_written(mode):
    """A plugin's draw function returning something else was reported as "'int' object has no attribute
    'set_canvas'", from inside matplotlib."""
    events = RecordedImages()
    renderer = render.BackgroundRenderer([events], mode=mode)
    with pytest.warns(UserWarning) as warned:
        for step in (1, 2):
            renderer.submit("bad", int, {}, step)  # int() returns 0; a builtin, so a worker process can unpickle it
            renderer.submit("good", heatmap, {"matrix": np.eye(3)}, step)
        renderer.finish()
    [said] = [str(w.message) for w in warned if "could not be drawn" in str(w.message)]  # once, at either step
    assert said.endswith("could not be drawn: TypeError('int returned 0, not a matplotlib Figure')")
    assert sorted(events.written) == [("good", 1), ("good", 2)]


def test_a_figure_that_cannot_be_drawn_names_its_plugin_and_where_to_see_why(in_tmp):
    """The warning named only the tag, with no traceback anywhere: drawn in a worker, after analyze() returned."""
    findings = Findings()
    findings.figure("mine/bad", int)  # int() returns 0, not a Figure
    writer = FindingsWriter([TensorBoardLogger(str(in_tmp), name="run")], render="inline")
    with pytest.warns(UserWarning) as warned:
        writer.write(findings, step=5, plugin="MyPlugin")
        writer.finish()
    [said] = [str(w.message) for w in warned if "could not be drawn" in str(w.message)]
    assert said == ("figure mine/bad at step 5 could not be drawn (plugin MyPlugin; `python -m prevpos analyze "
                    "--weights CHECKPOINT --plugins MyPlugin` prints its traceback): TypeError('int returned 0, not "
                    "a matplotlib Figure')")


class _MyOVCircuit(OVCircuit):
    pass


def test_the_plugin_is_named_as_analyze_takes_it():
    assert plugin_path(OVCircuit()) == "OVCircuit"  # a built-in: its short name
    assert plugin_path(_MyOVCircuit()) == f"{__name__}._MyOVCircuit"  # else its class path
