"""Errors the CLI turns into one readable line (exit code 2) instead of a traceback."""


class ConfigError(ValueError):
    """A setting the user can fix; the message names the setting and the fix."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss; the message says what to change."""
