"""A few rows of a catalog, for ``astroembed head``: to see what the columns hold and which IDs
exist (``search --like`` takes one).

Rows come from the first tiles in the catalog's order, from one tile (``--tile``) or from a
cone; only the columns asked for are read, so a look at a large catalog stays cheap. Vector
columns (embeddings, spectra, cutouts) are abbreviated to their length and first values.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroembed.catalog.columns import embedding_columns, resolve_id_column
from astroembed.catalog.reader import CatalogInfo, find_tile, read_catalog_info, read_tile
from astroembed.errors import ConfigError, InputError

#: Values of a vector column shown in full before it is cut short.
VECTOR_HEAD = 3


def default_columns(info: CatalogInfo, id_column: str) -> list[str]:
    """The object key, the position, the redshift and the embeddings: what a first look and
    ``search`` need."""
    wanted = [id_column, info.ra_column, info.dec_column, "Z", *embedding_columns(info)]
    return [c for c in dict.fromkeys(wanted) if c in info.schema.names]


def _check_columns(info: CatalogInfo, columns: list[str]) -> None:
    """InputError naming the columns the catalog lacks, with the ones it has."""
    from astroembed.errors import did_you_mean

    missing = [c for c in columns if c not in info.schema.names]
    if missing:
        raise InputError(f"--columns: {info.path} has no column "
                         f"{', '.join(map(repr, missing))}.{did_you_mean(missing[0], info.schema.names)}"
                         f" Its columns: {', '.join(info.schema.names)}.")


def _cone_mask(table: pa.Table, ra: str, dec: str, cone: tuple[float, float, float]) -> np.ndarray:
    """Rows within the cone (RA, Dec in deg, radius in arcsec), by the angle between unit
    vectors, which needs no care at the RA wrap or the poles."""
    ra0, dec0, radius = (math.radians(cone[0]), math.radians(cone[1]),
                         math.radians(cone[2] / 3600.0))
    r = np.radians(pc.fill_null(table.column(ra), np.nan).to_numpy(zero_copy_only=False))
    d = np.radians(pc.fill_null(table.column(dec), np.nan).to_numpy(zero_copy_only=False))
    cos_angle = (np.sin(d) * math.sin(dec0)
                 + np.cos(d) * math.cos(dec0) * np.cos(r - ra0))
    return cos_angle >= math.cos(radius)


def _check_cone(cone: tuple[float, float, float]) -> None:
    ra, dec, radius = cone
    if not (math.isfinite(ra) and 0 <= ra <= 360 and math.isfinite(dec) and -90 <= dec <= 90):
        raise ConfigError(f"--cone {ra} {dec} {radius}: RA must be in [0, 360] and Dec in "
                          "[-90, 90] degrees.")
    if not (math.isfinite(radius) and radius > 0):
        raise ConfigError(f"--cone {ra} {dec} {radius}: the radius (arcsec) must be positive.")


def _value(value: Any) -> Any:
    """A cell as JSON-able Python: vectors cut to their length and first values."""
    if isinstance(value, (list, tuple, np.ndarray)):
        flat = np.asarray(value, dtype=float).ravel() if len(value) else np.zeros(0)
        return {"length": int(flat.size),
                "head": [round(float(v), 6) for v in flat[:VECTOR_HEAD]]}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def head_rows(path: str | os.PathLike, columns: list[str] | None = None, rows: int = 10,
              tile: tuple[int, int] | None = None,
              cone: tuple[float, float, float] | None = None,
              id_column: str | None = None) -> dict:
    """Up to ``rows`` rows of the catalog at ``path`` (see the module docstring)."""
    if rows < 1:
        raise ConfigError(f"--rows {rows}: must be at least 1.")
    if tile is not None and cone is not None:
        raise ConfigError("--tile and --cone: give one of them.")
    if cone is not None:
        _check_cone(cone)
    info = read_catalog_info(path)
    key = resolve_id_column(info, id_column)
    shown = list(dict.fromkeys(columns)) if columns else default_columns(info, key)
    _check_columns(info, shown)
    tiles = [find_tile(info, *tile)] if tile is not None else list(info.tiles)
    position = [info.ra_column, info.dec_column] if cone is not None else []
    read = list(dict.fromkeys([*shown, *position]))
    parts: list[pa.Table] = []
    matched = 0
    for order, pixel in tiles:
        if matched >= rows:
            break
        if info.rows.get((order, pixel), 1) == 0:
            continue
        table = read_tile(info.path, order, pixel, columns=read)
        if cone is not None:
            table = table.filter(pa.array(_cone_mask(table, info.ra_column, info.dec_column,
                                                     cone)))
        table = table.slice(0, rows - matched)
        matched += table.num_rows
        parts.append(table.select(shown))
    records = [{k: _value(v) for k, v in row.items()}
               for part in parts for row in part.to_pylist()]
    return {"path": str(info.path), "id_column": key, "columns": shown, "rows": records,
            "total_rows": info.total_rows,
            "tile": list(tile) if tile is not None else None,
            "cone": list(cone) if cone is not None else None}
