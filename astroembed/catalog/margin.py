"""The margin catalog: for each tile, the main catalog's rows outside it within ``threshold``
arcsec, so that LSDB crossmatches of other catalogs against this one are right at tile edges
(LSDB reads a collection's default margin for the right-hand catalog, as hats-import's
margin cache provides it).

Margins are made for the empty parts of the sky too (the pixels no tile covers, as coarse as
possible): another catalog's partition there is aligned with an empty pixel of this one, and
its rows near our tiles must still meet ours. Membership is
:func:`astroembed.matching.sky.margin_members`: a superset (rows up to about two
margin-order pixels farther may be included), never missing a row within the threshold.

What hats does and what stays own: the margin catalog's ``hats.properties``,
``partition_info.csv`` and Parquet metadata are made by hats, as the main catalog's
(:mod:`astroembed.catalog.writer`). Own: which rows go where. At the 5 arcsec default they
are exactly the rows in the margin pixels hats' ``get_margin`` names for each partition,
over the tiles and hats' negative tree (tests/catalog/test_collection.py checks it), but
computed from each row's pixel and its neighbours instead of listing every partition's
margin pixels: about 6x faster than ``get_margin`` per partition at 216 tiles and 200,000
rows (0.23 s against 1.4 s). The margin order is own too: hats' ``margin2order`` rests on
an estimated ratio of pixel size to pixel gap, :func:`~astroembed.matching.sky.margin_order`
on a proven bound (they agree at 5 arcsec), and tiles deeper than the margin order, which
hats-import refuses, are handled.

The margin copies the main catalog's columns (scalars, embeddings, predictions; never the
pixels), so it is rebuilt whenever the main catalog's metadata is: at the end of
``crossmatch``, ``embed``, ``predict``. Building reads one main tile at a time (its
``_healpix_29``, then its rows when some lie in a margin), so memory is bounded by a tile.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astroembed.errors import OutputError
from astroembed.catalog.atomic import atomic_directory, atomic_path, publish_mode
from astroembed.catalog.layout import (COMMON_METADATA_FILE, DATASET_DIR, MARGIN_DIR,
                                       PROPERTIES_FILE, SPATIAL_INDEX_COLUMN,
                                       SPATIAL_INDEX_ORDER, dataset_tile, main_dir, scan_tiles,
                                       write_properties)

__all__ = ["DEFAULT_MARGIN_ARCSEC", "build_margin", "uncovered_pixels"]

#: hats-import's and LSDB's default margin width: wider than any cross-match radius that
#: makes sense between catalogs of arcsecond precision.
DEFAULT_MARGIN_ARCSEC = 5.0


def uncovered_pixels(tiles: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pixels of the sky no tile covers, each as coarse as possible (what
    hats calls the negative tree): with ``tiles`` they partition the sphere.

    Own, not hats' ``compute_negative_tree_pixels`` (which gives the same pixels): that one
    compiles its tree alignment with numba on first use, 7 to 9 s in every process that
    finishes a catalog, where this takes milliseconds.
    """
    if not tiles:
        return [(0, p) for p in range(12)]
    shift = {o: 2 * (SPATIAL_INDEX_ORDER - o) for o in range(SPATIAL_INDEX_ORDER + 1)}
    lo = np.array(sorted(p << shift[o] for o, p in tiles), dtype=np.int64)
    hi = np.array(sorted((p + 1) << shift[o] for o, p in tiles), dtype=np.int64)
    covered = set(tiles)
    out: list[tuple[int, int]] = []
    stack = [(0, p) for p in range(11, -1, -1)]
    while stack:
        order, pixel = stack.pop()
        start, stop = pixel << shift[order], (pixel + 1) << shift[order]
        if (order, pixel) in covered:
            continue
        # tiles lying inside this pixel, and whether one contains it
        inside = np.searchsorted(lo, stop) - np.searchsorted(lo, start)
        container = np.searchsorted(lo, start, side="right") - 1
        if container >= 0 and hi[container] >= stop and lo[container] <= start:
            continue
        if inside == 0:
            out.append((order, pixel))
            continue
        stack.extend((order + 1, 4 * pixel + c) for c in range(3, -1, -1))
    return out


def _write_table(final: Path, table: pa.Table) -> None:
    from astroembed.catalog.tiles import parquet_options

    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, **parquet_options(table.schema))
        publish_mode(tmp)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order, nulls where a tile lacks one (a
    partly embedded catalog)."""
    columns = [table.column(f.name) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def build_margin(catalog: str | Path, threshold: float, name: str,
                 ra_column: str, dec_column: str) -> bool:
    """(Re)build ``CAT/margin`` for the main catalog's tiles; False (and no margin) when
    ``threshold`` is 0 or the catalog has no rows. Replaces the old margin atomically."""
    from astroembed.catalog.writer import (_plain_schema, _write_parquet_metadata,
                                           _write_partition_info, coordinate_keys, tile_keys)
    from astroembed.matching.sky import margin_members

    catalog = Path(catalog)
    main = main_dir(catalog)
    final = catalog / MARGIN_DIR
    tiles = list(scan_tiles(main))
    if threshold <= 0 or not tiles:
        shutil.rmtree(final, ignore_errors=True)
        return False
    schema = _plain_schema(pq.read_schema(main / DATASET_DIR / COMMON_METADATA_FILE))
    partitions = tiles + uncovered_pixels(tiles)
    pieces: dict[int, list[pa.Table]] = {}
    # One tile at a time, so memory is bounded by a tile and the margin rows, not the catalog.
    for tile in tiles:
        file = dataset_tile(main, *tile)
        h29 = pq.read_table(file, columns=[SPATIAL_INDEX_COLUMN]).column(0).to_numpy()
        rows, part = margin_members(h29, partitions, threshold)
        if not rows.size:
            continue
        taken = pq.read_table(file).take(pa.array(rows))
        for p in np.unique(part):
            pieces.setdefault(int(p), []).append(_conform(taken.filter(pa.array(part == p)),
                                                          schema))
    try:
        with atomic_directory(final, may_replace=lambda _: None) as tmp:
            written: dict[tuple[int, int], pq.FileMetaData] = {}
            for p in sorted(pieces):
                table = pa.concat_tables(pieces[p])
                order = np.argsort(table.column(SPATIAL_INDEX_COLUMN).to_numpy(), kind="stable")
                table = table.take(pa.array(order))
                file = dataset_tile(tmp, *partitions[p])
                _write_table(file, table)
                written[partitions[p]] = pq.read_metadata(file)
            ordered = sorted(written, key=lambda t: (t[1] << 2 * (SPATIAL_INDEX_ORDER - t[0]),
                                                     t[0]))
            _write_parquet_metadata(tmp, schema, {t: written[t] for t in ordered})
            _write_partition_info(tmp, ordered)
            write_properties(tmp / PROPERTIES_FILE, {
                "obs_collection": f"{name}_{threshold:g}arcs",
                "dataproduct_type": "margin",
                **coordinate_keys(ra_column, dec_column),
                **tile_keys({t: written[t] for t in ordered}),
                "hats_primary_table_url": name,
                "hats_margin_threshold": f"{threshold:g}",
            })
    except OSError as err:
        raise OutputError(f"{final}: cannot write the margin catalog: "
                          f"{err.strerror or err}") from err
    return True
