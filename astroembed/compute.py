"""Dask orchestration: the only module that imports dask.

``crossmatch`` runs the stages of ``partition`` and ``tilematch`` as Dask tasks (one per input
file, then one per tile) on a LocalCluster or an existing scheduler, shows progress, and
finishes the HATS catalog. Tasks get file paths and small plans, never data, and each writes
its output atomically, so a killed run started again picks up where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Callable, Iterator

from astroembed.errors import ConfigError

log = logging.getLogger("astroembed")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


SMALL_INPUT_BYTES = 64 * 2**20  # below this, starting a cluster costs more than it saves
DEFAULT_WORKERS = 2


class InProcess:
    """Stands for a client where tasks run one after another in this process (:func:`completed`
    runs them): no cluster to start for small jobs."""


@contextlib.contextmanager
def compute_client(scheduler: str | None, workers: int | None, processes: bool,
                   input_bytes: int) -> Iterator:
    """Dask for real work; in-process when no cluster was asked for and the inputs are small."""
    if scheduler is None and workers is None and input_bytes < SMALL_INPUT_BYTES:
        yield InProcess()
        return
    with dask_client(scheduler, workers or DEFAULT_WORKERS, processes) as client:
        yield client


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int, processes: bool) -> Iterator:
    """A client on ``scheduler`` (tcp://host:port) or on a new LocalCluster."""
    from dask.distributed import Client, LocalCluster

    # distributed sets its loggers to INFO when imported, with handlers of its own; its chatter
    # (task failures come back to us as exceptions anyway) only with -vv, and through our
    # handlers, so `run --log-format json` stays JSON.
    quiet_level = logging.DEBUG if log.getEffectiveLevel() <= logging.DEBUG else logging.CRITICAL
    for name in ("distributed", "dask", "distributed.worker", "distributed.scheduler",
                 "distributed.client", "distributed.nanny", "distributed.core",
                 "tornado.application"):
        logger = logging.getLogger(name)
        logger.setLevel(quiet_level)
        logger.handlers[:] = []
        logger.propagate = True

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); check "
                              "the address or leave out --scheduler to run locally.") from None
        with client:
            yield client
        return
    with warnings.catch_warnings():
        # The scheduler's HTTP endpoint moves off a busy port 8787 with a warning; harmless.
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               dashboard_address=None, silence_logs=logging.ERROR)
    with cluster:
        _no_gc_diagnosis()
        with Client(cluster) as client:
            yield client


def _no_gc_diagnosis() -> None:
    """Stop distributed watching garbage collections in this process.

    Its in-process scheduler and workers install a ``gc`` callback (it only logs long pauses);
    Python swallows an exception raised inside such a callback ("Exception ignored in ..."), so
    a Ctrl-C landing there would be lost and the run would go on instead of stopping.
    """
    from distributed.gc import disable_gc_diagnosis

    disable_gc_diagnosis(force=True)


def completed(client, fn, items: list, local: dict | None = None,
              **kwargs) -> Iterator[tuple[int, object]]:
    """``(index, fn(item, **kwargs))`` as each task finishes: one after another in this
    process (``InProcess``, where ``local`` adds keyword arguments that cannot travel to a
    worker, such as a progress callback), or on Dask as they complete. On an error or an
    interruption the remaining tasks are cancelled and the error raised."""
    if isinstance(client, InProcess):
        for i, item in enumerate(items):
            yield i, fn(item, **kwargs, **(local or {}))
        return
    from dask.distributed import as_completed

    futures = client.map(fn, items, pure=False, **kwargs)
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for future in as_completed(futures):
            yield index[future.key], future.result()
    except BaseException:
        future = None
        _cancel(client, futures)
        raise


def run_all(client, fn, items: list, stage: str, progress: Progress | None, **kwargs) -> list:
    """Map ``fn`` over ``items``; results in input order; the first error raised."""
    results: list = [None] * len(items)
    for done, (i, result) in enumerate(completed(client, fn, items, **kwargs), start=1):
        results[i] = result
        if progress:
            progress(stage, done, len(items))
    return results


def _cancel(client, futures: list) -> None:
    """Cancel the tasks and drop our references to their futures while the client is alive:
    a failure's traceback would otherwise keep them until interpreter exit, whose clean-up
    then prints errors from inside distributed."""
    client.cancel(futures)
    futures.clear()
