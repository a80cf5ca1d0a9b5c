"""The mechanism dashboard: a TensorBoard Custom Scalars layout, read top to bottom in the order things form."""

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

# {panel: {chart: ["Multiline", [tag regexes]]}}. TensorBoard matches each regex from the tag's start (re.match),
# so `$` keeps e.g. val/acc from also drawing val/acc_pos1.
LAYOUT = {
    "1 accuracy": {
        "held-out accuracy": ["Multiline", [r"val/acc$", r"train/acc$"]],
        "accuracy by position": ["Multiline", [r"val/acc_pos\d+$"]],
        "loss": ["Multiline", [r"val/loss$", r"train/loss$"]],
    },
    "2 layer 0 counts (BOS weight falls with position)": {
        "BOS attention by position": ["Multiline", [r"attention/bos_by_pos/L0H\d+/pos\d+$"]],
        "BOS decay score (1 = strictly falling)": ["Multiline", [r"attention/bos_decay_score/L0H\d+$"]],
    },
    "3 layer 1 attends to the previous token": {
        "where layer 1 attends: previous, itself, BOS": ["Multiline",
                                                         [r"attention/(prev_token|self|bos)_score/L1H\d+$"]],
        "previous-token score, every head": ["Multiline", [r"attention/prev_token_score/"]],
    },
    "4 OV copying": {
        "copy top-1 (fraction of tokens copied)": ["Multiline", [r"ov/copy_top1/"]],
        "copy eigenvalue score": ["Multiline", [r"ov/copy_eigen/"]],
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


class MechanismDashboard(Callback):
    """Writes the dashboard layout (TensorBoard's "Custom Scalars" tab) into each TensorBoard log at fit start."""

    def __init__(self):
        self._written: set[int] = set()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            writer = logger.experiment if isinstance(logger, TensorBoardLogger) else None
            if writer is not None and id(writer) not in self._written:  # one layout per writer, or TB merges twins
                writer.add_custom_scalars(LAYOUT)
                self._written.add(id(writer))
