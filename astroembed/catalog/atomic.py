"""Atomic file and directory writes: output appears complete or not at all.

Files and directories published here get the modes any Unix tool would give them under the
process umask (0644 / 0755 with umask 022, group-writable with 002): temporaries are made
private (0600 / 0700) while being written, which must not leak into outputs a group shares. Whether an existing directory may be replaced at all is decided by
:mod:`astroembed.catalog.outputs`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` is racy under threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: the only portable way to read it is to set it
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temporary file (0600) or directory (0700) the mode the umask asks for."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def _temporary_name(final: Path) -> Path:
    """A fresh hidden name beside ``final``, chosen before anything is created.

    ``mkstemp`` creates the file before its name reaches the caller, so a signal landing in
    between leaves a file nobody cleans up; with the name known first, the cleanup that
    follows the creation covers every moment. 64 random bits: ``O_EXCL`` still guards the
    creation.
    """
    return final.with_name(f".{final.name}.{secrets.token_hex(8)}.tmp")


def _name_taken(err: BaseException, tmp: Path) -> bool:
    """Whether ``err`` is the exclusive creation of ``tmp`` failing (the name was taken);
    a failed rename names two paths."""
    return (isinstance(err, FileExistsError) and err.filename == str(tmp)
            and err.filename2 is None)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success.

    The temporary name starts with a dot and lives in the same directory, so the rename is
    atomic on POSIX file systems and a crash leaves no file under the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temporary_name(final)
    try:
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield tmp_path
        publish_mode(tmp_path)  # writers may have replaced the file: set the mode last
        os.replace(tmp_path, final)
    except BaseException as err:
        if not _name_taken(err, tmp_path):  # someone else's file: never ours to remove
            tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike,
                     may_replace: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Build a directory under a temporary name and move it onto ``final`` on success.

    An existing non-empty ``final`` is replaced only after the new one is complete, and only
    when ``may_replace(final)`` returns (it raises to refuse; without it nothing is replaced):
    the check runs again at the swap, so a file added meanwhile is not lost. On failure the
    temporary directory is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(final)
    try:
        os.mkdir(tmp, 0o700)
        publish_mode(tmp, directory=True)
        yield tmp
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        if final.exists() or final.is_symlink():
            if may_replace is None:
                raise FileExistsError(final)
            may_replace(final)
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as err:
        if not _name_taken(err, tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
