"""Per-tile positional matching on plain arrays, and joining the two sides' columns.

A tile is matched from its own left rows, its left margin (best-symmetric only) and the right
rows in and around it. Pairs are reported only for own left rows, so each pair of the global
match comes from exactly one tile. "Nearest" always means smallest (distance, key), with the
distance computed here from unit vectors in one fixed way (``_chord``): the same two rows give
the same bits in every tile and with the inputs swapped, so ties resolve identically
everywhere, and best-symmetric is exactly symmetric.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from scipy.spatial import cKDTree

from astroembed.errors import ConfigError
from astroembed.matching.sky import arcsec_to_chord, chord_to_arcsec

MODES = ("best", "best-symmetric", "all")
DIST_COLUMN = "_dist_arcsec"
# KD-tree searches use a slightly larger radius, then the exact chord decides: the tree's own
# distance arithmetic may differ from _chord's in the last bits.
_SEARCH_SLACK = 1e-9
# Candidates this close to the nearest (chord units, ~2e-9 arcsec) are re-ranked exactly.
_TIE_SLACK = 1e-14

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def _check_mode_radius(mode: str, radius_arcsec: float) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown match mode '{mode}'; use one of: {', '.join(MODES)}.")
    if not (math.isfinite(radius_arcsec) and radius_arcsec > 0):
        raise ConfigError(f"the match radius must be a positive number of arcsec "
                          f"(got {radius_arcsec}); e.g. --radius 1.0.")


def required_margins(mode: str, radius_arcsec: float) -> tuple[float, float]:
    """(left, right) margins in arcsec a tile needs for ``mode`` to match as globally.

    Right: every candidate of an own left row lies within the radius of the tile. Left
    (best-symmetric only): a candidate's own nearest left row may be a further radius out.
    """
    _check_mode_radius(mode, radius_arcsec)
    left = 2.0 * radius_arcsec if mode == "best-symmetric" else 0.0
    return left, float(radius_arcsec)


def check_margin(mode: str, radius_arcsec: float, margin_arcsec: float) -> None:
    """Refuse, before any work, a margin too small to give the global answer."""
    need = max(required_margins(mode, radius_arcsec))
    if not margin_arcsec >= need:
        raise ConfigError(
            f"--margin {margin_arcsec} arcsec is too small for --mode {mode} with --radius "
            f"{radius_arcsec}: pairs across tile edges would be missed or wrong. Use "
            f"--margin {need:g} or more (or leave --margin out to get it by default).")


def _chord(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise |a - b|, with a fixed summation order so every caller gets the same bits."""
    d = a - b
    return np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2])


def _first_per_group(group: np.ndarray, dist: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Positions of the smallest (dist, key) in each group."""
    order = np.lexsort((key, dist, group))
    first = np.ones(order.size, dtype=bool)
    first[1:] = group[order][1:] != group[order][:-1]
    return order[first]


def _nearest(query: np.ndarray, points: np.ndarray, keys: np.ndarray,
             chord_r: float) -> np.ndarray:
    """Index into ``points`` of each query's nearest (chord, key) within ``chord_r``, or -1."""
    found = np.full(len(query), -1, dtype=np.int64)
    if len(query) == 0 or len(points) == 0:
        return found
    tree = cKDTree(points, balanced_tree=False)  # exact either way; builds ~2x faster
    bound = chord_r * (1 + _SEARCH_SLACK)
    dist, idx = tree.query(query, k=2, distance_upper_bound=bound, workers=-1)
    hit = np.isfinite(dist[:, 0])
    tie = hit & (dist[:, 1] <= dist[:, 0] * (1 + _SEARCH_SLACK) + _TIE_SLACK)
    single = np.flatnonzero(hit & ~tie)
    found[single] = idx[single, 0]
    if tie.any():
        rows = np.flatnonzero(tie)
        reach = dist[rows, 0] * (1 + _SEARCH_SLACK) + 2 * _TIE_SLACK
        lists = tree.query_ball_point(query[rows], reach, workers=-1)
        counts = np.fromiter((len(c) for c in lists), dtype=np.int64, count=len(lists))
        group = np.repeat(rows, counts)
        cand = np.concatenate(lists).astype(np.int64)
        pick = _first_per_group(group, _chord(query[group], points[cand]), keys[cand])
        found[group[pick]] = cand[pick]
    ok = found >= 0
    far = np.flatnonzero(ok)[_chord(query[ok], points[found[ok]]) > chord_r]
    found[far] = -1
    return found


def _all_pairs(left: np.ndarray, right: np.ndarray, chord_r: float) -> tuple[np.ndarray, ...]:
    """Every (left, right) index pair within ``chord_r``."""
    if len(left) == 0 or len(right) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    found = cKDTree(left).sparse_distance_matrix(
        cKDTree(right), chord_r * (1 + _SEARCH_SLACK), output_type="ndarray")
    li, ri = found["i"].astype(np.int64), found["j"].astype(np.int64)
    keep = _chord(left[li], right[ri]) <= chord_r
    return li[keep], ri[keep]


def _sorted_pairs(left_xyz, right_xyz, li, ri) -> Pairs:
    """Pairs with their arcsec distances, sorted by (li, dist, ri)."""
    dist = chord_to_arcsec(_chord(left_xyz[li], right_xyz[ri]))
    if li.size < 2 or np.all(li[1:] > li[:-1]):  # one pair per left row, in order: done
        return li, ri, dist
    order = np.lexsort((ri, dist, li))
    return li[order], ri[order], dist[order]


def match_tile(left_xyz, left_key, left_own, right_xyz, right_key, radius_arcsec: float,
               mode: str) -> Pairs:
    """Match one tile. Returns (li, ri, dist_arcsec) for own left rows only.

    ``li``/``ri`` index the arrays as given (margin rows included); sorted by (li, dist, ri).
    ``best``: each own left row with its nearest right row within the radius. ``all``: every
    pair within the radius. ``best-symmetric``: mutual nearest neighbours, where a right row's
    nearest left row is sought among all left rows given (so the left margin must be >= 2x the
    radius, see :func:`required_margins`).
    """
    _check_mode_radius(mode, radius_arcsec)
    left_xyz = np.asarray(left_xyz, dtype=np.float64).reshape(-1, 3)
    right_xyz = np.asarray(right_xyz, dtype=np.float64).reshape(-1, 3)
    left_key, right_key = np.asarray(left_key), np.asarray(right_key)
    own = np.flatnonzero(np.asarray(left_own, dtype=bool))
    chord_r = float(arcsec_to_chord(radius_arcsec))
    if mode == "all":
        li, ri = _all_pairs(left_xyz[own], right_xyz, chord_r)
        return _sorted_pairs(left_xyz, right_xyz, own[li], ri)
    ri = _nearest(left_xyz[own], right_xyz, right_key, chord_r)
    li, ri = own[ri >= 0], ri[ri >= 0]
    if mode == "best-symmetric":
        cand, back = np.unique(ri, return_inverse=True)
        mutual = _nearest(right_xyz[cand], left_xyz, left_key, chord_r)[back] == li
        li, ri = li[mutual], ri[mutual]
    return _sorted_pairs(left_xyz, right_xyz, li, ri)


def _suffixed_names(left: pa.Table, right: pa.Table, suffixes: tuple[str, str]):
    shared = set(left.column_names) & set(right.column_names)
    lnames = [n + suffixes[0] if n in shared else n for n in left.column_names]
    rnames = [n + suffixes[1] if n in shared else n for n in right.column_names]
    names = lnames + rnames + [DIST_COLUMN]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"joined columns would collide: {', '.join(dup)}; choose other "
                         "suffixes or rename the input columns")
    return lnames, rnames


def join_pairs(left: pa.Table, right: pa.Table, li, ri, dist_arcsec, how: str = "inner",
               left_own=None, suffixes: tuple[str, str] = ("_left", "_right")) -> pa.Table:
    """Rows ``li`` of ``left`` beside rows ``ri`` of ``right``, plus ``_dist_arcsec``.

    Columns present on both sides get ``suffixes``. ``how="left"`` appends the own left rows
    (``left_own``, default all) that have no match, with nulls on the right side.
    """
    if how not in ("inner", "left"):
        raise ConfigError(f"unknown join '{how}'; use 'inner' or 'left'.")
    lnames, rnames = _suffixed_names(left, right, suffixes)
    li = np.asarray(li, dtype=np.int64)
    ri_arr = pa.array(np.asarray(ri, dtype=np.int64), type=pa.int64())
    dist = pa.array(np.asarray(dist_arcsec, dtype=np.float64), type=pa.float64())
    if how == "left":
        own = (np.ones(left.num_rows, dtype=bool) if left_own is None
               else np.asarray(left_own, dtype=bool))
        unmatched = own.copy()
        unmatched[li] = False
        lonely = np.flatnonzero(unmatched)
        li = np.concatenate([li, lonely])
        ri_arr = pa.concat_arrays([ri_arr, pa.nulls(lonely.size, pa.int64())])
        dist = pa.concat_arrays([dist, pa.nulls(lonely.size, pa.float64())])
    taken_left = left.take(pa.array(li, type=pa.int64()))
    taken_right = right.take(ri_arr)  # null indices give null rows, whatever the column type
    columns = taken_left.columns + taken_right.columns + [dist]
    fields = ([f.with_name(n) for f, n in zip(left.schema, lnames)]
              + [f.with_name(n).with_nullable(True) for f, n in zip(right.schema, rnames)]
              + [pa.field(DIST_COLUMN, pa.float64())])
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=left.schema.metadata))
