"""Tiled cross-match (sky tiles + margins + match_tile) against a brute-force global oracle.

The oracle is plain O(N^2) haversine written here; it never calls astroembed's distance or
tie-breaking code. Ties: nearest is the smallest (distance, key); where two candidates' oracle
distances differ by less than EPS arcsec but their positions are not identical, either may be
chosen, and a pair within EPS of the radius may be in or out.
"""

from __future__ import annotations

import healpy as hp
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astroembed.matching import sky
from oracles import haversine_arcsec, offset
from astroembed.matching.pairs import (MODES, check_margin, join_pairs, match_tile,
                                   required_margins)
from astroembed.errors import ConfigError

EPS = 1e-9  # arcsec
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- test-owned geometry ------------------------------------------------------------------





# --- catalogs -------------------------------------------------------------------------------

SPECIAL = [(0.0, 0.0), (np.nextafter(360.0, 0.0), 0.0), (359.9999999, -30.0), (360.0, 12.0),
           (0.0, 90.0), (137.0, 90.0), (0.0, -90.0), (250.0, -90.0), (10.0, 89.9999999),
           (359.99999, -89.99999), (45.0, 41.8103148957786), (0.0, 41.8103148957786)]


@st.composite
def edge_point(draw, max_order: int):
    """A corner or edge midpoint of a HEALPix pixel (a tile edge at orders >= its own)."""
    order = draw(st.integers(0, max_order))
    pixel = draw(st.integers(0, 12 * 4**order - 1))
    vec = hp.boundaries(2**order, pixel, step=2, nest=True).T[draw(st.integers(0, 7))]
    ra, dec = hp.vec2ang(vec, lonlat=True)
    return float(ra[0]), float(dec[0])


def clump(rng, centres, n, scale):
    """``n`` points around random centres within ``scale`` arcsec; some exactly on a centre
    or exactly ``scale`` away."""
    which = rng.integers(0, len(centres), n)
    frac = rng.choice([0.0, 1.0, 0.5], n, p=[0.1, 0.05, 0.85])
    frac[frac == 0.5] = np.sqrt(rng.random(int((frac == 0.5).sum())))
    ra, dec = offset(centres[which, 0], centres[which, 1], frac * scale,
                     rng.choice([0.0, 90.0, 180.0, 270.0, -1.0], n))
    random_pa = rng.random(n) < 0.8
    ra2, dec2 = offset(centres[which, 0], centres[which, 1], frac * scale,
                       rng.uniform(0.0, 360.0, n))
    return np.where(random_pa, ra2, ra), np.where(random_pa, dec2, dec)


def duplicate(rng, pos, n_copies):
    """Copy positions within and across the sides: exact duplicates."""
    for _ in range(n_copies):
        src, dst = rng.choice(["l", "r"], 2)
        if len(pos[src][0]) and len(pos[dst][0]):
            i, j = rng.integers(len(pos[src][0])), rng.integers(len(pos[dst][0]))
            pos[dst][0][j], pos[dst][1][j] = pos[src][0][i], pos[src][1][i]


@st.composite
def catalogs(draw, max_order: int = 8):
    """(left, right, radius): clumps around centres on tile edges, poles and RA 0, with
    duplicated positions within and across the sides, plus a few scattered points.

    Structure comes from Hypothesis, the many point values from a seeded generator.
    """
    radius = draw(st.one_of(st.floats(0.5, 60.0), st.sampled_from([0.5, 1.0, 60.0])))
    cen = np.array(draw(st.lists(st.one_of(st.sampled_from(SPECIAL), edge_point(max_order),
                                           st.tuples(st.floats(0.0, 360.0),
                                                     st.floats(-90.0, 90.0))),
                                 min_size=1, max_size=4)), dtype=float)
    spread = draw(st.sampled_from([0.5, 1.0, 2.5, 10.0])) * radius
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pos = {}
    for side in "lr":
        n, n_scatter = draw(st.integers(0, 200)), draw(st.integers(0, 5))
        ra, dec = clump(rng, cen, n, spread)
        pos[side] = [np.concatenate([ra, rng.uniform(0, 360, n_scatter)]),
                     np.concatenate([dec, rng.uniform(-90, 90, n_scatter)])]
    duplicate(rng, pos, draw(st.integers(0, 40)))
    left = Catalog(*pos["l"], rng.permutation(len(pos["l"][0])).astype(np.int64) * 7 + 3)
    right = Catalog(*pos["r"], rng.permutation(len(pos["r"][0])).astype(np.int64) * 5 + 1)
    return left, right, radius


class Catalog:
    def __init__(self, ra, dec, key):
        self.ra, self.dec, self.key = np.asarray(ra, float), np.asarray(dec, float), key
        self.h29 = sky.healpix29(self.ra, self.dec)
        self.xyz = sky.radec_to_xyz(self.ra, self.dec)


@st.composite
def tilings(draw, h29, max_order: int = 8):
    """Uniform tiles at ``max_order``, or mixed-order adaptive tiles, covering rows ``h29``."""
    if draw(st.booleans()):
        return [(max_order, int(p)) for p in np.unique(h29 >> 2 * (29 - max_order))]
    min_order = draw(st.integers(0, max_order))
    return sky.adaptive_tiles(h29, 1.0, draw(st.integers(1, 40)), None, min_order, max_order)


@st.composite
def cases(draw):
    """A catalog pair and a tiling whose edges run through the clumps."""
    order = draw(st.integers(0, 8))
    left, right, radius = draw(catalogs(order))
    return left, right, radius, draw(tilings(left.h29, order))


# --- the procedure under test: tiles, margins, match_tile per tile --------------------------

def tiled_match(left, right, radius, mode, tiles, slack=1.0):
    """Match tile by tile the way the pipeline does; global (li, ri, dist) arrays."""
    left_margin, right_margin = (m * slack for m in required_margins(mode, radius))
    check_margin(mode, radius, max(left_margin, right_margin))
    left_tile = sky.assign_tiles(left.h29, tiles)
    assert (left_tile >= 0).all()
    right_tile = sky.assign_tiles(right.h29, tiles)
    lm_rows, lm_tile = sky.margin_members(left.h29, tiles, left_margin)
    rm_rows, rm_tile = sky.margin_members(right.h29, tiles, right_margin)
    out = []
    for t in range(len(tiles)):
        own = np.flatnonzero(left_tile == t)
        lrows = np.concatenate([own, lm_rows[lm_tile == t]])
        rrows = np.concatenate([np.flatnonzero(right_tile == t), rm_rows[rm_tile == t]])
        is_own = np.arange(lrows.size) < own.size
        li, ri, dist = match_tile(left.xyz[lrows], left.key[lrows], is_own,
                                  right.xyz[rrows], right.key[rrows], radius, mode)
        assert np.all(li < own.size), "only own left rows are reported"
        order = np.lexsort((ri, dist, li))
        assert np.array_equal(order, np.arange(li.size)), "sorted by (li, dist, ri)"
        out.append((lrows[li], rrows[ri], dist))
    if not out:
        return np.empty(0, int), np.empty(0, int), np.empty(0)
    return tuple(np.concatenate(c) for c in zip(*out))


# --- the oracle -------------------------------------------------------------------------------

def acceptable(dist, key, ra, dec, radius):
    """For one row: the partners it may pick (by oracle (distance, key) up to EPS), and
    whether it may have none."""
    cand = np.flatnonzero(dist <= radius + EPS)
    none_ok = not np.any(dist[cand] <= radius - EPS)
    d, k = dist[cand], key[cand]
    same = (ra[cand][:, None] == ra[cand][None, :]) & (dec[cand][:, None] == dec[cand][None, :])
    beats = (d[:, None] < d[None, :] - EPS) | (same & (k[:, None] < k[None, :]))
    return set(cand[~beats.any(axis=0)].tolist()), none_ok


def choices(D, key, ra, dec, radius):
    return [acceptable(row, key, ra, dec, radius) for row in D]


def check_all(D, radius, got):
    sure = set(zip(*np.nonzero(D <= radius - EPS)))
    maybe = set(zip(*np.nonzero(D <= radius + EPS)))
    assert sure <= got <= maybe


def check_best(D, right, radius, got_l, got_r):
    assert len(set(got_l.tolist())) == got_l.size, "best: left rows unique"
    chosen = dict(zip(got_l.tolist(), got_r.tolist()))
    for li, (ok, none_ok) in enumerate(choices(D, right.key, right.ra, right.dec, radius)):
        assert chosen[li] in ok if li in chosen else none_ok, li


def check_symmetric(D, left, right, radius, got):
    lefts = [l for l, _ in got]
    rights = [r for _, r in got]
    assert len(set(lefts)) == len(lefts) and len(set(rights)) == len(rights), "one-to-one"
    for_left = choices(D, right.key, right.ra, right.dec, radius)
    for_right = choices(D.T, left.key, left.ra, left.dec, radius)
    for l, r in got:
        assert r in for_left[l][0] and l in for_right[r][0], (l, r)
    for l, (ok, none_ok) in enumerate(for_left):
        if len(ok) == 1 and not none_ok:
            (r,) = ok
            back, back_none = for_right[r]
            if back == {l} and not back_none:
                assert (l, r) in got, (l, r)


def check_against_oracle(left, right, radius, mode, li, ri, dist):
    got = set(zip(li.tolist(), ri.tolist()))
    assert len(got) == li.size, "each pair found exactly once (tile edges included)"
    D = haversine_arcsec(left.ra[:, None], left.dec[:, None], right.ra[None, :],
                         right.dec[None, :])
    np.testing.assert_allclose(dist, D[li, ri], rtol=0, atol=1e-6)
    if mode == "all":
        check_all(D, radius, got)
    elif mode == "best":
        check_best(D, right, radius, li, ri)
    else:
        check_symmetric(D, left, right, radius, got)


@pytest.mark.parametrize("mode", MODES)
@SETTINGS
@given(cases(), st.sampled_from([1.0, 1.0, 1.7]))
def test_tiled_match_equals_brute_force(mode, case, slack):
    left, right, radius, tiles = case
    li, ri, dist = tiled_match(left, right, radius, mode, tiles, slack)
    check_against_oracle(left, right, radius, mode, li, ri, dist)


@SETTINGS
@given(cases(), st.data())
def test_best_symmetric_is_symmetric_under_swap(case, data):
    left, right, radius, tiles = case
    li, ri, dist = tiled_match(left, right, radius, "best-symmetric", tiles)
    ri2, li2, dist2 = tiled_match(right, left, radius, "best-symmetric",
                                  data.draw(tilings(right.h29, tiles[0][0] if tiles else 0)))
    assert set(zip(li.tolist(), ri.tolist())) == set(zip(li2.tolist(), ri2.tolist()))
    assert set(zip(li.tolist(), ri.tolist())) <= set(
        zip(*tiled_match(left, right, radius, "best", [(0, p) for p in range(12)])[:2]))


def test_pairs_across_tile_edges_are_found_once():
    """Isolated close pairs placed across the edges of an order-8 pixel: each found once."""
    rng = np.random.default_rng(1)
    vec = hp.boundaries(256, 1000, step=16, nest=True).T
    bra, bdec = hp.vec2ang(vec, lonlat=True)
    pa = rng.uniform(0, 360, bra.size)
    left = Catalog(*offset(bra, bdec, 0.3, pa), rng.permutation(bra.size) * 2)
    right = Catalog(*offset(bra, bdec, 0.3, pa + 180), rng.permutation(bra.size) * 2 + 1)
    for tiles in ([(8, int(p)) for p in np.unique(left.h29 >> 42)],
                  sky.adaptive_tiles(left.h29, 1.0, 3, None, 5, 12)):
        for mode in MODES:
            li, ri, dist = tiled_match(left, right, 1.0, mode, tiles)
            assert sorted(li.tolist()) == list(range(bra.size)) and np.all(li == ri)
            straddle = (sky.assign_tiles(left.h29[li], tiles)
                        != sky.assign_tiles(right.h29[ri], tiles))
            assert straddle.sum() >= bra.size // 4, (mode, straddle.sum())
            check_against_oracle(left, right, 1.0, mode, li, ri, dist)


# --- match_tile units -----------------------------------------------------------------------

def xyz(ra, dec):
    return sky.radec_to_xyz(np.asarray(ra, float), np.asarray(dec, float))


def test_ties_break_by_key_whatever_the_order():
    """Five right rows at one position: the smallest key wins, in best and best-symmetric."""
    right = xyz([10.0] * 5, [20.0 + 0.5 / 3600] * 5)
    left = xyz([10.0, 10.0], [20.0, 20.0])
    rkey = np.array([50, 40, 10, 30, 20])
    for mode in ("best", "best-symmetric"):
        li, ri, _ = match_tile(left, np.array([7, 3]), [True, True], right, rkey, 1.0, mode)
        expected = ([0, 1], [2, 2]) if mode == "best" else ([1], [2])  # left key 3 < 7
        assert (li.tolist(), ri.tolist()) == expected


@pytest.mark.parametrize("radius", [0.5, 1.0, 60.0])
@pytest.mark.parametrize("where", [(0.0, 0.0), (359.9999999, 45.0), (0.0, 90.0), (12.0, -90.0)])
def test_radius_cut_is_sharp(radius, where):
    """Rows 3e-8 arcsec inside the radius match, rows 3e-8 arcsec outside do not."""
    ra, dec = (np.full(4, v) for v in where)
    delta = np.array([-3e-8, 3e-8, -6e-8, 6e-8])
    right = xyz(*offset(ra, dec, radius + delta, np.array([0.0, 90.0, 200.0, 300.0])))
    for mode in MODES:
        li, ri, dist = match_tile(xyz(ra[:1], dec[:1]), [1], [True], right, [4, 3, 2, 1],
                                  radius, mode)
        assert ri.tolist() == ([2] if mode != "all" else [2, 0])
        np.testing.assert_allclose(dist, radius + delta[ri], rtol=0, atol=1e-9)
        outside = match_tile(xyz(ra[:1], dec[:1]), [1], [True], right[1::2], [2, 1], radius, mode)
        assert outside[0].size == 0


def test_best_symmetric_uses_margin_left_rows():
    """A margin left row nearer to the candidate blocks the own row's pair."""
    left = xyz([0.0, 0.0], [0.0, 1.2 / 3600])
    right = xyz([0.0], [0.8 / 3600])
    own = [True, False]
    li, _, _ = match_tile(left, [1, 2], own, right, [1], 1.0, "best-symmetric")
    assert li.size == 0
    li, _, _ = match_tile(left, [1, 2], own, right, [1], 1.0, "best")
    assert li.tolist() == [0]


def test_empty_inputs():
    none = np.empty((0, 3))
    one = xyz([1.0], [1.0])
    for mode in MODES:
        for args in [(none, [], [], one, [1]), (one, [1], [True], none, []),
                     (one, [1], [False], one, [1])]:
            li, ri, dist = match_tile(*args, 1.0, mode)
            assert li.size == ri.size == dist.size == 0
            assert li.dtype.kind == "i" and dist.dtype == np.float64


def test_bad_parameters_are_config_errors():
    one = xyz([1.0], [1.0])
    with pytest.raises(ConfigError, match="mode"):
        match_tile(one, [1], [True], one, [1], 1.0, "nearest")
    for radius in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="radius"):
            required_margins("best", radius)


def test_required_margins_and_check_margin():
    assert required_margins("best", 2.0) == (0.0, 2.0)
    assert required_margins("all", 2.0) == (0.0, 2.0)
    assert required_margins("best-symmetric", 2.0) == (4.0, 2.0)
    check_margin("best", 2.0, 2.0)
    check_margin("best-symmetric", 2.0, 4.0)
    with pytest.raises(ConfigError, match="--margin 4 "):
        check_margin("best-symmetric", 2.0, 3.0)
    with pytest.raises(ConfigError, match="--margin 2 "):
        check_margin("all", 2.0, 1.0)


# --- join_pairs -----------------------------------------------------------------------------

def tables():
    tensor = pa.fixed_shape_tensor(pa.float32(), (3, 2, 2))
    images = pa.ExtensionArray.from_storage(
        tensor, pa.array([[float(i)] * 12 for i in range(3)], pa.list_(pa.float32(), 12)))
    left = pa.table({"id": pa.array([10, 11, 12], pa.int64()), "ra": [1.0, 2.0, 3.0],
                     "image": images})
    right = pa.table({"id": pa.array([20, 21], pa.int64()), "ra": [1.1, 2.1],
                      "flux": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32(), 2))})
    return left, right, tensor


def test_join_pairs_inner():
    left, right, tensor = tables()
    out = join_pairs(left, right, np.array([2, 0]), np.array([0, 1]), np.array([0.5, 0.25]))
    assert out.column_names == ["id_left", "ra_left", "image", "id_right", "ra_right", "flux",
                                "_dist_arcsec"]
    assert out["id_left"].to_pylist() == [12, 10]
    assert out["id_right"].to_pylist() == [20, 21]
    assert out.schema.field("image").type == tensor
    assert out["image"].combine_chunks().storage.to_pylist()[0] == [2.0] * 12
    assert out.schema.field("flux").type == pa.list_(pa.float32(), 2)
    assert out.schema.field("_dist_arcsec").type == pa.float64()
    assert out["_dist_arcsec"].to_pylist() == [0.5, 0.25]


def test_join_pairs_left_keeps_unmatched_own_rows():
    left, right, _ = tables()
    out = join_pairs(left, right, [1], [0], [0.3], how="left", left_own=[True, True, False],
                     suffixes=("_img", "_spec"))
    assert out["id_img"].to_pylist() == [11, 10]
    assert out["id_spec"].to_pylist() == [20, None]
    assert out["flux"].to_pylist() == [[1.0, 2.0], None]
    assert out["_dist_arcsec"].to_pylist() == [0.3, None]
    assert out["image"].null_count == 0
    empty = join_pairs(left, right, [], [], [], how="left")
    assert empty.num_rows == 3 and empty["id_right"].null_count == 3


def test_join_pairs_refuses_colliding_names_and_unknown_how():
    left, right, _ = tables()
    with pytest.raises(ValueError, match="collide"):
        join_pairs(left.append_column("id_left", pa.array([0, 0, 0])), right, [], [], [])
    with pytest.raises(ConfigError):
        join_pairs(left, right, [], [], [], how="outer")
