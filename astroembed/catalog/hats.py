"""The matched catalog on disk: a HATS directory that ``lsdb.open_catalog`` and ``hats`` read.

Why HATS: users of LSDB/hats can open astroembed output directly, and the same per-tile
files let ``embed`` and ``run`` redo one tile at a time. Layout (docs/architecture.md)::

    CAT/hats.properties               HATS keys + astroembed_version/_status/_provenance
    CAT/astroembed_provenance.json    full provenance (config, inputs, models)
    CAT/partition_info.csv            Norder,Npix, breadth-first order
    CAT/dataset/_common_metadata      schema only (+ compact provenance under b"astroembed")
    CAT/dataset/_metadata             schema + every tile's row groups (paths relative to dataset/;
                                      absent while the catalog is partly embedded)
    CAT/dataset/Norder=k/Dir=D/Npix=n.parquet    D = (n // 10000) * 10000

Every row has ``_healpix_29`` (int64, nested order 29); a tile's rows are sorted by it and
all lie in the tile (``_healpix_29 >> 2*(29-k) == n``), which :func:`write_tile` checks.

Writes are atomic (temporary name, then rename) so many processes can each write their own
tile. While a run is under way ``hats.properties`` says ``astroembed_status=incomplete`` and
the catalog has no ``_common_metadata`` yet (so lsdb refuses it instead of reading half of
it); :meth:`CatalogWriter.finish` writes the metadata files and then ``hats.properties``
last. ``astroembed_status`` is ``complete``, ``partial`` (finished, but some tiles lack
embedding columns others have, or hold another model's: ``embed --tile`` leaves it so) or
``incomplete`` (a writer at work, or an interrupted run); :func:`describe_catalog` tells
which from the status and the tiles' footers, for ``astroembed info``. Replacing an
existing catalog (``overwrite=True``) builds the new one in a hidden staging directory
beside it (:attr:`CatalogWriter.write_path`) and swaps it in at
``finish()``, so a failed run leaves the old catalog intact. In-place updates (``embed``)
use :func:`mark_incomplete` and :func:`refresh_catalog`.

Findings with lsdb 0.11.1 / hats 0.11.1 / pyarrow 26 (checked by tests/test_catalog_io.py
and tests/test_info.py):

- Images are stored as Arrow's fixed-shape tensor extension type (a fixed-size list in the
  Parquet file, so any reader can read it); lsdb opens and computes such catalogs and gives
  one (3, H, W) ndarray per row. One pitfall: a tensor type carrying an explicit identity
  ``permutation`` (what ``pa.FixedShapeTensorArray.from_numpy_ndarray`` makes) breaks
  lsdb, whose ``Schema.empty_table()`` raises "fixed_shape_tensor with a permutation is not
  supported". :func:`write_tile` therefore rewrites tensor columns without a permutation
  (materialising a non-identity one in C order). Plain ``fixed_size_list`` images are read
  back with :func:`image_array` given the shape.
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
  complete again (tested in tests/test_info.py).
- hats and lsdb are not imported here: this module writes the files itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astroembed.errors import InputError, OutputError, where
from astroembed.catalog.atomic import atomic_path, publish_mode
from astroembed.stamps import HATS_DATE, astroembed_version, utc_now

__all__ = [
    "CatalogInfo",
    "CatalogWriter",
    "DATASET_DIR",
    "PROPERTIES_FILE",
    "PROVENANCE_FILE",
    "SPATIAL_INDEX_COLUMN",
    "catalog_state",
    "describe_catalog",
    "find_tile",
    "healpix_dir",
    "image_array",
    "leftover_work_files",
    "mark_incomplete",
    "parse_tile",
    "read_catalog_info",
    "read_properties",
    "read_tile",
    "refresh_catalog",
    "tile_embeddings",
    "tile_of",
    "tile_path",
    "write_empty_catalog",
    "write_properties",
    "write_tile",
]

SPATIAL_INDEX_COLUMN = "_healpix_29"
SPATIAL_INDEX_ORDER = 29
PROPERTIES_FILE = "hats.properties"
PROVENANCE_FILE = "astroembed_provenance.json"
PARTITION_INFO_FILE = "partition_info.csv"
DATASET_DIR = "dataset"
COMMON_METADATA_FILE = "_common_metadata"
METADATA_FILE = "_metadata"
METADATA_KEY = b"astroembed"
STATUS_KEY = "astroembed_status"
#: ``astroembed_status`` values: every tile has the same columns and metadata is written /
#: the metadata is written but some tiles lack embedding columns others have (or hold
#: another model's), as ``embed --tile`` leaves it / a writer is at work or was interrupted.
COMPLETE, PARTIAL, INCOMPLETE = "complete", "partial", "incomplete"
HATS_VERSION = "v1.0"
#: Target bytes per Parquet row group, so ``embed`` can stream a tile in bounded memory.
ROW_GROUP_BYTES = 64 * 2**20
#: Top-level provenance entries larger than this (JSON bytes) stay out of the Parquet footer.
COMPACT_LIMIT = 2048

_TILE_RE = re.compile(r"Norder=(\d+)/Dir=(\d+)/Npix=(\d+)")
_TILE_FILE_RE = re.compile(r"^Npix=(\d+)\.parquet$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


# ----------------------------------------------------------------------------- tiles

def _check_tile(order: int, pixel: int) -> None:
    """Raise ValueError for an impossible (order, pixel): a caller bug, not user input."""
    if not 0 <= order <= SPATIAL_INDEX_ORDER:
        raise ValueError(f"HEALPix order {order} outside 0..{SPATIAL_INDEX_ORDER}")
    if not 0 <= pixel < 12 * 4**order:
        raise ValueError(f"HEALPix pixel {pixel} outside 0..{12 * 4**order - 1} at order {order}")


def healpix_dir(pixel: int) -> int:
    """The ``Dir=`` number of a tile: ``(pixel // 10000) * 10000`` (keeps directories small)."""
    return (int(pixel) // 10000) * 10000


def tile_path(catalog: str | os.PathLike, order: int, pixel: int) -> Path:
    """``CAT/dataset/Norder=k/Dir=D/Npix=n.parquet``, where hats and lsdb look for the tile."""
    order, pixel = int(order), int(pixel)
    _check_tile(order, pixel)
    return (Path(catalog) / DATASET_DIR / f"Norder={order}" / f"Dir={healpix_dir(pixel)}"
            / f"Npix={pixel}.parquet")


def tile_of(healpix29: np.ndarray, order: int) -> np.ndarray:
    """The order-``order`` pixel of each order-29 index (nested scheme: drop 2 bits a level)."""
    return np.asarray(healpix29, dtype=np.int64) >> (2 * (SPATIAL_INDEX_ORDER - order))


def _breadth_first(tiles: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Tiles in HATS order (by their first order-29 pixel), as partition_info.csv lists them."""
    return sorted(set(tiles), key=lambda t: (t[1] << (2 * (SPATIAL_INDEX_ORDER - t[0])), t[0]))


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when one tile contains the other (or they are the same)."""
    (oa, pa_), (ob, pb) = (a, b) if a[0] <= b[0] else (b, a)
    return pb >> (2 * (ob - oa)) == pa_


def _fmt(tiles: Iterable[tuple[int, int]], limit: int = 20) -> str:
    """``1/4, 2/17, ...`` for error messages, cut after ``limit`` tiles."""
    tiles = list(tiles)
    text = ", ".join(f"{o}/{p}" for o, p in tiles[:limit])
    return text + (f", ... ({len(tiles)} in all)" if len(tiles) > limit else "")


def parse_tile(text: str) -> tuple[int, int]:
    """``"ORDER/PIXEL"`` -> ``(order, pixel)``; InputError says the expected form."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise InputError(f"--tile {text!r}: expected ORDER/PIXEL with two whole numbers, "
                         "e.g. --tile 5/1234 (see `astroembed info CAT --tiles`).")
    order, pixel = int(match[1]), int(match[2])
    try:
        _check_tile(order, pixel)
    except ValueError as err:
        raise InputError(f"--tile {text!r}: {err}.") from None
    return order, pixel


# ----------------------------------------------------------------------------- writing tiles

def _plain_tensor_type(ttype: pa.FixedShapeTensorType) -> pa.DataType:
    """The same tensor type without a ``permutation`` (which lsdb cannot handle)."""
    return pa.fixed_shape_tensor(ttype.value_type, tuple(ttype.shape), dim_names=ttype.dim_names)


def _plain_tensor(array: pa.Array) -> pa.Array:
    """A fixed-shape tensor array without a permutation; a real one is stored in C order."""
    ttype = array.type
    perm = ttype.permutation
    if perm is None or list(perm) == list(range(len(perm))):
        return pa.ExtensionArray.from_storage(_plain_tensor_type(ttype), array.storage)
    dense = np.ascontiguousarray(array.to_numpy_ndarray())
    storage = pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1)),
                                                int(np.prod(ttype.shape)))
    return pa.ExtensionArray.from_storage(_plain_tensor_type(ttype), storage)


def _normalize(table: pa.Table) -> pa.Table:
    """Tensor columns without permutation; no pandas index metadata (differs per tile)."""
    for i, fld in enumerate(table.schema):
        if isinstance(fld.type, pa.FixedShapeTensorType) and fld.type.permutation is not None:
            new_type = _plain_tensor_type(fld.type)
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


def is_embedding_field(fld: pa.Field) -> bool:
    """Whether ``fld`` is an embedding column written by ``embed`` (it says so in its
    metadata)."""
    return (fld.metadata or {}).get(b"astroembed_embedding") == b"1"


def parquet_options(schema: pa.Schema) -> dict:
    """``pq.ParquetWriter`` options for a tile: the float arrays (cutouts, spectra,
    embeddings) are stored plain, because noisy float32 does not compress (snappy: 1.00 on
    simulated cutouts and spectra) while compressing and dictionary-probing them costs about
    a third of the time to write and read a tile. Scalar columns keep snappy; only the
    non-float ones (IDs, bricks, flags, names) try dictionaries: measured floats rarely
    repeat, so probing them tripled a cross-match tile's write time and grew the file.
    Pixel arrays get no statistics (min/max over every pixel of a cutout or spectrum prune
    nothing and cost a third of writing them); embedding columns keep theirs, because
    ``info`` counts their null rows from them."""
    plain = {f.name for f in schema if _is_float_array(f.type)}
    compression = {f.name: ("none" if f.name in plain else "snappy") for f in schema}
    dictionary = [f.name for f in schema
                  if f.name not in plain and not pa.types.is_floating(f.type)]
    statistics = [p for f in schema if f.name not in plain or is_embedding_field(f)
                  for p in _leaf_paths(f.name, f.type)]
    return {"compression": compression, "use_dictionary": dictionary,
            "write_statistics": statistics}


def write_tile(catalog: str | os.PathLike, order: int, pixel: int, table: pa.Table) -> Path:
    """Write one tile atomically; needs only the path, so a Dask worker can call it.

    Sorts by ``_healpix_29`` and raises ValueError when a row lies outside the tile. Writes
    into ``catalog`` as given: during an overwrite pass :attr:`CatalogWriter.write_path`.
    """
    final = tile_path(catalog, order, pixel)
    table = _prepare_tile(table, int(order), int(pixel), final)
    try:
        with atomic_path(final) as tmp:
            pq.write_table(table, tmp, row_group_size=_row_group_rows(table),
                           **parquet_options(table.schema))
            publish_mode(tmp)
    except OSError as err:
        raise OutputError(f"{final}: cannot write tile: {err.strerror or err}") from err
    return final


# ----------------------------------------------------------------------------- properties

def _escape(value: str) -> str:
    """Java-properties escaping, so hats' reader (jproperties) gets the value back."""
    text = (value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
            .replace("\t", "\\t"))
    return "\\" + text if text.startswith((" ", "#", "!")) else text


def _unescape(value: str) -> str:
    """Undo :func:`_escape` (and the other Java escapes: ``\\uXXXX``, ``\\x`` -> ``x``)."""
    codes = {"n": "\n", "r": "\r", "t": "\t", "f": "\f"}

    def sub(m: re.Match) -> str:
        ch = m[1]
        if ch.startswith("u"):
            return chr(int(ch[1:], 16))
        return codes.get(ch, ch)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", sub, value)


def write_properties(path: str | os.PathLike, properties: dict[str, object]) -> None:
    """Write a ``key=value`` properties file atomically (values str()-ed, None skipped)."""
    lines = ["#HATS catalog (written by astroembed)"]
    for key, value in properties.items():
        if value is None:
            continue
        if not _KEY_RE.match(key):
            raise ValueError(f"property key {key!r} must be letters, digits, '_', '.', '-'")
        lines.append(f"{key}={_escape(str(value))}")
    _write_text(Path(path), "\n".join(lines) + "\n")


def _logical_lines(text: str) -> Iterable[str]:
    """Join Java-properties continuation lines (odd number of trailing backslashes)."""
    buffer = ""
    for raw in text.splitlines():
        line = raw.lstrip() if buffer else raw.strip()
        if not buffer and (not line or line.startswith(("#", "!"))):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            buffer += line[:-1]
            continue
        yield buffer + line
        buffer = ""
    if buffer:
        yield buffer


def read_properties(path: str | os.PathLike) -> dict[str, str]:
    """Read a Java-style properties file (as hats writes it) into a dict of strings."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text properties file (not UTF-8).") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from err
    props: dict[str, str] = {}
    for line in _logical_lines(text):
        match = re.match(r"((?:\\.|[^=:\s\\])+)\s*[=:\s]\s*(.*)$", line) or \
            re.match(r"((?:\\.|[^=:\s\\])+)()$", line)
        if not match:
            raise InputError(f"{path}: unreadable line {line[:60]!r} (expected key=value).")
        props[_unescape(match[1])] = _unescape(match[2])
    return props


def _write_text(path: Path, text: str) -> None:
    """Atomic text write with normal permissions; OSError becomes OutputError."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
            publish_mode(tmp)
    except OSError as err:
        raise OutputError(f"{path}: cannot write: {err.strerror or err}") from err


def _base_properties(name: str, ra_column: str, dec_column: str, status: str) -> dict:
    """The keys a catalog has from the moment a run begins."""
    return {
        "obs_collection": name,
        "dataproduct_type": "object",
        "hats_col_ra": ra_column,
        "hats_col_dec": dec_column,
        "hats_col_healpix": SPATIAL_INDEX_COLUMN,
        "hats_col_healpix_order": SPATIAL_INDEX_ORDER,
        "hats_npix_suffix": ".parquet",
        "hats_builder": f"astroembed v{astroembed_version()}",
        "hats_creation_date": utc_now(HATS_DATE),
        "hats_version": HATS_VERSION,
        "astroembed_version": astroembed_version(),
        STATUS_KEY: status,
        "astroembed_provenance": PROVENANCE_FILE,
    }


def _ordered(props: dict) -> dict:
    """Properties in a stable, readable order: HATS keys first as hats-import writes them."""
    first = ["obs_collection", "dataproduct_type", "hats_nrows", "hats_col_ra", "hats_col_dec",
             "hats_col_healpix", "hats_col_healpix_order", "hats_npix_suffix", "hats_max_rows",
             "hats_order", "moc_sky_fraction", "hats_builder", "hats_creation_date",
             "hats_estsize", "hats_version"]
    head = {k: props[k] for k in first if k in props}
    return head | {k: v for k, v in props.items() if k not in head}


def mark_incomplete(path: str | os.PathLike) -> None:
    """Set ``astroembed_status=incomplete`` on an existing catalog before changing it in place."""
    path = Path(path)
    props = read_properties(_properties_file(path))
    props[STATUS_KEY] = INCOMPLETE
    write_properties(path / PROPERTIES_FILE, props)


def update_provenance(path: str | os.PathLike, change: Callable[[dict], dict]) -> None:
    """Rewrite the provenance sidecar of a catalog being changed in place (atomically); the
    compact copies in ``hats.properties`` and the Parquet footers follow when it is finished
    (:func:`refresh_catalog`)."""
    path = Path(path)
    props = read_properties(_properties_file(path))
    _write_provenance(path, change(_read_provenance(path, props)))


# ----------------------------------------------------------------------------- finishing

def _remove_stale_temps(dataset: Path) -> None:
    """Remove temporary files left by killed writers (atomic_path names start with a dot)."""
    if not dataset.is_dir():
        return
    for tmp in dataset.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def _scan_tiles(root: Path) -> dict[tuple[int, int], Path]:
    """The tiles present under ``root/dataset`` (files named as HATS names them)."""
    tiles: dict[tuple[int, int], Path] = {}
    dataset = root / DATASET_DIR
    if not dataset.is_dir():
        return tiles
    for order_dir in dataset.glob("Norder=*"):
        for file in order_dir.glob("Dir=*/Npix=*.parquet"):
            match = _TILE_RE.search(file.relative_to(dataset).as_posix())
            if match and _TILE_FILE_RE.match(file.name):
                order, pixel = int(match[1]), int(match[3])
                if int(match[2]) == healpix_dir(pixel):
                    tiles[(order, pixel)] = file
    return dict((t, tiles[t]) for t in _breadth_first(tiles))


def _check_disjoint(tiles: list[tuple[int, int]], root: Path) -> None:
    """HATS tiles never overlap; a parent next to its child means a stale or stray file."""
    for i, a in enumerate(tiles):
        for b in tiles[i + 1:i + 2]:  # breadth-first order puts a parent just before a child
            if _overlaps(a, b):
                raise OutputError(f"{root}: tiles {a[0]}/{a[1]} and {b[0]}/{b[1]} overlap (one "
                                  "contains the other); remove the stray file or rebuild "
                                  "the catalog with --overwrite.")


def _read_footers(tiles: dict[tuple[int, int], Path], error: type[Exception] = OutputError
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


def _field_meta(fld: pa.Field) -> dict[str, str]:
    """A field's Parquet metadata as text."""
    return {k.decode(): v.decode() for k, v in (fld.metadata or {}).items()}


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
            detail = (f"columns only in {_fmt([first])}: {only_a or 'none'}; only in "
                      f"{_fmt([tile])}: {only_b or 'none'}" if only_a or only_b
                      else "same columns, different types")
            return f"tiles {_fmt([first])} and {_fmt([tile])} have different schemas ({detail})"
        for fld in schema:
            if not is_embedding_field(fld):
                continue
            seen = types.setdefault(fld.name, (tile, fld.type))
            if seen[1] != fld.type:
                return (f"column {fld.name} is {seen[1]} in tile {_fmt([seen[0]])} and "
                        f"{fld.type} in tile {_fmt([tile])}")
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
            fld = fld.with_type(_plain_tensor_type(fld.type))
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
    """``_common_metadata`` (schema) and ``_metadata`` (schema + all row groups).

    Without ``row_groups`` (tiles whose columns differ, which pyarrow cannot collect into
    one ``_metadata``) the old ``_metadata`` is removed: it would describe other columns.
    """
    dataset = root / DATASET_DIR
    if not row_groups:
        try:
            with atomic_path(dataset / COMMON_METADATA_FILE) as tmp:
                pq.write_metadata(schema, tmp)
                publish_mode(tmp)
            (dataset / METADATA_FILE).unlink(missing_ok=True)
        except OSError as err:
            raise OutputError(f"{dataset}: cannot write Parquet metadata: {err}") from err
        return
    collected = []
    for (order, pixel), footer in footers.items():
        footer.set_file_path(tile_path(root, order, pixel).relative_to(dataset).as_posix())
        collected.append(footer)
    try:
        with atomic_path(dataset / COMMON_METADATA_FILE) as tmp:
            pq.write_metadata(schema, tmp)
            publish_mode(tmp)
        with atomic_path(dataset / METADATA_FILE) as tmp:
            pq.write_metadata(schema, tmp, metadata_collector=collected)
            publish_mode(tmp)
    except OSError as err:
        raise OutputError(f"{dataset}: cannot write Parquet metadata: {err}") from err


def _write_partition_info(root: Path, tiles: list[tuple[int, int]]) -> None:
    """``partition_info.csv``: the tile list hats reads instead of listing directories."""
    rows = "".join(f"{order},{pixel}\n" for order, pixel in tiles)
    _write_text(root / PARTITION_INFO_FILE, "Norder,Npix\n" + rows)


def _write_provenance(root: Path, provenance: dict) -> None:
    """The full provenance sidecar (nested JSON does not belong in a properties file)."""
    _write_text(root / PROVENANCE_FILE,
                json.dumps(provenance, indent=2, default=str, ensure_ascii=False) + "\n")


def _dir_kib(root: Path) -> int:
    """Size of the catalog on disk in KiB, for ``hats_estsize``."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) // 1024


def _finalize(root: Path, props: dict, provenance: dict, extra: dict | None,
              schema: pa.Schema | None, partial: bool = False) -> None:
    """Write every metadata file for the tiles under ``root``, ``hats.properties`` last.

    ``partial``: some tiles lack embedding columns others have, or hold another model's; the
    catalog is marked ``partial`` and ``_common_metadata`` holds the union of the tiles'
    columns (lsdb reads the missing ones as nulls; see the module docstring).
    """
    _remove_stale_temps(root / DATASET_DIR)
    tiles = _scan_tiles(root)
    _check_disjoint(list(tiles), root)
    footers = _read_footers(tiles)
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
    rows = [f.num_rows for f in footers.values()]
    props = dict(props) | {
        "hats_nrows": sum(rows),
        "hats_max_rows": max(rows, default=0),
        "hats_order": max((o for o, _ in tiles), default=0),
        "moc_sky_fraction": f"{sum(1 / (12 * 4**o) for o, _ in tiles):0.5f}",
        "hats_estsize": _dir_kib(root),
        STATUS_KEY: PARTIAL if partial else COMPLETE,
        "astroembed_provenance": PROVENANCE_FILE,
    }
    props |= {k: v for k, v in (extra or {}).items() if v is not None}
    write_properties(root / PROPERTIES_FILE, _ordered(props))


def refresh_catalog(path: str | os.PathLike, provenance: dict | None = None,
                    extra_properties: dict | None = None, *,
                    partial: bool = False) -> CatalogInfo:
    """Rewrite the metadata of an existing catalog after tiles changed in place (``embed``).

    Keeps its properties (name, columns, creation date) and, when ``provenance`` is None,
    its provenance; marks it complete again, or ``partial`` when some tiles are not
    embedded yet (see :func:`_finalize`).
    """
    path = Path(path)
    props = read_properties(_properties_file(path))
    if provenance is None:
        provenance = _read_provenance(path, props)
    _finalize(path, props, provenance, extra_properties, None, partial)
    return read_catalog_info(path)


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
                 overwrite: bool = False, catalog_name: str | None = None) -> None:
        self.path = Path(path)
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
            if self.write_path.is_dir() and (self.write_path / PROPERTIES_FILE).is_file():
                shutil.rmtree(self.write_path)  # an interrupted run's, not resumable
        try:
            (self.write_path / DATASET_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{self.write_path}: cannot create the catalog directory: "
                              f"{err.strerror or err}") from err
        self._props = _base_properties(self.catalog_name, self.ra_column, self.dec_column,
                                       "incomplete")
        write_properties(self.write_path / PROPERTIES_FILE, self._props)

    def adopt(self, write_path: str | os.PathLike) -> None:
        """Continue an interrupted run in the incomplete catalog it was writing at ``write_path``.

        Used instead of :meth:`begin` when a run is resumed: the tiles already there are kept.
        """
        self.write_path = Path(write_path)
        if not (self.write_path / PROPERTIES_FILE).is_file():
            raise OutputError(f"{self.write_path}: the interrupted run's catalog is gone; start "
                              "again with --overwrite.")
        self._state = "resumed"
        self._props = _base_properties(self.catalog_name, self.ra_column, self.dec_column,
                                       "incomplete")
        (self.write_path / DATASET_DIR).mkdir(parents=True, exist_ok=True)

    def write_tile(self, order: int, pixel: int, table: pa.Table) -> Path:
        """:func:`write_tile` into :attr:`write_path`."""
        return write_tile(self.write_path, order, pixel, table)

    def finish(self, provenance: dict, extra_properties: dict | None = None, *,
               schema: pa.Schema | None = None) -> CatalogInfo:
        """Write metadata for the tiles present, hats.properties last; swap in a replacement.

        ``schema`` is used only when no tile was written (an empty but valid catalog).
        ``extra_properties`` are added to hats.properties (e.g. ``hats_max_bytes``) and
        override computed keys. Call it once every tile writer is done: it removes the
        temporary files that killed writers left.
        """
        if self._state is None:
            raise RuntimeError("CatalogWriter.finish() called before begin()")
        _finalize(self.write_path, self._props, provenance, extra_properties, schema)
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


# ----------------------------------------------------------------------------- reading

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


def _properties_file(path: Path) -> Path:
    """``CAT/hats.properties``, or InputError saying why ``path`` is not a catalog."""
    if not path.exists():
        raise InputError(f"{path}: no such catalog (the directory does not exist).")
    if not path.is_dir():
        raise InputError(f"{path}: is a file, not a catalog directory (expected a HATS "
                         f"directory with {PROPERTIES_FILE} and {DATASET_DIR}/).")
    file = path / PROPERTIES_FILE
    if not file.is_file():
        file = path / "properties"  # older HATS catalogs
    if not file.is_file():
        raise InputError(f"{path}: not a catalog: no {PROPERTIES_FILE}. A catalog is a HATS "
                         f"directory ({PROPERTIES_FILE}, {DATASET_DIR}/Norder=*/...), as "
                         "`astroembed crossmatch` writes.")
    return file


def _read_provenance(path: Path, props: dict[str, str]) -> dict:
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
        match = _TILE_RE.search(group.column(0).file_path) if group.num_columns else None
        if match:
            tile = (int(match[1]), int(match[3]))
            rows[tile] = rows.get(tile, 0) + group.num_rows
    return rows


def _read_schema(path: Path, tiles: list[tuple[int, int]]) -> pa.Schema:
    """Schema from ``_common_metadata``, else ``_metadata``, else a tile, else empty."""
    dataset = path / DATASET_DIR
    candidates = [dataset / COMMON_METADATA_FILE, dataset / METADATA_FILE,
                  *(tile_path(path, *t) for t in tiles)]
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
    props = read_properties(_properties_file(path))
    status = props.get(STATUS_KEY, COMPLETE)
    finished = status in (COMPLETE, PARTIAL)
    partition_info = path / PARTITION_INFO_FILE
    if finished and partition_info.is_file():
        tiles = _breadth_first(_read_partition_info(partition_info))
    else:
        tiles = list(_scan_tiles(path))
    metadata = path / DATASET_DIR / METADATA_FILE
    rows = _metadata_rows(metadata) if finished and metadata.is_file() else {}
    for tile in tiles:
        if tile not in rows:
            file = tile_path(path, *tile)
            rows[tile] = (_read_footers({tile: file}, InputError)[tile].num_rows
                          if file.is_file() else 0)
    rows = {t: rows[t] for t in tiles}
    return CatalogInfo(path=path, tiles=tiles, rows=rows, total_rows=sum(rows.values()),
                       schema=_read_schema(path, tiles), properties=props,
                       provenance=_read_provenance(path, props),
                       complete=status == COMPLETE)


# ----------------------------------------------------------------------------- what info says

#: The states :func:`describe_catalog` reports (``astroembed info``).
STATE_COMPLETE, STATE_PARTLY_EMBEDDED, STATE_INCOMPLETE = (
    "complete", "partly embedded", "incomplete")

#: Hidden siblings of ``CAT`` that runs write beside it (never inside it, so lsdb never
#: sees them), as (name prefix, name suffix, what they are).
WORK_SIBLINGS = (
    (".astroembed-staging", "", "work files of `astroembed crossmatch`; running the same "
     "cross-match again resumes from them"),
    (".partial", "", "a replacement catalog being built by `crossmatch --overwrite`"),
    (".astroembed-update", "", "work files of an `astroembed run` update"),
    (".old-", "*", "the old catalog of an interrupted replacement"),
)


def null_rows(footer: pq.FileMetaData, column: str) -> int:
    """Null rows of a fixed-size-list column from the row-group statistics (one null leaf
    entry per null list), without reading the data."""
    nulls = 0
    for g in range(footer.num_row_groups):
        group = footer.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema.split(".")[0] == column:
                stats = chunk.statistics
                nulls += int(stats.null_count) if stats is not None and stats.has_null_count else 0
                break
    return nulls


def tile_footers(info: CatalogInfo) -> dict[tuple[int, int], pq.FileMetaData]:
    """Each tile's Parquet footer (InputError naming an unreadable tile)."""
    return _read_footers({t: tile_path(info.path, *t) for t in info.tiles}, InputError)


def tile_embeddings(footers: dict[tuple[int, int], pq.FileMetaData]) -> dict[str, dict]:
    """Per embedding column, what the tiles hold, read from their footers alone: the model
    (the one in most tiles), rows embedded and null, the tiles holding it of all tiles,
    and every model found in it with its tile count (more than one while a column is being
    replaced tile by tile)."""
    columns: dict[str, dict] = {}
    for footer in footers.values():
        for fld in footer.schema.to_arrow_schema():
            meta = _field_meta(fld)
            if not is_embedding_field(fld) or "model_hash" not in meta:
                continue
            entry = columns.setdefault(fld.name, {
                "modality": meta.get("modality"),
                "embedding_dim": int(meta.get("embedding_dim", 0)),
                "created": meta.get("created"), "updated": meta.get("created"),
                "rows_embedded": 0, "rows_null": 0, "tiles": 0, "tiles_total": len(footers),
                "models": {}})
            nulls = null_rows(footer, fld.name)
            entry["created"] = min(entry["created"] or "", meta.get("created") or "")
            entry["updated"] = max(entry["updated"] or "", meta.get("created") or "")
            entry["rows_null"] += nulls
            entry["rows_embedded"] += footer.num_rows - nulls
            entry["tiles"] += 1
            model = entry["models"].setdefault(meta["model_hash"], {
                "model_hash": meta["model_hash"], "model_name": meta.get("model_name"),
                "model_version": meta.get("model_version"), "tiles": 0})
            model["tiles"] += 1
    for name, entry in columns.items():
        models = sorted(entry.pop("models").values(), key=lambda m: -m["tiles"])
        main = {k: models[0][k] for k in ("model_name", "model_version", "model_hash")}
        columns[name] = {"modality": entry.pop("modality")} | main | entry | {"models": models}
    return columns


def embedding_gaps(columns: dict[str, dict]) -> dict[str, dict]:
    """The embedding columns that are not in every tile, or not by one model."""
    return {name: e for name, e in columns.items()
            if e["tiles"] < e["tiles_total"] or len(e["models"]) > 1}


def _embed_command(path: Path, column: str, entry: dict, columns: dict[str, dict]) -> str:
    """The ``embed`` command that fills the gaps of ``column`` (its --name and, when the
    name has only this modality, --modality)."""
    modality = entry.get("modality") or ""
    stem = f"embedding_{modality}"
    name = column[len(stem) + 1:] if column.startswith(stem + "_") else ""
    suffix = f"_{name}" if name else ""
    siblings = {e.get("modality") for c, e in columns.items()
                if c == f"embedding_{e.get('modality')}{suffix}"}
    command = (f"astroembed embed --catalog {shlex.quote(str(path))}"
               + (f" --name {shlex.quote(name)}" if name else ""))
    if siblings == {modality}:
        command += f" --modality {modality}"
    return command


def partly_embedded_detail(path: Path, columns: dict[str, dict]) -> str:
    """``embedding_image_x in 1 of 6 tiles; run `astroembed embed ...` to embed the rest``."""
    gaps = embedding_gaps(columns)
    parts, commands = [], []
    for column, e in gaps.items():
        if len(e["models"]) > 1:
            made = " and ".join(f"{m['model_name']} {m['model_version']} "
                                f"({m['model_hash'][:12]}) in {m['tiles']}" for m in e["models"])
            parts.append(f"{column} made by {made} of {e['tiles_total']} tiles")
        else:
            parts.append(f"{column} in {e['tiles']} of {e['tiles_total']} tiles")
        model = ("the model wanted in every tile" if len(e["models"]) > 1 else
                 f"the model that made them ({e['model_name']} {e['model_version']})")
        command = f"`{_embed_command(path, column, e, columns)}` with {model}"
        if command not in commands:
            commands.append(command)
    return "; ".join(parts) + "; run " + " and ".join(commands) + " to embed the rest"


def catalog_state(info: CatalogInfo, columns: dict[str, dict]) -> tuple[str, str | None]:
    """The catalog's state for people, and what it means: ``incomplete`` only while a writer
    is at work or after an interrupted run (``astroembed_status=incomplete``); ``partly
    embedded`` when its tiles differ in their embedding columns (``embed --tile``);
    ``complete`` otherwise."""
    if info.status == INCOMPLETE:
        from astroembed.catalog.lock import holders

        working = holders(info.path)
        detail = (f"being written now by {'; '.join(working)}" if working else
                  "a run was interrupted (no astroembed process holds the catalog); run the "
                  "interrupted command again to finish it")
        if embedding_gaps(columns):
            detail += " (tiles so far: " + partly_embedded_detail(info.path, columns) + ")"
        return STATE_INCOMPLETE, detail
    if embedding_gaps(columns):
        return STATE_PARTLY_EMBEDDED, partly_embedded_detail(info.path, columns)
    return STATE_COMPLETE, None


def _bytes_under(path: Path) -> int:
    """Bytes of the files under ``path`` (a file: its size); 0 for what cannot be read."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def leftover_work_files(path: str | os.PathLike) -> list[dict]:
    """The hidden work directories beside the catalog (:data:`WORK_SIBLINGS`), with their
    sizes: in use while a run is under way, else left by an interrupted one and safe to
    remove (``rm -rf``); listed so the user knows where the space went."""
    path = Path(path)
    try:
        siblings = sorted(path.parent.iterdir())
    except OSError:
        return []
    found = []
    for sibling in siblings:
        for suffix, more, what in WORK_SIBLINGS:
            stem = f".{path.name}{suffix}"
            if sibling.name == stem or (more and sibling.name.startswith(stem)):
                found.append({"path": str(sibling), "bytes": _bytes_under(sibling), "what": what})
                break
    return found


def _all_columns(info: CatalogInfo,
                 footers: dict[tuple[int, int], pq.FileMetaData]) -> list[dict]:
    """Every column of the catalog or of any tile (a run under way may have added some)."""
    fields = {f.name: f for f in info.schema}
    for footer in footers.values():
        for fld in footer.schema.to_arrow_schema():
            fields.setdefault(fld.name, fld)
    return [{"name": f.name, "type": str(f.type)} for f in fields.values()]


def describe_catalog(path: str | os.PathLike) -> dict:
    """What a catalog holds and its state, as ``astroembed info --json`` prints it: tiles
    with rows, columns, embedding columns with their tile counts (from the tiles' footers),
    the state and what it means, leftover work files beside it, the last ``astroembed run``,
    properties and provenance."""
    from astroembed.pipeline.run import read_state  # the run's state file lives in the catalog

    info = read_catalog_info(path)
    footers = tile_footers(info)
    columns = tile_embeddings(footers)
    state, detail = catalog_state(info, columns)
    return {
        "path": str(info.path), "state": state, "state_detail": detail,
        "complete": state == STATE_COMPLETE, "total_rows": info.total_rows,
        "tiles": [{"order": o, "pixel": p, "rows": info.rows.get((o, p), 0)}
                  for o, p in info.tiles],
        "columns": _all_columns(info, footers), "embeddings": columns,
        "leftover_work_files": leftover_work_files(info.path),
        "last_run": (read_state(info.path) or {}).get("last_run"),
        "properties": info.properties, "provenance": info.provenance,
    }


def find_tile(info: CatalogInfo, order: int, pixel: int) -> tuple[int, int]:
    """``(order, pixel)`` if it is a tile of the catalog, else InputError naming the tiles
    under or over it (``--tile`` must name an existing tile; docs/architecture.md)."""
    order, pixel = int(order), int(pixel)
    try:
        _check_tile(order, pixel)
    except ValueError as err:
        raise InputError(f"--tile {order}/{pixel}: {err}.") from None
    if (order, pixel) in info.rows or (order, pixel) in info.tiles:
        return order, pixel
    tile = (order, pixel)
    over = [t for t in info.tiles if t[0] < order and _overlaps(t, tile)]
    under = [t for t in info.tiles if t[0] > order and _overlaps(t, tile)]
    name = f"--tile {order}/{pixel}"
    if over:
        raise InputError(f"{name} is not a tile of {info.path}: it lies inside tile "
                         f"{_fmt(over)}; use --tile {_fmt(over)}.")
    if under:
        raise InputError(f"{name} is not a tile of {info.path}: it is split into the tiles "
                         f"{_fmt(under)}; name those instead.")
    raise InputError(f"{name} is not a tile of {info.path} and no tile covers it (no data "
                     f"there). The catalog has {len(info.tiles)} tiles"
                     + (f": {_fmt(info.tiles, 10)}" if info.tiles else "")
                     + f"; `astroembed info {info.path} --tiles` lists them.")


def read_tile(path: str | os.PathLike, order: int, pixel: int,
              columns: list[str] | None = None) -> pa.Table:
    """One tile's rows (all columns, or ``columns``); InputError if it or a column is absent."""
    file = tile_path(path, order, pixel)
    if not file.is_file():
        _properties_file(Path(path))
        raise InputError(f"{path}: no tile {order}/{pixel} ({file} does not exist); "
                         f"`astroembed info {path} --tiles` lists the tiles.")
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
