"""Writing the matched catalog: a HATS collection that ``lsdb.open_catalog`` and ``hats`` read.

Why HATS: users of LSDB/hats can open astroembed output directly, and the same per-tile
files let ``embed`` and ``run`` redo one tile at a time. Why a collection: a row's pixels are
~99% of its bytes, so they live in an extension that ``embed`` and ``predict`` never rewrite.
Layout (docs/architecture.md)::

    CAT/collection.properties         the collection (main catalog, extensions)
    CAT/pixels.properties             the pixel extension, joined on ROW_ID
    CAT/main/hats.properties          HATS keys + astroembed_version/_status/_provenance
    CAT/main/astroembed_provenance.json    full provenance (config, inputs, models)
    CAT/main/partition_info.csv       Norder,Npix, breadth-first order
    CAT/main/dataset/_common_metadata schema only (+ compact provenance under b"astroembed")
    CAT/main/dataset/_metadata        schema + every tile's row groups (paths relative to
                                      dataset/; absent while the catalog is partly embedded)
    CAT/main/dataset/Norder=k/Dir=D/Npix=n.parquet    D = (n // 10000) * 10000
    CAT/pixels/...                    the same files for the pixel columns, same tiles and rows

Every row has ``_healpix_29`` (int64, nested order 29); a tile's rows are sorted by it and
all lie in the tile (``_healpix_29 >> 2*(29-k) == n``), which
:func:`~astroembed.catalog.tiles.write_tile` checks.

Writes are atomic (temporary name, then rename) so many processes can each write their own
tile. While a run is under way ``main/hats.properties`` says ``astroembed_status=incomplete``
and the catalog has no ``_common_metadata`` yet (so lsdb refuses it instead of reading half
of it); :meth:`CatalogWriter.finish` writes the pixel extension's metadata, the main
catalog's, the margin catalog and the collection's files, and ``main/hats.properties`` last.
``astroembed_status`` is ``complete``, ``partial`` (finished, but some tiles lack
embedding columns others have, or hold another model's: ``embed --tile`` leaves it so) or
``incomplete`` (a writer at work, or an interrupted run);
:func:`~astroembed.catalog.describe.describe_catalog` tells
which from the status and the tiles' footers, for ``astroembed info``. Replacing an
existing catalog (``overwrite=True``) builds the new one in a hidden staging directory
beside it (:attr:`CatalogWriter.write_path`) and swaps it in at
``finish()``, so a failed run leaves the old catalog intact. In-place updates (``embed``)
use :func:`mark_incomplete` and :func:`refresh_catalog`.

Findings with lsdb 0.11.1 / hats 0.11.1 / pyarrow 26 (checked by tests/catalog/test_catalog_io.py
and tests/catalog/test_info.py):

- Images are stored as Arrow's fixed-shape tensor extension type (a fixed-size list in the
  Parquet file, so any reader can read it); lsdb opens and computes such catalogs and gives
  one (3, H, W) ndarray per row. One pitfall: a tensor type carrying an explicit identity
  ``permutation`` (what ``pa.FixedShapeTensorArray.from_numpy_ndarray`` makes) breaks
  lsdb, whose ``Schema.empty_table()`` raises "fixed_shape_tensor with a permutation is not
  supported". :func:`~astroembed.catalog.tiles.write_tile` therefore rewrites tensor
  columns without a permutation (materialising a non-identity one in C order). Plain
  ``fixed_size_list`` images are read back with :func:`~astroembed.catalog.reader.image_array`
  given the shape.
- A catalog with no tiles (no overlap between the inputs) is valid: lsdb opens it as an
  empty catalog and ``compute()`` gives zero rows; it needs the schema, so pass ``schema``
  to :meth:`CatalogWriter.finish` (else a minimal ``_healpix_29``/RA/Dec schema is used).
- ``point_map.fits``/``skymap.fits`` are optional (hats then has no MOC and LSDB works on
  whole tiles); they are not written. Nor is the legacy duplicate ``properties`` file.
- Tiles whose columns differ (``embed --tile`` added ``embedding_image_x`` to one tile):
  pyarrow cannot put their row groups into one ``_metadata`` ("AppendRowGroups requires
  equal schemas"). With ``_common_metadata`` holding the union of the tiles' schemas and
  no ``_metadata`` (or one with that schema and no row groups), lsdb opens the catalog,
  lists every column, and ``compute()`` (all columns, or ``columns=[...]`` naming the new
  one) gives every row, with nulls for the tiles that lack the column. Such a catalog is
  marked ``partial`` and has no ``_metadata``; ``embed`` without ``--tile`` makes it
  complete again (tested in tests/catalog/test_info.py).
- hats makes the metadata files; lsdb is never imported. hats (imported when a catalog is
  finished, never when the CLI starts) validates and serialises every ``.properties`` file
  (``TableProperties`` for main, pixels and margin, ``CollectionProperties``,
  ``ExtensionProperties``), writes ``partition_info.csv`` (``PartitionInfo``) and
  ``_metadata``/``_common_metadata`` (``hats.io.file_io.write_parquet_metadata``). Own, each
  with its reason where it is: every write goes to a temporary name and is renamed (hats
  writes in place); the text of ``.properties`` files (hats' writer leaves backslashes
  unescaped); gathering the tiles' footers for ``_metadata`` (hats' ``write_parquet_metadata``
  reopens every tile, ~4x slower, and takes the first tile's schema); reading
  ``.properties`` (importing hats costs seconds); the margin rows and the uncovered sky
  (:mod:`astroembed.catalog.margin`: faster than hats' ``get_margin`` and negative tree, and
  checked against them). hats' strict validation accepts every part
  (tests/catalog/test_hats_reads.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from astroembed.errors import InputError, OutputError
from astroembed.catalog.atomic import atomic_path
from astroembed.catalog.layout import (COLLECTION, COLLECTION_FILE, COMMON_METADATA_FILE,
                                       COMPLETE, DATASET_DIR, EXTENSION, HATS_VERSION,
                                       INCOMPLETE, MAIN_DIR, MARGIN_DIR, MARGIN_KEY,
                                       METADATA_FILE, METADATA_KEY, PARTIAL, PARTITION_INFO_FILE,
                                       PIXEL_COLUMNS, PIXELS_DIR, PIXELS_PROPERTIES,
                                       PROPERTIES_FILE, PROVENANCE_FILE, ROW_ID_COLUMN,
                                       SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER, STATUS_KEY,
                                       dataset_tile, format_tiles, is_embedding_field, main_dir,
                                       properties_text, read_properties, scan_tiles,
                                       tiles_overlap, write_properties, write_text_file)
from astroembed.catalog.reader import (CatalogInfo, properties_file, read_footers,
                                       read_provenance, read_catalog_info)
from astroembed.catalog.tiles import plain_tensor_type, write_tile
from astroembed.stamps import HATS_DATE, astroembed_version, utc_now

__all__ = [
    "CatalogWriter",
    "mark_incomplete",
    "refresh_catalog",
    "refresh_pixels",
    "write_empty_catalog",
]

#: Top-level provenance entries larger than this (JSON bytes) stay out of the Parquet footer.
COMPACT_LIMIT = 2048


# ----------------------------------------------------------------------------- properties

def _base_properties(name: str, ra_column: str, dec_column: str, status: str,
                     margin_arcsec: float | None = None) -> dict:
    """The keys a catalog has from the moment a run begins (``astroembed_margin_arcsec``:
    the margin catalog's width; absent, the default)."""
    return {
        "obs_collection": name,
        "dataproduct_type": "object",
        **coordinate_keys(ra_column, dec_column),
        "hats_builder": f"astroembed v{astroembed_version()}",
        "hats_creation_date": utc_now(HATS_DATE),
        "hats_version": HATS_VERSION,
        "astroembed_version": astroembed_version(),
        STATUS_KEY: status,
        "astroembed_provenance": PROVENANCE_FILE,
        MARGIN_KEY: None if margin_arcsec is None else f"{margin_arcsec:g}",
    }


def coordinate_keys(ra_column: str | None, dec_column: str | None) -> dict:
    """The keys every part of the collection shares: where positions and the spatial index
    are, how tiles are named."""
    return {"hats_col_ra": ra_column, "hats_col_dec": dec_column,
            "hats_col_healpix": SPATIAL_INDEX_COLUMN,
            "hats_col_healpix_order": SPATIAL_INDEX_ORDER, "hats_npix_suffix": ".parquet"}


def tile_keys(footers: dict[tuple[int, int], pq.FileMetaData]) -> dict:
    """The keys a catalog's tiles determine: rows, largest tile, deepest order, sky fraction."""
    rows = [f.num_rows for f in footers.values()]
    return {"hats_nrows": sum(rows), "hats_max_rows": max(rows, default=0),
            "hats_order": max((o for o, _ in footers), default=0),
            "moc_sky_fraction": f"{sum(1 / (12 * 4**o) for o, _ in footers):0.5f}"}


def mark_incomplete(path: str | os.PathLike) -> None:
    """Set ``astroembed_status=incomplete`` on an existing catalog before changing it in place."""
    file = properties_file(Path(path))
    props = read_properties(file)
    props[STATUS_KEY] = INCOMPLETE
    try:
        write_properties(file, props)
    except ValueError as err:  # hats' model refuses what a hand edit left in the file
        raise InputError(f"{err}. Restore the file or rebuild the catalog with "
                         "--overwrite.") from None


def update_provenance(path: str | os.PathLike, change: Callable[[dict], dict]) -> None:
    """Rewrite the provenance sidecar of a catalog being changed in place (atomically); the
    compact copies in ``hats.properties`` and the Parquet footers follow when it is finished
    (:func:`refresh_catalog`)."""
    main = main_dir(path)
    props = read_properties(properties_file(Path(path)))
    _write_provenance(main, change(read_provenance(main, props)))


# ----------------------------------------------------------------------------- finishing

def _remove_stale_temps(dataset: Path) -> None:
    """Remove temporary files left by killed writers (atomic_path names start with a dot)."""
    if not dataset.is_dir():
        return
    for tmp in dataset.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def _check_disjoint(tiles: list[tuple[int, int]], root: Path) -> None:
    """HATS tiles never overlap; a parent next to its child means a stale or stray file."""
    for i, a in enumerate(tiles):
        for b in tiles[i + 1:i + 2]:  # breadth-first order puts a parent just before a child
            if tiles_overlap(a, b):
                raise OutputError(f"{root}: tiles {a[0]}/{a[1]} and {b[0]}/{b[1]} overlap (one "
                                  "contains the other); remove the stray file or rebuild "
                                  "the catalog with --overwrite.")


def _core(schema: pa.Schema) -> pa.Schema:
    """The columns every tile must share: all but the embedding columns."""
    return pa.schema([f for f in schema if not is_embedding_field(f)])


def schema_problem(schemas: dict[tuple[int, int], pa.Schema]) -> str | None:
    """Why the tiles cannot form one catalog (None when they can): columns other than
    embeddings differ, or one embedding column has two types. Tiles that lack embedding
    columns others have are fine: ``embed --tile`` leaves a catalog like that."""
    first, base = next(iter(schemas.items()), (None, None))
    types: dict[str, tuple[tuple[int, int], pa.DataType]] = {}
    for tile, schema in schemas.items():
        this, core = _core(schema), _core(base)
        if not this.equals(core, check_metadata=False):
            only_a = sorted(set(core.names) - set(this.names))
            only_b = sorted(set(this.names) - set(core.names))
            detail = (f"columns only in {format_tiles([first])}: {only_a or 'none'}; only in "
                      f"{format_tiles([tile])}: {only_b or 'none'}" if only_a or only_b
                      else "same columns, different types")
            return (f"tiles {format_tiles([first])} and {format_tiles([tile])} have different "
                    f"schemas ({detail})")
        for fld in schema:
            if not is_embedding_field(fld):
                continue
            seen = types.setdefault(fld.name, (tile, fld.type))
            if seen[1] != fld.type:
                return (f"column {fld.name} is {seen[1]} in tile {format_tiles([seen[0]])} and "
                        f"{fld.type} in tile {format_tiles([tile])}")
    return None


def _tile_schema(footers: dict[tuple[int, int], pq.FileMetaData], root: Path,
                 gaps_allowed: bool = False) -> tuple[pa.Schema | None, bool]:
    """The catalog schema from the tiles' footers, and whether the tiles differ.

    Tiles may differ only by embedding columns some of them lack (``gaps_allowed``); the
    schema is then the union, widest tile first. Otherwise OutputError names two tiles
    that differ."""
    schemas = {tile: footer.schema.to_arrow_schema() for tile, footer in footers.items()}
    if not schemas:
        return None, False
    problem = schema_problem(schemas)
    first = next(iter(schemas.values()))
    differ = any(not s.equals(first, check_metadata=False) for s in schemas.values())
    if problem or (differ and not gaps_allowed):
        detail = problem or ("tiles differ in their embedding columns: "
                             + _fmt_gaps(schemas))
        raise OutputError(f"{root}: {detail}. Every tile of a catalog needs the same "
                          "columns; redo the odd tiles or rebuild with --overwrite.")
    if not differ:
        return first, False
    widest = sorted(schemas.values(), key=len, reverse=True)
    return pa.unify_schemas(widest), True


def _fmt_gaps(schemas: dict[tuple[int, int], pa.Schema]) -> str:
    """``embedding_image_x in 1 of 6 tiles``, for errors about tiles that differ."""
    counts: dict[str, int] = {}
    for schema in schemas.values():
        for name in schema.names:
            counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} in {n} of {len(schemas)} tiles"
                     for name, n in counts.items() if n < len(schemas))


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    """The schema with tensor types stripped of their permutation (see module docstring)."""
    fields = []
    for fld in schema:
        if isinstance(fld.type, pa.FixedShapeTensorType) and fld.type.permutation is not None:
            fld = fld.with_type(plain_tensor_type(fld.type))
        fields.append(fld)
    return pa.schema(fields, metadata=schema.metadata)


def _minimal_schema(ra_column: str, dec_column: str) -> pa.Schema:
    """Schema of an empty catalog whose writer did not say what its columns would be."""
    return pa.schema([(SPATIAL_INDEX_COLUMN, pa.int64()), (ra_column, pa.float64()),
                      (dec_column, pa.float64())])


def _compact(provenance: dict) -> dict:
    """Small top-level provenance entries for the Parquet footer; big ones stay in the JSON."""
    keep, left = {}, []
    for key, value in provenance.items():
        if len(json.dumps(value, default=str)) <= COMPACT_LIMIT:
            keep[key] = value
        else:
            left.append(key)
    keep["provenance_file"] = PROVENANCE_FILE
    if left:
        keep["omitted"] = left
    return keep


def _with_provenance(schema: pa.Schema, provenance: dict) -> pa.Schema:
    """Add the compact provenance under b"astroembed", keeping other keys found there."""
    meta = dict(schema.metadata or {})
    meta.pop(b"pandas", None)
    merged: dict = {}
    try:
        old = json.loads(meta.get(METADATA_KEY, b"{}"))
        merged = old if isinstance(old, dict) else {}
    except ValueError:
        pass
    merged |= _compact(provenance)
    meta[METADATA_KEY] = json.dumps(merged, default=str, separators=(",", ":")).encode()
    return schema.with_metadata(meta)


def _write_parquet_metadata(root: Path, schema: pa.Schema,
                            footers: dict[tuple[int, int], pq.FileMetaData],
                            row_groups: bool = True) -> None:
    """``_common_metadata`` (schema) and ``_metadata`` (schema + all row groups), each
    written by hats' ``file_io.write_parquet_metadata`` under a temporary name, then renamed.

    Own: gathering the footers. hats' ``parquet_metadata.write_parquet_metadata`` opens every
    tile again for its footer (about 4x slower at 300 to 3000 tiles on a local disk, more
    where opening a file is slow), takes the first tile's schema instead of the union a
    partly embedded catalog needs, drops the provenance, and writes in place; the footers
    here are those the finish already read to check the schemas and count rows.
    Without ``row_groups`` (tiles whose columns differ, which pyarrow cannot collect into one
    ``_metadata``) the old ``_metadata`` is removed: it would describe other columns.
    """
    from hats.io import file_io

    dataset = root / DATASET_DIR
    collected = []
    for (order, pixel), footer in footers.items() if row_groups else ():
        footer.set_file_path(dataset_tile(root, order, pixel).relative_to(dataset).as_posix())
        collected.append(footer)
    try:
        with atomic_path(dataset / COMMON_METADATA_FILE) as tmp:
            file_io.write_parquet_metadata(schema, tmp)
        if not row_groups:
            (dataset / METADATA_FILE).unlink(missing_ok=True)
            return
        with atomic_path(dataset / METADATA_FILE) as tmp:
            file_io.write_parquet_metadata(schema, tmp, metadata_collector=collected)
    except OSError as err:
        raise OutputError(f"{dataset}: cannot write Parquet metadata: {err}") from err


def _write_partition_info(root: Path, tiles: list[tuple[int, int]]) -> None:
    """``partition_info.csv``: the tile list hats reads instead of listing directories.

    hats' ``PartitionInfo`` orders the tiles (breadth-first) and writes the CSV; own: the
    temporary name and rename around it, since hats writes the final file in place.
    """
    from hats.catalog import PartitionInfo
    from hats.pixel_math import HealpixPixel

    info = PartitionInfo.from_healpix([HealpixPixel(order, pixel) for order, pixel in tiles])
    try:
        with atomic_path(root / PARTITION_INFO_FILE) as tmp:
            info.write_to_file(partition_info_file=tmp)
    except OSError as err:
        raise OutputError(f"{root / PARTITION_INFO_FILE}: cannot write: "
                          f"{err.strerror or err}") from err


def _write_provenance(root: Path, provenance: dict) -> None:
    """The full provenance sidecar (nested JSON does not belong in a properties file)."""
    write_text_file(root / PROVENANCE_FILE,
                json.dumps(provenance, indent=2, default=str, ensure_ascii=False) + "\n")


def _dir_kib(root: Path) -> int:
    """Size of the catalog on disk in KiB, for ``hats_estsize``."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) // 1024


def _finalize(catalog: Path, props: dict, provenance: dict, extra: dict | None,
              schema: pa.Schema | None, partial: bool = False) -> None:
    """Write every metadata file of the collection at ``catalog``: the pixel extension's, the
    main catalog's, the margin catalog and the collection's files, and the main catalog's
    ``hats.properties`` last (its status says the catalog is complete)."""
    if schema is not None:  # an empty catalog: the main catalog's columns, numbered rows
        schema = pa.schema([f for f in schema if f.name not in PIXEL_COLUMNS])
        if ROW_ID_COLUMN not in schema.names:
            i = schema.get_field_index(SPATIAL_INDEX_COLUMN)
            schema = schema.insert(i + 1, pa.field(ROW_ID_COLUMN, pa.int64()))
    has_pixels = _finalize_pixels(catalog, props, extra)
    _finalize_main(main_dir(catalog), props, provenance, extra, schema, partial,
                   then=lambda named: _finish_collection(catalog, named, has_pixels))


def _finish_collection(catalog: Path, props: dict, has_pixels: bool) -> None:
    """The margin catalog and the collection's files, once the main catalog's metadata is
    written (the margin copies its columns) and before its ``hats.properties`` says it is
    complete."""
    from astroembed.catalog.margin import DEFAULT_MARGIN_ARCSEC, build_margin

    name = props.get("obs_collection", catalog.name)
    threshold = float(props.get(MARGIN_KEY) or DEFAULT_MARGIN_ARCSEC)
    has_margin = build_margin(catalog, threshold, name, props.get("hats_col_ra", "ra"),
                              props.get("hats_col_dec", "dec"))
    _write_collection(catalog, name, has_pixels, has_margin)


def _finalize_pixels(catalog: Path, props: dict, extra: dict | None) -> bool:
    """The pixel extension's metadata; False (and no extension) when no tile has pixels.
    An empty catalog has no extension either: LSDB cannot join one without tiles."""
    root = catalog / PIXELS_DIR
    _remove_stale_temps(root / DATASET_DIR)
    tiles = scan_tiles(root)
    if not tiles:
        if root.is_dir():
            shutil.rmtree(root)  # an extension emptied by a re-tiling
        return False
    footers = read_footers(tiles)
    found, _ = _tile_schema(footers, root)
    schema = _plain_schema(found)
    _write_parquet_metadata(root, schema, footers)
    _write_partition_info(root, list(tiles))
    named = dict(props) | {k: v for k, v in (extra or {}).items() if v is not None}
    pixel_props = {
        "obs_collection": f"{props.get('obs_collection', catalog.name)}_{PIXELS_DIR}",
        "dataproduct_type": "object",
        **coordinate_keys(named.get("hats_col_ra"), named.get("hats_col_dec")),
        **tile_keys(footers),
        "hats_builder": props.get("hats_builder"),
        "hats_creation_date": props.get("hats_creation_date"),
        "hats_estsize": _dir_kib(root),
        "hats_version": HATS_VERSION,
        "hats_cols_default": " ".join([ROW_ID_COLUMN] + [c for c in PIXEL_COLUMNS
                                                         if c in schema.names]),
    }
    write_properties(root / PROPERTIES_FILE, pixel_props)
    return True


def _write_collection(catalog: Path, name: str, has_pixels: bool,
                      has_margin: bool = False) -> None:
    """``collection.properties`` and, with pixels, the extension's ``pixels.properties``: what
    ``lsdb.open_catalog(CAT)`` (main catalog and default margin) and
    ``Catalog.load_extension("pixels")`` read."""
    collection = {"obs_collection": name, "hats_primary_table_url": MAIN_DIR,
                  "astroembed_version": astroembed_version()}
    if has_margin:
        collection |= {"all_margins": MARGIN_DIR, "default_margin": MARGIN_DIR}
    if has_pixels:
        schema = pq.read_schema(catalog / PIXELS_DIR / DATASET_DIR / COMMON_METADATA_FILE)
        write_properties(catalog / PIXELS_PROPERTIES, {
            "obs_collection": PIXELS_DIR,
            "dataproduct_type": "extension",
            "hats_primary_table_url": name,
            "hats_col_assn_primary": ROW_ID_COLUMN,
            "hats_assn_join_table_url": PIXELS_DIR,
            "hats_col_assn_join": ROW_ID_COLUMN,
            "hats_ext_cols": " ".join(c for c in PIXEL_COLUMNS if c in schema.names),
            "hats_ext_join_style": "left",
            "hats_ext_shares_primary_coords": "true",
            "hats_product_type_served": "pixels",
        }, kind=EXTENSION)
        collection["all_extensions"] = f"{PIXELS_DIR} {PIXELS_PROPERTIES}"
    else:
        (catalog / PIXELS_PROPERTIES).unlink(missing_ok=True)
    write_properties(catalog / COLLECTION_FILE, collection, kind=COLLECTION)


def _finalize_main(root: Path, props: dict, provenance: dict, extra: dict | None,
                   schema: pa.Schema | None, partial: bool = False,
                   then: Callable[[dict], None] | None = None) -> None:
    """Write every metadata file for the tiles under ``root``, ``hats.properties`` last.

    ``partial``: some tiles lack embedding columns others have, or hold another model's; the
    catalog is marked ``partial`` and ``_common_metadata`` holds the union of the tiles'
    columns (lsdb reads the missing ones as nulls; see the module docstring).
    """
    _remove_stale_temps(root / DATASET_DIR)
    tiles = scan_tiles(root)
    _check_disjoint(list(tiles), root)
    footers = read_footers(tiles)
    found, differ = _tile_schema(footers, root, gaps_allowed=partial)
    named = dict(props) | {k: v for k, v in (extra or {}).items() if v is not None}
    ra, dec = named.get("hats_col_ra", "ra"), named.get("hats_col_dec", "dec")
    schema = found if found is not None else (
        schema if schema is not None else _minimal_schema(ra, dec))
    for column in (SPATIAL_INDEX_COLUMN, ra, dec):
        if column not in schema.names:
            raise ValueError(f"{root}: catalog schema lacks column {column!r} "
                             f"(has {', '.join(schema.names)})")
    schema = _with_provenance(_plain_schema(schema), provenance)
    _write_parquet_metadata(root, schema, footers, row_groups=not differ)
    _write_partition_info(root, list(tiles))
    _write_provenance(root, provenance)
    props = dict(props) | tile_keys(footers) | {
        "hats_estsize": _dir_kib(root),
        STATUS_KEY: PARTIAL if partial else COMPLETE,
        "astroembed_provenance": PROVENANCE_FILE,
    }
    props |= {k: v for k, v in (extra or {}).items() if v is not None}
    if then is not None:
        then(props)
    write_properties(root / PROPERTIES_FILE, props)


def refresh_catalog(path: str | os.PathLike, provenance: dict | None = None,
                    extra_properties: dict | None = None, *,
                    partial: bool = False) -> CatalogInfo:
    """Rewrite the metadata of an existing catalog after tiles changed in place (``embed``).

    Keeps its properties (name, columns, creation date) and, when ``provenance`` is None,
    its provenance; marks it complete again, or ``partial`` when some tiles are not
    embedded yet (see :func:`_finalize`).
    """
    path = Path(path)
    props = read_properties(properties_file(path))
    if provenance is None:
        provenance = read_provenance(main_dir(path), props)
    has_pixels = (path / PIXELS_DIR / PROPERTIES_FILE).is_file()
    _finalize_main(main_dir(path), props, provenance, extra_properties, None, partial,
                   then=lambda named: _finish_collection(path, named, has_pixels))
    return read_catalog_info(path)


def refresh_pixels(path: str | os.PathLike) -> None:
    """Rewrite the pixel extension's metadata (and the collection's) after tiles were
    written again in place (``run``'s update of the tiles that changed inputs reach)."""
    path = Path(path)
    props = read_properties(properties_file(path))
    _write_collection(path, props.get("obs_collection", path.name),
                      _finalize_pixels(path, props, None),
                      (path / MARGIN_DIR / PROPERTIES_FILE).is_file())


# ----------------------------------------------------------------------------- the writer

class CatalogWriter:
    """Writes one catalog; tiles may be written by many processes, each its own file atomically.

    Use: ``w.begin()``; tiles via :func:`write_tile` on :attr:`write_path` (or
    :meth:`write_tile`); ``w.finish(provenance)``. :attr:`write_path` is the catalog path,
    except when replacing an existing catalog: then it is a hidden staging directory beside
    it, swapped in by :meth:`finish`, so the old catalog survives a failed run. As a context
    manager it calls ``begin()`` and, on an exception before ``finish()``, :meth:`abort`.
    """

    def __init__(self, path: str | os.PathLike, *, ra_column: str, dec_column: str,
                 overwrite: bool = False, catalog_name: str | None = None,
                 margin_arcsec: float | None = None) -> None:
        self.path = Path(path)
        self.margin_arcsec = margin_arcsec
        self.ra_column = ra_column
        self.dec_column = dec_column
        self.overwrite = overwrite
        self.catalog_name = catalog_name or self.path.name
        self.write_path = self.path
        self._state: str | None = None
        self._props: dict = {}
        self._finished = False

    def __enter__(self) -> CatalogWriter:
        self.begin()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._finished:
            self.abort()

    @property
    def staging_path(self) -> Path:
        """Where a replacement catalog is built (hidden, beside the old one)."""
        return self.path.with_name(f".{self.path.name}.partial")

    def check(self) -> str:
        """Whether :attr:`path` may be written, before any work: ``absent``, ``empty`` or
        ``catalog`` (an astroembed catalog holding only its own files, replaced only with
        ``overwrite``); anything else is refused (:mod:`astroembed.catalog.outputs`)."""
        from astroembed.catalog.outputs import CATALOG, claim_directory

        if claim_directory(self.path, CATALOG, overwrite=self.overwrite, option="--out"):
            return "catalog"
        return "empty" if self.path.is_dir() else "absent"

    def begin(self) -> None:
        """Create the directories and an ``incomplete`` hats.properties; refuse to clobber."""
        self._state = self.check()
        if self._state == "catalog":
            self.write_path = self.staging_path
            if self.write_path.is_dir() and (main_dir(self.write_path) / PROPERTIES_FILE).is_file():
                shutil.rmtree(self.write_path)  # an interrupted run's, not resumable
        self._props = _base_properties(self.catalog_name, self.ra_column, self.dec_column,
                                       "incomplete", self.margin_arcsec)
        # The text first: making it imports hats (seconds), and until hats.properties marks
        # the new directories as astroembed's, a killed run leaves them unclaimable.
        text = properties_text(self._props)
        try:
            (main_dir(self.write_path) / DATASET_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{self.write_path}: cannot create the catalog directory: "
                              f"{err.strerror or err}") from err
        write_text_file(main_dir(self.write_path) / PROPERTIES_FILE, text)

    def adopt(self, write_path: str | os.PathLike) -> None:
        """Continue an interrupted run in the incomplete catalog it was writing at ``write_path``.

        Used instead of :meth:`begin` when a run is resumed: the tiles already there are kept.
        """
        self.write_path = Path(write_path)
        if not (main_dir(self.write_path) / PROPERTIES_FILE).is_file():
            raise OutputError(f"{self.write_path}: the interrupted run's catalog is gone; start "
                              "again with --overwrite.")
        self._state = "resumed"
        self._props = _base_properties(self.catalog_name, self.ra_column, self.dec_column,
                                       "incomplete", self.margin_arcsec)
        (main_dir(self.write_path) / DATASET_DIR).mkdir(parents=True, exist_ok=True)

    def write_tile(self, order: int, pixel: int, table: pa.Table) -> Path:
        """:func:`write_tile` into :attr:`write_path`."""
        return write_tile(self.write_path, order, pixel, table)

    def finish(self, provenance: dict, extra_properties: dict | None = None, *,
               schema: pa.Schema | None = None, partial: bool = False) -> CatalogInfo:
        """Write metadata for the tiles present, hats.properties last; swap in a replacement.

        ``schema`` is used only when no tile was written (an empty but valid catalog);
        ``partial``: tiles may lack embedding columns others have (see :func:`_finalize`).
        ``extra_properties`` are added to hats.properties (e.g. ``hats_max_bytes``) and
        override computed keys. Call it once every tile writer is done: it removes the
        temporary files that killed writers left.
        """
        if self._state is None:
            raise RuntimeError("CatalogWriter.finish() called before begin()")
        _finalize(self.write_path, self._props, provenance, extra_properties, schema, partial)
        if self.write_path != self.path:
            _swap(self.write_path, self.path)
            self.write_path = self.path
        self._finished = True
        return read_catalog_info(self.path)

    def abort(self) -> None:
        """Remove what this run wrote; an old catalog being replaced stays as it was."""
        if self._state is None or self._finished:
            return
        if self.write_path != self.path:
            shutil.rmtree(self.write_path, ignore_errors=True)
        elif self._state == "absent":
            shutil.rmtree(self.path, ignore_errors=True)
        elif self._state == "empty":
            for child in self.path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def _swap(new: Path, final: Path) -> None:
    """Put ``new`` at ``final``; the old catalog is removed only after the rename, and only
    when it still holds nothing but astroembed's files."""
    from astroembed.catalog.outputs import CATALOG, may_replace

    may_replace(final, CATALOG, "--out")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    try:
        os.replace(final, old)
        os.replace(new, final)
    except OSError as err:
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise OutputError(f"{final}: cannot replace the old catalog: {err}") from err
    shutil.rmtree(old, ignore_errors=True)


def write_empty_catalog(path: str | os.PathLike, schema: pa.Schema, *, ra_column: str,
                        dec_column: str, provenance: dict, overwrite: bool = False,
                        catalog_name: str | None = None) -> CatalogInfo:
    """A valid catalog with no tiles (no overlap between the inputs is not an error)."""
    writer = CatalogWriter(path, ra_column=ra_column, dec_column=dec_column,
                           overwrite=overwrite, catalog_name=catalog_name)
    with writer:
        return writer.finish(provenance, schema=schema)
