"""``predict``: a saved probe applied to every tile of a catalog, its predictions appended
as columns: the point prediction and, for a calibrated probe, its predictive distribution
(a fixed grid of quantiles) and central intervals at chosen levels."""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from astroembed.errors import InterruptedRun, ModelError, OutputError
from astroembed.catalog.columns import (
    MODALITIES,
    embedding_columns,
    model_fingerprint,
    resolve_embeddings,
    vectors,
)
from astroembed.catalog.reader import CatalogInfo, read_catalog_info
from astroembed.probes.crossval import Progress
from astroembed.config import INTERVAL_LEVELS, check_levels
from astroembed.probes.metrics import level_label
from astroembed.probes.saved import SavedProbe
from astroembed.probes.uncertainty import QUANTILE_LEVELS

log = logging.getLogger("astroembed")


def output_columns(column: str, levels, calibrated: bool) -> dict[str, tuple[str, float]]:
    """Every column ``predict`` writes: ``{name: (kind, level)}``, kind ``point``,
    ``quantiles``, ``lower`` or ``upper`` (the last two per interval level)."""
    out = {column: ("point", 0.0)}
    if calibrated:
        out[f"{column}_quantiles"] = ("quantiles", 0.0)
        for t in levels:
            out[f"{column}_lower_{level_label(t)}"] = ("lower", float(t))
            out[f"{column}_upper_{level_label(t)}"] = ("upper", float(t))
    return out


def _check_models(probe: SavedProbe, info: CatalogInfo) -> None:
    """ModelError when the catalog's embeddings come from another model than the probe's."""
    for column, want in probe.spec.get("models", {}).items():
        have = model_fingerprint(info, column)
        differ = {k for k in set(want) & set(have) if want[k] != have[k]}
        if differ:
            key = sorted(differ)[0]
            raise ModelError(f"{info.path}: column {column} was made by another model than the "
                             f"probe {probe.path} was trained on ({key}: {have[key]} here, "
                             f"{want[key]} in the probe); train a probe on these embeddings.")


def predict_catalog(catalog: str | os.PathLike, probe_path: str | os.PathLike,
                    column: str | None = None, overwrite: bool = False,
                    progress: Progress | None = None,
                    levels: tuple[float, ...] = INTERVAL_LEVELS) -> dict:
    """Append the probe's prediction columns to every tile, each tile written atomically.

    A calibrated probe also writes ``<column>_quantiles`` (float32 quantiles at
    :data:`QUANTILE_LEVELS`) and ``<column>_lower_<L>`` / ``<column>_upper_<L>`` per interval
    ``levels``; a probe saved without calibration writes the point column only and says so
    (``calibrated`` false in the summary).

    Like ``embed``: the catalog is marked incomplete while tiles are rewritten and its
    metadata refreshed at the end; a rerun after an interruption redoes every tile. Rows
    whose embeddings are null get a null prediction. A k-NN probe predicts the rows it was
    trained on (same ID) leave-one-out; ridge and MLP predictions of training rows are
    in-sample (the CV metrics in the probe's spec are the honest ones).
    """
    levels = tuple(float(t) for t in levels) if not isinstance(levels, (int, float)) else (levels,)
    check_levels(levels)
    probe = SavedProbe.load(probe_path)
    info = read_catalog_info(catalog)
    spec = probe.spec
    column = column or f"pred_{spec['target']}"
    calibrated = probe.calibration is not None
    outputs = output_columns(column, levels, calibrated)
    columns = spec["embedding_columns"]
    missing = [c for c in columns.values() if c not in info.schema.names]
    if missing:
        resolve_embeddings(info, [m for m, c in columns.items() if c in missing],
                           _name_of(missing[0]))
    _check_models(probe, info)
    probe_id = _probe_id(probe)
    id_column = spec.get("id_column")
    if id_column not in info.schema.names:
        id_column = None
    needed = {*columns.values(), *embedding_columns(info), info.ra_column, info.dec_column,
              "_healpix_29", id_column, spec["target"], "image", "flux", "ivar"}
    for name in outputs:
        _check_column(info, name, needed, probe_id, overwrite)
    probe_meta = json.dumps({k: spec[k] for k in (
        "target", "features", "method", "k", "metric", "n_train")}
        | {"path": str(probe.path), "cv_r2": spec["cv"].get("r2"),
           "calibration": spec.get("calibration")}).encode()
    field_meta = {b"astroembed_probe_id": probe_id.encode(), b"astroembed_probe": probe_meta}
    if not calibrated:
        log.warning("%s: saved without a calibration (an older probe): %s gets point "
                    "predictions only; save the probe again for intervals.", probe.path, column)
    from astroembed.catalog.lock import CatalogLock

    # Every tile is rewritten, so no other writer may change tiles meanwhile: the exclusive
    # catalog lock for the whole run, refused at once (exit 3) rather than waited for.
    with CatalogLock(info.path, "predict").exclusive():
        try:
            return _predict_tiles(info, probe, outputs, columns, id_column, field_meta,
                                  progress)
        except KeyboardInterrupt as err:
            signal_name = getattr(err, "signal_name", "SIGINT")
            raise InterruptedRun(
                f"{signal_name}: {info.path} keeps the column {column} in the tiles already "
                "rewritten and reads as incomplete; no work files were left. Run the same "
                "command again to redo every tile.") from None


def _check_column(info: CatalogInfo, name: str, needed: set, probe_id: str,
                  overwrite: bool) -> None:
    """OutputError unless ``predict`` may write column ``name``: never one the catalog needs
    or one no probe made; one from another probe only with ``overwrite``."""
    if name in needed:
        raise OutputError(f"--column: {name} would replace a column the catalog needs; "
                          "name another.")
    if name in info.schema.names:
        meta = info.schema.field(name).metadata or {}
        made_by = meta.get(b"astroembed_probe_id", b"").decode()
        if not made_by:
            raise OutputError(f"{info.path}: already has a column {name!r} that no probe "
                              "made; predict replaces only its own prediction columns. Name "
                              "another with --column.")
        if not (overwrite or made_by == probe_id):
            raise OutputError(f"{info.path}: already has a prediction column {name!r} from "
                              "another probe; pass --overwrite to replace it or --column to "
                              "name another.")


def _fields(outputs: dict[str, tuple[str, float]], field_meta: dict) -> list:
    """The Arrow fields of the output columns, each with the probe's metadata and its own
    meaning (quantile levels, interval level and side)."""
    import pyarrow as pa

    fields = []
    for name, (kind, level) in outputs.items():
        meta = dict(field_meta) | {b"astroembed_prediction": kind.encode()}
        if kind == "quantiles":
            meta[b"astroembed_quantile_levels"] = json.dumps(list(QUANTILE_LEVELS)).encode()
            typ = pa.list_(pa.float32(), len(QUANTILE_LEVELS))
        else:
            typ = pa.float64()
        if kind in ("lower", "upper"):
            meta[b"astroembed_interval_level"] = f"{level:g}".encode()
        fields.append(pa.field(name, typ, metadata=meta))
    return fields


def _predict_tiles(info: CatalogInfo, probe: SavedProbe, outputs: dict, columns: dict[str, str],
                   id_column: str | None, field_meta: dict, progress: Progress | None) -> dict:
    """Rewrite every tile with the prediction columns (batch by batch: a tile's cutouts and
    spectra need not fit in memory), then the catalog metadata."""
    import pyarrow as pa

    from astroembed.catalog.layout import PARTIAL, tile_path
    from astroembed.catalog.writer import mark_incomplete, refresh_catalog
    from astroembed.catalog.rewrite import rewrite_tile

    spec = probe.spec
    tiles = [t for t in info.tiles if info.rows.get(t, 0)]
    fields = _fields(outputs, field_meta)
    column = next(iter(outputs))
    cal = probe.calibration
    n_null = 0

    def predictions(batch: pa.RecordBatch) -> dict[str, pa.Array]:
        nonlocal n_null
        mats, valid = [], np.ones(batch.num_rows, bool)
        for modality in probe.modalities:
            x, ok = vectors(batch.column(columns[modality]))
            mats.append(x)
            valid &= ok
        n = batch.num_rows
        centre, scale = np.full(n, np.nan), np.full(n, np.nan)
        if valid.any():
            ids = batch.column(id_column).to_numpy(zero_copy_only=False) if id_column else None
            centre[valid], scale[valid] = probe.predict_with_scale(
                np.hstack(mats)[valid], None if ids is None else ids[valid])
        n_null += int((~valid).sum())
        mask = ~(valid & np.isfinite(centre))  # no prediction: nulls, never an interval
        out = {}
        for name, (kind, level) in outputs.items():
            if kind == "point":
                out[name] = pa.array(centre, pa.float64(), mask=mask)
            elif kind == "quantiles":
                q = np.zeros((n, len(QUANTILE_LEVELS)), np.float32)
                q[valid] = cal.quantiles(centre[valid], scale[valid], QUANTILE_LEVELS)
                out[name] = pa.FixedSizeListArray.from_arrays(
                    pa.array(q.ravel(), pa.float32()), len(QUANTILE_LEVELS), mask=pa.array(mask))
            else:
                lo, hi = cal.interval(centre, scale, level)
                out[name] = pa.array(lo if kind == "lower" else hi, pa.float64(), mask=mask)
        return out

    mark_incomplete(info.path)
    n_rows = 0
    for i, (order, pixel) in enumerate(tiles, start=1):
        n_rows += rewrite_tile(tile_path(info.path, order, pixel), fields, predictions)
        if progress:
            progress("predict", i, len(tiles))
    provenance = dict(info.provenance or {})
    provenance.setdefault("predictions", {})[column] = json.loads(field_meta[b"astroembed_probe"])
    keep = {k: info.properties[k] for k in ("hats_max_rows",) if k in info.properties}
    # a partly embedded catalog stays so: its tiles still differ in their embedding columns
    refresh_catalog(info.path, provenance, extra_properties=keep,
                    partial=info.status == PARTIAL)
    return {"catalog": str(info.path), "column": column, "probe": str(probe.path),
            "target": spec["target"], "features": spec["features"], "method": spec["method"],
            "tiles": len(tiles), "rows": n_rows, "null": n_null,
            "columns": list(outputs), "calibrated": cal is not None,
            "levels": sorted({lv for kind, lv in outputs.values() if kind == "lower"}),
            "quantile_levels": list(QUANTILE_LEVELS) if cal is not None else [],
            "notes": [] if cal is not None else [
                f"{probe.path} has no calibration (saved by an older astroembed): point "
                "predictions only, no quantiles or intervals; save the probe again for them."]}


def _name_of(column: str) -> str | None:
    """The ``--name`` suffix of an embedding column (None for the default columns)."""
    for modality in MODALITIES:
        stem = f"embedding_{modality}"
        if column.startswith(stem + "_"):
            return column[len(stem) + 1:]
    return None


def _probe_id(probe: SavedProbe) -> str:
    """A content hash of the saved probe, recorded with its prediction column."""
    import hashlib

    h = hashlib.sha256(json.dumps(probe.spec, sort_keys=True, default=str).encode())
    for key in sorted(probe.arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(probe.arrays[key]).tobytes())
    return h.hexdigest()[:16]


__all__ = ["output_columns", "predict_catalog"]
