"""The catalog lock: one advisory lock per catalog, taken by every command that writes it.

The lock file is ``.CAT.astroembed.lock`` *beside* the catalog ``CAT``, not inside it: a
cross-match that replaces a catalog swaps the whole directory by a rename, and a lock inside
would be swapped away with it while a writer still held it.

Modes:

- **exclusive** (:meth:`CatalogLock.exclusive`): ``crossmatch``, ``predict``, ``run`` and
  anything else that rewrites every tile or replaces the catalog. Refused at once when any
  other process holds the lock (exit 3: :class:`~astroembed.errors.LockedError`); the holder
  is written into the lock file so the refusal can name it.
- **shared** (:meth:`CatalogLock.shared`): ``embed`` runs, which write different tiles, so
  that the ``embed --tile`` jobs of a job array run side by side; also ``search`` while it
  stores its index in the catalog. Refused when an exclusive writer holds the lock, except
  one ``embed`` finishing the catalog, which takes a moment and is waited for.
- **finishing** (:meth:`CatalogLock.try_exclusive`): an ``embed`` run that ends tries the
  exclusive lock without waiting; whoever gets it is the last run still going and rewrites
  the catalog's metadata; the others leave that to it.

Commands that only read (``info``, ``probe``, ``search`` without storing) take no lock and
never wait. The locks are re-entrant within a process (``run`` holds the exclusive lock and
calls ``crossmatch``, ``embed`` and ``predict``, which take it again). The kernel drops a
killed process's locks, so there is nothing stale to clean up; the file itself stays (removing
a lock file others may be waiting on would let two writers in). Where the file system has no
``flock`` (some network file systems) the lock degrades to a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from astroembed.errors import LockedError, OutputError
from astroembed.stamps import utc_now

log = logging.getLogger("astroembed")
LOCK_SUFFIX = ".astroembed.lock"
FINISHING = "finishing the catalog"

try:  # POSIX only; elsewhere the lock is a no-op with a warning
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

# Lock files this process holds exclusively: inside such a hold (``run`` calling its stages)
# every further request for the same lock is granted. Shared holds are not recorded: a second
# one in the same process takes its own shared lock, and an exclusive request then fails
# like another process's would.
_held: set[str] = set()


def lock_path(catalog: str | os.PathLike) -> Path:
    """``.CAT.astroembed.lock`` in the catalog's parent directory."""
    catalog = Path(os.path.abspath(catalog))
    return catalog.with_name(f".{catalog.name}{LOCK_SUFFIX}")


class CatalogLock:
    """The lock of catalog ``catalog`` as taken by ``command`` (named in refusals)."""

    def __init__(self, catalog: str | os.PathLike, command: str = "astroembed") -> None:
        self.catalog = Path(catalog)
        self.path = lock_path(catalog)
        self.command = command

    # -- plumbing

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise OutputError(f"{self.path}: cannot create the catalog lock: "
                              f"{err.strerror or err}. Is {self.path.parent} writable?") from err

    def _holder(self, fd: int) -> str:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        return text or "astroembed embed runs, sharing it"

    def _stamp(self, fd: int, what: str) -> str:
        """Write who holds the lock exclusively; return what a previous holder left."""
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        since = utc_now()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()} on {socket.gethostname()} since "
                      f"{since})".encode(), 0)
        return previous

    def _refuse(self, fd: int) -> LockedError:
        return LockedError(f"{self.catalog}: another astroembed process is working on it "
                           f"({self._holder(fd)}); this {self.command} did nothing. Try again "
                           "when it has finished.")

    @contextlib.contextmanager
    def _tried(self, operation: str) -> Iterator[tuple[int | None, bool]]:
        """The lock file open and ``operation`` (``"shared"`` or ``"exclusive"``) tried
        without waiting: ``(fd, got)``. ``fd`` is None where the file system has no
        ``flock`` (then ``got`` is True, after a warning). Closing the file releases it."""
        if fcntl is None:
            self._unsupported("no fcntl")
            yield None, True
            return
        fd = self._open()
        try:
            held: int | None = fd
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if operation == "shared" else fcntl.LOCK_EX)
                            | fcntl.LOCK_NB)
                got = True
            except BlockingIOError:
                got = False
            except OSError as err:  # e.g. ENOLCK on a file system without flock
                self._unsupported(err.strerror or err)
                held, got = None, True
            yield held, got
        finally:
            os.close(fd)

    def _unsupported(self, why: object) -> None:
        log.warning("%s: file locking unsupported here (%s): do not run two astroembed "
                    "writers on this catalog at once", self.path, why)

    @contextlib.contextmanager
    def _hold_exclusive(self, fd: int | None) -> Iterator[None]:
        key = str(self.path)
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            if fd is not None:
                os.ftruncate(fd, 0)

    # -- the three modes

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the catalog alone, or raise LockedError naming the holder (never waits).

        Logs when it takes over a lock file stamped by a process that died holding it."""
        if str(self.path) in _held:
            yield
            return
        with self._tried("exclusive") as (fd, got):
            if not got:
                raise self._refuse(fd)
            if fd is not None:
                previous = self._stamp(fd, f"astroembed {self.command}")
                if previous:
                    log.info("%s: taking over the lock of a process that ended without "
                             "releasing it (%s)", self.catalog, previous,
                             extra={"event": "lock_taken_over",
                                    "fields": {"previous": previous}})
            with self._hold_exclusive(fd):
                yield

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the catalog with other shared holders; wait only for an embed finishing it,
        raise LockedError for any other exclusive holder."""
        if str(self.path) in _held:  # inside this process's exclusive hold
            yield
            return
        with self._tried("shared") as (fd, got):
            if not got:
                if FINISHING not in self._holder(fd):
                    raise self._refuse(fd)
                log.info("%s: another embed run is finishing the catalog; waiting",
                         self.catalog)
                fcntl.flock(fd, fcntl.LOCK_SH)
            if fd is not None:
                os.ftruncate(fd, 0)  # a stamp left by an exclusive holder that died
            yield

    @contextlib.contextmanager
    def try_exclusive(self) -> Iterator[bool]:
        """True when no other process holds the lock (this embed run may finish the catalog);
        False at once otherwise."""
        if str(self.path) in _held:
            yield True
            return
        with self._tried("exclusive") as (fd, got):
            if not got:
                yield False
                return
            if fd is not None:
                self._stamp(fd, f"astroembed {self.command} {FINISHING}")
            with self._hold_exclusive(fd):
                yield True

def holders(catalog: str | os.PathLike) -> list[str]:
    """Who holds the catalog's lock now, without taking it (so ``info`` never waits and never
    gets in a writer's way): from ``/proc/locks`` on Linux, [] where that cannot be read.

    An exclusive holder is named by the stamp it wrote; shared holders (embed runs) by pid.
    """
    path = lock_path(catalog)
    try:
        inode = path.stat().st_ino
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    found = []
    for line in table.splitlines():
        parts = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
        if len(parts) < 6 or parts[1] != "FLOCK":  # "->" marks a waiter, not a holder
            continue
        mode, pid, ident = parts[3], parts[4], parts[5]
        if ident.rsplit(":", 1)[-1] != str(inode):
            continue
        if mode == "WRITE":
            stamp = path.read_text(errors="replace").strip()
            found.append(stamp or f"pid {pid}")
        else:
            found.append(f"astroembed embed (pid {pid})")
    return sorted(set(found))
