"""The plugins' figures and text reach every logger that can keep them, not only TensorBoard: a CSV log gets them as
files beside metrics.csv (and `report` reads such a run as it reads a TensorBoard one), W&B as media at their
training steps. Before, a CSVLogger or WandbLogger run silently dropped every figure."""

import errno
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import Logger
from PIL import Image

from prevpos.analysis.sinks import FolderSink
from prevpos.cli import main
from prevpos.commands.report import main as report
from prevpos.step_files import file_step
from tests.conftest import lightning_info_lines
from tests.test_writer import assert_real_picture, read_images
from tests.wandb_records import wandb_history

RUN = Path("lightning_logs/default/version_0")
FIT = ["fit", "--trainer.max_epochs=2", "--data.steps_per_epoch=2", "--data.batch_size=16", "--data.val_size=32",
       "--data.probe_size=16", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
       "--trainer.callbacks=[{class_path: AttentionPatterns}, {class_path: Explanation}]"]


def png_files(run: Path) -> dict[str, dict[int, np.ndarray]]:
    """{tag: {step: decoded image}} from RUN/figures/<tag>/step_N.png."""
    images: dict[str, dict[int, np.ndarray]] = {}
    for png in (run / "figures").rglob("*.png"):
        tag = png.parent.relative_to(run / "figures").as_posix()
        images.setdefault(tag, {})[file_step(png)] = np.asarray(Image.open(png))
    return images


def without_pictures(html: str) -> str:
    return re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', html)


def test_a_csv_run_keeps_the_figures_and_text_tensorboard_would_and_reports_the_same_story(in_tmp):
    with lightning_info_lines() as said:
        main([*FIT, "--trainer.logger=CSVLogger"])
    main(FIT)  # the same run, seeded, to TensorBoard: version_1
    csv_run, tensorboard_run = in_tmp / RUN, in_tmp / "lightning_logs/default/version_1"
    assert f"prevpos: logging to {RUN}: metrics.csv, and the plugins' figures as PNG files in {RUN}/figures" in said

    files, events = png_files(csv_run), read_images(tensorboard_run)
    assert {tag: sorted(steps) for tag, steps in files.items()} == {tag: sorted(s) for tag, s in events.items()}
    assert sorted(files["attention/mean_pattern/L1H0"]) == [0, 4]
    for tag, steps in files.items():
        for step, image in steps.items():
            assert_real_picture(image)
            assert np.array_equal(image, events[tag][step])  # the same pixels
    table = (csv_run / "texts/explanation/algorithm_params/step_000004.md").read_text()
    assert table.startswith("| attention score, query · key |") and "layer 1 copy gain" in table  # the 16 numbers

    report([str(csv_run)])
    report([str(tensorboard_run)])
    pages = [(run / "report.html").read_text().replace(run.name, "version_N") for run in (csv_run, tensorboard_run)]
    assert "Read from a training run (metrics.csv)" in pages[0]  # each page names what it read
    pages[0] = pages[0].replace("(metrics.csv)", "(TensorBoard events)")
    assert pages[0].count("<img") == pages[1].count("<img") > 10
    # The same page but for the logger's own settings in the config: numbers, timeline, story and figure list.
    differing = {line.strip().split(":")[0] for line in set(without_pictures(pages[0]).splitlines())
                 ^ set(without_pictures(pages[1]).splitlines())}
    assert differing <= {"class_path", "log_graph", "default_hp_metric", "flush_logs_every_n_steps", "sub_dir",
                         "comment", "purge_step", "max_queue", "flush_secs", "filename_suffix"}


def test_a_wandb_run_gets_the_figures_and_text_at_their_training_steps(in_tmp, offline_wandb):
    main([*FIT, "--trainer.logger=WandbLogger", "--trainer.logger.offline=true"])
    main(FIT)  # the same run to TensorBoard, for the figures it should have
    expected = {tag: sorted(steps) for tag, steps in read_images(in_tmp / RUN).items()}

    [run_file] = (in_tmp / "lightning_logs/wandb").glob("offline-run-*/run-*.wandb")
    logged: dict[str, list[int]] = {}
    for row in wandb_history(run_file):
        for key, value in row.items():
            if key.endswith("/_type"):
                logged.setdefault(f"{key.removesuffix('/_type')} {json.loads(value)}", []).append(
                    json.loads(row["trainer/global_step"]))
    assert {tag.removesuffix(" images/separated"): sorted(steps) for tag, steps in logged.items()
            if tag.endswith("images/separated")} == expected
    assert sorted(logged["explanation/algorithm_params html-file"]) == [0, 2, 4]
    pictures = list(run_file.parent.glob("files/media/images/**/*.png"))
    assert len(pictures) == sum(len(steps) for steps in expected.values())
    assert_real_picture(np.asarray(Image.open(io.BytesIO(pictures[0].read_bytes()))))


def test_a_figure_file_stays_inside_its_run_whatever_the_tag(tmp_path):
    """A tag is a path under RUN_DIR/figures; one starting with '/' or holding '..' named a file outside the run."""
    run = tmp_path / "run"
    sink = FolderSink(run)
    for tag in ("/etc/evil", "../../escaped", "plain/./tag"):
        sink.image(tag, 3, b"png")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        "run/figures/escaped/step_000003.png", "run/figures/etc/evil/step_000003.png",
        "run/figures/plain/tag/step_000003.png"]


def test_a_figure_the_disk_had_no_room_for_leaves_no_partial_file(tmp_path, monkeypatch):
    """The half-written hidden file stayed in the run's figures folder."""
    def disk_full(path, content):
        with open(path, "wb") as file:
            file.write(content[:2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left"):
        FolderSink(tmp_path / "run").image("attention/pattern", 3, b"png bytes")
    assert [p.name for p in (tmp_path / "run").rglob("*") if p.is_file()] == []


class ScalarsOnly(Logger):
    """A logger that takes scalars and nothing else (as MLflow's does through Lightning's API)."""

    name, version = "scalars", 0
    rows: list = []

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_a_logger_that_keeps_no_figures_is_named_as_the_fit_starts(in_tmp):
    with lightning_info_lines() as said:
        main([*FIT, "--trainer.logger=tests.test_figure_sinks.ScalarsOnly"])
    assert [line for line in said if "figures" in line] == [
        "prevpos: ScalarsOnly takes scalars only: the plugins' figures and text go nowhere (a TensorBoardLogger, "
        "CSVLogger or WandbLogger beside it keeps them)"]
    assert any("attention/prev_token_score/L1H0" in metrics for _, metrics in ScalarsOnly.rows)
    assert not list(in_tmp.rglob("*.png"))
