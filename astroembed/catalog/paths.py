"""Up-front checks that an output path is usable, so a command fails before its work, not after.

Each check raises :class:`OutputError` naming the option as the user wrote it, the path,
what is wrong and what to do. Nothing is created: missing parent directories are fine (the
writers create them), as long as the nearest existing one is a directory we can write in.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from astroembed.errors import OutputError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the directory new parents would go in)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_parent(path: str | os.PathLike, option: str) -> Path:
    """Refuse ``path`` when the directory it would be created in is a file or not writable.

    Writability is tried with a temporary file rather than ``os.access``: root passes
    ``os.access`` everywhere, yet cannot create files in /proc or a read-only mount.
    """
    path = Path(path)
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputError(f"{option} {path}: {base} is a file, not a directory; choose a "
                          f"path inside a directory.")
    try:  # an unnamed file where the system allows it: nothing to leave behind if killed
        with tempfile.TemporaryFile(prefix=".astroembed-check-", dir=base):
            pass
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot write in {base} ({err.strerror or err}); "
                          f"choose a writable location.") from None
    return path


def check_output_file(path: str | os.PathLike, option: str, example: str = "out.png") -> Path:
    """Refuse a single-file output that is a directory or cannot be created."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a directory, not a file; give a file name, "
                          f"e.g. {path / example}.")
    return check_writable_parent(path, option)


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Refuse a directory output that exists as a file or cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file, not a directory; choose a directory "
                          f"path (new, or one this command wrote).")
    return check_writable_parent(path, option)
