"""Library lines printed at every command that tell a prevpos user nothing they can act on."""

import logging
import warnings
from contextlib import contextmanager

NOISE = (
    "💡 Tip:",  # Lightning 2.6 advertises its cloud logger at every Trainer construction
    # At every fit: the lr schedule asks for the run's length (configure_optimizers), which Lightning reports.
    "Loading `train_dataloader` to estimate number of stepping batches.",
)


def _not_noise(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(NOISE)


def _not_a_resume_purge(record: logging.LogRecord) -> bool:
    # A resumed run's events restart at its checkpoint's step. Reading them, TensorBoard drops the stopped run's later
    # steps, which the resumed run logged again: right, but said as "likely caused by a TensorFlow restart" at report.
    return not record.getMessage().startswith("Detected out of order event.step")


def quiet_library_noise() -> None:
    """Silence what the libraries print that is neither our problem nor the user's (idempotent)."""
    # TransformerLens 3.9 and its dependencies warn on import and at every HookedTransformer construction.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Lightning 2.6 builds torch's deprecated LeafSpec for every set of dataloaders: a line pointing into Lightning.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Lightning warns when an epoch has fewer steps than log_every_n_steps, as if training scalars would be lost, but
    # it logs every log_every_n_steps global steps across epochs: short epochs (plugins analysing every step or two)
    # lose nothing.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging "
                            r"interval")
    # DDP, each rank at its first backward: W_Q/W_K/W_V's gradients ([n_heads, d_model, d_head]) come out in another
    # layout than DDP's buckets (at n_heads 1, only the size-1 dimension's stride differs). Nothing to act on: DDP
    # copies gradients into its buckets anyway (gradient_as_bucket_view is off).
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # Lightning's model summary, at every fit in 16-mixed or bf16-mixed: "not supported ... Using 32 bits instead".
    # Mixed precision keeps the weights in float32, so the 32-bit size it prints is the right one.
    warnings.filterwarnings("ignore", message=r"Precision \S+-mixed is not supported by the model summary")
    # LightningCLI, whenever it is given args while sys.argv holds any: at every `fit --resume` (prevpos expands it
    # into args) and at every main([...]) in a notebook (sys.argv holds the kernel's). Those args are what is meant.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_noise)
    logging.getLogger("tensorboard").addFilter(_not_a_resume_purge)


@contextmanager
def lightning_info_off():
    """Lightning's info lines ("GPU available: ...", "`Trainer.fit` stopped: ...") off within the block."""
    lightning = logging.getLogger("lightning.pytorch")
    level = lightning.level
    lightning.setLevel(logging.WARNING)
    try:
        yield
    finally:
        lightning.setLevel(level)
