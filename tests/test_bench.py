"""`python -m prevpos bench`: real timings in a table and a JSON file; the baseline trains exactly like fit."""

import json
from pathlib import Path

import pytest
import torch

from prevpos.bench.timing import peak_memory_mib
from prevpos.cli import main
from tests.conftest import lightning_info_lines


def run_bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    main(["bench", "--device", "cpu", "--steps", "20", "--steps_per_epoch", "10", "--repeats", "1", "--out", str(out),
          *args])
    return json.loads(out.read_text())


def test_baseline_and_fit_train_the_same_model_and_are_timed(tmp_path, capsys):
    with lightning_info_lines() as lightning_lines:
        report = run_bench(tmp_path, "--runs", "abde")
    assert not lightning_lines  # "GPU available: ...": four lines per fit between the bench's own
    a, b = report["median"]["a"], report["median"]["b"]
    # Same init, batches, loss, clip and schedule: the same held-out accuracy after 20 steps (above chance 0.01).
    assert 0.02 < a["val_acc"] < 0.9 and a["val_acc"] == pytest.approx(b["val_acc"], abs=2e-3)
    for m in (a, b):
        assert 0.5 < m["steps_per_s"] < 1000 and 0 < m["train_s"] < 300 and 100 < m["peak_mib"] < 20000
        assert 0 < m["end_s"] < m["train_s"]  # the last validation (and checkpoint), after the last step
        assert m["time_to_target_s"] is None  # 20 steps cannot reach 0.99
    assert report["ratios"]["b/a steps_per_s"] == pytest.approx(b["steps_per_s"] / a["steps_per_s"])
    assert "needs a CUDA GPU" in report["skipped"]["d"] and "needs a CUDA GPU" in report["skipped"]["e"]
    assert report["analysis_place"] == "thread"  # where (c) would analyse: on a CPU, a thread
    printed = capsys.readouterr().out
    assert "(a) plain PyTorch loop" in printed and "(b) fit, no plugins" in printed and "b/a steps_per_s" in printed
    assert "Moving model to device" not in printed  # TransformerLens's print in (a)


@pytest.mark.slow
def test_plugins_run_is_timed_and_reaches_the_same_accuracy(tmp_path):
    report = run_bench(tmp_path, "--runs", "bc")
    b, c = report["median"]["b"], report["median"]["c"]
    assert c["val_acc"] == pytest.approx(b["val_acc"], abs=2e-3)  # analyses never change training
    assert report["ratios"]["c/b train_s"] >= 1.0
    assert c["end_s"] > b["end_s"]  # the last step's analyses and figures are waited for


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps=0: must be at least 1"),
    (["--steps", "25", "--steps_per_epoch", "10"], "multiple of --steps_per_epoch"),
    (["--runs", "xyz"], "--runs='xyz': use letters from abcde"),
    (["--runs", ""], "--runs='': use letters from abcde"),  # said "--runs=:  need a CUDA GPU"
    (["--device", "cuda"], "no CUDA GPU"),
    (["--device", "tpu"], "bench: argument --device: invalid choice"),  # named no command, as fit's and report's do
    (["--bogus"], "bench: unrecognized arguments: --bogus (`python -m prevpos bench --help` lists the options)"),
    (["--out", "results.json"], "--out results.json: exists, and bench never overwrites a file; pass a new name"),
    (["--out", "missing/b.json"], "--out missing/b.json: the directory missing does not exist"),  # was a traceback after the runs
    (["--out", "missing/"], "--out missing/: the directory does not exist; create it first"),
    # a folder no file can be created in: FileNotFoundError after the runs, their numbers lost (Linux's /proc here)
    pytest.param(["--out", "/proc"], "--out /proc: cannot create /proc/bench.json (No such file or directory); pass "
                 "a folder you can write to", marks=pytest.mark.skipif(not Path("/proc").is_dir(), reason="no /proc")),
    (["--runs", "de"], "--runs=de: (d), (e) need a CUDA GPU, and there is none here: nothing to time"),  # wrote a JSON
    (["--lr", "-1"], "--lr=-1.0: the learning rate must be a positive number"),  # these three were tracebacks
    (["--lr", "inf"], "--lr=inf: the learning rate must be a positive number"),  # ran, to val acc 0.009
    (["--precision", "8"], "argument --precision: invalid choice: '8'"),
    (["--target", "2"], "--target=2.0: a validation accuracy, in (0, 1]"),  # ran, and timed nothing
])
def test_bad_input_is_one_line_before_any_run(args, message, capsys, in_tmp):
    if ("cuda" in args or "de" in args) and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    (in_tmp / "results.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prevpos: error:") and message in err and "\n" not in err
    assert "[bench] repeat" not in err and (in_tmp / "results.json").read_text() == "{}"


def test_the_default_json_never_replaces_an_earlier_one(in_tmp, capsys):
    (in_tmp / "bench.json").write_text("{}")  # an earlier bench's, overwritten before
    main(["bench", "--device", "cpu", "--steps", "20", "--steps_per_epoch", "10", "--repeats", "1", "--runs", "a"])
    assert (in_tmp / "bench.json").read_text() == "{}"
    assert json.loads((in_tmp / "bench_2.json").read_text())["median"]["a"]["steps_per_s"] > 0
    assert capsys.readouterr().out.strip().endswith("wrote bench_2.json")
    (in_tmp / "results").mkdir()  # --out DIR: the same names in it (it said "exists")
    main(["bench", "--device", "cpu", "--steps", "20", "--steps_per_epoch", "10", "--repeats", "1", "--runs", "a",
          "--out", "results"])
    assert json.loads((in_tmp / "results" / "bench.json").read_text())["median"]["a"]["steps_per_s"] > 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {Path('results', 'bench.json')}")


def test_fast_path_runs_train_alike_with_and_without_plugins(tmp_path):
    """(d) and (e), which bench runs on a GPU only; on a CPU the same code runs eagerly."""
    from argparse import Namespace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from prevpos.bench.runs import run_one

    args = Namespace(steps=40, steps_per_epoch=20, batch_size=64, lr=1e-2, warmup_steps=5, target=0.99,
                     steps_per_call=10, precision="32-true")
    d, e = (run_one(kind, args, torch.device("cpu"), str(tmp_path / kind)) for kind in "de")
    assert d["steps"] == e["steps"] == 40 and 0.1 < d["val_acc"] == e["val_acc"] < 0.99  # analyses never change training
    assert e["end_s"] > d["end_s"]  # the last step's analyses and figures are waited for
    images = {}
    for kind in "de":
        (events_file,) = (tmp_path / kind).rglob("events.out.tfevents.*")
        images[kind] = EventAccumulator(str(events_file), size_guidance={"images": 0}).Reload().Tags()["images"]
    assert not images["d"] and any(tag.startswith("attention/") for tag in images["e"])


def test_peak_memory_without_linux_proc_is_unknown_not_a_traceback(monkeypatch, tmp_path):
    """macOS has no /proc: bench's CPU runs ended in FileNotFoundError after every run had trained (then NaN in the
    JSON, which strict parsers refuse: helper-20)."""
    assert peak_memory_mib(torch.device("cpu")) > 0  # Linux: this process's peak resident memory
    read_text = Path.read_text

    def no_proc(self, *args, **kwargs):
        if str(self).startswith("/proc/"):
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_proc)
    assert peak_memory_mib(torch.device("cpu")) is None
    report = run_bench(tmp_path, "--runs", "a")
    assert report["median"]["a"]["peak_mib"] is None and report["runs"]["a"][0]["peak_mib"] is None
