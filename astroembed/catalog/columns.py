"""Catalog columns as NumPy arrays, for ``probe``, ``predict`` and ``search``.

Those commands need a few columns of every row (IDs, a target, embeddings), never the images
and spectra in full, so the catalog is read tile by tile, column-selected, and each tile is
turned into small arrays at once (spectra are rebinned by the caller's converter there), which
keeps peak memory near the size of the arrays returned rather than of the tiles read.

Embedding columns are ``embedding_image`` / ``embedding_spectrum`` (docs/architecture.md),
``embedding_<modality>_<name>`` when ``embed --name`` made them; ``fixed_size_list<float32>[d]``,
L2-normalised, null where a row could not be embedded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroembed.errors import InputError, did_you_mean
from astroembed.catalog.reader import CatalogInfo, read_tile

EMBEDDING_PREFIX = "embedding_"
MODALITIES = ("image", "spectrum")
#: What ``--target redshift`` means: DESI's redshift column (``Z``; ``Z_right`` if suffixed).
TARGET_ALIASES = {"redshift": ("Z", "Z_right")}
DEFAULT_ID_COLUMN = "TARGETID"


def embedding_column(modality: str, name: str | None = None) -> str:
    """``embedding_image`` or ``embedding_image_<name>``: the names ``embed`` writes."""
    return f"{EMBEDDING_PREFIX}{modality}" + (f"_{name}" if name else "")


def _is_vector(t: pa.DataType) -> bool:
    """A fixed-size list of floats, the type of an embedding column."""
    return pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type)


def embedding_columns(info: CatalogInfo) -> list[str]:
    """Every embedding column of the catalog (any model name), in schema order."""
    return [f.name for f in info.schema
            if f.name.startswith(EMBEDDING_PREFIX) and _is_vector(f.type)]


def resolve_embeddings(info: CatalogInfo, modalities: list[str] | tuple[str, ...],
                       name: str | None = None) -> dict[str, str]:
    """``{modality: column}`` for the modalities asked for; InputError if one is missing.

    The message lists the embedding columns the catalog does have (so a user who forgot
    ``--name`` sees ``embedding_image_mymodel``) or says to run ``embed`` when it has none.
    """
    present = embedding_columns(info)
    found, missing = {}, []
    for modality in modalities:
        column = embedding_column(modality, name)
        (found.__setitem__(modality, column) if column in present else missing.append(column))
    if missing:
        if not present:
            raise InputError(f"{info.path}: no embedding columns (looked for "
                             f"{', '.join(missing)}); run `astroembed embed {info.path}` first.")
        names = sorted({c[len(EMBEDDING_PREFIX):].partition("_")[2] for c in present} - {""})
        hint = (f" Pick a model with --name ({', '.join(names)})." if names else "")
        raise InputError(f"{info.path}: no column {', '.join(missing)}; its embedding columns "
                         f"are {', '.join(present)}.{hint}")
    return found


def field_metadata(info: CatalogInfo, column: str) -> dict[str, str]:
    """A column's Arrow field metadata as text (model name, hash, dim for embeddings)."""
    meta = info.schema.field(column).metadata or {}
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in meta.items()}


def model_fingerprint(info: CatalogInfo, column: str) -> dict[str, str]:
    """The metadata entries that identify the model behind an embedding column.

    A probe trained on one model's embeddings is meaningless on another's; ``predict``
    compares these. Keys naming a hash, a model or a dimension are kept.
    """
    meta = field_metadata(info, column)
    return {k: v for k, v in meta.items()
            if any(word in k.lower() for word in ("hash", "model", "dim", "sha"))}


def resolve_id_column(info: CatalogInfo, override: str | None = None) -> str:
    """The catalog's object key: ``--id-column``, else what crossmatch recorded, else TARGETID."""
    config = (info.provenance or {}).get("config") or {}
    column = (override or info.properties.get("astroembed_id_column")
              or (config.get("id_column") if isinstance(config, dict) else None)
              or DEFAULT_ID_COLUMN)
    if column not in info.schema.names:
        raise InputError(f"{info.path}: no ID column {column!r}"
                         + ("" if override else " (the catalog's object key)")
                         + f"; name one with --id-column (columns: "
                         f"{', '.join(info.schema.names)}).")
    return column





def resolve_target(info: CatalogInfo, target: str) -> str:
    """The numeric column behind ``--target`` (``redshift`` -> ``Z``); InputError otherwise."""
    names = info.schema.names
    candidates = TARGET_ALIASES.get(target.lower(), (target,))
    column = next((c for c in candidates if c in names), None)
    if column is None:
        numeric = [f.name for f in info.schema if _is_numeric(f.type)]
        raise InputError(f"{info.path}: no column {target!r} to use as --target"
                         + (f" (redshift looks for {' or '.join(candidates)})"
                            if target.lower() in TARGET_ALIASES else "")
                         + f".{did_you_mean(target, names)} Numeric columns: {', '.join(numeric)}.")
    if not _is_numeric(info.schema.field(column).type):
        raise InputError(f"{info.path}: column {column!r} is {info.schema.field(column).type}, "
                         "not numeric; --target needs a numeric column.")
    return column


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def vectors(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-size-list column as ``(N, d)`` float32 and a validity mask (False for nulls).

    Uses the child values directly (slots under a null row hold garbage; they are zeroed),
    since ``flatten()`` would drop null rows and misalign the matrix.
    """
    if isinstance(column, pa.ChunkedArray):
        column = (column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
    d = column.type.list_size
    n = len(column)
    values = column.values.slice(column.offset * d, n * d)
    matrix = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, d)
    valid = (np.ones(n, bool) if column.null_count == 0
             else column.is_valid().to_numpy(zero_copy_only=False))
    if not valid.all():
        matrix = matrix.copy()
        matrix[~valid] = 0.0
    return matrix, valid


def scalars(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    as_float = column.cast(pa.float64())
    if column.null_count:
        as_float = pc.fill_null(as_float, np.nan)
    return np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)


def iter_tiles(info: CatalogInfo, columns: list[str]) -> Iterator[tuple[tuple[int, int], pa.Table]]:
    """Each tile's selected columns, in the catalog's tile order (the row order everywhere)."""
    for order, pixel in info.tiles:
        if info.rows.get((order, pixel), 1) == 0:
            continue
        yield (order, pixel), read_tile(info.path, order, pixel, columns=columns)


def read_arrays(info: CatalogInfo, columns: list[str],
                convert: Callable[[pa.Table], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate ``convert(tile_table)`` over all tiles.

    ``convert`` returns equal-length arrays per tile; doing the conversion per tile (e.g.
    spectra rebinned to a few hundred values) bounds memory by the output, not the input.
    """
    missing = [c for c in columns if c not in info.schema.names]
    if missing:
        raise InputError(f"{info.path}: no column {', '.join(map(repr, missing))}.")
    parts: dict[str, list[np.ndarray]] = {}
    for _, table in iter_tiles(info, columns):
        for key, value in convert(table).items():
            parts.setdefault(key, []).append(value)
    if not parts:
        raise InputError(f"{info.path}: the catalog has no rows.")
    return {k: np.concatenate(v) for k, v in parts.items()}
