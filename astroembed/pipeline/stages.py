"""The stages of ``astroembed run`` in order (cross-match, embed, probe, predict), the input
files they read, and the structured events they report.

Events go to the ``astroembed`` logger with ``extra={"event": ..., ...}`` (the CLI prints
them as text or one JSON object per line).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from astroembed.config import RunConfig
from astroembed.errors import AstroembedError, InputError
from astroembed.pipeline.state import InputDiff, crossmatch_fingerprint

log = logging.getLogger("astroembed")


def event(name: str, message: str, *args, level: int = logging.INFO, **fields) -> None:
    """One log record that is also a structured event (``event`` plus ``fields``)."""
    log.log(level, message, *args, extra={"event": name, "fields": fields})


# ----------------------------------------------------------------------------- inputs

def known_file_error(err: AstroembedError) -> InputError:
    return InputError(f"{err} It was read by an earlier run, so its rows are in the catalog: it "
                      "is not skipped (that would drop them). Restore the file, or take it out "
                      "of the inputs to drop its rows.")


def check_input_roots(cfg: RunConfig) -> None:
    """Every ``images`` / ``spectra`` entry of the config exists (a typo'd path is an error
    before the run starts, not a run that failed)."""
    for root in (*cfg.images, *cfg.spectra):
        if not Path(root).exists():
            raise InputError(f"{root}: no such file or directory (from {cfg.source}).")


def scan_inputs(cfg: RunConfig, on_error: str, skipped: dict[str, str],
                 known: dict[str, dict]) -> list[str]:
    """Every input file whose kind can be recognised; the others fail the run, or with
    ``skip`` are set aside (``skipped``: path -> why) unless an earlier run read them."""
    from astroembed.readers.inventory import input_files
    from astroembed.readers import detect_kind
    from astroembed.simulation import is_answer_key

    good = []
    check_input_roots(cfg)
    for path in input_files([*cfg.images, *cfg.spectra]):
        if str(path) in skipped or is_answer_key(path):
            continue
        try:
            detect_kind(path)
        except InputError as err:
            if on_error == "fail":
                raise
            if str(path) in known:
                raise known_file_error(err) from None
            skipped[str(path)] = str(err)
            event("input_skipped", "skipping %s: %s", path, err, level=logging.WARNING,
                  file=str(path), error=str(err))
            continue
        good.append(str(path))
    return sorted(good)


def side_lists(cfg: RunConfig, files: list[str]) -> tuple[list[str], list[str]]:
    """The usable files split back into the IMAGES and SPECTRA sides."""
    def under(path: str, roots: list[str]) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    return ([f for f in files if under(f, cfg.images)],
            [f for f in files if under(f, cfg.spectra)])


def failing_input(err: AstroembedError, files: list[str]) -> str | None:
    """The input file an error names (errors about files start with the path)."""
    text = str(err)
    named = [f for f in files if text.startswith(f) or f" {f}" in text]
    return max(named, key=len) if named else None


# ----------------------------------------------------------------------------- stages

def crossmatch_stage(cfg: RunConfig, catalog: Path, state: dict | None, files: list[str],
                      diff: InputDiff, dry_run: bool, progress,
                      skip_bad_bricks: bool = False) -> dict:
    """Full cross-match (first run, changed settings, no usable state) or an update of the
    tiles that changed inputs reach; the stage's report. With ``skip_bad_bricks`` a bad brick
    coadd file leaves its objects without a brick stamp (the report's ``skipped_bricks``)
    instead of failing the stage."""
    from astroembed.matching.orchestrate import LayoutTooSmall, crossmatch, crossmatch_update

    images, spectra = side_lists(cfg, files)
    xcfg = dataclasses.replace(cfg.crossmatch, images=images, spectra=spectra)
    fingerprint = crossmatch_fingerprint(cfg)
    reason = None
    if state is None:
        reason = "no earlier run recorded in the catalog" if catalog.exists() else "new catalog"
    elif state.get("crossmatch") != fingerprint:
        reason = "the cross-match settings changed"
    elif _bricks_changed(diff, state):
        # a brick directory sends no rows to tiles, so no tile would be redone for it
        reason = "brick coadds changed"
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
                                       dry_run=dry_run, skip_bad_bricks=skip_bad_bricks)
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
    summary = crossmatch(dataclasses.replace(xcfg, overwrite=catalog.exists()), progress,
                         skip_bad_bricks=skip_bad_bricks)
    summary.update(mode="full", reason=reason)
    return summary


def _bricks_changed(diff: InputDiff, state: dict) -> bool:
    """A brick directory is new, changed or removed (one that went away left no tiles on
    record, as a brick directory never has any)."""
    import os

    tiles = state.get("input_tiles", {})
    return (any(os.path.isdir(p) for p in (*diff.new, *diff.changed))
            or any(not tiles.get(p) and not os.path.exists(p) for p in diff.removed))


def embed_stage(cfg: RunConfig, progress) -> dict:
    from astroembed.runtime.orchestrate import embed

    event("embed_start", "embed: checking which tiles need embeddings", stage="embed")
    summary = embed(cfg.embed, progress)
    event("embed_done", "embed: %d tiles embedded, %d already done", summary["tiles_embedded"],
          summary["tiles_skipped"], stage="embed",
          counts={"tiles_embedded": summary["tiles_embedded"],
                  "tiles_skipped": summary["tiles_skipped"],
                  "rows_embedded": summary["rows_embedded"]})
    return summary


def probe_stage(cfg: RunConfig, changed: bool) -> list[dict]:
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


def predict_stage(cfg: RunConfig, changed: bool) -> dict | None:
    from astroembed.probes.predict import predict_catalog

    if not cfg.predict or not changed:
        return None
    summary = predict_catalog(cfg.catalog, cfg.predict.probe, column=cfg.predict.column,
                              overwrite=True, levels=cfg.predict.levels)
    event("predict_done", "predict: column %s written", summary.get("column"), stage="predict")
    return summary
