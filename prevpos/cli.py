"""`python -m prevpos fit|validate|test|analyze|report|bench`: LightningCLI for training (`prevpos/lightning_cli.py`),
small parsers for the rest."""

import errno
import gc
import os
import sys
import warnings

from prevpos.ctrl_c import (SIGTERM_EXIT, ctrl_c_ends_the_exit, end_as_interrupted, stopped_by_ctrl_c,
                            stopped_by_sigterm)
from prevpos.errors import ConfigError, DivergenceError, NothingToTrain, out_of_memory
from prevpos.quiet import quiet_library_noise
from prevpos.wandb_runs import ends_its_wandb_run, not_logged_in

EXTRA_COMMANDS = {
    "analyze": "prevpos.commands.analyze",
    "report": "prevpos.commands.report",
    "bench": "prevpos.commands.bench",
}

# Not Lightning's `predict`: there is nothing to predict.
LIGHTNING_COMMANDS = ("fit", "validate", "test")
COMMANDS = (*LIGHTNING_COMMANDS, *EXTRA_COMMANDS)

USAGE = """usage: python -m prevpos COMMAND [options]

Train a transformer without positional embeddings to output the previous token, and watch how it does it.

commands:
  fit        train (no options: the default experiment; --config experiments/NAME.yaml for others;
             --resume RUN_DIR continues a run that stopped)
  validate   evaluate a checkpoint on the held-out set (--ckpt_path FILE)
  test       the same on a second held-out set, never used to pick a checkpoint (--ckpt_path FILE)
  analyze    run every analysis plugin once on a saved model (--weights FILE --out DIR)
  report     write RUN_DIR/report.html, the story of a run (one still training: as far as it got)
  bench      measure training speed and plugin cost on this machine

`python -m prevpos COMMAND --help` lists a command's options."""


def prestart_analysis_process() -> None:
    """On a machine with a GPU, start the analysis process before this one imports Lightning and TransformerLens:
    it imports them too, and the two imports overlap instead of the analyses waiting seconds at the start of fit.
    (A fit on the CPU, or with no plugins, leaves it idle: it holds no GPU memory until a first analysis.) Not in
    the processes Lightning launches for the other ranks of a multi-GPU fit: only global rank 0 analyses."""
    import torch

    from prevpos.workers import analysis_process

    rank_zero = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    if analysis_process.analysis_place("cuda") == "process" and rank_zero and torch.cuda.is_available():
        analysis_process.prestart()


def refuse_a_bad_matplotlib_backend() -> None:
    """An MPLBACKEND that matplotlib refuses: one line, not the ValueError traceback of its first import, which every
    command makes (the figures). An interactive backend with no display is no problem: prevpos draws off screen."""
    name = os.environ.get("MPLBACKEND")
    if name:
        try:
            import matplotlib  # noqa: F401  (reads MPLBACKEND as it is imported)
        except ValueError:
            raise ConfigError(f"MPLBACKEND={name}: not a matplotlib backend; unset it, or name one, e.g. "
                              "MPLBACKEND=Agg") from None


# The file system refusing a write (a file where a folder must go, no space, no permission): the machine's problem,
# said in one line with the path, not a traceback through Lightning.
FILESYSTEM_REFUSALS = {errno.ENOTDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT}


def command_line() -> None:
    """`python -m prevpos ...` and the `prevpos` script: main, then an exit that skips Python's last collection.

    That collection walks every object still alive, and after torch, Lightning and TransformerLens are imported it
    took 1.3-2.1 s after each command had finished (2-core CPU; docs/speed.md, change 17). By then the command has
    closed what it wrote (event files, checkpoints, figures, the W&B run), and the exit still runs every atexit
    hook; only objects in reference cycles are no longer finalized, which Python does not promise at exit anyway.
    Not for main() from Python: that interpreter goes on. After Ctrl-C the process ends by SIGINT, after SIGTERM
    with 143 (prevpos/ctrl_c.py).
    """
    try:
        main()
    except SystemExit as stop:
        if stopped_by_sigterm(stop):
            sys.exit(SIGTERM_EXIT)
        if not stopped_by_ctrl_c(stop):
            raise
        end_as_interrupted()
    except KeyboardInterrupt:
        end_as_interrupted()
    finally:
        ctrl_c_ends_the_exit()  # the command has closed its files: a Ctrl-C now lets the exit finish, then ends it
        gc.freeze()  # frozen objects are left out of every later collection, the one at exit included


def as_words(argv: list | str) -> list[str]:
    """The words a shell would give for what a notebook passes: main("fit") read "f" as the command, and a number
    in the list was an AttributeError traceback."""
    if isinstance(argv, str):
        import shlex

        return shlex.split(argv)
    return [str(arg) for arg in argv]


def main(argv: list | str | None = None):
    """Run one command, as `python -m prevpos ARGV...` does. fit, validate and test return their LightningCLI (in a
    notebook: `cli = main(["fit"])`, then `cli.model.model` is the trained HookedTransformer and
    `cli.trainer.log_dir` its run); the other commands, and a fit that had nothing to train, return None.
    ARGV may also be one string, split as a shell would (`main("fit --trainer.max_epochs 5")`), and its items
    numbers or paths (`main(["fit", "--trainer.max_epochs", 5])`)."""
    from_command_line = typed = argv is None
    argv = sys.argv[1:] if argv is None else as_words(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    quiet_library_noise()
    try:
        refuse_a_bad_matplotlib_backend()
        if argv[0] not in COMMANDS and not argv[0].startswith("-"):  # LightningCLI's message lists only its own
            raise ConfigError(f"unknown command {argv[0]!r}: use one of {', '.join(COMMANDS)} "
                              "(`python -m prevpos --help` says what each does)")
        if any(arg == "--resume" or arg.startswith("--resume=") for arg in argv):
            from prevpos.resume import expand_resume

            argv, from_command_line = expand_resume(argv), False
        if argv[0] == "fit":
            from prevpos.analysis.writer import render_mode

            render_mode()  # a bad PREVPOS_RENDER is one line here, not a traceback at the first figure
            prestart_analysis_process()  # and a bad PREVPOS_ANALYSIS
        if argv[0] in EXTRA_COMMANDS:
            import importlib

            importlib.import_module(EXTRA_COMMANDS[argv[0]]).main(argv[1:])
        else:
            # catch_warnings: filters a command adds for its own run (expect_own_checkpoints) end with it, as they
            # would with the process: a later fit in the same notebook gets Lightning's warnings about its folder.
            from prevpos.input_errors import check_config_files, refuse_a_list_the_shell_split
            from prevpos.lightning_cli import build_cli

            refuse_a_list_the_shell_split(argv)
            check_config_files(argv)
            with ends_its_wandb_run(), warnings.catch_warnings():
                return build_cli(None if from_command_line else argv)
    except NothingToTrain as finished:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if rank_zero_only.rank == 0:  # under torchrun or SLURM every rank gets here
            print(f"prevpos: {finished}", file=sys.stderr)
    except (ConfigError, DivergenceError) as error:
        print(f"prevpos: error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    except RuntimeError as error:
        line = out_of_memory(error, argv[0])
        if line is None:
            raise
        print(f"prevpos: error: {line}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        if error.errno not in FILESYSTEM_REFUSALS:
            raise
        # TensorBoard's writer names its event file in bytes; a failed write() names no file
        where = "a write" if error.filename is None else os.fsdecode(error.filename)
        print(f"prevpos: error: the file system refused {where}: {error.strerror}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        line = not_logged_in(error)
        if line is None:
            raise
        print(f"prevpos: error: {line}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # fit handles its own (Lightning stops it gracefully); this is every other moment
        # From the command line: one line, then command_line ends the process by SIGINT. main([...]) from a notebook
        # or a script gets the KeyboardInterrupt as it came.
        if typed:
            print(f"prevpos: {argv[0]} stopped (Ctrl-C)", file=sys.stderr)
        raise
