"""The base class of analysis plugins: when to run, where, in what mode, how to log, what to do on failure."""

import traceback
from types import MethodType
from typing import ClassVar

import lightning as L
from lightning.pytorch.callbacks import Callback

from prevpos.analysis.findings import Findings
from prevpos.analysis.probe import ProbeRun, left_as_found
from prevpos.analysis.session import AnalysisSession, session_for
from prevpos.errors import ConfigError
from prevpos.notices import warn
from prevpos.workers import analysis_process


class AnalysisPlugin(Callback):
    """Subclass and implement `analyze(run) -> Findings`; the base does the rest.

    Runs before training (step 0, so every curve shows its start), every `every_n_epochs` epochs and at the
    end of training; never in the sanity check; on global rank 0 only. analyze() runs off the training thread
    (AnalysisSession), on a float32 copy of the weights of that step, in eval mode with no grad and no autocast;
    what it finds is logged at that step once it is done, and all of it before fit returns. On a GPU it runs in
    the analysis process, which keeps its own copy of the plugin: state that should reach checkpoints goes through
    Callback.state_dict/load_state_dict, which the trainer's copy receives after each analysis. Define plugins in
    an importable module: one defined in a notebook or the running script analyses in a thread instead.

    The mechanism forms in the first ~100 steps, so the default schedule is dense there and sparse after: every
    epoch for the first `dense_epochs` epochs, then every `every_n_epochs`. Figures cost far more than scalars
    (drawing one takes ~0.05-0.3 s of CPU, most analyses take ms), so they are logged every
    `dense_figure_every_n_epochs` epochs in the dense phase (frames of the transition: steps 20, 40, ..., 120 by
    default), every `figure_every_n_epochs` after it, at step 0 and at the end of training.

    Args:
        every_n_epochs: After the dense phase, run (and log scalars) every N training epochs.
        dense_epochs: Run after every one of the first N epochs (0: follow every_n_epochs from the start).
        figure_every_n_epochs: After the dense phase, log figures every N epochs (when the plugin runs then).
        dense_figure_every_n_epochs: In the dense phase, log figures every N epochs.
        strict: Re-raise a failure of this plugin instead of reporting it and going on.
    """

    # Panels this plugin adds to the dashboard (TensorBoard's Custom Scalars tab) in the runs it is in:
    # {panel title: {chart title: [tag regex, ...]}}, each regex matched from the start of a tag.
    dashboard: ClassVar[dict[str, dict[str, list[str]]]] = {}

    # The settings and state below are class attributes too: a plugin whose own __init__ does not call
    # super().__init__() (Lightning's Callback needs no such call) runs on the default schedule, instead of
    # failing with an AttributeError in the middle of its first fit. The __init__ defaults are these values.
    every_n_epochs, dense_epochs, figure_every_n_epochs, dense_figure_every_n_epochs, strict = 10, 12, 10, 2, False
    _last_step: int | None = None
    _skip_noted = False

    def __init__(self, every_n_epochs: int = every_n_epochs, dense_epochs: int = dense_epochs,
                 figure_every_n_epochs: int = figure_every_n_epochs,
                 dense_figure_every_n_epochs: int = dense_figure_every_n_epochs, strict: bool = strict):
        for name, value, least in [("every_n_epochs", every_n_epochs, 1), ("dense_epochs", dense_epochs, 0),
                                   ("figure_every_n_epochs", figure_every_n_epochs, 1),
                                   ("dense_figure_every_n_epochs", dense_figure_every_n_epochs, 1)]:
            if value < least:
                raise ConfigError(f"{type(self).__name__}.{name}={value}: must be at least {least}")
        self.every_n_epochs = every_n_epochs
        self.dense_epochs = dense_epochs
        self.figure_every_n_epochs = figure_every_n_epochs
        self.dense_figure_every_n_epochs = dense_figure_every_n_epochs
        self.strict = strict

    def analyze(self, run: ProbeRun) -> Findings:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        """What a pickle or copy holds: not `log` and `log_dict`, which Lightning binds on every callback to the
        training module (each fit binds them again). With them, a plugin sent to the analysis process carried the
        whole module (0.7 MB; 2.2 MB after a fast-path fit), and on a GPU the fast path's module holds a CUDA
        graph, which does not pickle."""
        state = self.__dict__.copy()
        for name in ("log", "log_dict"):
            if isinstance(state.get(name), MethodType):  # bound by Lightning (a plugin's own data stays)
                del state[name]
        return state

    def skip(self, tag: str, reason: str, findings: Findings | None = None) -> Findings:
        """Empty findings for a model this plugin does not apply to (or `findings`, for a part of it that does not
        apply), with the reason as text the first time only."""
        skipped = "skipped" if findings is None else "skipped part of its analysis"  # its other numbers were logged
        findings = Findings() if findings is None else findings
        if not self._skip_noted:
            self._skip_noted = True
            findings.text(tag, f"{type(self).__name__} {skipped}: {reason}")
        return findings

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        place = analysis_process.analysis_place(trainer.strategy.root_device.type)
        if stage == "fit" and trainer.is_global_zero and place == "process":
            analysis_process.prestart()  # its imports take seconds: start them now if `fit` has not

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Step 0, and on resume the checkpoint's step if it was scheduled: the crashed run may have died before
        # writing it, and `fit --resume` has TensorBoard drop that step's old events.
        if self._scheduled(trainer.current_epoch):
            self._analyze_now(trainer, pl_module, trainer.current_epoch, self._figures_at(trainer.current_epoch))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epochs_done = trainer.current_epoch + 1
        last = epochs_done == trainer.max_epochs
        if self._scheduled(epochs_done) or last:
            self._analyze_now(trainer, pl_module, epochs_done, self._figures_at(epochs_done) or last)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.is_global_zero:  # hand finished findings (and figures to draw) on now, not at the next analysis
            session_for(trainer).collect()

    def _scheduled(self, epochs_done: int) -> bool:
        return epochs_done <= self.dense_epochs or epochs_done % self.every_n_epochs == 0

    def _figures_at(self, epochs_done: int) -> bool:
        dense = epochs_done <= self.dense_epochs and epochs_done % self.dense_figure_every_n_epochs == 0
        return dense or epochs_done % self.figure_every_n_epochs == 0

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_step != trainer.global_step:  # the final state, if the run stopped off schedule
            self._analyze_now(trainer, pl_module, trainer.current_epoch, figures=True)
        if trainer.is_global_zero:
            session_for(trainer).finish()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero:  # keep what was analysed before the failure; do not raise a second error
            session_for(trainer).finish(raise_strict=False)

    def _analyze_now(self, trainer: L.Trainer, pl_module: L.LightningModule, epochs_done: int,
                     figures: bool = True) -> None:
        """Analyse the weights of now, `epochs_done` epochs into the fit (run.epoch: 0 at step 0, 1 after the first
        epoch, as a resume and `analyze` count it)."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._last_step = trainer.global_step
        session_for(trainer).submit(self, pl_module.model, trainer.global_step, epochs_done, figures)

    def analyze_checked(self, run: ProbeRun) -> Findings:
        """analyze(run), raising ValueError if what it returned is not valid Findings, or it left the weights or the
        shared forward changed. What it leaves on the model (hooks, gradients, changed weights) is gone before the
        next plugin runs, and a changed shared forward is run again."""
        shared = run.shared_versions()  # the shared forward, on the step's own weights, before a plugin can change them
        with left_as_found(run.model) as changed:
            findings = self.analyze(run)
        problems = ["returned a {}, not Findings".format(type(findings).__name__)] \
            if not isinstance(findings, Findings) else findings.problems()
        if changed:
            problems.append(f"left run.model's weights changed ({', '.join(changed[:3])}): put back for the plugins "
                            "after it; ablate weights on a copy (copy.deepcopy(run.model)), or restore them")
        if run.shared_versions() != shared:
            run.discard_forward()  # run again, for the plugins after it
            problems.append("changed run.logits or run.cache in place, which every plugin of the step shares: run "
                            "again for the plugins after it; change a copy instead (.clone())")
        if problems:
            raise ValueError("; ".join(problems))
        return findings

    def analyze_safely(self, run: ProbeRun, session: AnalysisSession | None = None) -> Findings | None:
        """analyze_checked(run), or None after reporting (once) what went wrong; re-raises if strict."""
        try:
            return self.analyze_checked(run)
        except Exception as error:
            self.report_failure(error, run.step, session)
            return None

    def report_failure(self, error: Exception, step: int, session: AnalysisSession | None = None,
                       raise_strict: bool = True) -> None:
        """Re-raise `error` if strict; else warn once per plugin and keep its traceback as text with the loggers."""
        if self.strict and raise_strict:
            raise error
        name = type(self).__name__
        reported = session.reported if session is not None else set()
        if name in reported:
            return
        reported.add(name)
        message = f"plugin {name} failed at step {step}{'' if self.strict else ' and was skipped'}: {error!r}"
        trace = "".join(traceback.format_exception(error))
        if session is None:  # `analyze`: no logger keeps the traceback, and it is how a plugin's author tries it
            warn(f"{message}\n{trace}")
        elif not self.strict:  # strict: the run is already stopping on an error, with its traceback
            warn(f"{message} (its traceback is logged as text, plugin_errors/{name}; set strict: true to stop on it)")
        if session is not None:
            session.writer.text(f"plugin_errors/{name}", message + "\n\n    " + trace.replace("\n", "\n    "), step)


def plugins_of(trainer: L.Trainer) -> list[AnalysisPlugin]:
    return [callback for callback in trainer.callbacks if isinstance(callback, AnalysisPlugin)]
