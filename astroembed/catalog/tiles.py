"""Writing one tile: its rows checked to lie in the tile, sorted by ``_healpix_29``, numbered
(``ROW_ID``), split into the main catalog's tile and the pixel extension's, tensor types
stripped of the permutation lsdb cannot read (see :mod:`astroembed.catalog.writer`), and the
Parquet options every tile writer uses. Needs only the catalog path, so a Dask worker can
write a tile.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astroembed.errors import OutputError, where
from astroembed.catalog.atomic import atomic_path, publish_mode
from astroembed.catalog.layout import (MAIN_DIR, PIXEL_COLUMNS, PROPERTIES_FILE, ROW_ID_COLUMN,
                                       SPATIAL_INDEX_COLUMN, is_embedding_field, pixel_tile_path,
                                       read_properties, row_ids, tile_of, tile_path)

__all__ = ["split_pixels", "write_tile"]

#: Target bytes per Parquet row group, so ``embed`` can stream a tile in bounded memory.
ROW_GROUP_BYTES = 64 * 2**20


def plain_tensor_type(ttype: pa.FixedShapeTensorType) -> pa.DataType:
    """The same tensor type without a ``permutation`` (which lsdb cannot handle)."""
    return pa.fixed_shape_tensor(ttype.value_type, tuple(ttype.shape), dim_names=ttype.dim_names)


def _plain_tensor(array: pa.Array) -> pa.Array:
    """A fixed-shape tensor array without a permutation; a real one is stored in C order."""
    ttype = array.type
    perm = ttype.permutation
    if perm is None or list(perm) == list(range(len(perm))):
        return pa.ExtensionArray.from_storage(plain_tensor_type(ttype), array.storage)
    dense = np.ascontiguousarray(array.to_numpy_ndarray())
    storage = pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1)),
                                                int(np.prod(ttype.shape)))
    return pa.ExtensionArray.from_storage(plain_tensor_type(ttype), storage)


def _normalize(table: pa.Table) -> pa.Table:
    """Tensor columns without permutation; no pandas index metadata (differs per tile)."""
    for i, fld in enumerate(table.schema):
        if isinstance(fld.type, pa.FixedShapeTensorType) and fld.type.permutation is not None:
            new_type = plain_tensor_type(fld.type)
            column = pa.chunked_array([_plain_tensor(c) for c in table.column(i).chunks],
                                      type=new_type)
            table = table.set_column(i, fld.with_type(new_type), column)
    meta = dict(table.schema.metadata or {})
    if meta.pop(b"pandas", None) is not None:
        table = table.replace_schema_metadata(meta or None)
    return table


def _healpix_values(table: pa.Table, final: Path) -> np.ndarray:
    """The ``_healpix_29`` column as int64 NumPy, or ValueError naming the file."""
    if SPATIAL_INDEX_COLUMN not in table.column_names:
        raise ValueError(f"{final}: tile table has no {SPATIAL_INDEX_COLUMN} column "
                         f"(columns: {', '.join(table.column_names)})")
    column = table.column(SPATIAL_INDEX_COLUMN)
    if not pa.types.is_integer(column.type) or column.null_count:
        raise ValueError(f"{where(final, column=SPATIAL_INDEX_COLUMN)}: must be integers "
                         f"without nulls, got {column.type} with {column.null_count} nulls")
    return column.to_numpy().astype(np.int64, copy=False)


def _check_in_tile(h29: np.ndarray, order: int, pixel: int, final: Path) -> None:
    """Bug guard: every row must lie in the tile it is written to."""
    owner = tile_of(h29, order)
    bad = np.flatnonzero(owner != pixel)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{final}: {bad.size} of {h29.size} rows do not lie in tile {order}/{pixel}; "
            f"first is row {i} with {SPATIAL_INDEX_COLUMN}={h29[i]}, which is in tile "
            f"{order}/{owner[i]}. The rows were routed to the wrong tile (a bug).")


def _prepare_tile(table: pa.Table, order: int, pixel: int, final: Path) -> pa.Table:
    """Check, type and sort a tile's rows the way readers of the catalog rely on."""
    h29 = _healpix_values(table, final)
    _check_in_tile(h29, order, pixel, final)
    idx = table.schema.get_field_index(SPATIAL_INDEX_COLUMN)
    if table.schema.field(idx).type != pa.int64():
        table = table.set_column(idx, table.schema.field(idx).with_type(pa.int64()),
                                 pa.array(h29, pa.int64()))
    return _normalize(sorted_by_healpix(table, h29))


def sorted_by_healpix(table: pa.Table, h29: np.ndarray) -> pa.Table:
    """``table`` in ``_healpix_29`` order (stable; ``h29`` is that column as NumPy), itself
    when already sorted: tiles are written in this order, and matching left rows in it makes
    neighbouring queries walk the KD-tree together."""
    if h29.size > 1 and np.any(h29[1:] < h29[:-1]):
        return table.take(pa.array(np.argsort(h29, kind="stable")))
    return table


def _row_group_rows(table: pa.Table, target_bytes: int = ROW_GROUP_BYTES) -> int:
    """Rows per row group for about ``target_bytes`` in memory each."""
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    return int(min(max(1, target_bytes // per_row), 1 << 20))


def _is_float_array(t: pa.DataType) -> bool:
    if isinstance(t, pa.FixedShapeTensorType):
        t = t.storage_type
    return (pa.types.is_fixed_size_list(t) or pa.types.is_list(t)) and \
        pa.types.is_floating(t.value_type)


def _leaf_paths(name: str, t: pa.DataType) -> list[str]:
    """Parquet leaf column paths of an Arrow field, as pyarrow names them."""
    if isinstance(t, pa.BaseExtensionType):
        t = t.storage_type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaf_paths(f"{name}.list.element", t.value_type)
    if pa.types.is_struct(t):
        return [p for i in range(t.num_fields)
                for p in _leaf_paths(f"{name}.{t.field(i).name}", t.field(i).type)]
    if pa.types.is_map(t):
        return (_leaf_paths(f"{name}.key_value.key", t.key_type)
                + _leaf_paths(f"{name}.key_value.value", t.item_type))
    return [name]


def parquet_options(schema: pa.Schema) -> dict:
    """``pq.ParquetWriter`` options for a tile. The float arrays (cutouts, spectra,
    embeddings) are stored uncompressed with BYTE_STREAM_SPLIT: ``embed`` reads every pixel
    of a tile, and measured on pixel tiles (bench/README.md) that encoding read fastest at the
    plain size, while zstd, with or without it, saved 10-26% of the bytes but read slower.
    Scalar columns keep snappy; only the non-float ones (IDs, bricks, flags, names) try
    dictionaries: measured floats rarely repeat, so probing them tripled a cross-match
    tile's write time and grew the file. Pixel arrays get no statistics (min/max over every
    pixel of a cutout or spectrum prune nothing and cost a third of writing them); embedding
    columns keep theirs, because ``info`` counts their null rows from them. Options are keyed
    by Parquet leaf (``flux.list.element``): pyarrow ignores a nested column's name there."""
    arrays = {f.name for f in schema if _is_float_array(f.type)}
    leaves = {f.name: _leaf_paths(f.name, f.type) for f in schema}
    compression = {leaf: ("none" if f.name in arrays else "snappy")
                   for f in schema for leaf in leaves[f.name]}
    encoding = {leaf: "BYTE_STREAM_SPLIT" for name in arrays for leaf in leaves[name]}
    dictionary = [f.name for f in schema
                  if f.name not in arrays and not pa.types.is_floating(f.type)]
    statistics = [p for f in schema if f.name not in arrays or is_embedding_field(f)
                  for p in leaves[f.name]]
    return {"compression": compression, "use_dictionary": dictionary,
            "column_encoding": encoding, "write_statistics": statistics}


def split_pixels(table: pa.Table, ra_column: str, dec_column: str
                 ) -> tuple[pa.Table, pa.Table | None]:
    """The main catalog's columns and the pixel extension's (``_healpix_29``, ``ROW_ID``, the
    coordinates and the pixel columns; None when the rows have no pixel columns)."""
    pixels = [c for c in PIXEL_COLUMNS if c in table.column_names]
    if not pixels:
        return table, None
    keys = [c for c in (SPATIAL_INDEX_COLUMN, ROW_ID_COLUMN, ra_column, dec_column)
            if c in table.column_names]
    return table.drop_columns(pixels), table.select(keys + pixels)


def _write_parquet(final: Path, table: pa.Table) -> None:
    try:
        with atomic_path(final) as tmp:
            pq.write_table(table, tmp, row_group_size=_row_group_rows(table),
                           **parquet_options(table.schema))
            publish_mode(tmp)
    except OSError as err:
        raise OutputError(f"{final}: cannot write tile: {err.strerror or err}") from err


def write_tile(catalog: str | os.PathLike, order: int, pixel: int, table: pa.Table) -> Path:
    """Write one tile of the collection at ``catalog`` atomically: the pixel extension's part
    first, then the main catalog's, whose presence marks the tile written. Needs only the
    path, so a Dask worker can call it.

    Sorts by ``_healpix_29``, numbers the rows (``ROW_ID``) and raises ValueError when a row
    lies outside the tile. Writes into ``catalog`` as given: during an overwrite pass
    :attr:`CatalogWriter.write_path`.
    """
    final = tile_path(catalog, order, pixel)
    table = _prepare_tile(table, int(order), int(pixel), final)
    ids = pa.array(row_ids(order, pixel, table.num_rows), pa.int64())
    if ROW_ID_COLUMN in table.column_names:
        table = table.set_column(table.schema.get_field_index(ROW_ID_COLUMN), ROW_ID_COLUMN, ids)
    else:
        table = table.add_column(table.schema.get_field_index(SPATIAL_INDEX_COLUMN) + 1,
                                 ROW_ID_COLUMN, ids)
    props_file = Path(catalog) / MAIN_DIR / PROPERTIES_FILE
    props = read_properties(props_file) if props_file.is_file() else {}
    main, pixels = split_pixels(table, props.get("hats_col_ra", "RA"),
                                props.get("hats_col_dec", "DEC"))
    if pixels is not None:
        _write_parquet(pixel_tile_path(catalog, order, pixel), pixels)
    _write_parquet(final, main)
    return final
