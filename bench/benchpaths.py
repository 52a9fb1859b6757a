"""Paths as the benchmark results record them: relative to the repository, or by name.

The results are committed and read elsewhere, where the absolute paths of the machine that
ran a benchmark (its scratch directory, its Python environment) mean nothing. Every script
passes its report through :func:`portable` before writing it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Placeholder for the benchmark's ``--work`` directory in recorded command lines.
WORK = "WORK"
# An absolute path inside a string (a command line, a message): a "/" that does not follow
# a word character, ":", "/" or "`" and is followed by a name (so "rows/s", "a / b", URLs
# and Markdown like "`a`/`b`" are left alone), up to a separator.
_ABSOLUTE = re.compile(r"(?<![\w.~:/`])/[\w.~-][^\s'\"=,;()`]*")
# Parts that mark a path inside a Python environment: recorded by file name only.
_ENVIRONMENT = {".venv", "venv", "site-packages", "bin"}


def portable_path(path: str | os.PathLike, work: str | os.PathLike | None = None) -> str:
    """``path`` relative to the repository, ``WORK/...`` under ``work``, else its name."""
    absolute = Path(os.path.abspath(path))
    if work is not None:
        try:
            rest = absolute.relative_to(os.path.abspath(work)).as_posix()
            return WORK if rest == "." else f"{WORK}/{rest}"
        except ValueError:
            pass
    try:
        relative = absolute.relative_to(REPO)
    except ValueError:
        return absolute.name
    if _ENVIRONMENT & set(relative.parts[:-1]):
        return absolute.name
    return relative.as_posix() or "."


def portable_text(text: str, work: str | os.PathLike | None = None) -> str:
    """``text`` with every absolute path in it replaced by :func:`portable_path`."""
    return _ABSOLUTE.sub(lambda m: portable_path(m.group(0), work), text)


def portable(value, work: str | os.PathLike | None = None):
    """A copy of a JSON-like report with every string passed through :func:`portable_text`."""
    if isinstance(value, dict):
        return {k: portable(v, work) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, work) for v in value]
    if isinstance(value, str):
        return portable_text(value, work)
    return value


def cpu_name() -> str:
    """The processor's model name as /proc/cpuinfo gives it (else what platform knows)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
