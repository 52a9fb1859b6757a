"""HEALPix indexing, tiles and margins (astroembed.matching.sky), checked against healpy and brute force.

Geometry oracles here are written in the test (spherical offsets, haversine), never taken from
astroembed.matching.sky.
"""

from __future__ import annotations

import functools

import healpy as hp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astroembed.matching import sky
from oracles import haversine_arcsec, offset
from astroembed.errors import ConfigError

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RA_EDGES = [0.0, 360.0, np.nextafter(360.0, 0.0), 359.9999999, 1e-12]
DEC_EDGES = [90.0, -90.0, np.nextafter(90.0, 0.0), -89.9999999, 0.0, 41.8103148957786]

ras = st.one_of(st.sampled_from(RA_EDGES), st.floats(0.0, 360.0))
decs = st.one_of(st.sampled_from(DEC_EDGES), st.floats(-90.0, 90.0))
positions = st.lists(st.tuples(ras, decs), min_size=1, max_size=60)






def as_arrays(pos):
    arr = np.asarray(pos, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


# --- indexing and distances ---------------------------------------------------------------

@SETTINGS
@given(positions)
def test_healpix29_is_hats_spatial_index_and_nests_every_order(pos):
    """Equal to the index hats/LSDB compute (edge cases included), at every order."""
    radec2pix = pytest.importorskip("hats.pixel_math.healpix_shim").radec2pix
    ra, dec = as_arrays(pos)
    h29 = sky.healpix29(ra, dec)
    assert h29.dtype == np.int64
    for k in range(sky.ORDER_MAX + 1):
        np.testing.assert_array_equal(h29 >> 2 * (29 - k), radec2pix(k, ra, dec))


def test_healpix29_agrees_with_healpy_off_pixel_edges():
    """healpy (another implementation) gives the same pixels wherever a point is not on an
    edge; random positions are on an exact edge with probability zero."""
    rng = np.random.default_rng(3)
    ra = rng.uniform(0, 360, 20000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 20000)))
    h29 = sky.healpix29(ra, dec)
    for k in (0, 3, 8, 12, 17, 23, 29):
        np.testing.assert_array_equal(h29 >> 2 * (29 - k),
                                      hp.ang2pix(2**k, ra, dec, nest=True, lonlat=True))


def test_healpix29_ra_360_is_ra_0_and_poles_work():
    dec = np.array([-90.0, -45.0, 0.0, 30.0, 90.0])
    np.testing.assert_array_equal(sky.healpix29(np.full(5, 360.0), dec),
                                  sky.healpix29(np.zeros(5), dec))
    north = sky.healpix29([0.0, 90.0, 180.0, 270.0], [90.0] * 4) >> 2 * 29
    assert set(north.tolist()) <= {0, 1, 2, 3}


@SETTINGS
@given(positions)
def test_radec_to_xyz_unit_vectors(pos):
    ra, dec = as_arrays(pos)
    xyz = sky.radec_to_xyz(ra, dec)
    assert xyz.shape == (len(ra), 3)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(xyz[:, 2], np.sin(np.radians(dec)), atol=1e-15)


@given(st.floats(1e-6, 90 * 3600.0))
def test_chord_round_trip(r):
    assert sky.chord_to_arcsec(sky.arcsec_to_chord(r)) == pytest.approx(r, rel=1e-12)


def test_chord_precision_at_one_arcsec():
    a, b = sky.radec_to_xyz([10.0, 10.0], [0.0, 1.0 / 3600.0])
    assert sky.chord_to_arcsec(np.linalg.norm(a - b)) == pytest.approx(1.0, abs=1e-9)


@SETTINGS
@given(positions, st.floats(0, 1e4), st.floats(0, 360))
def test_angular_separation_against_haversine(pos, dist, pa):
    ra, dec = as_arrays(pos)
    ra2, dec2 = offset(ra, dec, dist, pa)
    got = sky.angular_separation_arcsec(ra, dec, ra2, dec2)
    np.testing.assert_allclose(got, haversine_arcsec(ra, dec, ra2, dec2), atol=1e-6)
    np.testing.assert_allclose(got, dist, atol=1e-6)


# --- tiles -----------------------------------------------------------------------------------

def test_tile_ranges():
    lo, hi = sky.tile_ranges([(0, 0), (0, 11), (29, 5), (3, 7)])
    np.testing.assert_array_equal(lo, [0, 11 << 58, 5, 7 << 52])
    np.testing.assert_array_equal(hi, [1 << 58, 12 << 58, 6, 8 << 52])
    with pytest.raises(ValueError):
        sky.tile_ranges([(0, 12)])
    with pytest.raises(ValueError):
        sky.tile_ranges([(30, 0)])


def test_overlapping_tiles_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        sky.assign_tiles(np.array([0]), [(1, 0), (2, 1)])


@st.composite
def clustered(draw, min_rows: int = 1):
    """Rows in a few clumps (at the poles, RA 0 or anywhere) of a drawn size."""
    centres = draw(st.lists(st.tuples(ras, decs), min_size=1, max_size=3))
    scale = draw(st.sampled_from([1.0, 60.0, 600.0, 3600.0, 36000.0]))
    pts = draw(st.lists(st.tuples(st.integers(0, len(centres) - 1), st.floats(0, 1),
                                  st.floats(0, 360)), min_size=min_rows, max_size=60))
    idx, frac, pa = (np.array(c) for c in zip(*pts))
    cra, cdec = as_arrays(centres)
    return offset(cra[idx], cdec[idx], frac * scale, pa)


@st.composite
def rows_and_tiles(draw):
    """Rows, and a mixed-order tiling of some of them (some rows in no tile)."""
    ra, dec = draw(st.one_of(positions.map(as_arrays), clustered()))
    h29 = sky.healpix29(ra, dec)
    min_order = draw(st.integers(0, 4))
    max_order = draw(st.integers(min_order, 8))
    tiles = sky.adaptive_tiles(h29, 1.0, draw(st.integers(1, 8)), None, min_order, max_order)
    keep = draw(st.lists(st.booleans(), min_size=len(tiles), max_size=len(tiles)))
    return ra, dec, h29, [t for t, k in zip(tiles, keep) if k]


@SETTINGS
@given(rows_and_tiles())
def test_assign_tiles_matches_a_loop(case):
    _, _, h29, tiles = case
    expected = np.full(h29.size, -1)
    for i, h in enumerate(h29):
        for j, (order, pixel) in enumerate(tiles):
            if h >> 2 * (29 - order) == pixel:
                expected[i] = j
    np.testing.assert_array_equal(sky.assign_tiles(h29, tiles), expected)


@SETTINGS
@given(positions, st.integers(1, 10), st.one_of(st.none(), st.floats(1.0, 50.0)),
       st.integers(0, 3), st.integers(0, 10), st.integers(0, 10**6))
def test_adaptive_tiles_invariants(pos, max_rows, max_bytes, min_order, extra, seed):
    ra, dec = as_arrays(pos)
    h29 = sky.healpix29(ra, dec)
    row_bytes = np.random.default_rng(seed).uniform(0.5, 10.0, h29.size)
    max_order = min_order + extra
    tiles = sky.adaptive_tiles(h29, row_bytes, max_rows, max_bytes, min_order, max_order)
    where = sky.assign_tiles(h29, tiles)  # also checks the tiles are disjoint
    assert (where >= 0).all(), "every row is in a tile"
    for j, (order, pixel) in enumerate(tiles):
        assert min_order <= order <= max_order
        rows = where == j
        assert rows.any(), "no empty tiles"
        if order < max_order:
            assert rows.sum() <= max_rows
            assert max_bytes is None or row_bytes[rows].sum() <= max_bytes
        if order > min_order:  # its parent was over a limit, or it would not have been split
            parent = (h29 >> 2 * (29 - order + 1)) == pixel >> 2
            assert (parent.sum() > max_rows
                    or (max_bytes is not None and row_bytes[parent].sum() > max_bytes))


def test_adaptive_tiles_edge_cases():
    assert sky.adaptive_tiles(np.empty(0, np.int64), 1.0, 10, None) == []
    h29 = sky.healpix29([10.0] * 5, [20.0] * 5)
    assert sky.adaptive_tiles(h29, 1.0, 2, None, 0, 6) == [(6, int(h29[0] >> 46))]
    for bad in [dict(max_rows=0), dict(max_bytes=0.0), dict(min_order=5, max_order=4),
                dict(max_order=30)]:
        args = dict(max_rows=10, max_bytes=None, min_order=0, max_order=8) | bad
        with pytest.raises(ConfigError):
            sky.adaptive_tiles(h29, 1.0, **args)


# --- margins -----------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_non_touching_pixels_are_farther_apart_than_the_guaranteed_gap(order):
    """Sampled boundaries overestimate the true gap a little; the bound keeps ~25% in hand."""
    nside = 2**order
    pix = np.arange(12 * nside**2)
    edge = hp.boundaries(nside, pix, step=16, nest=True).transpose(0, 2, 1)
    touching = hp.get_all_neighbours(nside, pix, nest=True).T
    gap = np.inf
    for p in pix:
        near = {p, *touching[p][touching[p] >= 0].tolist()}
        ring = {q for n in near for q in touching[n][touching[n] >= 0].tolist()} - near
        if ring:
            other = np.concatenate([edge[q] for q in ring])
            chord = np.linalg.norm(edge[p][:, None, :] - other[None, :, :], axis=2).min()
            gap = min(gap, 2 * np.arcsin(chord / 2))
    assert gap * nside > sky.PIXEL_GAP_RAD * 1.2


def test_margin_order_keeps_pixels_wider_than_the_margin():
    for margin in [0.01, 1.0, 2.0, 60.0, 120.0, 3600.0]:
        k = sky.margin_order(margin)
        assert sky.PIXEL_GAP_RAD / 2**k > margin * sky.ARCSEC
        assert k == 29 or sky.PIXEL_GAP_RAD / 2 ** (k + 1) <= margin * sky.ARCSEC
    assert sky.margin_order(200_000.0) == -1


@functools.lru_cache
def special_tiles(order: int) -> list[int]:
    """Order-``order`` pixels at the poles, at RA 0 and at vertices where only 3 pixels meet."""
    nside = 2**order
    pix = list(hp.ang2pix(nside, [0, 90, 180, 270, 0, 0, 0, 45],
                          [90, 90, -90, -90, 0, 41.81, -41.81, 41.81], nest=True, lonlat=True))
    three = np.flatnonzero((hp.get_all_neighbours(nside, np.arange(12 * nside**2),
                                                  nest=True) < 0).any(axis=0))
    return sorted(set(pix) | set(three[:: max(1, len(three) // 8)].tolist()))


@st.composite
def tilings(draw):
    """A mixed-order tiling of the sky near the poles, RA 0 and 3-pixel vertices."""
    order = draw(st.integers(0, 8))
    tiles = [(order, p) for p in special_tiles(order)]
    # split some into children, so edges separate tiles of different orders
    split = draw(st.lists(st.booleans(), min_size=len(tiles), max_size=len(tiles)))
    out = []
    for (o, p), s in zip(tiles, split):
        out += [(o + 1, 4 * p + c) for c in range(4)] if s and o < 29 else [(o, p)]
    return out


@SETTINGS
@given(tilings(), st.floats(0.05, 3600.0), st.integers(0, 2**32 - 1))
def test_margin_members_never_misses_a_row_near_a_tile(tiles, margin, seed):
    """Rows placed within the margin of a point on a tile's boundary must be listed."""
    rng = np.random.default_rng(seed)
    rows, owner = [], []
    for j, (order, pixel) in enumerate(tiles):
        vec = hp.boundaries(2**order, pixel, step=4, nest=True).T
        ra, dec = hp.vec2ang(vec, lonlat=True)
        frac = np.where(rng.random(ra.size) < 0.2, 1.0, rng.random(ra.size))
        pa = rng.uniform(0.0, 360.0, ra.size)
        rows.append(offset(ra, dec, frac * margin * (1 - 1e-9), pa))
        owner.append(np.full(ra.size, j))
    ra = np.concatenate([r for r, _ in rows])
    dec = np.concatenate([d for _, d in rows])
    owner = np.concatenate(owner)
    h29 = sky.healpix29(ra, dec)
    row_idx, tile_idx = sky.margin_members(h29, tiles, margin)
    found = set(zip(row_idx.tolist(), tile_idx.tolist()))
    inside = sky.assign_tiles(h29, tiles)
    for i, j in enumerate(owner):
        assert inside[i] == j or (i, j) in found, (ra[i], dec[i], tiles[j])
    check_margin_output(h29, tiles, row_idx, tile_idx)


def check_margin_output(h29, tiles, row_idx, tile_idx):
    assert row_idx.dtype == np.int64 and tile_idx.dtype == np.int64
    assert len(set(zip(row_idx.tolist(), tile_idx.tolist()))) == row_idx.size
    assert not (sky.assign_tiles(h29, tiles)[row_idx] == tile_idx).any(), "own tile excluded"
    assert np.all(np.diff(tile_idx) >= 0)


@SETTINGS
@given(clustered(min_rows=20), st.integers(1, 8), st.integers(0, 8),
       st.one_of(st.floats(0.0, 7200.0), st.sampled_from([1.0, 60.0, 600.0, 3600.0])))
def test_margin_members_against_disc_query(rows, max_rows, max_order, margin):
    """Every fine pixel centre inside a row's margin disc belongs to a tile that is listed."""
    ra, dec = rows
    h29 = sky.healpix29(ra, dec)
    tiles = sky.adaptive_tiles(h29, 1.0, max_rows, None, 0, max_order)
    row_idx, tile_idx = sky.margin_members(h29, tiles, margin)
    check_margin_output(h29, tiles, row_idx, tile_idx)
    if not tiles or margin == 0:
        return
    found = set(zip(row_idx.tolist(), tile_idx.tolist()))
    own = sky.assign_tiles(h29, tiles)
    deepest = max(o for o, _ in tiles)
    fine = min(29, max(deepest, sky.margin_order(margin) + 3))
    vecs = sky.radec_to_xyz(ra, dec)
    for i, vec in enumerate(vecs):
        disc = hp.query_disc(2**fine, vec, margin * sky.ARCSEC, nest=True)
        near = sky.assign_tiles(disc.astype(np.int64) << 2 * (29 - fine), tiles)
        for j in set(near[near >= 0].tolist()) - {own[i]}:
            assert (i, j) in found


def test_margin_members_trivial_cases():
    h29 = sky.healpix29([1.0, 2.0], [3.0, 4.0])
    for args in [(h29, [(0, 4)], 0.0), (h29, [], 10.0), (h29[:0], [(0, 4)], 10.0)]:
        rows, tiles = sky.margin_members(*args)
        assert rows.size == 0 and tiles.size == 0
    with pytest.raises(ConfigError, match="margin"):
        sky.margin_members(h29, [(0, 4)], -1.0)
    # wider than any pixel gap: every other tile is listed
    rows, tiles = sky.margin_members(h29, [(0, 4), (0, 5), (0, 0)], 200_000.0)
    assert sorted(zip(rows.tolist(), tiles.tolist())) == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_adaptive_tiles_from_a_histogram_equal_tiles_from_rows():
    """Tiling a histogram (one entry per pixel with a row count) equals tiling the rows."""
    rng = np.random.default_rng(5)
    ra, dec = rng.uniform(0, 40, 5000), rng.uniform(-10, 30, 5000)
    h29 = sky.healpix29(ra, dec)
    pixels, counts = np.unique(h29 >> np.int64(2 * (29 - 9)), return_counts=True)
    from_rows = sky.adaptive_tiles(h29, 10.0, 300, 2500.0, max_order=9)
    from_hist = sky.adaptive_tiles(pixels << np.int64(2 * (29 - 9)), 10.0, 300, 2500.0,
                                   max_order=9, counts=counts)
    assert from_rows == from_hist and len(from_rows) > 4
