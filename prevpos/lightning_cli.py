"""prevpos's LightningCLI: fit's defaults, one-line errors, and the checks fit, validate and test make before they
start. Only the commands that train or evaluate import it (`prevpos/cli.py`): Lightning alone takes seconds to import."""

import inspect
import re
import shlex
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from prevpos.analysis.plugin import plugins_of
from prevpos.analysis.probe_memory import refuse_a_probe_too_big
from prevpos.analysis.sinks import figures_kept_nowhere
from prevpos.checkpoints import (AtomicCheckpointIO, RunCheckpoint, check_fits, names_a_file, read_checkpoint,
                                 refuse_a_file_as_the_folder, refuse_another_runs_checkpoints, refuse_fewer_epochs,
                                 refuse_last_or_best, refuse_unknown_model_settings, replaced_settings,
                                 stop_a_finished_fit)
from prevpos.cli import LIGHTNING_COMMANDS
from prevpos.dashboard import MechanismDashboard
from prevpos.data import SEQUENCE_KEYS, PrevTokenData
from prevpos.errors import ConfigError
from prevpos.evaluation import log_beside_the_run, require_checkpoint_file, run_dir_of
from prevpos.fast import training as fast_path
from prevpos.fast.threads import CpuThreads
from prevpos.fit_settings import (refuse_monitors_the_wrong_way, refuse_no_devices, refuse_unknown_monitors,
                                  refuse_unrunnable_loop)
from prevpos.guards import StopOnDivergence, WarnOnCollapse
from prevpos.input_errors import as_config_error, explain_parser_error
from prevpos.live_fit import refuse_a_live_run
from prevpos.module import PrevTokenModel, fit_metric_names
from prevpos.optimizer import refuse_float16_weights
from prevpos.progress import calm_default_progress_bar
from prevpos.registry import discover_plugins, drop_repeated_plugins
from prevpos.resume import (ResumableSaveConfig, check_run_dir, expect_own_checkpoints, keep_csv_history,
                            logs_a_folder_per_run, purge_in_tensorboards_own_reader)
from prevpos.run_lock import RunLock, claim_a_new_version, share_the_run_folder
from prevpos.step_files import EVALUATIONS, FIGURES
from prevpos.switches import (LOG_EVERY_N_STEPS, LOGS, logs_under_root_dir, nothing_logged, refuse_logging_in_barebones,
                              refuse_mistyped_writer_settings)
from prevpos.wandb_runs import drop_unset_anonymous, make_wandb_folders
from prevpos.weights import data_settings_of

BUILTIN_PLUGINS = [
    "prevpos_plugins.attention.AttentionPatterns",
    "prevpos_plugins.ov_circuit.OVCircuit",
    "prevpos_plugins.qk_terms.QKTermImportance",
    "prevpos_plugins.adversarial.AdversarialExamples",
    "prevpos_plugins.explanation.Explanation",
    "prevpos_plugins.length.LengthGeneralization",
]

TRAINER_DEFAULTS = {
    # 60 epochs x 10 steps = 600 steps: ~0.99 val acc by step ~300 at lr 3e-3, the rest polishes. Short epochs
    # because most plugins run at each of the first 12 epoch ends: val acc first passes 0.9 at step ~95-100 (3
    # seeds), so 10 snapshots (steps 0, 10, ..., 90) show the transition forming.
    "max_epochs": 60,
    "log_every_n_steps": LOG_EVERY_N_STEPS,
    "gradient_clip_val": 1.0,  # with the cosine decay, keeps 10x-longer runs from the lr-1e-2 style collapse
    "precision": "32-true",  # bf16-mixed measured slower for this tiny model (README)
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
               # No hp_metric: the dashboard writes a HPARAMS table of its own (prevpos/dashboard.py).
               "init_args": {"save_dir": LOGS, "name": "default", "default_hp_metric": False}},
}

# The loss check reads the loss on the host, a GPU sync: every log_every_n_steps steps, not every step (the
# weights are still checked before every checkpoint).
GUARD = {"check_every_n_steps": TRAINER_DEFAULTS["log_every_n_steps"]}

# Its own config section (`--checkpoint.every_n_epochs 2`, `--checkpoint.every_n_train_steps 100`), so replacing
# trainer.callbacks never drops it: last.ckpt every epoch is what `fit --resume RUN_DIR` continues from. No
# every_n_epochs here: unset, Lightning checkpoints every epoch unless another trigger is given (it refuses two).
CHECKPOINT_DEFAULTS = {"save_last": True, "save_top_k": 1, "monitor": "val/acc", "mode": "max",
                       "filename": "best-{epoch}-{step}"}

DEFAULT_CALLBACKS = [{"class_path": path} for path in BUILTIN_PLUGINS]

# The top of `fit --help`: --resume is expanded before LightningCLI parses, so it is in no option list.
FIT_DESCRIPTION = ("Train (no options: the default experiment; --config experiments/NAME.yaml for another; the options "
                   "below override either). `--resume RUN_DIR` continues a run that stopped, from "
                   "RUN_DIR/checkpoints/last.ckpt, in the same TensorBoard run; other options still override its "
                   "config, e.g. --resume lightning_logs/default/version_0 --trainer.max_epochs 120.")


class OneLineErrorParser(LightningArgumentParser):
    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # jsonargparse's nested parsers raise and retry: keep that behaviour
            return super().error(message, ex)
        named = re.search(r"Subcommand '(\w+)'", message)
        command = named.group(1) if named else (self.prog or "fit").split()[-1]
        command = command if command in LIGHTNING_COMMANDS else "fit"
        print(f"prevpos: error: {explain_parser_error(message, self)} (`python -m prevpos {command} --help` "
              "lists the options)", file=sys.stderr)
        sys.exit(2)


class PrevposCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict:
        return {name: hooks for name, hooks in LightningCLI.subcommands().items() if name in LIGHTNING_COMMANDS}

    def add_arguments_to_parser(self, parser):
        # The sequence shape is the model's; the data follows it.
        parser.link_arguments("model.n_ctx", "data.n_ctx")
        parser.link_arguments("model.d_vocab", "data.d_vocab")
        parser.set_defaults({"trainer.callbacks": DEFAULT_CALLBACKS})
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({f"checkpoint.{key}": value for key, value in CHECKPOINT_DEFAULTS.items()})

    def _parse_ckpt_path(self):
        # Lightning reads the checkpoint's hyperparameters here first: a missing or corrupt file fails as one line.
        command = self.config.get("subcommand")
        path = self.config[command].get("ckpt_path") if command else None
        if not names_a_file(path):
            return super()._parse_ckpt_path()
        checkpoint = read_checkpoint(path)
        refuse_unknown_model_settings(checkpoint, inspect.signature(PrevTokenModel).parameters, path)
        given = self.config[command].model.clone()
        super()._parse_ckpt_path()  # the checkpoint's model settings replace the command line's
        defaults = self._subcommand_parsers[command].get_defaults().model
        replaced = replaced_settings("model", vars(given), defaults, self.config[command].model)
        if replaced:
            rank_zero_info(f"prevpos: {command} uses the checkpoint's model settings, not those given: "
                           f"{', '.join(replaced)}")
        if command in EVALUATIONS:
            self._evaluate_on_the_runs_data(command, data_settings_of(checkpoint, Path(path))[0])

    def _evaluate_on_the_runs_data(self, command: str, saved: dict) -> None:
        """validate and test draw the run's held-out data: its tokens and its seed. On the defaults (seed 0), a run
        without BOS scored val/acc 0.10 where its fit logged 0.33; a run of data.seed 1 was tested on its own
        validation set (test draws seed + 2, validation seed + 1), and one of seed 2 on its first training batches."""
        data, defaults = self.config[command].data, self._subcommand_parsers[command].get_defaults().data
        runs = {key: saved[key] for key in SEQUENCE_KEYS if key in saved}
        replaced = replaced_settings("data", {key: getattr(data, key) for key in runs}, defaults, runs)
        for key, value in runs.items():
            setattr(data, key, value)
        if replaced:
            rank_zero_info(f"prevpos: {command} uses the run's data settings, not those given: {', '.join(replaced)}")

    def _set_seed(self):
        try:
            super()._set_seed()
        except ValueError as error:  # Lightning's seed_everything: out of numpy's range, or not a number
            raise ConfigError(f"seed_everything: {error} (or true: a random seed; false: none)") from None

    def instantiate_classes(self):
        try:
            super().instantiate_classes()
        except Exception as error:  # a bad value reaching a constructor: one line, not a traceback
            raise (as_config_error(error) or error) from None

    def instantiate_trainer(self, **kwargs):
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        configured = list(config["trainer"].get("callbacks") or [])  # Lightning extends that very list
        trainer_config = {**config["trainer"], **kwargs}
        # LightningCLI adds the `checkpoint` section's callback whatever the trainer says, and Lightning then
        # refused trainer.enable_checkpointing false (and barebones) because a ModelCheckpoint was there.
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        if trainer_config.get("enable_checkpointing") is False or trainer_config.get("barebones"):
            extra = [callback for callback in extra if not isinstance(callback, ModelCheckpoint)]
        trainer = self._instantiate_trainer(trainer_config, extra)
        drop_unset_anonymous(trainer.loggers)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        calm_default_progress_bar(trainer, configured)
        return trainer

    def _check_ckpt_path(self):
        path = self.config[self.subcommand].get("ckpt_path")
        checkpoint = read_checkpoint(path) if names_a_file(path) else None
        if checkpoint is not None:
            check_fits(checkpoint, self.model, path)
        if self.subcommand == "fit":
            self._check_the_fit(path, checkpoint)
        make_wandb_folders(self.trainer.loggers)  # nothing after this refuses the command

    def _check_the_fit(self, path, checkpoint):
        """fit's own refusals (a resume to fewer epochs, a run folder in use), the end of a fit already finished,
        and the new version_N."""
        if checkpoint is not None:
            refuse_fewer_epochs(checkpoint, self.trainer.max_epochs, path, self.trainer.fast_dev_run)
            if not self.trainer.fast_dev_run:  # which sets max_steps itself
                stop_a_finished_fit(checkpoint, self.trainer.max_epochs, self.trainer.max_steps, path)
        if self.trainer.is_global_zero and not self._version_chosen():
            claim_a_new_version(self.trainer.logger)  # a new, empty version_N: the checks below cannot refuse it
            share_the_run_folder(self.trainer.loggers)
        check_run_dir(self.trainer, path)
        # Before a resume writes into the run (W&B's run folder is known from setup on: RunLock checks it).
        run_dir = self.trainer.log_dir if logs_a_folder_per_run(self.trainer) else None  # all ranks ask
        if self.trainer.is_global_zero and run_dir is not None:
            refuse_a_live_run(run_dir)
        keep_csv_history(self.trainer, checkpoint)
        purge_in_tensorboards_own_reader(self.trainer)
        expect_own_checkpoints(path)

    def _version_chosen(self) -> bool:
        """Does the config name the (first) logger's version, or have no logger to name one for?"""
        logger = self.config[self.subcommand].trainer.logger
        init = getattr(logger[0] if isinstance(logger, list) and logger else logger, "init_args", None)
        return init is None or init.get("version") is not None

    before_validate = before_test = _check_ckpt_path

    def before_fit(self):
        if plugins_of(self.trainer):  # before _check_ckpt_path makes the run's folder
            refuse_a_probe_too_big(self.model.model, self.datamodule.probe_size, self.trainer.strategy.root_device,
                                   "data.probe_size")
        self._check_ckpt_path()
        logger = self.trainer.logger
        if isinstance(logger, TensorBoardLogger):  # the point of the tool: watch a run as it trains
            rank_zero_info(f"prevpos: logging to {self.trainer.log_dir}; "
                           f"watch it with `tensorboard --logdir {shlex.quote(str(Path(logger.root_dir).parent))}`")
        elif isinstance(logger, CSVLogger):
            figures = f", and the plugins' figures as PNG files in {Path(logger.log_dir, FIGURES)}" \
                if plugins_of(self.trainer) else ""
            rank_zero_info(f"prevpos: logging to {logger.log_dir}: metrics.csv{figures}")
        elif not self.trainer.loggers:
            rank_zero_info(nothing_logged(self.trainer))
        unkept = figures_kept_nowhere(self.trainer)
        if unkept:
            rank_zero_info(unkept)

    def after_fit(self):
        # Not after a fit that trained no step (max_epochs 0): its logs hold nothing to report.
        if isinstance(self.trainer.logger, (TensorBoardLogger, CSVLogger)) and self.trainer.global_step > 0:
            rank_zero_info("prevpos: the run's story in one page: "
                           f"`python -m prevpos report {shlex.quote(self.trainer.log_dir)}`")

    def _say_where_it_logged(self):
        """validate and test log beside the run they evaluate (prevpos/evaluation.py): say where, and where to read
        test/* with the rest of the run."""
        if not isinstance(self.trainer.logger, (TensorBoardLogger, CSVLogger)):
            return
        run_dir = run_dir_of(self.config[self.subcommand].get("ckpt_path"))
        story = (f"; its run's report shows it: `python -m prevpos report {shlex.quote(str(run_dir))}`"
                 if run_dir is not None and self.subcommand == "test" else "")
        rank_zero_info(f"prevpos: logged to {self.trainer.log_dir}{story}")

    after_validate = after_test = _say_where_it_logged

    def before_instantiate_classes(self):
        refuse_no_devices(self._get(self.config, "trainer"))
        refuse_mistyped_writer_settings(self._get(self.config, "trainer"))
        if self.subcommand == "fit":  # before the trainer makes a run directory that would hold nothing
            fit = self.config.fit
            if isinstance(fit.trainer.callbacks, Namespace):  # one given alone (`--trainer.callbacks OVCircuit`)
                fit.trainer.callbacks = [fit.trainer.callbacks]  # a list, as the checks below and the resume read it
            refuse_float16_weights(fit.trainer.precision)
            refuse_unrunnable_loop(fit.trainer, fit.data.steps_per_epoch)
            refuse_unknown_monitors(fit.checkpoint.monitor, fit_metric_names(fit.model.n_ctx),
                                    fit.trainer.callbacks)
            refuse_monitors_the_wrong_way(fit.checkpoint.monitor, fit.checkpoint.mode, fit.trainer.callbacks)
            refuse_logging_in_barebones(fit.trainer)
            refuse_a_file_as_the_folder(fit.checkpoint.dirpath)
            refuse_last_or_best(fit.ckpt_path, "fit")
            refuse_another_runs_checkpoints(fit.checkpoint.dirpath, fit.ckpt_path, continuing=self._version_chosen())
            logs_under_root_dir(fit.trainer)
            for name in drop_repeated_plugins(fit.trainer.callbacks or []):
                rank_zero_info(f"prevpos: {name} was given twice: only the last one runs, with its settings")
            fast_path.check_settings(fit.model.fast is not None, fit.data.batches_per_step, fit.trainer.precision,
                                     fit.trainer.max_steps, fit.trainer.gradient_clip_val)
        if self.subcommand in EVALUATIONS:
            require_checkpoint_file(self.config[self.subcommand].get("ckpt_path"), self.subcommand)
            logs_under_root_dir(self.config[self.subcommand].trainer)  # for a checkpoint of no run
            log_beside_the_run(self.config[self.subcommand], self.subcommand)


def build_cli(args: list[str] | None, run: bool = True) -> PrevposCLI:
    """The LightningCLI; with run=False it only parses and instantiates (args then have no subcommand)."""
    discover_plugins()  # so short names (`--trainer.callbacks+=OVCircuit`) resolve
    # not removable from YAML
    always_on = [StopOnDivergence(**GUARD), WarnOnCollapse(), MechanismDashboard(), CpuThreads(), RunLock()]
    return PrevposCLI(
        PrevTokenModel, PrevTokenData, args=args, run=run, parser_class=OneLineErrorParser,
        trainer_defaults={**TRAINER_DEFAULTS, "callbacks": always_on}, auto_configure_optimizers=False,
        parser_kwargs={"prog": "python -m prevpos", "fit": {"description": FIT_DESCRIPTION}},
        save_config_callback=ResumableSaveConfig, save_config_kwargs={"overwrite": False}, seed_everything_default=0,
    )
