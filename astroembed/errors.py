"""Errors meant for people.

Every failure a user can cause (a bad file, a wrong flag, an existing output) is raised as an
``AstroembedError`` subclass whose message says what is wrong, where, and what to do. The CLI
turns these into one line on stderr and a non-zero exit; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class AstroembedError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputError(AstroembedError):
    """An input file is missing, unreadable, or not in the format it claims to be."""


class OutputError(AstroembedError):
    """The output location is unusable (exists already, not writable, ...)."""


class ConfigError(AstroembedError):
    """A configuration value or file is invalid."""

    exit_code = 2


class ModelError(AstroembedError):
    """A model file is missing, corrupt, or does not declare the expected contract."""


class LockedError(AstroembedError):
    """Another astroembed process holds the catalog lock; this one changed nothing."""

    exit_code = 3


class Interrupted(KeyboardInterrupt):
    """SIGTERM turned into the same unwinding as Ctrl-C (SIGINT), with the signal's name."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class InterruptedRun(AstroembedError):
    """A run stopped by SIGINT or SIGTERM; the message says what was kept, where, its size,
    that the same command resumes from it, and how to remove it."""

    exit_code = 130


def where(path: object, hdu: object | None = None, column: str | None = None,
          row: int | None = None) -> str:
    """Format a location as ``file[HDU] column X row N`` for error messages."""
    text = str(path)
    if hdu is not None:
        text += f"[{hdu}]"
    if column is not None:
        text += f" column {column}"
    if row is not None:
        text += f" row {row}"
    return text


def did_you_mean(value: str, options, *, list_all: bool = False) -> str:
    """`` Did you mean 'x'?`` for the option closest to a misspelt ``value`` (or one differing
    only in case); with ``list_all``, the valid options when none is close. The one place
    every "unknown key" and "must be one of" message gets its suggestion from."""
    import difflib

    options = [str(o) for o in options]
    close = difflib.get_close_matches(value, options, n=1) or [
        o for o in options if o.lower() == str(value).lower()]
    if close:
        return f" Did you mean '{close[0]}'?"
    return f" Valid keys: {', '.join(options)}." if list_all else ""
