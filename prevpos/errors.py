"""Errors the CLI turns into one readable line (exit code 2, or 1 for what happened while running) instead of a
traceback."""

import re


class ConfigError(ValueError):
    """A setting the user can fix; the message names the setting and the fix."""


SEED_LIMIT = 2**62  # torch's generators take 64 bits; prevpos adds to its seeds (the held-out sets, each rank)


def check_seed(option: str, seed: int) -> None:
    """A seed torch can take, once prevpos adds its offsets: an overflow traceback, after the run folder was made."""
    if not -SEED_LIMIT < seed < SEED_LIMIT:
        raise ConfigError(f"{option}={seed}: too large for torch's random generator; use a seed below 2**62")


class NothingToTrain(Exception):
    """A fit from a checkpoint that already reached the fit's end: one line, then a normal exit (a preempted job
    that resumes a run that had just finished must not fail)."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss; the message says what to change."""


SIZES = {"analyze": "--probe_size", "bench": "--batch_size"}  # the other commands' sizes are data.* and model.*


def out_of_memory(error: BaseException, command: str) -> str | None:
    """One line for torch running out of memory, on the CPU or a GPU, naming the settings of `command` that size it;
    None for any other error. Torch's own message is a C++ assertion (CPU) or a page of allocator statistics (CUDA)."""
    text = str(error)
    if not isinstance(error, RuntimeError) or not re.search(r"out of memory|can't allocate memory", text):
        return None
    device = "a GPU" if "CUDA" in text else "the CPU"
    asked = re.search(r"[Tt]ried to allocate ([\d.]+) ?(bytes|[KMGT]iB)", text)
    if asked and asked.group(2) == "bytes":
        size = f" (it asked for {int(asked.group(1)) / 2**30:,.1f} GiB at once)"
    else:
        size = f" (it asked for {asked.group(1)} {asked.group(2)} at once)" if asked else ""
    lower = SIZES.get(command, "data.batch_size (or data.val_size, data.probe_size), or the model's size "
                               "(model.d_model, model.n_ctx, model.d_vocab)")
    return f"out of memory on {device}{size}: lower {lower}"
