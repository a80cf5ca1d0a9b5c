"""How a command run from the command line ends after Ctrl-C (by SIGINT) and SIGTERM. After Ctrl-C by SIGINT, as
any program stopped with Ctrl-C does, so that a shell running it in a loop (`for seed in 0 1 2; do python -m prevpos
fit ...; done`) stops too. A shell goes on with its loop when the program exits normally, whatever the code: prevpos
exited 130, and Lightning exits 1 after its graceful stop of a fit."""

import atexit
import os
import signal
import sys

# After SIGTERM (a cluster's scheduler, `kill`, `timeout`) Lightning stops a fit gracefully too, then raises a
# SystemExit with no code: exit 0, as if the run had finished. The command line exits 128 + 15 instead, the status a
# shell gives a program that SIGTERM ended, so that `fit && report`, `set -e` and job schedulers see the stop.
SIGTERM_EXIT = 128 + signal.SIGTERM


def stopped_by_ctrl_c(stop: SystemExit) -> bool:
    """Is this Lightning's exit after Ctrl-C in a fit? It calls sys.exit(1) while handling the KeyboardInterrupt."""
    return isinstance(stop.__context__, KeyboardInterrupt)


def stopped_by_sigterm(stop: BaseException) -> bool:
    """Is this Lightning's SIGTERMException, the end of a fit that SIGTERM stopped?"""
    exceptions = sys.modules.get("lightning.pytorch.utilities.exceptions")  # imported by any fit
    return exceptions is not None and isinstance(stop, exceptions.SIGTERMException)


def end_as_interrupted():
    """Raise the KeyboardInterrupt that ends the process by SIGINT. CPython ends by SIGINT itself when a
    KeyboardInterrupt reaches the top unhandled, after the exit has run every atexit hook (bpo-1054041); its traceback
    is left out here, since the command has said in one line that it stopped."""
    sys.excepthook = _quiet_keyboard_interrupt
    raise KeyboardInterrupt


def _quiet_keyboard_interrupt(kind, value, traceback) -> None:
    if not issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)


_pressed_in_the_exit = False


def ctrl_c_ends_the_exit() -> None:
    """Once a command is done, only the exit is left: joining the figure workers' threads, stopping the analysis
    process, multiprocessing's clean-up. A Ctrl-C there printed a KeyboardInterrupt traceback from threading's
    shutdown and exited 0 (and SIG_DFL, which ends it at once, left the clean-up undone: the resource tracker then
    warned of "leaked semaphore objects"). Now the exit goes on, then ends the process by SIGINT; a second Ctrl-C
    ends it at once."""
    signal.signal(signal.SIGINT, _remember_the_press)


def _remember_the_press(signum, frame) -> None:
    global _pressed_in_the_exit
    _pressed_in_the_exit = True
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _end_by_sigint_if_pressed() -> None:
    if _pressed_in_the_exit:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGINT)  # SIG_DFL by now: the process ends here, as interrupted


# Registered as this module is imported, before torch, Lightning or multiprocessing are: atexit runs its hooks last
# registered first, so this one comes after all of theirs.
atexit.register(_end_by_sigint_if_pressed)
