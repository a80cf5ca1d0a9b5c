"""Read a finished run (TensorBoard events, or a CSV log with its figures as files; config.yaml, last checkpoint) or
an `analyze` output directory."""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prevpos.errors import ConfigError
from prevpos.live_fit import training_now
from prevpos.step_files import EVALUATIONS, FIGURES, evaluation_logged_in, file_step, in_number_order, run_holding


@dataclass
class RunRecord:
    """Everything a report shows, as plain data: scalar series, images as PNG bytes, config, notes."""

    path: Path
    kind: str  # "run" (training events: has a timeline) or "analyze" (one snapshot: metrics.json + PNGs)
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    images: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    config: dict | None = None
    notes: list[str] = field(default_factory=list)
    training_now: str | None = None  # what to say of it if a fit is training it right now (also among the notes)
    logged_in: str = "TensorBoard events"  # what its reader read a training run from

    @property
    def final(self) -> dict[str, float]:
        return {tag: series[-1][1] for tag, series in self.scalars.items() if series}

    @property
    def n_tokens(self) -> int:
        """The ordinary tokens the run's data drew from (data.n_tokens, resolved as PrevTokenData resolves it)."""
        config = self.config or {}
        vocab = (config.get("model") or {}).get("d_vocab", 101)
        data = config.get("data") or {}
        return vocab if data.get("notebook_generator") else data.get("n_tokens") or vocab - 1

    def image_at(self, tag: str, step: int | None = None) -> bytes | None:
        """The image logged at `step` (None: the last one)."""
        series = self.images.get(tag, [])
        matches = [png for s, png in series if step is None or s == step]
        return matches[-1] if matches else None


def read_run(path: str | Path) -> RunRecord:
    path = Path(path)
    if not path.is_dir():
        run = run_holding(path) if path.is_file() else None
        hint = (f": a file; pass its run's directory, {run}" if run else ": a file, not a directory"
                if path.is_file() else ": no such directory")
        raise ConfigError(f"{path}{hint} (report reads a run directory, lightning_logs/<name>/version_N)")
    if any(path.glob("events.out.tfevents.*")):
        return _read_events(path)
    if (path / "metrics.csv").is_file():
        return _read_csv_run(path)
    if (path / "metrics.json").is_file():
        return _read_analyze(path)
    if _logged_to_wandb(path):
        raise ConfigError(f"{path} is a W&B run: its scalars and figures are in W&B (offline: `wandb sync` the "
                          "run's folder under lightning_logs/wandb); `report` reads TensorBoard and CSV runs")
    runs = [p.name for p in in_number_order([p for p in path.iterdir() if p.is_dir() and _holds_a_log(p)])]
    if runs and path.name in EVALUATIONS:
        raise ConfigError(f"{path} holds the logs of `prevpos {path.name}` ({', '.join(runs)}), not a training run")
    if not runs:  # lightning_logs: its runs are a level down
        runs = [f"{p.parent.name}/{p.name}" for folder in sorted(path.iterdir()) if folder.is_dir()
                for p in in_number_order([p for p in folder.glob("version_*") if p.is_dir() and _holds_a_log(p)])]
    hint = f" It holds the runs {', '.join(runs)}: pass one (or several, for a table across them)." if runs else ""
    raise ConfigError(f"{path} has no TensorBoard events, no metrics.csv and no metrics.json: is it a run directory "
                      f"(lightning_logs/<name>/version_N) or a `prevpos analyze` output?{hint}")


def _logged_to_wandb(path: Path) -> bool:
    """Does the run's config.yaml name W&B's logger (whose run folder holds only the config and checkpoints)?"""
    try:
        logger = yaml.safe_load((path / "config.yaml").read_text())["trainer"]["logger"]
        return str(logger["class_path"]).endswith("WandbLogger")
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return False


def _holds_a_log(path: Path) -> bool:
    return any(path.glob("events.out.tfevents.*")) or (path / "metrics.csv").is_file()


def read_runs(paths: list[Path]) -> tuple[list[RunRecord], list[ConfigError]]:
    """The runs among several that can be read, and why each other one cannot; the first error if none can."""
    runs, unreadable = [], []
    for path in paths:
        try:
            runs.append(read_run(path))
        except ConfigError as error:
            unreadable.append(error)
    if not runs:
        raise unreadable[0]
    return runs, unreadable


def _read_events(path: Path) -> RunRecord:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from prevpos.fast import tensorboard_crc

    tensorboard_crc.install()  # reading a default run's 4 MB of events: 0.61 -> 0.03 s (CPU)
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})  # 0 = every event
    events.Reload()
    tags = events.Tags()
    run = RunRecord(path, "run")
    for tag in tags["scalars"]:
        by_step = {e.step: e.value for e in events.Scalars(tag)}  # the last value wins if a step repeats
        run.scalars[tag] = sorted(by_step.items())
    for tag in tags.get("tensors", []):  # a plugin that failed: its first failure's line (the page said nothing)
        if tag.startswith("plugin_errors/") and (failures := events.Tensors(tag)):
            run.notes.append(failures[0].tensor_proto.string_val[0].decode().split("\n", 1)[0]
                             + f" (its traceback: text {tag.removesuffix('/text_summary')} in TensorBoard)")
    for tag in tags["images"]:  # in step order: figures reach the file as each is drawn, not in step order
        by_step = {e.step: e.encoded_image_string for e in events.Images(tag)}  # the last wins, as for scalars
        run.images[tag] = sorted(by_step.items())
    return _finish_run(path, run, "its TensorBoard events hold")


def _read_csv_run(path: Path) -> RunRecord:
    """A run logged with --trainer.logger CSVLogger: metrics.csv, and its figures in FIGURES/<tag>/step_N.png."""
    run = RunRecord(path, "run", scalars=_csv_scalars(path / "metrics.csv"), logged_in="metrics.csv")
    for png in sorted((path / FIGURES).rglob("step_*.png")):
        step = file_step(png)
        if step is not None:
            run.images.setdefault(png.parent.relative_to(path / FIGURES).as_posix(), []).append((step, png.read_bytes()))
    for series in run.images.values():
        series.sort(key=lambda item: item[0])
    return _finish_run(path, run, "its metrics.csv holds")


def _csv_scalars(file: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} from a Lightning CSV log: one row per logging call, blank where a tag was not logged."""
    by_tag: dict[str, dict[int, float]] = {}
    try:
        with open(file, newline="") as rows:
            for row in csv.DictReader(rows):
                step = int(float(row.pop("step")))
                for tag, value in row.items():
                    if value not in ("", None):
                        by_tag.setdefault(tag, {})[step] = float(value)  # the last value wins if a step repeats
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file} is not a Lightning CSV log (a 'step' column and numbers): {error!r}")
    return {tag: sorted(by_step.items()) for tag, by_step in by_tag.items()}


def _finish_run(path: Path, run: RunRecord, log: str) -> RunRecord:
    if not run.scalars:
        raise ConfigError(f"{path}: {log} no scalars yet: the run is half-written (stopped or still in its first steps)")
    refuse_an_evaluation_log(path, run)
    _add_test_results(path, run)
    run.config = _read_config(path / "config.yaml", run)
    run.training_now = _still_training(run)
    if run.training_now:
        run.notes.append(run.training_now)
    elif not (path / "checkpoints" / "last.ckpt").is_file():
        run.notes.append("no checkpoints/last.ckpt: the run may not have finished (or ran without checkpointing)")
    return run


def _still_training(run: RunRecord) -> str | None:
    """What to say of a run that a fit is training right now, if one is."""
    holder = training_now(run.path)
    if holder is None:
        return None
    last = max(step for series in run.scalars.values() for step, _ in series)
    return (f"the run is still training (process {holder['pid']}, started {holder.get('started')}): this page shows "
            f"it up to step {last}; run `report` again when the fit ends")


def refuse_an_evaluation_log(path: Path, run: RunRecord) -> None:
    """ConfigError with the numbers, if `path` is where `prevpos validate|test` logged (RUN_DIR/test/version_N, or
    lightning_logs/<name>/test/version_N for a checkpoint outside a run): a few numbers at one step, not a story; and
    its config.yaml is the evaluation's, whose training settings are defaults, not the run's."""
    command = evaluation_logged_in(path)
    if command is None or any(tag.startswith("train/") for tag in run.scalars):
        return
    shown = [tag for tag in (f"{'test' if command == 'test' else 'val'}/{name}" for name in ("acc", "loss"))
             if tag in run.scalars]
    numbers = ", ".join(f"{tag} {run.scalars[tag][-1][1]:.4g}" for tag in shown)
    step = f" at step {run.scalars[shown[0]][-1][0]}" if shown else ""
    run_dir = path.parent.parent
    if command == "test" and (run_dir / "config.yaml").is_file() and _holds_a_log(run_dir):
        where = f"`python -m prevpos report {run_dir}` shows them in its run's story"
    else:
        where = "report reads training runs (lightning_logs/<name>/version_N)"
    raise ConfigError(f"{path} is the log of `prevpos {command}`, not of a training run: {numbers}{step}; {where}")


def _add_test_results(path: Path, run: RunRecord) -> None:
    """The test/* scalars of `prevpos test` on this run's checkpoints (logged in RUN_DIR/test/version_N); where
    two evaluated the same step, the later one's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    versions = [p for p in (path / "test").glob("version_*") if p.name.removeprefix("version_").isdigit()]
    for version in sorted(versions, key=lambda p: int(p.name.removeprefix("version_"))):
        if (version / "metrics.csv").is_file():  # `prevpos test --trainer.logger CSVLogger`
            logged = _csv_scalars(version / "metrics.csv")
        else:
            events = EventAccumulator(str(version), size_guidance={"scalars": 0})
            events.Reload()
            logged = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
        for tag in (t for t in logged if t.startswith("test/")):
            run.scalars[tag] = sorted((dict(run.scalars.get(tag, [])) | dict(logged[tag])).items())


def _read_analyze(path: Path) -> RunRecord:
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path / 'metrics.json'} is not valid JSON ({error}): was `prevpos analyze` interrupted?")
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise ConfigError(f"{path / 'metrics.json'} is not a flat {{tag: number}} map: not written by `prevpos analyze`")
    config = _read_config(path / "config.yaml", RunRecord(path, "analyze")) if (path / "config.yaml").is_file() else None
    step = (config or {}).get("step", 0)  # the analysed checkpoint's training step (older outputs: unknown, 0)
    run = RunRecord(path, "analyze", scalars={tag: [(step, float(v))] for tag, v in metrics.items()}, config=config)
    for png in sorted(path.rglob("*.png")):
        run.images[png.relative_to(path).with_suffix("").as_posix()] = [(step, png.read_bytes())]
    return run


REPORTED_SECTIONS = ("model", "data", "trainer", "analyze")  # the parts of config.yaml the page reads


def _read_config(file: Path, run: RunRecord) -> dict | None:
    if not file.is_file():
        run.notes.append("no config.yaml: the settings of this run are unknown (not started by `python -m prevpos fit`?)")
        return None
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file} is not text (a damaged file?): mend it, or move it aside to report the run without "
                          "its settings") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{file} is not valid YAML: {' '.join(str(error).split())}")
    if not isinstance(config, dict):
        return None
    for section in REPORTED_SECTIONS:  # as fit wrote them; an edit by hand may have made one a number or a list
        if config.get(section) is not None and not isinstance(config[section], dict):
            raise ConfigError(f"{file}: {section}: {' '.join(repr(config[section]).split())[:40]} is not a group of "
                              "settings (fit writes a mapping there): mend it, or remove the line")
    callbacks = (config.get("trainer") or {}).get("callbacks")
    if callbacks is not None and not isinstance(callbacks, list):
        raise ConfigError(f"{file}: trainer: callbacks: not a list (fit writes one entry per callback): mend it, or "
                          "remove the line")
    return config
