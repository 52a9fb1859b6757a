"""The cross-match as a run: read and stage every input, plan tiles, partition, match each
tile, finish the catalog (:func:`crossmatch`), or redo in place only the tiles that new or
changed inputs reach (:func:`crossmatch_update`, for ``astroembed run``).

Tasks get file paths and small plans, never data, and each writes its output atomically, so
a killed run started again picks up where it stopped. :mod:`astroembed.compute` runs them
(in this process or on Dask); this module decides what runs.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import shutil
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from astroembed.compute import Progress, compute_client, run_all
from astroembed.config import CrossmatchConfig
from astroembed.errors import AstroembedError, InterruptedRun

log = logging.getLogger("astroembed")
STAGING = ".astroembed-staging"


def _stage_one(f, staging: str, keep_all: bool):
    from astroembed.matching.partition import stage_input

    return stage_input(f, staging, keep_all=keep_all)


def _split_one(item, staging: str, plan):
    from astroembed.matching.partition import split_input

    key, role = item
    return split_input(key, role, staging, plan)


def _tile_one(tile, staging: str, catalog: str, plan, opts, keep_all: bool):
    from astroembed.matching.tilematch import build_tile

    return build_tile(tile, staging, catalog, plan, opts, keep_all=keep_all)


def _margins(cfg: CrossmatchConfig) -> tuple[float, float]:
    """(left, right) margins in arcsec: the smallest the mode needs, or ``--margin`` (refused
    when too small)."""
    from astroembed.matching.pairs import check_margin, required_margins

    left, right = required_margins(cfg.mode, cfg.radius)
    if cfg.margin is not None:
        check_margin(cfg.mode, cfg.radius, cfg.margin)
        right = cfg.margin
        left = cfg.margin if left > 0 else 0.0
    return left, right


def _tile_options(cfg: CrossmatchConfig, skip_bad_bricks: bool = False):
    from astroembed.matching.tilematch import TileOptions

    return TileOptions(radius=cfg.radius, mode=cfg.mode, how=cfg.how, match_on=cfg.match_on,
                       compare_ids=cfg.compare_ids, suffixes=tuple(cfg.suffixes),
                       cutout_size=cfg.cutout_size, skip_bad_bricks=skip_bad_bricks)


def crossmatch(cfg: CrossmatchConfig, progress: Progress | None = None,
               layout: list[tuple[int, int]] | None = None,
               skip_bad_bricks: bool = False) -> dict:
    """Cross-match IMAGES (left) with SPECTRA (right) into the HATS catalog ``cfg.out``.

    ``layout`` forces the tiles (``astroembed run`` keeps a catalog's layout across updates);
    by default they adapt to the inputs. Returns a summary: rows in, matched, dropped per
    quality-cut reason, tiles, time, and ``input_tiles``: the tiles each input file reached.

    A bad brick coadd file raises InputError naming it; with ``skip_bad_bricks`` its objects
    get no brick stamp instead and the summary's ``skipped_bricks`` says file -> why.
    """
    from astroembed.catalog.writer import CatalogWriter
    from astroembed.catalog.lock import CatalogLock
    from astroembed.matching.partition import classify_inputs, config_hash

    start = time.time()
    cfg.validate()
    left_margin, right_margin = _margins(cfg)
    inputs = classify_inputs(cfg.images, cfg.spectra)
    out = Path(cfg.out)
    staging = staging_dir(out)
    resolved = _resolved(cfg, left_margin, right_margin)
    run_id = config_hash(resolved, inputs)
    ra_col, dec_col = _left_radec(inputs)
    writer = CatalogWriter(out, ra_column=ra_col, dec_column=dec_col, overwrite=cfg.overwrite,
                           margin_arcsec=cfg.margin_catalog)
    if _resumable_plan(staging, run_id) is None:
        writer.check()  # before the lock file appears beside a path that is refused
    with CatalogLock(out, "crossmatch").exclusive():
        plan = _resumable_plan(staging, run_id)
        if plan is not None:
            writer.adopt(plan.write_path)
            log.info("resuming the interrupted run in %s", plan.write_path)
        else:
            shutil.rmtree(staging, ignore_errors=True)
            writer.begin()
        try:
            plan, per_input, tile_results = _match_tiles(
                cfg, inputs, staging, writer, plan, layout, run_id,
                (left_margin, right_margin), progress, skip_bad_bricks)
            summary = _summary(inputs, per_input, tile_results, plan, time.time() - start)
            provenance = {"command": "crossmatch", "config": resolved, "run_id": run_id,
                          "inputs": _input_records(inputs),
                          "summary": {k: v for k, v in summary.items()
                                      if k not in ("seconds", "tiles_skipped")}}
            out_ra, out_dec = _output_radec(Path(plan.write_path), ra_col, dec_col,
                                            cfg.suffixes[0])
            info = writer.finish(provenance, extra_properties={
                "hats_col_ra": out_ra, "hats_col_dec": out_dec,
                "astroembed_id_column": cfg.id_column, "hats_max_rows": cfg.max_rows,
                "hats_max_bytes": int(cfg.max_bytes)})
        except KeyboardInterrupt as err:
            raise _crossmatch_interrupted(err, writer, staging) from None
        summary["input_tiles"] = input_tiles(staging, inputs)
        summary["layout"] = [list(t) for t in plan.tiles]
        shutil.rmtree(staging, ignore_errors=True)
    summary["tiles_written"] = len(info.tiles)
    if info.total_rows == 0:
        log.warning("the inputs do not overlap: %s is an empty, valid catalog", out)
    elif cfg.id_column not in info.schema.names:
        log.warning("--id-column %s is not a column of %s; probe and search need an object "
                    "key: pass --id-column with one of its columns", cfg.id_column, out)
    return summary


def _match_tiles(cfg: CrossmatchConfig, inputs, staging: Path, writer, plan, layout,
                 run_id: str, margins: tuple[float, float],
                 progress: Progress | None, skip_bad_bricks: bool = False) -> tuple:
    """Read, partition and match on the cluster; (plan, per-input results, tile results).

    A bad input is found while reading, before any tile exists: then nothing is left behind.
    """
    from astroembed.matching.partition import IMAGE_JOIN_ARCSEC, Plan, make_tiles

    left_margin, right_margin = margins
    opts = _tile_options(cfg, skip_bad_bricks)
    try:
        input_bytes = sum(f.size for f in inputs)
        with compute_client(cfg.scheduler, cfg.workers, cfg.processes, input_bytes) as client:
            per_input = run_all(client, _stage_one, inputs, "read", progress,
                                 staging=str(staging), keep_all=cfg.keep_all_spectra)
            stage_results = [r for results in per_input for r in results]
            chunks = [(r.key, f.role) for f, results in zip(inputs, per_input) for r in results]
            if plan is None:
                tiles = (sorted(map(tuple, layout)) if layout is not None
                         else make_tiles(stage_results, cfg.max_rows, cfg.max_bytes))
                plan = Plan(tiles=tiles, left_margin=left_margin, right_margin=right_margin,
                            image_margin=IMAGE_JOIN_ARCSEC * 1.01,
                            inputs=[dataclasses.asdict(f) for f in inputs],
                            config_hash=run_id,
                            write_path=str(writer.write_path))
                plan.save(staging)
            run_all(client, _split_one, chunks, "partition", progress, staging=str(staging),
                     plan=plan)
            tile_results = run_all(client, _tile_one, plan.tiles, "match", progress,
                                    staging=str(staging), catalog=plan.write_path, plan=plan,
                                    opts=opts, keep_all=cfg.keep_all_spectra)
    except AstroembedError:
        writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return plan, per_input, tile_results


def _crossmatch_interrupted(err: KeyboardInterrupt, writer, staging: Path) -> InterruptedRun:
    """Say what an interrupted cross-match kept: its work files and the catalog it was
    writing, when the run had got far enough for a rerun to resume from them; otherwise
    remove them, so that what the message says is all there is."""
    from astroembed.catalog.outputs import describe_sizes

    signal_name = getattr(err, "signal_name", "SIGINT")
    if not (staging / "plan.json").is_file():
        writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        before = ("the old catalog there is as it was" if writer.path.exists()
                  else "no catalog was made")
        return InterruptedRun(f"{signal_name} while reading the inputs; nothing was kept and "
                              f"{before} ({writer.path}).")
    kept = [p for p in (staging, writer.write_path) if p.exists()]
    old = (f"; the old catalog {writer.path} is as it was" if writer.write_path != writer.path
           else "")
    return InterruptedRun(
        f"{signal_name}: kept the work files {describe_sizes(kept)}{old}. Run the same "
        f"command again to resume from them, or remove them with: rm -rf "
        + " ".join(shlex.quote(str(p)) for p in kept))


def input_tiles(staging: Path, inputs) -> dict[str, list[list[int]]]:
    """The tiles each input file sent rows to (own or margin), from the fragments in staging."""
    from astroembed.matching.partition import WORK_SUFFIX, tile_dir

    by_key = {f.key: f.path for f in inputs}
    found: dict[str, set] = {f.path: set() for f in inputs}
    root = tile_dir(staging, (0, 0)).parent
    for d in root.iterdir() if root.is_dir() else ():
        tile = tuple(int(v) for v in d.name.split("-"))
        for frag in d.glob(f"*{WORK_SUFFIX}"):
            key = frag.stem.rsplit("-", 1)[0]  # "<side>-<role>-<index>-<chunk>"
            if key in by_key:
                found[by_key[key]].add(tile)
    return {path: sorted(list(t) for t in tiles) for path, tiles in found.items()}


class LayoutTooSmall(AstroembedError):
    """New left-side rows fall outside every tile of the catalog: it must be re-tiled."""


def crossmatch_update(cfg: CrossmatchConfig, layout: list[tuple[int, int]],
                      known_tiles: dict[str, list], changed: set[str], stale: set[tuple[int, int]],
                      progress: Progress | None = None, dry_run: bool = False,
                      skip_bad_bricks: bool = False) -> dict:
    """Redo, in place, only the tiles of catalog ``cfg.out`` that changed inputs reach.

    ``changed``: paths of new or changed input files; ``stale``: tiles where removed or changed
    files had rows before; ``known_tiles``: the tiles each unchanged file reached (from the
    last run). The changed files are staged and split first: the tiles they reach (own rows or
    margins) plus ``stale`` are redone, from every file that reaches them, with the catalog's
    tile layout, so the result equals a full rebuild on that layout. Raises
    :class:`LayoutTooSmall` when a new left-side row is outside every tile. With ``dry_run``
    nothing in the catalog changes. The catalog is left marked incomplete (the embed stage
    finishes it). ``skip_bad_bricks`` as in :func:`crossmatch`.
    """
    from astroembed.catalog.layout import pixel_tile_path, tile_path
    from astroembed.catalog.writer import mark_incomplete, refresh_pixels, update_provenance
    from astroembed.matching.partition import IMAGE_JOIN_ARCSEC, Plan, classify_inputs, rows_outside

    start = time.time()
    cfg.validate()
    left_margin, right_margin = _margins(cfg)
    inputs = classify_inputs(cfg.images, cfg.spectra)
    out = Path(cfg.out)
    staging = out.with_name(f".{out.name}.astroembed-update")
    shutil.rmtree(staging, ignore_errors=True)
    layout = sorted(tuple(t) for t in layout)
    plan = Plan(tiles=layout, left_margin=left_margin, right_margin=right_margin,
                image_margin=IMAGE_JOIN_ARCSEC * 1.01,
                inputs=[dataclasses.asdict(f) for f in inputs], config_hash="update",
                write_path=str(out))
    opts = _tile_options(cfg, skip_bad_bricks)
    new = [f for f in inputs if f.path in changed]
    try:
        input_bytes = sum(f.size for f in inputs)
        with compute_client(cfg.scheduler, cfg.workers, cfg.processes, input_bytes) as client:
            def stage_and_split(files: list) -> list:
                per_input = run_all(client, _stage_one, files, "read", progress,
                                     staging=str(staging), keep_all=cfg.keep_all_spectra)
                chunks = [(r.key, f.role) for f, rs in zip(files, per_input) for r in rs]
                run_all(client, _split_one, chunks, "partition", progress,
                         staging=str(staging), plan=plan)
                return per_input

            per_new = stage_and_split(new)
            outside = sum(rows_outside(r.key, str(staging), layout)
                          for f, rs in zip(new, per_new) if f.role == "catalog" for r in rs)
            if outside:
                raise LayoutTooSmall(f"{outside} new Legacy Survey rows lie outside the "
                                     f"catalog's {len(layout)} tiles")
            reached = input_tiles(staging, new)
            touched = set(stale) | {tuple(t) for ts in reached.values() for t in ts}
            touched &= set(layout)
            others = [f for f in inputs if f.path not in changed
                      and touched & {tuple(t) for t in known_tiles.get(f.path, [])}]
            report = {"inputs_changed": sorted(changed), "tiles": sorted(list(t) for t in touched),
                      "inputs_read": len(new) + len(others), "input_tiles": {}}
            if dry_run:
                return report
            per_other = stage_and_split(others)
            if touched:
                mark_incomplete(out)
            results = run_all(client, _tile_one, sorted(touched), "match", progress,
                               staging=str(staging), catalog=str(out), plan=plan, opts=opts,
                               keep_all=cfg.keep_all_spectra)
        for r in results:
            if r.output_rows == 0:  # every row of this tile went away
                tile_path(out, *r.tile).unlink(missing_ok=True)
                pixel_tile_path(out, *r.tile).unlink(missing_ok=True)
        all_files = new + others
        summary = _summary(all_files, per_new + per_other, results, plan, time.time() - start)
        report.update({k: v for k, v in summary.items() if k != "tiles"})
        report["input_tiles"] = input_tiles(staging, all_files)
        if touched:
            refresh_pixels(out)
            update_provenance(out, lambda prov: _updated_provenance(prov, inputs, report))
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _input_records(inputs) -> list[dict]:
    """The input files as provenance lists them: absolute paths (the catalog may be used
    from another directory), size and mtime as read (no checksum: that would read every
    input a second time), and whether each lies in an ``astroembed simulate`` survey (what
    ``embed`` tells the default model's users)."""
    from astroembed.simulation import simulated_inputs

    simulated = simulated_inputs([f.path for f in inputs])
    return [{"path": str(Path(f.path).resolve()), "kind": f.kind, "role": f.role,
             "size": f.size, "mtime": f.mtime, "simulated": sim}
            for f, sim in zip(inputs, simulated)]


MAX_UPDATES_KEPT = 100  # provenance keeps the latest in-place updates, not a growing log


def _updated_provenance(provenance: dict, inputs, report: dict) -> dict:
    """Provenance after an in-place update: today's inputs, and the update appended to
    ``updates`` (``summary`` stays that of the full run that made the layout; the row
    counts of the whole catalog are in hats.properties)."""
    provenance = dict(provenance)
    provenance["inputs"] = _input_records(inputs)
    entry = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "inputs_changed": report["inputs_changed"], "tiles_redone": report["tiles"],
             "summary": {k: report[k] for k in ("left_rows", "right_rows", "right_usable",
                                                 "dropped", "matched", "output_rows")
                         if k in report}}
    provenance["updates"] = (list(provenance.get("updates", [])) + [entry])[-MAX_UPDATES_KEPT:]
    return provenance


def _output_radec(catalog: Path, ra: str, dec: str, left_suffix: str) -> tuple[str, str]:
    """The left position columns as written: suffixed when the right side had them too."""
    import pyarrow.parquet as pq

    from astroembed.catalog.layout import DATASET_DIR, main_dir

    tile = next((main_dir(catalog) / DATASET_DIR).rglob("Npix=*.parquet"), None)
    if tile is None:
        return ra, dec
    names = pq.read_schema(tile).names
    return tuple(c if c in names else c + left_suffix for c in (ra, dec))


def _resolved(cfg: CrossmatchConfig, left_margin: float, right_margin: float) -> dict:
    """The config as it will run (margins filled in), minus what does not change results."""
    data = dataclasses.asdict(cfg)
    for key in ("scheduler", "workers", "processes", "overwrite"):
        data.pop(key)
    data.update(left_margin=left_margin, right_margin=right_margin,
                images=[str(p) for p in cfg.images], spectra=[str(p) for p in cfg.spectra],
                suffixes=list(cfg.suffixes))
    return data


def staging_dir(out: Path) -> Path:
    """Work files of a run, beside the catalog (never inside it, so LSDB never sees them)."""
    return out.with_name(f".{out.name}{STAGING}")


def _resumable_plan(staging: Path, run_id: str):
    """The plan of an interrupted run of the same config on the same inputs, if any."""
    from astroembed.matching.partition import Plan

    try:
        plan = Plan.load(staging)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return plan if plan.config_hash == run_id and Path(plan.write_path).exists() else None


def _left_radec(inputs) -> tuple[str, str]:
    """Position columns of the left side (from the schema alone where that is cheap)."""
    import pyarrow.parquet as pq

    from astroembed.readers import is_parquet
    from astroembed.matching.partition import radec_names, read_input

    first = next(f for f in inputs if f.role == "catalog")
    if first.kind == "ls_catalog":
        return "RA", "DEC"
    if Path(first.path).is_file() and is_parquet(first.path):
        return radec_names(pq.read_schema(first.path), first.path)
    return radec_names(read_input(first).schema, first.path)


def _summary(inputs, per_input, tile_results, plan, seconds: float) -> dict:
    """Rows in per side, rows dropped per quality-cut reason, pairs matched, rows written."""
    dropped: Counter = Counter()
    ids: Counter = Counter()
    rows_read: Counter = Counter()
    for f, results in zip(inputs, per_input):
        for r in results:
            dropped.update(r.dropped)
            rows_read[f.role] += r.rows + sum(r.dropped.values())
    for t in tile_results:
        dropped.update(t.dropped)
        ids.update(t.id_comparison)
    right_role = next((role for role in ("spectra", "redshifts", "table") if rows_read[role]),
                      "spectra")
    skipped_bricks = {f: why for t in tile_results
                      for f, why in sorted(t.skipped_bricks.items())}
    summary = {
        "left_rows": rows_read["catalog"],
        "right_rows": rows_read[right_role],
        "right_usable": rows_read[right_role] - sum(dropped.values()),
        "dropped": {k: v for k, v in dropped.items() if v},
        "matched": sum(t.matched for t in tile_results),
        "output_rows": sum(t.output_rows for t in tile_results),
        "id_comparison": dict(ids),
        "tiles": len(plan.tiles),
        "tiles_skipped": sum(t.skipped for t in tile_results),
        "seconds": round(seconds, 2),
    }
    if skipped_bricks:  # only with skip_bad_bricks: the brick files left out, and why
        summary["skipped_bricks"] = skipped_bricks
    return summary
