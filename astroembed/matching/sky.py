"""HEALPix indexing, adaptive tiles, tile margins and angular distances, on plain arrays.

Every row carries ``_healpix_29``, its nested order-29 pixel; the pixel at order k is
``h29 >> 2*(29-k)``, so a tile ``(order, pixel)`` is one contiguous range of order-29 values
and all tile bookkeeping is integer range arithmetic (``searchsorted``), never geometry.

Geometry enters only in :func:`margin_members`. Its correctness rests on one bound, argued
here once. In the HEALPix projection (Calabretta & Roukema 2007) every order-K pixel is a
square of side ``s_K = pi / (2 sqrt(2) 2**K)``; to get from a pixel to any pixel it does not
touch, a path must cross a whole neighbouring pixel, so it is at least ``s_K`` long in the
projection (also across the projection's seams, where pixels meet edge to edge, and at the
eight vertices where only three pixels meet, where every pixel corner is still 90 degrees).
The projection's inverse shrinks no length by more than a factor ``lambda``: in the
equatorial zone ``lambda = sqrt(1 - (2/3)**2) = 0.745``; in the polar caps, with
``x = phi_c + (phi - phi_c) sigma`` and ``y = pi/4 (2 - sigma)``, the metric is
``ds**2 = [(8 / (pi q))**2 dy**2 + q**2 (dx + t dy)**2] / 3`` with ``q = sqrt(2 - sigma**2/3)``
and ``|t| <= 1``, whose smallest singular value is 0.5907 (at ``|t| = 1``, the facet seams).
So pixels that do not touch are at least ``0.5907 * s_K = 0.656 / 2**K`` radians apart
(dense boundary sampling gives 0.69 / 2**K at order 5, and falling towards ~0.69), and we
use ``0.5 / 2**K`` as the guaranteed width. A point within ``margin < 0.5 / 2**K`` of a tile
therefore lies in an order-K pixel that touches an order-K pixel overlapping the tile, which
is what :func:`margin_members` enumerates with ``get_all_neighbours``.
"""

from __future__ import annotations

import numpy as np

from astroembed.errors import ConfigError

ORDER_MAX = 29
DEFAULT_MAX_ORDER = 10
ARCSEC = np.pi / (180.0 * 3600.0)
#: Guaranteed angular distance (radians) between non-touching order-K pixels, times 2**K.
PIXEL_GAP_RAD = 0.5

Tile = tuple[int, int]


def healpix29(ra_deg, dec_deg) -> np.ndarray:
    """Nested order-29 pixel of each position (the ``_healpix_29`` column)."""
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    from astropy.coordinates import Latitude, Longitude
    from cdshealpix.nested import lonlat_to_healpix

    # cdshealpix, as hats/LSDB compute their _healpix_29, so a row lands in the same pixel
    # whichever tool indexes it (healpy breaks ties on exact pixel edges differently).
    lon = Longitude(np.asarray(ra, dtype=np.float64), unit="deg")
    lat = Latitude(np.asarray(dec, dtype=np.float64), unit="deg")
    return np.asarray(lonlat_to_healpix(lon, lat, ORDER_MAX), dtype=np.int64)


def radec_to_xyz(ra_deg, dec_deg) -> np.ndarray:
    """Unit vectors, shape (N, 3): matching in 3-D needs no RA-wrap or pole special cases."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def arcsec_to_chord(r_arcsec):
    """Straight-line distance between unit vectors ``r_arcsec`` apart (KD-tree radius)."""
    return 2.0 * np.sin(np.asarray(r_arcsec, dtype=np.float64) * ARCSEC / 2.0)


def chord_to_arcsec(chord):
    """Angle in arcsec for a chord; arcsin keeps full precision at sub-arcsec separations."""
    half = np.clip(np.asarray(chord, dtype=np.float64) / 2.0, 0.0, 1.0)
    return 2.0 * np.arcsin(half) / ARCSEC


def angular_separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation (Vincenty form: accurate at every distance), for reports."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(a, dtype=np.float64))
                            for a in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    sin_d1, cos_d1 = np.sin(dec1), np.cos(dec1)
    sin_d2, cos_d2 = np.sin(dec2), np.cos(dec2)
    num = np.hypot(cos_d2 * np.sin(dra), cos_d1 * sin_d2 - sin_d1 * cos_d2 * np.cos(dra))
    den = sin_d1 * sin_d2 + cos_d1 * cos_d2 * np.cos(dra)
    return np.arctan2(num, den) / ARCSEC


def _shift(order) -> np.ndarray:
    return 2 * (ORDER_MAX - np.asarray(order, dtype=np.int64))


def tile_ranges(tiles) -> tuple[np.ndarray, np.ndarray]:
    """Order-29 half-open range ``[lo, hi)`` covered by each tile."""
    arr = np.asarray(list(tiles), dtype=np.int64).reshape(-1, 2)
    order, pixel = arr[:, 0], arr[:, 1]
    if np.any((order < 0) | (order > ORDER_MAX)) or np.any(
            (pixel < 0) | (pixel >= 12 * (np.int64(1) << (2 * np.clip(order, 0, ORDER_MAX))))):
        raise ValueError("tiles must be (order, pixel) with 0 <= order <= 29 and "
                         "0 <= pixel < 12 * 4**order")
    shift = _shift(order)
    return pixel << shift, (pixel + 1) << shift


def _sorted_ranges(tiles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile ranges sorted by start, with the sort order; refuses overlapping tiles."""
    lo, hi = tile_ranges(tiles)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    if np.any(hi[:-1] > lo[1:]):
        raise ValueError("tiles overlap: a tile and its parent or child are both listed")
    return lo, hi, order


def assign_tiles(h29, tiles) -> np.ndarray:
    """Index into ``tiles`` of the tile holding each row, -1 where none does."""
    h29 = np.asarray(h29, dtype=np.int64)
    lo, hi, order = _sorted_ranges(tiles)
    if lo.size == 0:
        return np.full(h29.shape, -1, dtype=np.int64)
    pos = np.searchsorted(lo, h29, side="right") - 1
    clipped = np.maximum(pos, 0)
    inside = (pos >= 0) & (h29 < hi[clipped])
    return np.where(inside, order[clipped], -1).astype(np.int64)


def _check_tiling_limits(max_rows, max_bytes, min_order, max_order) -> None:
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"--max-rows must be at least 1 (got {max_rows}).")
    if max_bytes is not None and not max_bytes > 0:
        raise ConfigError(f"--max-bytes must be positive (got {max_bytes}).")
    if not 0 <= min_order <= max_order <= ORDER_MAX:
        raise ConfigError(f"tile orders must satisfy 0 <= min_order <= max_order <= {ORDER_MAX}"
                          f" (got min_order={min_order}, max_order={max_order}).")


def adaptive_tiles(h29, row_bytes, max_rows: int | None, max_bytes: float | None,
                   min_order: int = 0, max_order: int = DEFAULT_MAX_ORDER,
                   counts=None) -> list[Tile]:
    """HATS-like tiling: split a pixel into its 4 children while it holds too much.

    A pixel becomes a tile once its rows and summed ``row_bytes`` are within ``max_rows`` and
    ``max_bytes`` (``None``: no limit), or at ``max_order``, where it may stay over the limit
    (the caller reports it). Empty pixels make no tile. Tiles come sorted by sky range.
    ``counts`` (optional) says how many rows each entry stands for, so a histogram of
    positions can be tiled without expanding it to one entry per row.
    """
    _check_tiling_limits(max_rows, max_bytes, min_order, max_order)
    active = np.asarray(h29, dtype=np.int64).ravel()
    mult = np.ones(active.shape) if counts is None else np.asarray(counts, np.float64).ravel()
    weights = np.broadcast_to(np.asarray(row_bytes, dtype=np.float64), active.shape) * mult
    orders, pixels = [], []
    for k in range(min_order, max_order + 1):
        if active.size == 0:
            break
        upix, inv = np.unique(active >> _shift(k), return_inverse=True)
        inv = inv.ravel()
        split = np.zeros(upix.size, dtype=bool)
        if k < max_order:
            if max_rows is not None:
                split |= np.bincount(inv, weights=mult, minlength=upix.size) > max_rows
            if max_bytes is not None:
                split |= np.bincount(inv, weights=weights, minlength=upix.size) > max_bytes
        orders.append(np.full(int((~split).sum()), k, dtype=np.int64))
        pixels.append(upix[~split])
        keep = split[inv]
        active, weights, mult = active[keep], weights[keep], mult[keep]
    if not orders:
        return []
    order, pixel = np.concatenate(orders), np.concatenate(pixels)
    sort = np.argsort(pixel << _shift(order), kind="stable")
    return [(int(o), int(p)) for o, p in zip(order[sort], pixel[sort])]


def margin_order(margin_arcsec: float) -> int:
    """Deepest order whose non-touching pixels are farther apart than the margin (-1: none)."""
    margin_rad = margin_arcsec * ARCSEC
    for k in range(ORDER_MAX, -1, -1):
        if PIXEL_GAP_RAD / 2.0**k > margin_rad:
            return k
    return -1


def _expand_ranges(start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges ``[start_i, stop_i)``: (i repeated per element, the elements)."""
    counts = np.maximum(stop - start, 0)
    owner = np.repeat(np.arange(start.size), counts)
    offsets = np.cumsum(counts) - counts
    return owner, start[owner] + (np.arange(owner.size) - offsets[owner])


def _pixel_tiles(pix: np.ndarray, k: int, lo: np.ndarray, hi: np.ndarray):
    """Every (pixel position, sorted tile position) whose ranges intersect."""
    shift = _shift(k)
    first = np.searchsorted(hi, pix << shift, side="right")
    stop = np.searchsorted(lo, (pix + 1) << shift, side="left")
    return _expand_ranges(first, stop)


def _neighbours(pix: np.ndarray, k: int) -> np.ndarray:
    """The 8 neighbours (-1 where a pixel has only 7) of nested order-k pixels, shape (8, N)."""
    from cdshealpix.nested import neighbours

    if pix.size == 0:
        return np.empty((8, 0), dtype=np.int64)
    table = np.asarray(neighbours(np.asarray(pix, dtype=np.uint64), k), dtype=np.int64)
    return np.delete(table, 4, axis=1).T  # column 4 is the pixel itself


def _rows_near_coarser_tiles(upix, inv, k: int, lo: np.ndarray, hi: np.ndarray):
    """:func:`_rows_near_tiles` when no tile is deeper than k: each cell lies in one tile.

    Then a cell's neighbours each fall in at most one tile, so the (cell, tile) pairs come
    from a small (8, cells) table instead of a global sort, and only cells on a tile border
    (a neighbour in another tile) are expanded into rows.
    """
    shift = _shift(k)

    def tile_of(pix):
        start = pix << shift
        pos = np.searchsorted(lo, start, side="right") - 1
        inside = (pos >= 0) & (start < hi[np.maximum(pos, 0)])
        return np.where(inside & (pix >= 0), pos, -1)

    own = tile_of(upix)
    near = tile_of(_neighbours(upix, k))  # (8, cells)
    near = np.where(near == own[None, :], -1, near)
    near.sort(axis=0)
    near[1:][near[1:] == near[:-1]] = -1  # the same tile reached through two neighbours
    cell_of_pair = np.broadcast_to(np.arange(upix.size), near.shape)
    valid = near >= 0
    pair_cell, pair_tile = cell_of_pair[valid], near[valid]
    sort = np.argsort(pair_cell, kind="stable")
    pair_cell, pair_tile = pair_cell[sort], pair_tile[sort]
    cells = np.arange(upix.size)
    starts = np.searchsorted(pair_cell, cells, side="left")
    stops = np.searchsorted(pair_cell, cells, side="right")
    rows, slot = _expand_ranges(starts[inv], stops[inv])
    return rows.astype(np.int64), pair_tile[slot]


def margin_members(h29, tiles, margin_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, tile) with the row outside the tile but within ``margin_arcsec`` of it.

    A superset: rows up to about two order-K pixels farther may be included (K from
    :func:`margin_order`), none within the margin is ever missed (see the module docstring).
    Sorted by (tile, row); ``tile_idx`` indexes ``tiles``.
    """
    if not margin_arcsec >= 0:
        raise ConfigError(f"the margin must be zero or positive (got {margin_arcsec} arcsec).")
    h29 = np.asarray(h29, dtype=np.int64).ravel()
    lo, hi, order = _sorted_ranges(tiles)
    empty = np.empty(0, dtype=np.int64)
    if margin_arcsec == 0 or h29.size == 0 or lo.size == 0:
        return empty, empty.copy()
    k = margin_order(margin_arcsec)
    if k < 0:
        rows, tile = _expand_ranges(np.zeros(h29.size, np.int64), np.full(h29.size, lo.size))
    else:
        rows, tile = _rows_near_tiles(h29, k, lo, hi)
    tile = order[tile]
    keep = tile != assign_tiles(h29, tiles)[rows]
    rows, tile = rows[keep], tile[keep]
    sort = np.lexsort((rows, tile))
    return rows[sort], tile[sort]


def _rows_near_tiles(h29: np.ndarray, k: int, lo: np.ndarray, hi: np.ndarray):
    """(row, sorted tile position) for tiles meeting the row's order-k pixel or a neighbour."""
    upix, inv = np.unique(h29 >> _shift(k), return_inverse=True)
    if np.all(hi - lo >= (np.int64(1) << _shift(k))):
        return _rows_near_coarser_tiles(upix, inv.ravel(), k, lo, hi)
    near = np.vstack([upix[None, :], _neighbours(upix, k)])
    cell = np.broadcast_to(np.arange(upix.size), near.shape).ravel()
    near = near.ravel()
    valid = near >= 0
    cell, near = cell[valid], near[valid]
    which, tile = _pixel_tiles(near, k, lo, hi)
    pair = np.sort(cell[which] * lo.size + tile)  # by cell, then tile
    pair = pair[np.diff(pair, prepend=-1) != 0]
    pair_cell, pair_tile = np.divmod(pair, lo.size)
    # One block of tiles per cell (CSR), repeated for every row in that cell.
    cells = np.arange(upix.size)
    starts = np.searchsorted(pair_cell, cells, side="left")
    stops = np.searchsorted(pair_cell, cells, side="right")
    rows, slot = _expand_ranges(starts[inv], stops[inv])
    return rows.astype(np.int64), pair_tile[slot]
