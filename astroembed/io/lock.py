"""Advisory locks on a catalog, so runs that change it in place never step on each other.

Why shared + exclusive: several ``embed`` runs may work on one catalog at once (a job array,
one ``--tile`` each); they write different tiles, atomically, so they only need to keep out
of the one step that must see every tile at rest: rewriting ``_metadata``,
``_common_metadata`` and ``hats.properties``. Each run holds a *shared* lock while it works;
when it ends it tries the *exclusive* lock without waiting. Whoever gets it is the last run
still going and finishes the catalog; a run that does not get it leaves that to the runs
still holding the shared lock. A run that starts waits (shared) until a finisher is done, so
it never marks the catalog incomplete under a finisher that is about to mark it complete.

The kernel drops a killed process's locks, so there is nothing stale to clean up. Where the
file system has no ``flock`` (some network file systems), the lock degrades to a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from astroembed.errors import OutputError

log = logging.getLogger("astroembed")
LOCK_FILE = ".astroembed.lock"

try:  # POSIX only; elsewhere the lock is a no-op with a warning
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class CatalogLock:
    """``CAT/.astroembed.lock``: :meth:`shared` while working, :meth:`try_exclusive` to finish."""

    def __init__(self, catalog: str | os.PathLike) -> None:
        self.path = Path(catalog) / LOCK_FILE

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise OutputError(f"{self.path}: cannot create the catalog lock: "
                              f"{err.strerror or err}. Is the catalog writable?") from err

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[bool]:
        """Hold ``mode`` (``fcntl.LOCK_*``); yields False when it could not be had at once
        (only with ``LOCK_NB``), True otherwise (also where locking is unsupported)."""
        if fcntl is None:
            log.warning("no file locking on this platform: do not run two embed jobs on one "
                        "catalog at once")
            yield True
            return
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                yield False
                return
            except OSError as err:  # e.g. ENOLCK on a file system without flock
                log.warning("%s: file locking unsupported here (%s): do not run two embed "
                            "jobs on this catalog at once", self.path, err.strerror or err)
                yield True
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Held by a run while it changes tiles; waits while another run finishes the catalog."""
        mode = fcntl.LOCK_SH if fcntl else 0
        if fcntl is not None:
            with self._locked(mode | fcntl.LOCK_NB) as got:
                if got:
                    yield
                    return
            log.info("%s: another run is finishing the catalog; waiting", self.path.parent)
        with self._locked(mode):
            yield

    @contextlib.contextmanager
    def try_exclusive(self) -> Iterator[bool]:
        """True when no other run holds the lock (this run may finish the catalog)."""
        mode = (fcntl.LOCK_EX | fcntl.LOCK_NB) if fcntl else 0
        with self._locked(mode) as got:
            yield got
