"""Embedding a catalog as a run: plan, hold the catalog lock (shared with other embed runs),
embed the tiles that need it, finish the catalog's metadata (:func:`embed`).

:mod:`astroembed.compute` runs the tiles (in this process, with a rows bar per batch, or on
Dask, one task per tile); this module decides what runs and what the catalog becomes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from astroembed.compute import Progress, compute_client, completed
from astroembed.config import EmbedConfig
from astroembed.errors import AstroembedError, InterruptedRun

log = logging.getLogger("astroembed")


def _embed_threads(cfg: EmbedConfig) -> int | None:
    """onnxruntime threads per task: the local cores shared among the local workers; 1 on a
    remote cluster, where Dask's worker threads give the parallelism (``--threads`` wins)."""
    import os

    if cfg.threads:
        return cfg.threads
    if cfg.scheduler:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // (cfg.workers or 1))


def _embed_one(job, on_rows=None):
    """One Dask task (or in-process step): embed one tile; user errors come back as data."""
    from astroembed.runtime.embedding import run_tile

    return run_tile(job, on_rows)


def _embed_interrupted(err: KeyboardInterrupt, catalog: Path, jobs: list) -> InterruptedRun:
    """What an interrupted embed kept: the tiles it finished (each rewritten atomically),
    counted on disk, since a tile can be published just before its result is recorded."""
    from astroembed.runtime.embedding import tile_done

    signal_name = getattr(err, "signal_name", "SIGINT")
    done = sum(1 for job in jobs if tile_done(job))
    attempted = len(jobs)
    return InterruptedRun(
        f"{signal_name}: {done} of {attempted} tiles were embedded and are kept in {catalog}, "
        "which reads as incomplete until they all are; no work files were left. Run the same "
        "command again to embed the rest (embedded tiles are skipped).")


def _embed_tiles(cfg: EmbedConfig, jobs: list, rows: dict, progress: Progress | None,
                 results: list) -> list:
    """Run the tile jobs in-process (rows bar per batch) or on Dask (per tile), appending
    each tile's result to ``results`` as it comes (an interruption keeps what is there)."""
    total_rows = sum(rows[(j.order, j.pixel)] for j in jobs)
    done_rows = 0

    def report(tiles_done: int) -> None:
        if progress:
            progress("tiles", tiles_done, len(jobs))
            progress("rows", done_rows, total_rows)

    def on_rows(n: int) -> None:  # in this process only: a rows bar that moves per batch
        nonlocal done_rows
        done_rows += n
        if progress:
            progress("rows", done_rows, total_rows)

    report(0)
    by_job: list = [None] * len(jobs)
    finished_rows = 0
    with compute_client(cfg.scheduler, cfg.workers, cfg.processes, 0) as client:
        for i, result in completed(client, _embed_one, jobs, local={"on_rows": on_rows}):
            by_job[i] = result
            results.append(result)
            finished_rows += rows[(jobs[i].order, jobs[i].pixel)]
            done_rows = finished_rows
            report(len(results))
    results[:] = by_job  # in job order
    return results


def _finish_embed(catalog: Path, lock) -> tuple[str, str | None, dict]:
    """Rewrite the catalog metadata, if this is the last run working on it and its tiles can
    form one catalog: ``complete``, or ``partly embedded`` when some tiles lack embedding
    columns others have (``--tile`` runs). Else leave it incomplete. Returns the state, what
    it means (None when complete) and the embedding columns."""
    from astroembed.runtime.embedding import catalog_embeddings
    from astroembed.catalog.describe import (STATE_COMPLETE, STATE_INCOMPLETE,
                                             STATE_PARTLY_EMBEDDED, embedding_gaps,
                                             partly_embedded_detail)
    from astroembed.catalog.reader import read_catalog_info
    from astroembed.catalog.writer import refresh_catalog

    with lock.try_exclusive() as last:
        if not last:
            return (STATE_INCOMPLETE, "another embed run is still working on it and will "
                    "finish it", {})
        columns, problem = catalog_embeddings(catalog)
        if problem:
            return STATE_INCOMPLETE, problem, columns
        info = read_catalog_info(catalog)
        provenance = dict(info.provenance)
        provenance["embeddings"] = columns
        # refresh_catalog recomputes hats_max_rows from the tiles; keep the catalog's setting
        keep = {k: info.properties[k] for k in ("hats_max_rows",) if k in info.properties}
        partial = bool(embedding_gaps(columns))
        refresh_catalog(catalog, provenance=provenance, extra_properties=keep, partial=partial)
        if partial:
            return STATE_PARTLY_EMBEDDED, partly_embedded_detail(info.path, columns), columns
        return STATE_COMPLETE, None, columns


def embed(cfg: EmbedConfig, progress: Progress | None = None) -> dict:
    """Add embedding columns to the catalog ``cfg.catalog`` (an :class:`EmbedConfig`).

    Checks everything first (tiles, model vs catalog columns, device); then, holding the
    catalog lock, marks it incomplete, embeds the tiles that need it (one task per tile, each
    rewritten atomically) and finishes the metadata. Returns the run summary. Tiles that fail
    for a user-fixable reason do not stop the others; the run then raises an error naming
    them, with the summary as ``err.summary``.
    """
    from astroembed.runtime.embedding import plan_embed
    from astroembed.catalog.writer import mark_incomplete
    from astroembed.catalog.lock import CatalogLock

    start = time.time()
    cfg.validate()
    plan = plan_embed(cfg.catalog, tiles=tuple(cfg.tiles), model=cfg.model, name=cfg.name,
                      modality=cfg.modality, batch_size=cfg.batch_size, device=cfg.device,
                      threads=_embed_threads(cfg), force=cfg.force,
                      check_device="cpu" if cfg.scheduler else cfg.device)
    catalog = plan.catalog
    results: list = []
    state, reason = "complete", None
    if plan.jobs or not plan.info.complete:
        lock = CatalogLock(catalog, "embed")
        with lock.shared():
            if plan.jobs:
                mark_incomplete(catalog)
                try:
                    _embed_tiles(cfg, plan.jobs, plan.info.rows, progress, results)
                except KeyboardInterrupt as err:
                    raise _embed_interrupted(err, catalog, plan.jobs) from None
        state, reason, _ = _finish_embed(catalog, lock)
        if state == "partly embedded":  # --tile runs (a job array), or failed tiles
            log.log(logging.INFO if cfg.tiles else logging.WARNING,
                    "%s is partly embedded: %s; embedded tiles are skipped.", catalog, reason)
        elif state != "complete":
            log.log(logging.INFO if cfg.tiles else logging.WARNING,
                    "%s left incomplete: %s. Run `astroembed embed --catalog %s` (without "
                    "--tile) to finish it; embedded tiles are skipped.", catalog, reason, catalog)
    if cfg.scheduler:  # the plan was checked on CPU here; the workers chose their own
        for message in sorted({m for r in results for m in r.fallbacks}):
            log.warning("on a Dask worker: %s", message)
    summary = _embed_summary(cfg, plan, results, state, reason, time.time() - start)
    failed = [r for r in results if r.error]
    if failed:
        raise _embed_failure(failed, len(results), summary)
    return summary


def _embed_summary(cfg: EmbedConfig, plan, results: list, state: str, reason: str | None,
                   seconds: float) -> dict:
    """Rows embedded / skipped / failed, nulls per column, tiles, providers, time."""
    ok = [r for r in results if not r.error]
    failed = [r for r in results if r.error]
    rows = plan.info.rows
    per_column = {}
    for spec in plan.encoders:
        per_column[spec.column] = {
            "modality": spec.modality, "model_name": spec.name, "model_hash": spec.hash,
            "dim": spec.dim,
            "embedded": sum(r.embedded.get(spec.column, 0) for r in ok),
            "null_missing_input": sum(r.missing.get(spec.column, 0) for r in ok),
            "null_unusable_input": sum(r.unusable.get(spec.column, 0) for r in ok)}
    rows_embedded = sum(r.rows for r in ok)
    providers = dict(plan.providers)
    for r in ok:  # what the tasks really used (remote workers may differ from this machine)
        providers.update(r.providers)
    return {
        "catalog": str(plan.catalog),
        "model": plan.encoders[0].name if plan.encoders else None,
        "columns": per_column,
        "providers": providers,
        "batch_size": cfg.batch_size,
        "tiles": len(plan.jobs) + len(plan.skipped),
        "tiles_embedded": len(ok),
        "tiles_skipped": len(plan.skipped),
        "tiles_failed": len(failed),
        "rows_embedded": rows_embedded,
        "rows_skipped": sum(rows.get(t, 0) for t in plan.skipped),
        "rows_failed": sum(rows.get((r.order, r.pixel), 0) for r in failed),
        "failures": [{"tile": f"{r.order}/{r.pixel}", "error": r.error} for r in failed],
        "complete": state == "complete",
        "state": state,
        "incomplete_reason": reason,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows_embedded / seconds, 1) if seconds > 0 else None,
    }


def _embed_failure(failed: list, attempted: int, summary: dict) -> AstroembedError:
    """One error naming the failed tiles (of the first failure's kind), summary attached."""
    from astroembed import errors

    kind = getattr(errors, failed[0].error_kind or "", None)
    cls = kind if isinstance(kind, type) and issubclass(kind, AstroembedError) else AstroembedError
    shown = "; ".join(f"tile {r.order}/{r.pixel}: {r.error}" for r in failed[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    err = cls(f"{len(failed)} of {attempted} tiles failed ({shown}{more}). The other tiles "
              "were embedded; fix the cause and run the same command again (embedded tiles "
              "are skipped).")
    err.summary = summary
    return err
