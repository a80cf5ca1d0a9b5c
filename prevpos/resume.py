"""`fit --resume RUN_DIR`: continue a run from its last checkpoint, in its own TensorBoard run directory."""

import csv
import os
import re
import shlex
import warnings
from pathlib import Path

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from prevpos.checkpoints import fit_finished, names_a_file, read_checkpoint
from prevpos.ctrl_c import stopped_by_sigterm
from prevpos.errors import ConfigError
from prevpos.step_files import FIGURES, TEXTS, evaluation_logged_in, file_step, in_number_order, run_holding


def last_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint `fit --resume RUN_DIR` continues from (RunCheckpoint rewrites it at every epoch)."""
    return Path(run_dir, "checkpoints", "last.ckpt")


def expand_resume(argv: list[str]) -> list[str]:
    """Rewrite `fit --resume RUN_DIR [overrides]` into the run's own config, logger version and last checkpoint.

    The purge step makes TensorBoard drop whatever the crashed process logged from the checkpoint's step on
    (the plugins log that step again at train start), so each curve stays one line with every step once.
    """
    run_dir, rest = _pop_resume(argv)
    if run_dir is None:
        return argv
    if argv[0] != "fit":
        raise ConfigError(f"--resume works with `fit` only (got `{argv[0]}`); use --ckpt_path FILE with {argv[0]}")
    if any(arg == "--config" or arg.startswith("--config=") for arg in rest):
        raise ConfigError("--resume RUN_DIR reads RUN_DIR/config.yaml itself: drop --config (other options still "
                          "override it, e.g. --trainer.max_epochs 48)")
    config, last = run_dir / "config.yaml", last_checkpoint(run_dir)
    if run_dir.is_file():
        run = run_holding(run_dir)
        hint = f": --resume {run}" if run else ""
        raise ConfigError(f"--resume {run_dir}: a file; --resume takes the run's directory (it continues from "
                          f"RUN_DIR/checkpoints/last.ckpt){hint}")
    evaluation = evaluation_logged_in(run_dir)
    if evaluation and not (run_dir / "checkpoints").exists():
        evaluated = run_dir.parent.parent
        hint = (f"; to go on training the run it evaluated: --resume {evaluated}"
                if last_checkpoint(evaluated).is_file()
                else "; --resume takes a training run's directory, lightning_logs/<name>/version_N")
        raise ConfigError(f"--resume {run_dir}: the log of `prevpos {evaluation}`, not of a training run{hint}")
    kept = sorted(last.parent.glob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    if config.is_file() and not last.is_file() and kept:  # the advice below would have thrown its training away
        raise ConfigError(f"--resume {run_dir}: the run kept no {last.name} (checkpoint.save_last false?), which "
                          f"--resume continues; to go on from its newest checkpoint, in a new run: "
                          f"{_new_run(config, rest, kept[-1])}")
    if config.is_file() and not last.is_file():
        raise ConfigError(f"--resume {run_dir}: the run stopped before its first checkpoint (it has no {last}), so "
                          f"there is nothing to go on from; start it again: {_new_run(config, rest)}")
    if not config.is_file() or not last.is_file():
        missing = config if not config.is_file() else last
        runs = in_number_order([p for p in run_dir.glob("version_*") if (p / "config.yaml").is_file()])
        hint = f" It holds the runs {', '.join(p.name for p in runs)}: pass one." if runs else ""
        raise ConfigError(f"--resume {run_dir}: {missing} does not exist; RUN_DIR is a directory like "
                          f"lightning_logs/default/version_0 from an earlier `fit`.{hint}")
    locked = next((folder for folder in (run_dir, last.parent) if not os.access(folder, os.W_OK)), None)
    if locked is not None:  # TensorBoard's writer thread failed on it with a traceback of its own
        raise ConfigError(f"--resume {run_dir}: cannot write into {locked} (read-only, or another user's), where the "
                          "resumed run goes on writing its logs and checkpoints; copy the run somewhere you can write "
                          "to and resume the copy")
    if any(arg.split("=", 1)[0] == "--checkpoint.dirpath" for arg in rest):
        raise ConfigError(f"--resume {run_dir}: a resumed run writes its checkpoints where it did, in {last.parent}: "
                          "drop --checkpoint.dirpath (elsewhere, the next --resume would go back to the last one "
                          "there)")
    others = [path for path in kept if path != last]
    instead = (f"to go on from its newest other checkpoint, in a new run: {_new_run(config, rest, others[-1])}"
               if others else f"the run kept no other checkpoint; start it again: {_new_run(config, rest)}")
    step = read_checkpoint(last, named_by=f"--resume {run_dir}:", fix=instead).get("global_step", 0)
    logger = (_run_config(config).get("trainer") or {}).get("logger")
    if not isinstance(logger, dict) or "class_path" not in logger:
        raise ConfigError(f"--resume {run_dir}: its config.yaml has no single logger to continue; use "
                          f"--config {config} --ckpt_path {last} (this starts a new log directory)")
    init = logger.get("init_args") or {}
    # W&B's `name` is the run's display name; its folder between save_dir and the run id is the project.
    folder_key = "project" if logger["class_path"].endswith("WandbLogger") else "name"
    args = ["fit", "--config", str(config), *_same_log_dir(run_dir, init, folder_key)]
    if logger["class_path"].endswith("TensorBoardLogger"):
        # Lightning logged the checkpoint's last batch at step - 1; the resumed run writes from `step` on.
        # hp_metric's placeholder point at step 0 is already in the run.
        args += [f"--trainer.logger.init_args.purge_step={step}", "--trainer.logger.init_args.default_hp_metric=false"]
    return [*args, f"--ckpt_path={last}", *rest]


def _new_run(config: Path, rest: list[str], checkpoint: Path | None = None) -> str:
    """The `fit` command, quoted for the shell, that starts a new run from the run's config (and a checkpoint), with
    the options the user gave --resume: the config holds the first session's (max_epochs, say)."""
    from_checkpoint = ["--ckpt_path", str(checkpoint)] if checkpoint is not None else []
    return f"`{shlex.join(['python', '-m', 'prevpos', 'fit', '--config', str(config), *from_checkpoint, *rest])}`"


def _run_config(config: Path) -> dict:
    """The run's config.yaml as a dict, or ConfigError naming the file (it may have been edited by hand)."""
    try:
        loaded = yaml.safe_load(config.read_text())
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" (line {where.line + 1}: {getattr(error, 'problem', '')})" if where is not None else ""
        raise ConfigError(f"--resume: {config} is not valid YAML{at}: mend it (the resumed run takes its settings "
                          "from there)") from None
    if not isinstance(loaded, dict | None) or not isinstance((loaded or {}).get("trainer") or {}, dict):
        raise ConfigError(f"--resume: {config} is not a fit config (a mapping with trainer:, model:, data:); mend it")
    return loaded or {}


def _pop_resume(argv: list[str]) -> tuple[Path | None, list[str]]:
    for i, arg in enumerate(argv):
        if arg == "--resume":
            if i + 1 >= len(argv):
                raise ConfigError("--resume needs a run directory, e.g. --resume lightning_logs/default/version_0")
            return Path(argv[i + 1]), argv[1:i] + argv[i + 2:]
        if arg.startswith("--resume="):
            return Path(arg.split("=", 1)[1]), argv[1:i] + argv[i + 1:]
    return None, argv


def _same_log_dir(run_dir: Path, init: dict, folder_key: str = "name") -> list[str]:
    """Logger arguments whose log_dir is `run_dir` (save_dir/<folder_key>/version), spelled as the run spelled them
    when they resolve to it.

    ModelCheckpoint compares the saved `dirpath` string with the new one; identical spelling lets it keep
    `last_model_path` and overwrite last.ckpt instead of starting last-v1.ckpt.
    """
    save_dir, folder = init.get("save_dir"), init.get(folder_key)
    folder = run_dir.parent.name if folder is None else folder  # W&B's project: null in the config, its default
    if save_dir is None or Path(save_dir, folder, run_dir.name).resolve() != run_dir.resolve():
        save_dir, folder = str(run_dir.parent.parent), run_dir.parent.name
    # version_N as the number N, as a new run's is: the progress bar shows a string version's last 4 characters.
    numbered = re.fullmatch(r"version_(\d+)", run_dir.name) if folder_key == "name" else None
    version = numbered.group(1) if numbered else run_dir.name
    return [f"--trainer.logger.init_args.save_dir={save_dir}", f"--trainer.logger.init_args.{folder_key}={folder}",
            f"--trainer.logger.init_args.version={version}"]


FOLDER_PER_RUN = (TensorBoardLogger, CSVLogger)  # loggers whose log_dir is the run's own version_N


def logs_a_folder_per_run(trainer) -> bool:
    """Is trainer.log_dir this run's own folder, known before fit starts (TensorBoard's and CSV's version_N)? With no
    logger it is the working directory; W&B and MLflow keep one folder for all their runs (see run_folder)."""
    return bool(trainer.loggers) and isinstance(trainer.loggers[0], FOLDER_PER_RUN)


def run_folder(trainer) -> str | None:
    """This run's own folder, from fit's setup on: the logger's version folder, or for a logger that keeps one folder
    for all its runs (W&B, MLflow), the one Lightning puts this run's checkpoints/ in; None without a logger."""
    if logs_a_folder_per_run(trainer):
        return trainer.log_dir
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None or logger.save_dir is None:
        return None
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return os.path.join(logger.save_dir, str(logger.name), version)


def check_run_dir(trainer, ckpt_path) -> None:
    """Refuse to start a new run (no checkpoint) in a directory that already holds one, before anything is written."""
    log_dir = trainer.log_dir if logs_a_folder_per_run(trainer) else None
    if ckpt_path is None and log_dir is not None and Path(log_dir, "config.yaml").is_file():
        raise ConfigError(f"{log_dir} already holds a run (config.yaml): continue it with `python -m prevpos fit "
                          f"--resume {log_dir}`, or start a new one with trainer.logger.init_args.version unset")


def keep_csv_history(trainer, checkpoint: dict | None) -> None:
    """A resumed run logged by a CSVLogger keeps its metrics.csv rows from before the checkpoint's step, as its
    TensorBoard events are kept (purge_step). Lightning's CSV logger deletes metrics.csv when it opens a folder that
    holds one: resuming lost the first session's metrics. Figures and text files from the checkpoint's step on go,
    as those events do: the resumed run draws its own."""
    logger = trainer.logger
    if not (isinstance(logger, CSVLogger) and trainer.is_global_zero and checkpoint is not None):
        return
    step = checkpoint.get("global_step", 0)
    for folder in (FIGURES, TEXTS):
        for file in Path(logger.log_dir, folder).rglob("step_*"):
            drawn_at = file_step(file)
            if drawn_at is not None and drawn_at >= step:
                file.unlink()
    metrics = Path(logger.log_dir, "metrics.csv")
    if not metrics.is_file():
        return
    with open(metrics, newline="") as file:
        kept = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file) if float(row["step"]) < step]
    with warnings.catch_warnings():  # "Previous log files ... will be deleted": not these rows
        warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
        writer = logger.experiment  # opening it deletes metrics.csv
    writer.metrics[:0] = kept  # its first save writes them first


def purge_in_tensorboards_own_reader(trainer) -> None:
    """A second SessionLog START at a resumed TensorBoard run's purge step. TensorBoard's own reader (behind its
    UI: plugin_event_accumulator) takes a run's first START for the start of its first session and purges nothing
    at it; a fit writes none, so the resume's was that first one, and the steps the crashed session logged past the
    checkpoint showed twice in TensorBoard (the older EventAccumulator, which `report` reads, purged them)."""
    logger = trainer.logger
    step = logger._kwargs.get("purge_step") if isinstance(logger, TensorBoardLogger) else None
    if step is None or not trainer.is_global_zero:
        return
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    logger.experiment._get_file_writer().add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))


def expect_own_checkpoints(ckpt_path) -> None:
    """A fit from RUN_DIR/checkpoints/FILE that writes on into that folder is a resume: Lightning's warning that the
    folder "exists and is not empty" read as a threat to the very files it resumes from."""
    if not names_a_file(ckpt_path):
        return
    folder = Path(ckpt_path).parent
    # Lightning names the folder as the logger spells it, which need not be as --ckpt_path (or --resume) did.
    for spelling in {str(folder), str(folder.resolve()), os.path.relpath(folder.resolve())}:
        warnings.filterwarnings("ignore", message=f"Checkpoint directory {re.escape(spelling)} exists and is not empty")


def _finished_the_fit(checkpoint: Path, trainer) -> bool:
    """Has `checkpoint` reached the fit's end (a stop during the end wait for the plugins), so that --resume would
    have nothing to train?"""
    try:
        saved = read_checkpoint(checkpoint)
    except ConfigError:  # unreadable: --resume will say so itself
        return False
    return fit_finished(saved, trainer.max_epochs, trainer.max_steps) is not None


class ResumableSaveConfig(SaveConfigCallback):
    """Save config.yaml as Lightning does; a resumed run records its own invocation as config.resume{N}.yaml. After
    Ctrl-C or SIGTERM (Lightning stops gracefully either way), say how to go on."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        by = "" if isinstance(exception, KeyboardInterrupt) else " by SIGTERM" if stopped_by_sigterm(exception) else None
        run_dir = run_folder(trainer)
        if by is None or run_dir is None:  # a failure says what it is itself; with no logger there is no run to go on
            return
        last = last_checkpoint(run_dir)
        if last.is_file() and _finished_the_fit(last, trainer):
            rank_zero_info(f"prevpos: stopped{by} after the last step ({trainer.global_step}), while the last analyses "
                           f"and figures were written; the trained model is in {last}: `python -m prevpos analyze "
                           f"--weights {last} --out DIR` redraws the last step's figures")
        elif last.is_file():
            rank_zero_info(f"prevpos: stopped{by} at step {trainer.global_step}; "
                           f"`python -m prevpos fit --resume {run_dir}` goes on from checkpoints/last.ckpt (the last "
                           "epoch's end)")
        else:
            rank_zero_info(f"prevpos: stopped{by} at step {trainer.global_step}, before the run's first checkpoint: "
                           f"nothing to go on from; run the command again ({run_dir} holds only its first logs)")

    def setup(self, trainer, pl_module, stage: str) -> None:
        run_dir = run_folder(trainer)
        if self.already_saved or run_dir is None:  # no logger: Lightning would write ./config.yaml, once
            return
        if Path(run_dir, self.config_filename).is_file():
            check_run_dir(trainer, self.config.get("ckpt_path"))
            n = 1
            while Path(run_dir, f"config.resume{n}.yaml").exists():
                n += 1
            self.config_filename = f"config.resume{n}.yaml"
        if logs_a_folder_per_run(trainer):
            return super().setup(trainer, pl_module, stage)
        # Lightning would save every W&B run's config to one save_dir/config.yaml, and refuse the second run's.
        if trainer.is_global_zero:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, os.path.join(run_dir, self.config_filename), skip_none=False,
                             overwrite=self.overwrite, multifile=self.multifile)
        self.already_saved = True
