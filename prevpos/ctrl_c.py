"""How a command run from the command line ends after Ctrl-C (by SIGINT) and SIGTERM. After Ctrl-C by SIGINT, as any program stopped with Ctrl-C does, so
that a shell running it in a loop (`for seed in 0 1 2; do python -m prevpos fit ...; done`) stops too. A shell goes
on with its loop when the program exits normally, whatever the code: prevpos exited 130, and Lightning exits 1 after
its graceful stop of a fit."""

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
