"""Training batches generated on the training device; a fixed held-out set for validation."""

import lightning as L
import torch

from prevpos.errors import ConfigError, check_seed
from prevpos.sequences import probe_tokens, random_sequences, seeded_sequences

# What the run's data is (its tokens, its seeds, its probe): saved in each checkpoint, under this key of the
# datamodule's part, so that `analyze`, `validate` and `test` of it see the run's data.
DATA_SETTINGS = "data_settings"
SEQUENCE_KEYS = ("seed", "n_tokens", "notebook_generator", "bos")  # which sequences it trained and held out on
DATA_KEYS = (*SEQUENCE_KEYS, "probe_size", "probe_seed", "notebook_probe")


def validation_batch_size(batch_size: int) -> int:
    """Sequences per validation batch: 4 training batches, and at least 1,024 so a small training batch does not
    split validation into dozens of steps (at batch 8 a 600-step fit took 15.4 s with 64 of them, 11.5-12.0 s with
    2; same val acc; 2-core CPU)."""
    return max(4 * batch_size, 1024)


class DeviceBatches:
    """`steps` fresh batches per epoch, drawn on the device from a generator the datamodule owns."""

    def __init__(self, data: "PrevTokenData"):
        self.data = data

    def __len__(self) -> int:
        return self.data.steps_per_epoch

    def __iter__(self):
        for _ in range(self.data.steps_per_epoch):
            yield self.data.next_block()


class HeldOut:
    """The fixed validation batches (a plain list would read as several dataloaders to Lightning)."""

    def __init__(self, batches):
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class PrevTokenData(L.LightningDataModule):
    """Random previous-token sequences.

    Args:
        batch_size: Sequences per training step (per device).
        steps_per_epoch: Training steps per epoch; analysis plugins run at epoch ends (most at every one of the
            first 12).
        val_size: Size of the fixed held-out validation set (and of the test set).
        seed: Seeds the training stream (offset per distributed rank), with +1 the validation set, with +2 the
            test set.
        n_tokens: Ordinary tokens are drawn from [0, n_tokens); default d_vocab - 1 (every token but BOS).
        notebook_generator: Draw tokens from [0, d_vocab) like the public tutorial (BOS can appear mid-sequence;
            a much harder task).
        bos: Put BOS at position 0 (False: the no-BOS experiment).
        probe_size: Sequences in the fixed probe batch the analysis plugins read.
        probe_seed: Seed of the probe batch (the same probe every epoch and on resume).
        notebook_probe: Draw the probe exactly as the public tutorial did (manual_seed, randint(0, d_vocab)).
        n_ctx: Sequence length (linked from model.n_ctx).
        d_vocab: Vocabulary size including BOS (linked from model.d_vocab).
        batches_per_step: Batches per training step, for model.fast (K optimizer steps per Lightning step).
    """

    def __init__(
        self, batch_size: int = 256, steps_per_epoch: int = 10, val_size: int = 2048, seed: int = 0,
        n_tokens: int | None = None, notebook_generator: bool = False, bos: bool = True,
        probe_size: int = 256, probe_seed: int = 1234, notebook_probe: bool = False,
        n_ctx: int = 10, d_vocab: int = 101, batches_per_step: int = 1,
    ):
        super().__init__()
        for name, value in [("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch), ("val_size", val_size),
                            ("probe_size", probe_size), ("batches_per_step", batches_per_step)]:
            if value < 1:
                raise ConfigError(f"data.{name}={value}: must be at least 1")
        check_seed("data.seed", seed)
        check_seed("data.probe_seed", probe_seed)
        if notebook_probe and not bos:  # a no-BOS run was analysed on sequences that all began with BOS
            raise ConfigError("data.notebook_probe=true: the tutorial's sample begins every sequence with BOS, and "
                              "data.bos=false trains without it; drop one of the two (a run saved with both: "
                              "--data.notebook_probe false)")
        if notebook_generator:
            n_tokens = d_vocab
        elif n_tokens is None:
            n_tokens = d_vocab - 1
        elif not 2 <= n_tokens <= d_vocab - 1:
            raise ConfigError(f"data.n_tokens={n_tokens}: must be in [2, d_vocab-1={d_vocab - 1}] (BOS is token d_vocab-1)")
        self.batch_size, self.steps_per_epoch, self.val_size = batch_size, steps_per_epoch, val_size
        self.seed, self.n_tokens, self.bos, self.notebook_generator = seed, n_tokens, bos, notebook_generator
        self.n_ctx, self.d_vocab = n_ctx, d_vocab
        self.probe_size, self.probe_seed, self.notebook_probe = probe_size, probe_seed, notebook_probe
        self.batches_per_step = batches_per_step
        self.generator: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        if self.generator is None or self.generator.device != device:
            # A different stream per rank, so data-parallel replicas see different batches.
            self.generator = torch.Generator(device).manual_seed(self.seed + 1000 * self.trainer.global_rank)
        if self._pending_state is not None:
            self.generator.set_state(self._pending_state)
            self._pending_state = None

    def next_batch(self) -> torch.Tensor:
        return random_sequences(self.batch_size, self.n_ctx, self.d_vocab, self.n_tokens, self.generator,
                                self.generator.device, bos=self.bos)

    def next_block(self) -> torch.Tensor:
        """One training step's input: a batch, or `batches_per_step` batches stacked [K, batch, pos] (model.fast)."""
        if self.batches_per_step == 1:
            return self.next_batch()
        return torch.stack([self.next_batch() for _ in range(self.batches_per_step)])

    def train_dataloader(self) -> DeviceBatches:
        return DeviceBatches(self)

    def val_dataloader(self) -> "HeldOut":
        return self.held_out(self.seed + 1)

    def test_dataloader(self) -> "HeldOut":
        """A second held-out set, never seen by validation (which picks the best checkpoint)."""
        return self.held_out(self.seed + 2)

    def held_out(self, seed: int) -> "HeldOut":
        sequences = seeded_sequences(self.val_size, self.n_ctx, self.d_vocab, self.n_tokens, seed, self.bos)
        return HeldOut(sequences.split(validation_batch_size(self.batch_size)))

    def probe_tokens(self) -> torch.Tensor:
        return probe_tokens(self.probe_size, self.n_ctx, self.d_vocab, self.n_tokens, self.probe_seed,
                            self.notebook_probe, self.bos)

    def data_settings(self) -> dict:
        """The settings that make the run's data what it is (PrevTokenData's arguments, n_tokens resolved)."""
        return {key: getattr(self, key) for key in DATA_KEYS}

    def state_dict(self) -> dict:
        # A run without BOS, or with fewer tokens, or another seed, was analysed and evaluated on the default data.
        state = {DATA_SETTINGS: self.data_settings()}
        if self.generator is not None:  # so a resume continues the stream instead of replaying the first batches
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self._pending_state = state.get("generator")
        if self.generator is not None and self._pending_state is not None:
            self.generator.set_state(self._pending_state)
            self._pending_state = None
