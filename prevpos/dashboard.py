"""The mechanism dashboard: a TensorBoard Custom Scalars layout, read top to bottom in the order things form, and
an HPARAMS table of the runs' settings against their final scores."""

import re

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams

from prevpos.notices import warn

# {panel: {chart: ["Multiline", [tag regexes]]}}. TensorBoard matches each regex from the tag's start (re.match),
# so `$` keeps e.g. val/acc from also drawing val/acc_pos1.
LAYOUT = {
    "1 accuracy": {
        "held-out accuracy": ["Multiline", [r"val/acc$", r"train/acc$"]],
        "accuracy by position": ["Multiline", [r"val/acc_pos\d+$"]],
        "loss": ["Multiline", [r"val/loss$", r"train/loss$"]],
        "learning rate (warm-up, then a cosine over the run's length)": ["Multiline", [r"train/lr$"]],
    },
    "2 layer 0 counts (BOS weight falls with position)": {
        "BOS attention by position": ["Multiline", [r"attention/bos_by_pos/L0H\d+/pos\d+$"]],
        "mean BOS attention (counting: above uniform attention's, 0.214 at n_ctx 10)": [
            "Multiline", [r"attention/bos_score/L0H\d+$"]],
        "BOS decay score (1 = strictly falling; uniform attention falls too)": [
            "Multiline", [r"attention/bos_decay_score/L0H\d+$"]],
    },
    "3 layer 1 attends to the previous token": {
        "where layer 1 attends: previous, itself, BOS": ["Multiline",
                                                         [r"attention/(prev_token|self|bos)_score/L1H\d+$"]],
        "previous-token score, every head": ["Multiline", [r"attention/prev_token_score/L"]],
    },
    "4 OV copying": {
        "copy top-1 (fraction of tokens copied)": ["Multiline", [r"ov/copy_top1/L"]],
        "copy eigenvalue score": ["Multiline", [r"ov/copy_eigen/L"]],
    },
    "5 QK term ablation": {
        "zero-ablation loss per term": ["Multiline", [r"qk_terms/zero_ablation_loss/"]],
        "mean-ablation loss per term": ["Multiline", [r"qk_terms/mean_ablation_loss/"]],
    },
    "6 explanation": {
        "fraction of loss recovered": ["Multiline", [r"explanation/\w+_recovered$"]],
        "losses": ["Multiline", [r"explanation/\w+_loss$"]],
    },
    "7 length generalization": {
        "accuracy at 1x / 2x / 4x length": ["Multiline", [r"length/acc_len\d+$"]],
        "loss by length": ["Multiline", [r"length/loss_len\d+$"]],
    },
}
PREV_TOKEN_PANEL = "3 layer 1 attends to the previous token"  # of the model's last layer, in layout_for


# The HPARAMS tab's columns: TensorBoard shows each run's last logged value of these tags (none is written here).
# TensorBoard takes one run's list for every run, so these are tags models of any shape log: the scores of the head
# most on the previous token, not of L1H0 (with 2 heads it may be L1H1; with learned positions L0H0; with 1 layer
# there is no L1H0), and the mean BOS weight of layer 0's head most on BOS (not its decay score: uniform attention,
# at init or with nothing to count, falls with position too). Not length/*: its tags follow n_ctx.
TABLE_SCORES = ["val/acc", "val/loss", "attention/bos_score/counting_head",
                "attention/prev_token_score/prev_token_head", "ov/copy_top1/prev_token_head",
                "explanation/restricted_recovered", "explanation/algorithm_recovered"]
TABLE_DATA = ("batch_size", "steps_per_epoch", "seed", "n_tokens", "bos", "batches_per_step")
TABLE_TRAINER = ("max_epochs", "precision", "gradient_clip_val")


def run_settings(trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
    """The settings that change a run, named as on the command line, as TensorBoard's HPARAMS values."""
    settings = {f"model.{k}": v for k, v in pl_module.hparams.items() if not k.startswith("_")}
    settings |= {f"data.{k}": getattr(trainer.datamodule, k) for k in TABLE_DATA if hasattr(trainer.datamodule, k)}
    settings |= {f"trainer.{k}": getattr(trainer, k) for k in TABLE_TRAINER}
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in settings.items()}


def layout_for(callbacks, last_layer: int = 1, bos: bool = True) -> dict:
    """LAYOUT, its panel 3 of the model's last layer (the mechanism's layer 1 is the last of 2; with 3 layers layer 1
    is not where the previous token is attended to), then the panels of the plugins in this fit that bring their own
    (`AnalysisPlugin.dashboard`), numbered on from it: an opt-in plugin's charts appear only in the runs that log its
    tags. Without BOS (data.bos false) the titles say a_0: the bos_* tags are then attention to the first token."""
    layout = {}
    for panel, charts in LAYOUT.items():
        if panel == PREV_TOKEN_PANEL:
            panel = _in_layer(panel, last_layer)
            charts = {_in_layer(chart, last_layer): [kind, [_in_layer(tag, last_layer) for tag in tags]]
                      for chart, (kind, tags) in charts.items()}
        if not bos:
            panel = panel.replace("BOS", "a_0")
            charts = {chart.replace("BOS", "a_0"): spec for chart, spec in charts.items()}
        layout[panel] = charts
    for callback in callbacks:
        for panel, charts in (getattr(callback, "dashboard", None) or {}).items():
            layout[f"{len(layout) + 1} {panel}"] = {
                chart: ["Multiline", [tag for tag in tags if _compiles(tag, type(callback).__name__, chart)]]
                for chart, tags in charts.items()}
    return layout


def _in_layer(text: str, layer: int) -> str:
    """A PREV_TOKEN_PANEL name or tag pattern, of `layer` instead of layer 1."""
    return text.replace("layer 1", f"layer {layer}").replace("/L1H", f"/L{layer}H")


def _compiles(pattern: str, plugin: str, chart: str) -> bool:
    """Is `pattern` a regular expression? TensorBoard's server compiles each one when the tab opens."""
    try:
        re.compile(pattern)
        return True
    except (re.error, TypeError) as error:
        warn(f"{plugin}.dashboard, chart {chart!r}: {pattern!r} is not a regular expression ({error}); left out")
        return False


class MechanismDashboard(Callback):
    """Writes the dashboard layout (TensorBoard's "Custom Scalars" tab) and the HPARAMS table into each TensorBoard
    log at fit start. The table replaces Lightning's, whose one column, hp_metric, was -1 for every run; a logger
    that asks for Lightning's (default_hp_metric: true, the default of a TensorBoardLogger you configure) keeps it.
    """

    def __init__(self):
        self._written: set[int] = set()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            writer = logger.experiment if isinstance(logger, TensorBoardLogger) else None
            if writer is not None and id(writer) not in self._written:  # one layout per writer, or TB merges twins
                writer.add_custom_scalars(layout_for(trainer.callbacks, pl_module.model.cfg.n_layers - 1,
                                                     getattr(trainer.datamodule, "bos", True)))
                if not logger._default_hp_metric:
                    for summary in hparams(run_settings(trainer, pl_module), dict.fromkeys(TABLE_SCORES, 0)):
                        writer._get_file_writer().add_summary(summary)
                self._written.add(id(writer))
