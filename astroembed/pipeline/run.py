"""``astroembed run``: a pipeline from a TOML file, run unattended and incrementally.

crossmatch -> embed -> (optional) probe and predict on one catalog. What was read last time is
recorded in the catalog's state file (:mod:`astroembed.pipeline.state`). A run compares the
inputs with it: only the tiles that new or changed files reach (own rows or margins), and
those where removed or changed files had rows, are cross-matched again, on the same tile
layout; the embed stage then embeds the tiles without embeddings
(:mod:`astroembed.pipeline.stages`); a run with nothing new does nothing and says so.

One writer at a time: the run holds the catalog lock exclusively (:mod:`astroembed.catalog.lock`,
``.CAT.astroembed.lock`` beside the catalog) from start to end; the kernel releases it when its
process dies, so a killed run's lock is simply taken over.

Dask appears only in :mod:`astroembed.compute`; this module decides what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from astroembed.config import ON_ERROR, RunConfig, load_run_config
from astroembed.errors import AstroembedError, ConfigError, InputError, InterruptedRun, LockedError
from astroembed.catalog.paths import check_output_dir
from astroembed.catalog.reader import check_layout
from astroembed.pipeline.stages import (check_input_roots, crossmatch_stage, embed_stage, event,
                                       failing_input, known_file_error, predict_stage,
                                       probe_stage, scan_inputs)
from astroembed.pipeline.state import (STATE_FILE, STATE_VERSION, InputDiff,
                                      crossmatch_fingerprint, diff_inputs, read_state,
                                      write_state)
from astroembed.stamps import utc_now

log = logging.getLogger("astroembed")
MAX_SKIPS = 1000

__all__ = ["LockedError", "PartialSuccess", "run", "read_state"]


class PartialSuccess(AstroembedError):
    """The run finished without some inputs (``--on-error skip``)."""

    exit_code = 4


def run(config: str | os.PathLike, *, dry_run: bool = False, on_error: str = "fail",
        progress=None) -> dict:
    """Run the pipeline in ``config``; the report of what each stage did and the outcome.

    Raises :class:`LockedError` when another run holds the catalog, :class:`PartialSuccess`
    (with ``.report``) when ``on_error="skip"`` set input files aside, and the stage's error
    otherwise; the last run's outcome is recorded in the state file either way.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"--on-error must be one of {', '.join(ON_ERROR)} (got '{on_error}').")
    cfg = load_run_config(config)
    catalog = Path(cfg.catalog)
    check_input_roots(cfg)
    check_layout(catalog)
    if not dry_run:
        check_output_dir(catalog, f"{cfg.source}: catalog")
        for key in ("out", "save"):
            if cfg.probe is not None and getattr(cfg.probe, key):
                check_output_dir(getattr(cfg.probe, key), f"{cfg.source}: [probe] {key}")
    started = time.time()
    report: dict = {"config": cfg.source, "catalog": str(catalog), "started": utc_now(),
                    "dry_run": dry_run, "stages": {}, "skipped_inputs": {}}
    with _run_lock(catalog, dry_run):
        event("run_start", "run %s -> %s%s", cfg.source, catalog, " (dry run)" if dry_run else "",
              config=cfg.source, catalog=str(catalog))
        state = read_state(catalog) if catalog.exists() else None
        try:
            _run_stages(cfg, catalog, state, report, dry_run, on_error, progress)
        except (KeyboardInterrupt, InterruptedRun) as err:
            stopped = _interrupted(err, catalog, report)
            report.update(outcome="interrupted", error=str(stopped),
                          seconds=round(time.time() - started, 2))
            if not dry_run:
                _record(catalog, state, cfg, report)
            event("run_interrupted", "run interrupted: %s", report["error"],
                  level=logging.WARNING, error=report["error"])
            raise stopped from None
        except BaseException as err:
            report.update(outcome="failed", error=str(err) or type(err).__name__,
                          seconds=round(time.time() - started, 2))
            if not dry_run:
                _record(catalog, state, cfg, report)
            event("run_failed", "run failed: %s", report["error"], level=logging.ERROR,
                  error=report["error"])
            raise
        report["seconds"] = round(time.time() - started, 2)
        if not dry_run:
            _record(catalog, read_state(catalog) or state, cfg, report)
    event("run_end", "run %s in %.1f s", report["outcome"], report["seconds"],
          outcome=report["outcome"], counts={"skipped_inputs": len(report["skipped_inputs"])})
    if report["skipped_inputs"] and not dry_run:
        err = PartialSuccess(f"finished without {len(report['skipped_inputs'])} unreadable "
                             f"input file(s): {', '.join(sorted(report['skipped_inputs']))}")
        err.report = report
        raise err
    return report


@contextlib.contextmanager
def _run_lock(catalog: Path, dry_run: bool) -> Iterator[None]:
    """The catalog's exclusive lock for the whole run; a dry run whose catalog's directory
    does not exist yet has nothing to lock (and makes no directory)."""
    from astroembed.catalog.lock import CatalogLock

    if dry_run and not catalog.parent.is_dir():
        yield
        return
    with CatalogLock(catalog, "run").exclusive():
        yield


def _interrupted(err: BaseException, catalog: Path, report: dict) -> InterruptedRun:
    """The stage's own account of what it kept, or (stopped between stages, or in one that
    writes atomically) what the catalog holds and that a rerun continues."""
    if isinstance(err, InterruptedRun):
        return err
    signal_name = getattr(err, "signal_name", "SIGINT")
    done = ", ".join(report["stages"]) or "no stage"
    where = (f"{catalog} keeps what the finished stages made ({done})" if catalog.exists()
             else "no catalog was made")
    return InterruptedRun(f"{signal_name}: {where}; no work files were left. Run the same "
                          "command again to continue.")


def _run_stages(cfg: RunConfig, catalog: Path, state: dict | None, report: dict, dry_run: bool,
                on_error: str, progress) -> None:
    skipped: dict[str, str] = report["skipped_inputs"]
    for _ in range(MAX_SKIPS):
        known = (state or {}).get("inputs", {})
        files = scan_inputs(cfg, on_error, skipped, known)
        diff = diff_inputs(files, known)
        report["inputs"] = {"files": len(files), "new": diff.new, "changed": diff.changed,
                            "removed": diff.removed}
        if dry_run:
            for kind in ("new", "changed", "removed"):
                for path in getattr(diff, kind):
                    event(f"input_{kind}", "input %s: %s", kind, path, file=path)
        try:
            xm = crossmatch_stage(cfg, catalog, state, files, diff, dry_run, progress,
                                  skip_bad_bricks=on_error == "skip")
            break
        except InputError as err:
            bad = failing_input(err, files)
            if on_error == "fail" or bad is None:
                raise
            if bad in known:
                raise known_file_error(err) from None
            skipped[bad] = str(err)
            event("input_skipped", "skipping %s: %s", bad, err, level=logging.WARNING,
                  file=bad, error=str(err))
    report["stages"]["crossmatch"] = {k: v for k, v in xm.items() if k != "input_tiles"}
    # bad brick files cost only their objects' stamps: reported as skipped inputs
    for bad, why in xm.get("skipped_bricks", {}).items():
        skipped[bad] = why
        event("input_skipped", "skipping %s: %s", bad, why, level=logging.WARNING,
              file=bad, error=why)
    if dry_run:
        report["outcome"] = "dry run"
        return
    if xm["mode"] != "none":
        _save_crossmatch_state(catalog, cfg, diff, xm)
    embed = embed_stage(cfg, progress)
    report["stages"]["embed"] = embed
    changed = xm["mode"] != "none" or embed["tiles_embedded"] > 0
    if cfg.probe is not None:
        report["stages"]["probe"] = probe_stage(cfg, changed)
    if cfg.predict:
        report["stages"]["predict"] = predict_stage(cfg, changed)
    if not changed and not report["stages"].get("probe") and not report["stages"].get("predict"):
        report["outcome"] = "nothing to do"
        event("nothing_to_do", "nothing to do: no new input, every tile embedded")
    else:
        report["outcome"] = "partial" if skipped else "ok"


def _save_crossmatch_state(catalog: Path, cfg: RunConfig, diff: InputDiff, xm: dict) -> None:
    """Record the inputs as read, right after the cross-match: a later failure in embed then
    does not redo it (embed skips the tiles it finished)."""
    state = read_state(catalog) or {}
    state.update(version=STATE_VERSION, crossmatch=crossmatch_fingerprint(cfg),
                 layout=xm["layout"], inputs=diff.fingerprints,
                 input_tiles={p: xm["input_tiles"].get(p, []) for p in diff.fingerprints})
    write_state(catalog, state)


def _record(catalog: Path, state: dict | None, cfg: RunConfig, report: dict) -> None:
    """The last run (and its resolved pipeline config) into the state file, if the catalog
    exists; never lets a write failure here hide the run's own outcome."""
    if not catalog.is_dir() or state is None and read_state(catalog) is None:
        return
    state = dict(read_state(catalog) or state)
    state["pipeline"] = cfg.resolved()
    state["last_run"] = {k: report.get(k) for k in ("started", "outcome", "error", "seconds",
                                                    "skipped_inputs", "inputs")}
    state["last_run"]["finished"] = utc_now()
    state["last_run"]["stages"] = {
        name: ({k: v for k, v in stage.items() if isinstance(v, (int, float, str, bool))}
               if isinstance(stage, dict) else stage)
        for name, stage in report["stages"].items()}
    try:
        write_state(catalog, state)
    except OSError as err:
        log.warning("%s: could not record the run (%s)", catalog / STATE_FILE,
                    err.strerror or err)
