"""``astroembed run``: a pipeline from a TOML file, run unattended and incrementally.

crossmatch -> embed -> (optional) probe and predict on one catalog. What was read last time is
recorded in the catalog's state file (``CAT/astroembed_state.json``): each input file's size,
mtime, SHA-256 and the tiles it reached, the tile layout and the cross-match settings. A run
compares the inputs with it: a file is changed when its size or mtime differ *and* its
checksum does (a touched but identical file is not). Only the tiles that new or changed files
reach (own rows or margins), and those where removed or changed files had rows, are
cross-matched again, on the same tile layout; the embed stage then embeds the tiles without
embeddings; a run with nothing new does nothing and says so.

One writer at a time: the run holds the catalog lock exclusively (:mod:`astroembed.catalog.lock`,
``.CAT.astroembed.lock`` beside the catalog) from start to end; the kernel releases it when its
process dies, so a killed run's lock is simply taken over.
Events go to the ``astroembed`` logger with ``extra={"event": ..., ...}`` (the CLI prints
them as text or one JSON object per line).

Dask appears only in :mod:`astroembed.compute`; this module decides what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from astroembed.config import ON_ERROR, RunConfig, load_run_config
from astroembed.errors import AstroembedError, ConfigError, InputError, InterruptedRun, LockedError
from astroembed.catalog.paths import check_output_dir
from astroembed.stamps import utc_now

log = logging.getLogger("astroembed")
STATE_FILE = "astroembed_state.json"
STATE_VERSION = 1
HASH_CHUNK = 8 * 2**20
MAX_SKIPS = 1000

__all__ = ["LockedError", "PartialSuccess", "run", "read_state"]


class PartialSuccess(AstroembedError):
    """The run finished without some inputs (``--on-error skip``)."""

    exit_code = 4


def event(name: str, message: str, *args, level: int = logging.INFO, **fields) -> None:
    """One log record that is also a structured event (``event`` plus ``fields``)."""
    log.log(level, message, *args, extra={"event": name, "fields": fields})


# ----------------------------------------------------------------------------- state

def read_state(catalog: str | os.PathLike) -> dict | None:
    """The catalog's run state, or None when it has none (or it is unreadable)."""
    try:
        state = json.loads((Path(catalog) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("version") == STATE_VERSION else None


def write_state(catalog: Path, state: dict) -> None:
    """Replace the state file atomically."""
    from astroembed.catalog.atomic import atomic_path

    with atomic_path(catalog / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=1) + "\n")


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def crossmatch_fingerprint(cfg: RunConfig) -> str:
    """What makes two cross-matches comparable: every setting that changes rows or columns."""
    data = dataclasses.asdict(cfg.crossmatch)
    for key in ("images", "spectra", "out", "overwrite", "scheduler", "workers", "processes"):
        data.pop(key)
    data["suffixes"] = list(data["suffixes"])
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class InputDiff:
    """How the input files compare with the last run's."""

    fingerprints: dict[str, dict]      # every current file: size, mtime, sha256
    new: list[str]
    changed: list[str]
    removed: list[str]

    @property
    def any(self) -> bool:
        return bool(self.new or self.changed or self.removed)


def diff_inputs(paths: list[str], known: dict[str, dict]) -> InputDiff:
    """Compare files with the last run's record (size and mtime first, checksum to confirm)."""
    prints, new, changed = {}, [], []
    for path in paths:
        st = os.stat(path)
        old = known.get(path)
        if old and old["size"] == st.st_size and old["mtime"] == st.st_mtime:
            prints[path] = dict(old)
            continue
        digest = sha256(path)
        prints[path] = {"size": st.st_size, "mtime": st.st_mtime, "sha256": digest}
        if old is None:
            new.append(path)
        elif old.get("sha256") != digest:
            changed.append(path)
    removed = sorted(set(known) - set(paths))
    return InputDiff(prints, new, changed, removed)


# ----------------------------------------------------------------------------- inputs

def _known_file_error(err: AstroembedError) -> InputError:
    return InputError(f"{err} It was read by an earlier run, so its rows are in the catalog: it "
                      "is not skipped (that would drop them). Restore the file, or take it out "
                      "of the inputs to drop its rows.")


def check_input_roots(cfg: RunConfig) -> None:
    """Every ``images`` / ``spectra`` entry of the config exists (a typo'd path is an error
    before the run starts, not a run that failed)."""
    for root in (*cfg.images, *cfg.spectra):
        if not Path(root).exists():
            raise InputError(f"{root}: no such file or directory (from {cfg.source}).")


def _scan_inputs(cfg: RunConfig, on_error: str, skipped: dict[str, str],
                 known: dict[str, dict]) -> list[str]:
    """Every input file whose kind can be recognised; the others fail the run, or with
    ``skip`` are set aside (``skipped``: path -> why) unless an earlier run read them."""
    from astroembed.readers.inventory import input_files
    from astroembed.readers import detect_kind

    good = []
    check_input_roots(cfg)
    for path in input_files([*cfg.images, *cfg.spectra]):
        if str(path) in skipped or path.name == "truth.parquet":
            continue
        try:
            detect_kind(path)
        except InputError as err:
            if on_error == "fail":
                raise
            if str(path) in known:
                raise _known_file_error(err) from None
            skipped[str(path)] = str(err)
            event("input_skipped", "skipping %s: %s", path, err, level=logging.WARNING,
                  file=str(path), error=str(err))
            continue
        good.append(str(path))
    return sorted(good)


def _side_lists(cfg: RunConfig, files: list[str]) -> tuple[list[str], list[str]]:
    """The usable files split back into the IMAGES and SPECTRA sides."""
    def under(path: str, roots: list[str]) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    return ([f for f in files if under(f, cfg.images)],
            [f for f in files if under(f, cfg.spectra)])


def _failing_input(err: AstroembedError, files: list[str]) -> str | None:
    """The input file an error names (errors about files start with the path)."""
    text = str(err)
    named = [f for f in files if text.startswith(f) or f" {f}" in text]
    return max(named, key=len) if named else None


# ----------------------------------------------------------------------------- stages

def _crossmatch_stage(cfg: RunConfig, catalog: Path, state: dict | None, files: list[str],
                      diff: InputDiff, dry_run: bool, progress) -> dict:
    """Full cross-match (first run, changed settings, no usable state) or an update of the
    tiles that changed inputs reach; the stage's report."""
    from astroembed.matching.orchestrate import LayoutTooSmall, crossmatch, crossmatch_update

    images, spectra = _side_lists(cfg, files)
    xcfg = dataclasses.replace(cfg.crossmatch, images=images, spectra=spectra)
    fingerprint = crossmatch_fingerprint(cfg)
    reason = None
    if state is None:
        reason = "no earlier run recorded in the catalog" if catalog.exists() else "new catalog"
    elif state.get("crossmatch") != fingerprint:
        reason = "the cross-match settings changed"
    if reason is None and not diff.any:
        event("crossmatch_nothing_to_do", "crossmatch: no new, changed or removed input "
              "files; nothing to do", stage="crossmatch")
        return {"mode": "none", "tiles": [], "input_tiles": state["input_tiles"],
                "layout": state["layout"]}
    if reason is None:
        known = state["input_tiles"]
        stale = {tuple(t) for p in (*diff.changed, *diff.removed) for t in known.get(p, [])}
        event("crossmatch_update", "crossmatch: %d new, %d changed, %d removed input files",
              len(diff.new), len(diff.changed), len(diff.removed), stage="crossmatch",
              counts={"new": len(diff.new), "changed": len(diff.changed),
                      "removed": len(diff.removed)})
        try:
            report = crossmatch_update(xcfg, [tuple(t) for t in state["layout"]], known,
                                       set(diff.new) | set(diff.changed), stale, progress,
                                       dry_run=dry_run)
        except LayoutTooSmall as err:
            reason = f"{err}; re-tiling"
        else:
            for t in report["tiles"]:
                event("tile_redone" if not dry_run else "tile_would_redo",
                      "tile %d/%d %s", t[0], t[1], "redone" if not dry_run else "would be redone",
                      stage="crossmatch", tile=f"{t[0]}/{t[1]}")
            merged = {p: t for p, t in known.items() if p in diff.fingerprints}
            merged.update({p: t for p, t in report.get("input_tiles", {}).items()})
            for p in diff.new:
                merged.setdefault(p, [])
            report.update(mode="update", input_tiles=merged, layout=state["layout"])
            return report
    event("crossmatch_full", "crossmatch: full run (%s)", reason, stage="crossmatch", reason=reason)
    if dry_run:
        return {"mode": "full", "reason": reason, "tiles": "all"}
    summary = crossmatch(dataclasses.replace(xcfg, overwrite=catalog.exists()), progress)
    summary.update(mode="full", reason=reason)
    return summary


def _embed_stage(cfg: RunConfig, progress) -> dict:
    from astroembed.runtime.orchestrate import embed

    event("embed_start", "embed: checking which tiles need embeddings", stage="embed")
    summary = embed(cfg.embed, progress)
    event("embed_done", "embed: %d tiles embedded, %d already done", summary["tiles_embedded"],
          summary["tiles_skipped"], stage="embed",
          counts={"tiles_embedded": summary["tiles_embedded"],
                  "tiles_skipped": summary["tiles_skipped"],
                  "rows_embedded": summary["rows_embedded"]})
    return summary


def _probe_stage(cfg: RunConfig, changed: bool) -> list[dict]:
    """Each configured target's probe, when the catalog changed or its outputs are missing."""
    from astroembed.probes.crossval import run_probe

    reports = []
    for target in cfg.probe_targets:
        out = Path(cfg.probe.out) / target if cfg.probe.out else None
        if not changed and (out is None or (out / "probe.json").exists()):
            continue
        pcfg = dataclasses.replace(cfg.probe, target=target, out=str(out) if out else None)
        doc = run_probe(pcfg)
        best = max(doc["results"], key=lambda r: r["r2"] if r["r2"] is not None else -1e9)
        event("probe_done", "probe %s: %d rows, best R^2 %.4f (%s %s)", target, doc["n_rows"],
              best["r2"], best["features"], best["method"], stage="probe", target=target,
              counts={"rows": doc["n_rows"]})
        reports.append({"target": target, "n_rows": doc["n_rows"], "out": str(out) if out else None,
                        "results": [{k: r.get(k) for k in ("features", "method", "r2",
                                                           "sigma_nmad")} for r in doc["results"]]})
    return reports


def _predict_stage(cfg: RunConfig, changed: bool) -> dict | None:
    from astroembed.probes.predict import predict_catalog

    if not cfg.predict or not changed:
        return None
    summary = predict_catalog(cfg.catalog, cfg.predict["probe"], column=cfg.predict["column"],
                              overwrite=True)
    event("predict_done", "predict: column %s written", summary.get("column"), stage="predict")
    return summary


# ----------------------------------------------------------------------------- the run

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
        files = _scan_inputs(cfg, on_error, skipped, known)
        diff = diff_inputs(files, known)
        report["inputs"] = {"files": len(files), "new": diff.new, "changed": diff.changed,
                            "removed": diff.removed}
        if dry_run:
            for kind in ("new", "changed", "removed"):
                for path in getattr(diff, kind):
                    event(f"input_{kind}", "input %s: %s", kind, path, file=path)
        try:
            xm = _crossmatch_stage(cfg, catalog, state, files, diff, dry_run, progress)
            break
        except InputError as err:
            bad = _failing_input(err, files)
            if on_error == "fail" or bad is None:
                raise
            if bad in known:
                raise _known_file_error(err) from None
            skipped[bad] = str(err)
            event("input_skipped", "skipping %s: %s", bad, err, level=logging.WARNING,
                  file=bad, error=str(err))
    report["stages"]["crossmatch"] = {k: v for k, v in xm.items() if k != "input_tiles"}
    if dry_run:
        report["outcome"] = "dry run"
        return
    if xm["mode"] != "none":
        _save_crossmatch_state(catalog, cfg, diff, xm)
    embed = _embed_stage(cfg, progress)
    report["stages"]["embed"] = embed
    changed = xm["mode"] != "none" or embed["tiles_embedded"] > 0
    if cfg.probe is not None:
        report["stages"]["probe"] = _probe_stage(cfg, changed)
    if cfg.predict:
        report["stages"]["predict"] = _predict_stage(cfg, changed)
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
