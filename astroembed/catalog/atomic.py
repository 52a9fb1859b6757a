"""Atomic file and directory writes: output appears complete or not at all.

Files and directories published here get the modes any Unix tool would give them under the
process umask (0644 / 0755 with umask 022, group-writable with 002): ``mkstemp`` and
``mkdtemp`` make private 0600 / 0700 temporaries, which must not leak into outputs a group
shares. Whether an existing directory may be replaced at all is decided by
:mod:`astroembed.catalog.outputs`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
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


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success.

    The temporary name starts with a dot and lives in the same directory, so the rename is
    atomic on POSIX file systems and a crash leaves no file under the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        publish_mode(tmp_path)  # writers may have replaced the file: set the mode last
        os.replace(tmp_path, final)
    except BaseException:
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    publish_mode(tmp, directory=True)
    try:
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
