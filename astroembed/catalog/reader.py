"""Reading a catalog: what it holds from its metadata files alone (:class:`CatalogInfo`),
one tile's rows (the main catalog's columns with the pixel extension's joined on), ``--tile``
checked against its tiles, and image columns as arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astroembed.errors import InputError, OutputError, where
from astroembed.catalog.layout import (COLLECTION_FILE, COMMON_METADATA_FILE, COMPLETE,
                                       DATASET_DIR, METADATA_FILE, PARTIAL, PARTITION_INFO_FILE,
                                       PIXELS_DIR, PROPERTIES_FILE, PROVENANCE_FILE,
                                       ROW_ID_COLUMN, STATUS_KEY, TILE_RE, breadth_first,
                                       check_tile, dataset_tile, format_tiles, main_dir,
                                       pixel_tile_path, read_properties, scan_tiles,
                                       tile_path, tiles_overlap)

__all__ = [
    "CatalogInfo",
    "check_layout",
    "find_tile",
    "image_array",
    "read_catalog_info",
    "pixels_of_rows",
    "read_pixels",
    "read_tile",
    "tile_batches",
]

@dataclass
class CatalogInfo:
    """What a catalog holds, read from its metadata files (no tile data is read)."""

    path: Path
    tiles: list[tuple[int, int]]
    rows: dict[tuple[int, int], int]
    total_rows: int
    schema: pa.Schema
    properties: dict[str, str]
    provenance: dict = field(default_factory=dict)
    complete: bool = True
    #: The columns the pixel extension adds (``image``, ``flux``, ``ivar``); ``schema``
    #: lists them after the main catalog's.
    pixel_columns: list[str] = field(default_factory=list)

    @property
    def main(self) -> Path:
        """The main catalog's directory (``CAT/main``)."""
        return main_dir(self.path)

    @property
    def status(self) -> str:
        """``complete``, ``partial`` or ``incomplete`` (see :data:`COMPLETE`)."""
        return self.properties.get(STATUS_KEY, COMPLETE)

    @property
    def ra_column(self) -> str | None:
        """The RA column named by ``hats_col_ra``."""
        return self.properties.get("hats_col_ra")

    @property
    def dec_column(self) -> str | None:
        """The Dec column named by ``hats_col_dec``."""
        return self.properties.get("hats_col_dec")


def properties_file(path: Path) -> Path:
    """``CAT/main/hats.properties``, or InputError saying why ``path`` is not a catalog."""
    if not path.exists():
        raise InputError(f"{path}: no such catalog (the directory does not exist).")
    if not path.is_dir():
        raise InputError(f"{path}: is a file, not a catalog directory (expected a HATS "
                         f"collection with {COLLECTION_FILE} and {PROPERTIES_FILE}).")
    file = main_dir(path) / PROPERTIES_FILE
    if file.is_file():
        return file
    if (path / PROPERTIES_FILE).is_file() or (path / "properties").is_file():
        raise InputError(f"{path}: a catalog in the single-table layout of earlier astroembed "
                         "versions (pixels in every row); this version reads and updates the "
                         "collection layout only (docs/architecture.md). Convert it in place "
                         f"with `astroembed convert --catalog {path}` (every column is kept).")
    raise InputError(f"{path}: not a catalog: no {MAIN_LABEL}. A catalog is a HATS collection "
                     f"({COLLECTION_FILE}, main/{PROPERTIES_FILE}, main/{DATASET_DIR}/...), as "
                     "`astroembed crossmatch` writes.")


MAIN_LABEL = f"main/{PROPERTIES_FILE}"


def check_layout(path: str | os.PathLike) -> None:
    """InputError when ``path`` holds a catalog in the single-table layout of earlier
    versions, which a writer must not update in place (it would mix the two layouts)."""
    path = Path(path)
    if path.is_dir() and not (main_dir(path) / PROPERTIES_FILE).is_file() and (
            (path / PROPERTIES_FILE).is_file() or (path / "properties").is_file()):
        properties_file(path)  # raises, saying what to do


def read_provenance(path: Path, props: dict[str, str]) -> dict:
    """The provenance sidecar, {} when the catalog has none."""
    file = path / props.get("astroembed_provenance", PROVENANCE_FILE)
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{file}: unreadable provenance JSON ({err}).") from err
    return data if isinstance(data, dict) else {"provenance": data}


def _read_partition_info(file: Path) -> list[tuple[int, int]]:
    """Tiles listed in ``partition_info.csv`` (columns Norder, Npix, any order)."""
    lines = [ln.strip() for ln in file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{file}: empty; expected a 'Norder,Npix' header.")
    header = [h.strip() for h in lines[0].split(",")]
    if "Norder" not in header or "Npix" not in header:
        raise InputError(f"{file}: header {lines[0]!r} lacks Norder and Npix.")
    io_, ip = header.index("Norder"), header.index("Npix")
    tiles = []
    for n, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        try:
            tiles.append((int(parts[io_]), int(parts[ip])))
        except (ValueError, IndexError):
            raise InputError(f"{where(file, row=n)}: expected Norder,Npix integers, "
                             f"got {line!r}.") from None
    return tiles


def _metadata_rows(file: Path) -> dict[tuple[int, int], int]:
    """Rows per tile from ``_metadata``'s row groups (no tile file is opened)."""
    try:
        meta = pq.read_metadata(file)
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{file}: unreadable Parquet metadata ({err}).") from err
    rows: dict[tuple[int, int], int] = {}
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        match = TILE_RE.search(group.column(0).file_path) if group.num_columns else None
        if match:
            tile = (int(match[1]), int(match[3]))
            rows[tile] = rows.get(tile, 0) + group.num_rows
    return rows


def _read_schema(path: Path, tiles: list[tuple[int, int]]) -> pa.Schema:
    """Schema of the HATS catalog at ``path`` from ``_common_metadata``, else ``_metadata``,
    else a tile, else empty."""
    dataset = path / DATASET_DIR
    candidates = [dataset / COMMON_METADATA_FILE, dataset / METADATA_FILE,
                  *(dataset_tile(path, *t) for t in tiles)]
    for file in candidates:
        if file.is_file():
            try:
                return pq.read_schema(file)
            except (OSError, pa.ArrowException) as err:
                raise InputError(f"{file}: unreadable Parquet schema ({err}).") from err
    return pa.schema([])


def read_catalog_info(path: str | os.PathLike) -> CatalogInfo:
    """Tiles, row counts, schema, properties and provenance of the catalog at ``path``.

    A complete or partial catalog is described by its metadata files (a partial one has no
    ``_metadata``, so its row counts come from the tile footers); an incomplete one (a run
    under way or killed) by the tile files actually present.
    """
    path = Path(path)
    props = read_properties(properties_file(path))
    main = main_dir(path)
    status = props.get(STATUS_KEY, COMPLETE)
    finished = status in (COMPLETE, PARTIAL)
    partition_info = main / PARTITION_INFO_FILE
    if finished and partition_info.is_file():
        tiles = breadth_first(_read_partition_info(partition_info))
    else:
        tiles = list(scan_tiles(main))
    metadata = main / DATASET_DIR / METADATA_FILE
    rows = _metadata_rows(metadata) if finished and metadata.is_file() else {}
    for tile in tiles:
        if tile not in rows:
            file = tile_path(path, *tile)
            rows[tile] = (read_footers({tile: file}, InputError)[tile].num_rows
                          if file.is_file() else 0)
    rows = {t: rows[t] for t in tiles}
    schema = _read_schema(main, tiles)
    pixels = path / PIXELS_DIR
    extra: list[pa.Field] = []
    if pixels.is_dir():
        extra = [f for f in _read_schema(pixels, tiles if finished else list(scan_tiles(pixels)))
                 if f.name not in schema.names]
    for fld in extra:
        schema = schema.append(fld)
    return CatalogInfo(path=path, tiles=tiles, rows=rows, total_rows=sum(rows.values()),
                       schema=schema, properties=props,
                       provenance=read_provenance(main, props),
                       complete=status == COMPLETE, pixel_columns=[f.name for f in extra])


def read_footers(tiles: dict[tuple[int, int], Path], error: type[Exception] = OutputError
                  ) -> dict[tuple[int, int], pq.FileMetaData]:
    """Each tile's Parquet footer (row counts, row groups, schema)."""
    footers = {}
    for tile, file in tiles.items():
        try:
            footers[tile] = pq.read_metadata(file)
        except (OSError, pa.ArrowException) as err:
            raise error(f"{file}: unreadable tile ({err}); rewrite it or rebuild the "
                        "catalog with --overwrite.") from err
    return footers


def find_tile(info: CatalogInfo, order: int, pixel: int) -> tuple[int, int]:
    """``(order, pixel)`` if it is a tile of the catalog, else InputError naming the tiles
    under or over it (``--tile`` must name an existing tile; docs/architecture.md)."""
    order, pixel = int(order), int(pixel)
    try:
        check_tile(order, pixel)
    except ValueError as err:
        raise InputError(f"--tile {order}/{pixel}: {err}.") from None
    if (order, pixel) in info.rows or (order, pixel) in info.tiles:
        return order, pixel
    tile = (order, pixel)
    over = [t for t in info.tiles if t[0] < order and tiles_overlap(t, tile)]
    under = [t for t in info.tiles if t[0] > order and tiles_overlap(t, tile)]
    name = f"--tile {order}/{pixel}"
    if over:
        raise InputError(f"{name} is not a tile of {info.path}: it lies inside tile "
                         f"{format_tiles(over)}; use --tile {format_tiles(over)}.")
    if under:
        raise InputError(f"{name} is not a tile of {info.path}: it is split into the tiles "
                         f"{format_tiles(under)}; name those instead.")
    raise InputError(f"{name} is not a tile of {info.path} and no tile covers it (no data "
                     f"there). The catalog has {len(info.tiles)} tiles"
                     + (f": {format_tiles(info.tiles, 10)}" if info.tiles else "")
                     + f"; `astroembed info --catalog {info.path} --tiles` lists them.")


def _read_file(file: Path, columns: list[str] | None) -> pa.Table:
    try:
        pfile = pq.ParquetFile(file)
        if columns is not None:
            missing = [c for c in columns if c not in pfile.schema_arrow.names]
            if missing:
                raise InputError(f"{file}: no column {', '.join(map(repr, missing))}; it has "
                                 f"{', '.join(pfile.schema_arrow.names)}.")
        return pfile.read(columns=columns)
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{file}: unreadable tile ({err}).") from err


def read_tile(path: str | os.PathLike, order: int, pixel: int,
              columns: list[str] | None = None) -> pa.Table:
    """One tile's rows: all the main catalog's columns, or ``columns``, which may name the
    pixel extension's (joined on ``ROW_ID``); InputError if the tile or a column is absent."""
    file = tile_path(path, order, pixel)
    if not file.is_file():
        properties_file(Path(path))
        raise InputError(f"{path}: no tile {order}/{pixel} ({file} does not exist); "
                         f"`astroembed info --catalog {path} --tiles` lists the tiles.")
    if columns is None:
        return _read_file(file, None)
    if not pixel_tile_path(path, order, pixel).is_file():
        return _read_file(file, columns)
    try:
        main_names = pq.read_schema(file).names
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{file}: unreadable tile ({err}).") from err
    wanted_pixels = [c for c in columns if c not in main_names]
    if not wanted_pixels:
        return _read_file(file, columns)
    table = _read_file(file, [c for c in columns if c in main_names] + (
        [ROW_ID_COLUMN] if ROW_ID_COLUMN not in columns else []))
    pixels = read_pixels(path, order, pixel, wanted_pixels, table.column(ROW_ID_COLUMN))
    for name in wanted_pixels:
        table = table.append_column(pixels.schema.field(name), pixels.column(name))
    return table.select(columns)


def tile_batches(path: str | os.PathLike, order: int, pixel: int, columns: list[str],
                 batch_size: int = 2048) -> Iterator[pa.RecordBatch]:
    """One tile's ``columns`` (the main catalog's and the pixel extension's) in batches, one
    row group at a time, so a tile of any size is read in bounded memory."""
    from astroembed.catalog.rewrite import joined_batches, open_tile, read_batches

    file = tile_path(path, order, pixel)
    if not file.is_file():
        properties_file(Path(path))
        raise InputError(f"{path}: no tile {order}/{pixel} ({file} does not exist).")
    with open_tile(file) as source:
        names = source.schema_arrow.names
        pixels = [c for c in columns if c not in names]
        if not pixels:
            yield from read_batches(source, file, batch_size, columns)
            return
        main = [c for c in columns if c in names]
        for batch in joined_batches(source, file, pixel_tile_path(path, order, pixel), pixels,
                                    batch_size, main + ([ROW_ID_COLUMN]
                                                        if ROW_ID_COLUMN not in main else [])):
            yield batch.select(columns)


def read_pixels(path: str | os.PathLike, order: int, pixel: int, columns: list[str],
                row_ids: pa.ChunkedArray | pa.Array | None = None) -> pa.Table:
    """The pixel extension's ``columns`` for one tile (with ``ROW_ID``), in the main tile's
    row order; with ``row_ids``, checked to be those rows (the two files are written
    together, so a mismatch means a damaged catalog)."""
    file = pixel_tile_path(path, order, pixel)
    if not file.is_file():
        raise InputError(f"{path}: tile {order}/{pixel} has no pixels ({file} does not exist); "
                         "the catalog has no pixel columns or was damaged.")
    table = _read_file(file, [ROW_ID_COLUMN] + [c for c in columns if c != ROW_ID_COLUMN])
    if row_ids is not None and not table.column(ROW_ID_COLUMN).equals(
            pa.chunked_array([row_ids]) if isinstance(row_ids, pa.Array) else row_ids):
        raise InputError(f"{file}: its {ROW_ID_COLUMN} values differ from the main tile's; the "
                         "catalog is damaged. Rebuild it with `astroembed crossmatch "
                         "--overwrite`.")
    return table


def image_shape(fld: pa.Field, location: str) -> tuple[int, int, int]:
    """(3, H, W) of an image column: the tensor type, its ``shape`` field metadata, or a square.

    Catalogs from other tools may store cutouts as plain fixed-size lists; every reader of
    the image column infers their shape here, the same way. ``location`` names the column in
    errors (see :func:`astroembed.errors.where`).
    """
    if isinstance(fld.type, pa.FixedShapeTensorType):
        shape = tuple(int(s) for s in fld.type.shape)
    elif pa.types.is_fixed_size_list(fld.type):
        meta = {k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in (fld.metadata or {}).items()}
        if "shape" in meta:
            shape = tuple(int(s) for s in meta["shape"].split(","))
        else:
            side = int(round(np.sqrt(fld.type.list_size / 3)))
            shape = (3, side, side)
        if int(np.prod(shape)) != fld.type.list_size:
            raise InputError(f"{location}: {fld.type.list_size} values per row is not a "
                             "(3, H, W) cutout; add field metadata shape=3,H,W.")
    else:
        raise InputError(f"{location}: type {fld.type} is not an image (expected "
                         "fixed_shape_tensor float32 (3, H, W) g, r, z).")
    if len(shape) != 3 or shape[0] != 3:
        raise InputError(f"{location}: shape {shape}; expected (3, H, W) with the g, r, z bands.")
    return shape  # type: ignore[return-value]


def image_array(column: pa.Array | pa.ChunkedArray,
                shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Images as one ``(N, *shape)`` float array, e.g. (N, 3, H, W).

    A fixed-shape tensor column knows its shape; a plain fixed-size list needs ``shape``
    (e.g. from the field metadata ``shape=3,H,W``).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if isinstance(column.type, pa.FixedShapeTensorType):
        return np.asarray(column.to_numpy_ndarray())
    if not pa.types.is_fixed_size_list(column.type):
        raise ValueError(f"not an image column: {column.type}")
    if shape is None:
        raise ValueError("a fixed_size_list image column needs its shape, e.g. (3, H, W)")
    if int(np.prod(shape)) != column.type.list_size:
        raise ValueError(f"shape {tuple(shape)} does not match list size {column.type.list_size}")
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), *shape)


def pixels_of_rows(path: str | os.PathLike, row_ids, columns: list[str] | None = None
                   ) -> pa.Table:
    """The pixel columns (default: all of them) of the rows ``row_ids``, in that order, with
    ``ROW_ID``. A row id names its tile (the tile's first order-29 pixel plus the row's place),
    so only those tiles' pixel files are opened, and only the row groups holding the rows
    are read. InputError names ids that are not rows of the catalog."""
    import pyarrow.compute as pc

    from astroembed.catalog.layout import SPATIAL_INDEX_ORDER

    info = read_catalog_info(path)
    if not info.pixel_columns:
        raise InputError(f"{info.path}: has no pixel columns (a catalog of tables only).")
    columns = list(info.pixel_columns if columns is None else columns)
    unknown = [c for c in columns if c not in info.pixel_columns]
    if unknown:
        raise InputError(f"{info.path}: no pixel column {', '.join(map(repr, unknown))}; it "
                         f"has {', '.join(info.pixel_columns)}.")
    ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
    parts, unmatched = [], np.ones(ids.size, dtype=bool)
    for order, pixel in info.tiles:
        shift = 2 * (SPATIAL_INDEX_ORDER - order)
        first, rows = pixel << shift, info.rows[(order, pixel)]
        mine = np.flatnonzero((ids >= first) & (ids < first + rows))
        if not mine.size:
            continue
        file = pixel_tile_path(info.path, order, pixel)
        wanted = pa.array(np.unique(ids[mine]), pa.int64())
        try:
            table = pq.read_table(file, columns=[ROW_ID_COLUMN, *columns],
                                  filters=pc.field(ROW_ID_COLUMN).isin(wanted))
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"{file}: unreadable tile ({err}).") from err
        parts.append(table)
        unmatched[mine] = False
    if unmatched.any():
        bad = ids[unmatched][:5].tolist()
        raise InputError(f"{info.path}: no row with {ROW_ID_COLUMN} "
                         f"{', '.join(map(str, bad))}" + (" ..." if unmatched.sum() > 5 else "")
                         + ".")
    found = (pa.concat_tables(parts) if parts else
             pa.schema([pa.field(ROW_ID_COLUMN, pa.int64())]).empty_table())
    order = pc.index_in(pa.array(ids), found.column(ROW_ID_COLUMN)).to_numpy(
        zero_copy_only=False)
    return found.take(pa.array(order))

