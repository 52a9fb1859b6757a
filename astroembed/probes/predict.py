"""``predict``: a saved probe applied to every tile of a catalog, its predictions appended
as a column."""

from __future__ import annotations

import json
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
from astroembed.probes.saved import SavedProbe


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
                    progress: Progress | None = None) -> dict:
    """Append the probe's prediction column to every tile, each tile written atomically.

    Like ``embed``: the catalog is marked incomplete while tiles are rewritten and its
    metadata refreshed at the end; a rerun after an interruption redoes every tile. Rows
    whose embeddings are null get a null prediction. A k-NN probe predicts the rows it was
    trained on (same ID) leave-one-out; ridge and MLP predictions of training rows are
    in-sample (the CV metrics in the probe's spec are the honest ones).
    """
    probe = SavedProbe.load(probe_path)
    info = read_catalog_info(catalog)
    spec = probe.spec
    column = column or f"pred_{spec['target']}"
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
    if column in needed:
        raise OutputError(f"--column {column}: would replace a column the catalog needs; "
                          "name another.")
    if column in info.schema.names:
        meta = info.schema.field(column).metadata or {}
        made_by = meta.get(b"astroembed_probe_id", b"").decode()
        if not made_by:
            raise OutputError(f"{info.path}: already has a column {column!r} that no probe "
                              "made; predict replaces only its own prediction columns. Name "
                              "another with --column.")
        if not (overwrite or made_by == probe_id):
            raise OutputError(f"{info.path}: already has a prediction column {column!r} from "
                              "another probe; pass --overwrite to replace it or --column to "
                              "name another.")
    field_meta = {b"astroembed_probe_id": probe_id.encode(),
                  b"astroembed_probe": json.dumps({k: spec[k] for k in (
                      "target", "features", "method", "k", "metric", "n_train")}
                      | {"path": str(probe.path), "cv_r2": spec["cv"].get("r2")}).encode()}
    from astroembed.catalog.lock import CatalogLock

    # Every tile is rewritten, so no other writer may change tiles meanwhile: the exclusive
    # catalog lock for the whole run, refused at once (exit 3) rather than waited for.
    with CatalogLock(info.path, "predict").exclusive():
        try:
            return _predict_tiles(info, probe, column, columns, id_column, field_meta,
                                  progress)
        except KeyboardInterrupt as err:
            signal_name = getattr(err, "signal_name", "SIGINT")
            raise InterruptedRun(
                f"{signal_name}: {info.path} keeps the column {column} in the tiles already "
                "rewritten and reads as incomplete; no work files were left. Run the same "
                "command again to redo every tile.") from None


def _predict_tiles(info: CatalogInfo, probe: SavedProbe, column: str, columns: dict[str, str],
                   id_column: str | None, field_meta: dict, progress: Progress | None) -> dict:
    """Rewrite every tile with the prediction column (batch by batch: a tile's cutouts and
    spectra need not fit in memory), then the catalog metadata."""
    import pyarrow as pa

    from astroembed.catalog.layout import PARTIAL, tile_path
    from astroembed.catalog.writer import mark_incomplete, refresh_catalog
    from astroembed.catalog.rewrite import rewrite_tile

    spec = probe.spec
    tiles = [t for t in info.tiles if info.rows.get(t, 0)]
    fld = pa.field(column, pa.float64(), metadata=field_meta)
    n_null = 0

    def predictions(batch: pa.RecordBatch) -> dict[str, pa.Array]:
        nonlocal n_null
        mats, valid = [], np.ones(batch.num_rows, bool)
        for modality in probe.modalities:
            x, ok = vectors(batch.column(columns[modality]))
            mats.append(x)
            valid &= ok
        pred = np.full(batch.num_rows, np.nan)
        if valid.any():
            ids = batch.column(id_column).to_numpy(zero_copy_only=False) if id_column else None
            pred[valid] = probe.predict(np.hstack(mats)[valid],
                                        None if ids is None else ids[valid])
        n_null += int((~valid).sum())
        return {column: pa.array(pred, pa.float64(), mask=~valid)}

    mark_incomplete(info.path)
    n_rows = 0
    for i, (order, pixel) in enumerate(tiles, start=1):
        n_rows += rewrite_tile(tile_path(info.path, order, pixel), [fld], predictions)
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
            "tiles": len(tiles), "rows": n_rows, "null": n_null}


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


__all__ = ["predict_catalog"]
