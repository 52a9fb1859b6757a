"""Where a catalog's files lie and what they are named: the collection's parts (the main
catalog, the pixel extension), the ``Norder=k/Dir=D/Npix=n`` tile paths, parsing and
checking ``ORDER/PIXEL``, the ``.properties`` files (Java escaping, so hats reads them back)
and the names every other catalog module shares. The whole layout is described in
:mod:`astroembed.catalog.writer` and docs/architecture.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa

from astroembed.errors import InputError, OutputError
from astroembed.catalog.atomic import atomic_path, publish_mode

__all__ = [
    "DATASET_DIR",
    "MAIN_DIR",
    "PIXEL_COLUMNS",
    "PIXELS_DIR",
    "ROW_ID_COLUMN",
    "main_dir",
    "pixel_tile_path",
    "PROPERTIES_FILE",
    "PROVENANCE_FILE",
    "SPATIAL_INDEX_COLUMN",
    "healpix_dir",
    "parse_tile",
    "read_properties",
    "tile_of",
    "tile_path",
    "write_properties",
]

SPATIAL_INDEX_COLUMN = "_healpix_29"
SPATIAL_INDEX_ORDER = 29
#: A catalog is a HATS collection: the main catalog (every scalar column, the embeddings and
#: predictions) in ``MAIN_DIR``, the per-pixel arrays in the extension ``PIXELS_DIR`` (same
#: tiles, same row order), joined on ``ROW_ID_COLUMN``; ``embed`` and ``predict`` rewrite
#: main tiles only (a row's pixels are ~99% of its bytes).
COLLECTION_FILE = "collection.properties"
MAIN_DIR = "main"
PIXELS_DIR = "pixels"
PIXELS_PROPERTIES = "pixels.properties"
#: The margin catalog (rows near each tile, from the tiles around it), for LSDB crossmatches.
MARGIN_DIR = "margin"
MARGIN_KEY = "astroembed_margin_arcsec"
ROW_ID_COLUMN = "ROW_ID"
#: Columns that go to the pixel extension: the cutout and the spectrum's flux and ivar.
PIXEL_COLUMNS = ("image", "flux", "ivar")
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
#: The kinds of properties file (:func:`write_properties`): a catalog's ``hats.properties``
#: (main, pixel extension data, margin), ``collection.properties``, ``pixels.properties``.
TABLE, COLLECTION, EXTENSION = "table", "collection", "extension"

TILE_RE = re.compile(r"Norder=(\d+)/Dir=(\d+)/Npix=(\d+)")
_TILE_FILE_RE = re.compile(r"^Npix=(\d+)\.parquet$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


# ----------------------------------------------------------------------------- tiles

def check_tile(order: int, pixel: int) -> None:
    """Raise ValueError for an impossible (order, pixel): a caller bug, not user input."""
    if not 0 <= order <= SPATIAL_INDEX_ORDER:
        raise ValueError(f"HEALPix order {order} outside 0..{SPATIAL_INDEX_ORDER}")
    if not 0 <= pixel < 12 * 4**order:
        raise ValueError(f"HEALPix pixel {pixel} outside 0..{12 * 4**order - 1} at order {order}")


def healpix_dir(pixel: int) -> int:
    """The ``Dir=`` number of a tile: ``(pixel // 10000) * 10000`` (keeps directories small)."""
    return (int(pixel) // 10000) * 10000


def dataset_tile(root: str | os.PathLike, order: int, pixel: int) -> Path:
    """``ROOT/dataset/Norder=k/Dir=D/Npix=n.parquet``: a tile of the HATS catalog at ``ROOT``."""
    order, pixel = int(order), int(pixel)
    check_tile(order, pixel)
    return (Path(root) / DATASET_DIR / f"Norder={order}" / f"Dir={healpix_dir(pixel)}"
            / f"Npix={pixel}.parquet")


def main_dir(catalog: str | os.PathLike) -> Path:
    """``CAT/main``: the collection's main catalog."""
    return Path(catalog) / MAIN_DIR


def tile_path(catalog: str | os.PathLike, order: int, pixel: int) -> Path:
    """The main catalog's tile ``CAT/main/dataset/Norder=k/Dir=D/Npix=n.parquet``."""
    return dataset_tile(main_dir(catalog), order, pixel)


def pixel_tile_path(catalog: str | os.PathLike, order: int, pixel: int) -> Path:
    """The pixel extension's tile ``CAT/pixels/dataset/Norder=k/Dir=D/Npix=n.parquet``."""
    return dataset_tile(Path(catalog) / PIXELS_DIR, order, pixel)


def row_ids(order: int, pixel: int, n: int) -> np.ndarray:
    """The ``ROW_ID`` of a tile's ``n`` rows: the tile's first order-29 pixel plus the row's
    place. Unique across the catalog (tiles are disjoint and hold fewer rows than order-29
    pixels) and in the rows' order; a tile written again numbers its rows again."""
    span = 1 << (2 * (SPATIAL_INDEX_ORDER - int(order)))
    if n > span:
        raise ValueError(f"tile {order}/{pixel}: {n} rows cannot be numbered within its "
                         f"{span} order-29 pixels")
    return (int(pixel) * span) + np.arange(n, dtype=np.int64)


def tile_of(healpix29: np.ndarray, order: int) -> np.ndarray:
    """The order-``order`` pixel of each order-29 index (nested scheme: drop 2 bits a level)."""
    return np.asarray(healpix29, dtype=np.int64) >> (2 * (SPATIAL_INDEX_ORDER - order))


def breadth_first(tiles: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Tiles in HATS order (by their first order-29 pixel), as partition_info.csv lists them."""
    return sorted(set(tiles), key=lambda t: (t[1] << (2 * (SPATIAL_INDEX_ORDER - t[0])), t[0]))


def tiles_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when one tile contains the other (or they are the same)."""
    (oa, pa_), (ob, pb) = (a, b) if a[0] <= b[0] else (b, a)
    return pb >> (2 * (ob - oa)) == pa_


def format_tiles(tiles: Iterable[tuple[int, int]], limit: int = 20) -> str:
    """``1/4, 2/17, ...`` for error messages, cut after ``limit`` tiles."""
    tiles = list(tiles)
    text = ", ".join(f"{o}/{p}" for o, p in tiles[:limit])
    return text + (f", ... ({len(tiles)} in all)" if len(tiles) > limit else "")


def parse_tile(text: str) -> tuple[int, int]:
    """``"ORDER/PIXEL"`` -> ``(order, pixel)``; InputError says the expected form."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise InputError(f"--tile {text!r}: expected ORDER/PIXEL with two whole numbers, "
                         "e.g. --tile 5/1234 (see `astroembed info --catalog CAT --tiles`).")
    order, pixel = int(match[1]), int(match[2])
    try:
        check_tile(order, pixel)
    except ValueError as err:
        raise InputError(f"--tile {text!r}: {err}.") from None
    return order, pixel


def is_embedding_field(fld: pa.Field) -> bool:
    """Whether ``fld`` is an embedding column written by ``embed`` (it says so in its
    metadata)."""
    return (fld.metadata or {}).get(b"astroembed_embedding") == b"1"



# ----------------------------------------------------------------------------- properties

def _unescape(value: str) -> str:
    """Undo Java-properties escapes (``\\n``, ``\\uXXXX``, ``\\x`` -> ``x``)."""
    codes = {"n": "\n", "r": "\r", "t": "\t", "f": "\f"}

    def sub(m: re.Match) -> str:
        ch = m[1]
        if ch.startswith("u"):
            return chr(int(ch[1:], 16))
        return codes.get(ch, ch)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", sub, value)


def _properties_model(kind: str) -> tuple[type, str]:
    """hats' model for a kind of properties file, and the comment hats heads it with."""
    from hats.catalog import CollectionProperties, ExtensionProperties, TableProperties

    models = {TABLE: (TableProperties, "HATS catalog"),
              COLLECTION: (CollectionProperties, "HATS Collection"),
              EXTENSION: (ExtensionProperties, "HATS Extension")}
    if kind not in models:
        raise ValueError(f"unknown properties kind {kind!r} (expected one of {sorted(models)})")
    return models[kind]


def _escape(value: str) -> str:
    """Java-properties escaping, so hats' reader (jproperties) gets the value back."""
    text = (value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
            .replace("\t", "\\t"))
    return "\\" + text if text.startswith((" ", "#", "!")) else text


def properties_text(properties: dict[str, object], kind: str = TABLE,
                    where: str | os.PathLike = "properties") -> str:
    """The text of a HATS properties file (None values skipped), ``where`` naming it in errors.

    hats' model for ``kind`` (``TableProperties``, ``CollectionProperties``,
    ``ExtensionProperties``) checks the keys its readers need (a margin without its
    threshold, an extension without its join columns is refused here, not by the first
    reader) and gives the values as hats writes them, astroembed's own keys among the
    "extra" keys it keeps. Own: the text. hats' writer leaves backslashes unescaped, so
    hats' own reader drops them (a catalog named ``a\\b`` comes back as ``ab``), and its
    ``to_properties_file`` adds the legacy duplicate ``properties``.
    """
    values = {key: value for key, value in properties.items() if value is not None}
    for key in values:
        if not _KEY_RE.match(key):
            raise ValueError(f"property key {key!r} must be letters, digits, '_', '.', '-'")
    model, comment = _properties_model(kind)
    try:
        fields = model(**values).model_dump(by_alias=True, exclude_none=True)
    except ValueError as err:  # pydantic's ValidationError: keys a caller got wrong
        raise ValueError(f"{where}: not valid HATS {kind} properties: "
                         f"{_validation_summary(err)}") from None
    lines = [f"#{comment} (written by astroembed)"]
    lines += [f"{key}={_escape(str(value))}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def _validation_summary(err: ValueError) -> str:
    """pydantic's multi-line report as one line: each key with what is wrong and the value."""
    errors = getattr(err, "errors", None)
    if not callable(errors):
        return str(err)
    parts = []
    for e in errors():
        key = ".".join(str(x) for x in e.get("loc", ())) or "properties"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        parts.append(f"{key}: {e.get('msg', 'invalid')}{got}")
    return "; ".join(parts)


def write_properties(path: str | os.PathLike, properties: dict[str, object],
                     kind: str = TABLE) -> None:
    """Write a HATS properties file (:func:`properties_text`) atomically. Own: the write,
    because hats' writer opens the final file and writes it in place, so a reader or a
    crash could meet half a file."""
    write_text_file(Path(path), properties_text(properties, kind, path))


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
    """Read a Java-style properties file (as hats writes it) into a dict of strings.

    Own, not hats' ``TableProperties.read_from_dir``: every command reads
    ``hats.properties`` first, often only that, and importing hats' models takes seconds
    (pydantic, astropy, numba) where this parser takes a millisecond; it also reads a file
    hats' validation would refuse, so ``info`` can say what is wrong with it.
    """
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


def write_text_file(path: Path, text: str) -> None:
    """Atomic text write with normal permissions; OSError becomes OutputError."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
            publish_mode(tmp)
    except OSError as err:
        raise OutputError(f"{path}: cannot write: {err.strerror or err}") from err


def scan_tiles(root: Path) -> dict[tuple[int, int], Path]:
    """The tiles present under ``root/dataset`` (files named as HATS names them)."""
    tiles: dict[tuple[int, int], Path] = {}
    dataset = root / DATASET_DIR
    if not dataset.is_dir():
        return tiles
    for order_dir in dataset.glob("Norder=*"):
        for file in order_dir.glob("Dir=*/Npix=*.parquet"):
            match = TILE_RE.search(file.relative_to(dataset).as_posix())
            if match and _TILE_FILE_RE.match(file.name):
                order, pixel = int(match[1]), int(match[3])
                if int(match[2]) == healpix_dir(pixel):
                    tiles[(order, pixel)] = file
    return dict((t, tiles[t]) for t in breadth_first(tiles))
