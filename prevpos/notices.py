"""prevpos's own warnings (a plugin that failed, a figure not drawn) as one line, `prevpos: warning: ...`, like its
other messages. Python's default format printed the file and line that warned, then that line of prevpos's source:
nothing a user can act on."""

import warnings

from lightning.pytorch.utilities import rank_zero_warn


class PrevposWarning(UserWarning):
    """A problem prevpos noticed and went on past (filter on this class to silence them)."""


_format_others = warnings.formatwarning  # Lightning's, which formats its own warnings without the source line


def _format(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, PrevposWarning):
        return f"prevpos: warning: {message}\n"
    return _format_others(message, category, filename, lineno, line)


warnings.formatwarning = _format


def warn(message: str) -> None:
    """Warn on global rank 0 only, as Lightning's rank_zero_warn."""
    rank_zero_warn(message, category=PrevposWarning)
