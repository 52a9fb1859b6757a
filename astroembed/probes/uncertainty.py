"""Predictive distributions with calibrated intervals: normalised split-conformal
calibration of a probe's residuals (docs/architecture.md, section 9).

Each row gets a centre ``m`` (the probe's point prediction) and a scale ``s`` (for k-NN the
spread of its neighbours' targets, for ridge and MLP a constant). The calibration set's
scores ``r = (y - m) / s``, sorted, are the whole calibration: the quantile at level ``t`` of
a new row is ``m + s r_(k)`` with the conformal order statistic ``k`` of :func:`score_rank`,
so every interval covers at least its nominal rate on exchangeable rows, intervals of
different levels are nested (``r_(k)`` grows with ``t``), and the randomized PIT is exactly
uniform. Everything is vectorised over rows: the neighbours' targets are at hand from the
k-NN query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from astroembed.probes.metrics import (
    crps_quantiles,
    interval_metrics,
    ks_uniform,
    randomized_pit,
)

#: The stored predictive distribution: these quantile levels, one float32 each per row.
QUANTILE_LEVELS = (0.025, 0.05, 0.1, 0.16, 0.25, 0.5, 0.75, 0.84, 0.9, 0.95, 0.975)
#: Central interval levels reported and written by default.
DEFAULT_LEVELS = (0.68, 0.95)
#: Smallest k-NN scale, as a fraction of the target's standard deviation: neighbours that
#: all share one target value must not give a zero-width distribution.
SCALE_FLOOR = 1e-3
#: How the calibration is recorded in a saved probe and the reports.
CALIBRATION_METHOD = "normalised split-conformal"


def neighbour_spread(idx: np.ndarray, y: np.ndarray, floor: float) -> np.ndarray:
    """Standard deviation of each row's neighbours' targets ``y[idx]`` (``idx`` -1: none),
    at least ``floor``: the k-NN scale, wide where similar objects disagree."""
    found = idx >= 0
    yk = np.where(found, y[np.where(found, idx, 0)], 0.0)
    n = found.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = yk.sum(axis=1) / n
        var = (np.where(found, (yk - mean[:, None]) ** 2, 0.0)).sum(axis=1) / n
    return np.maximum(np.sqrt(np.where(n > 0, var, 0.0)), floor)


def scale_floor(y: np.ndarray) -> float:
    """:data:`SCALE_FLOOR` times the target's standard deviation (positive)."""
    return float(SCALE_FLOOR * (np.std(y) or 1.0))


def score_rank(level: float, n: int) -> int:
    """The 1-based order statistic of ``n`` calibration scores used as the level-``t``
    quantile: ``ceil((n + 1) t)`` above the median, ``floor((n + 1) t)`` below, clipped to
    ``[1, n]``. A central interval ``[r_(lo), r_(hi)]`` of level ``1 - a`` then covers at least
    ``1 - a`` of exchangeable rows (each tail at most ``a / 2``)."""
    k = math.ceil((n + 1) * level) if level >= 0.5 else math.floor((n + 1) * level)
    return min(max(k, 1), n)


@dataclass(frozen=True)
class Calibration:
    """Sorted calibration scores ``(y - m) / s``: a predictive distribution for any row."""

    scores: np.ndarray

    @classmethod
    def from_residuals(cls, y: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> Calibration:
        r = (np.asarray(y, np.float64) - centre) / scale
        return cls(np.sort(r[np.isfinite(r)]))

    def score_quantiles(self, levels) -> np.ndarray:
        """The calibrated scores at ``levels`` (conformal order statistics)."""
        n = len(self.scores)
        return self.scores[[score_rank(t, n) - 1 for t in levels]]

    def quantiles(self, centre: np.ndarray, scale: np.ndarray, levels) -> np.ndarray:
        """``(N, L)`` quantiles of each row's predictive distribution at ``levels``."""
        return centre[:, None] + scale[:, None] * self.score_quantiles(levels)[None, :]

    def interval(self, centre: np.ndarray, scale: np.ndarray,
                 level: float) -> tuple[np.ndarray, np.ndarray]:
        """The central interval of ``level``: quantiles ``(1 - level) / 2`` and
        ``(1 + level) / 2``."""
        q = self.quantiles(centre, scale, ((1 - level) / 2, (1 + level) / 2))
        return q[:, 0], q[:, 1]

    def pit(self, y: np.ndarray, centre: np.ndarray, scale: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
        """Randomized PIT of ``y``: ``F(y-) = #{r_j < r} / (n + 1)``,
        ``F(y) = (#{r_j <= r} + 1) / (n + 1)``, the conformal p-value, uniform on
        exchangeable rows."""
        r = (np.asarray(y, np.float64) - centre) / scale
        n = len(self.scores)
        below = np.searchsorted(self.scores, r, side="left") / (n + 1)
        at = (np.searchsorted(self.scores, r, side="right") + 1) / (n + 1)
        return randomized_pit(below, at, rng)


@dataclass
class OutOfFold:
    """Cross-calibrated distributions of the rows with a group (``group >= 0``): each
    group's rows calibrated on the other groups' scores only."""

    quantiles: np.ndarray  # (N, len(QUANTILE_LEVELS)), NaN outside the groups
    lower: dict[float, np.ndarray]
    upper: dict[float, np.ndarray]
    pit: np.ndarray


def cross_calibrate(y: np.ndarray, centre: np.ndarray, scale: np.ndarray, group: np.ndarray,
                    levels, seed: int) -> OutOfFold:
    """Every grouped row's quantile grid, intervals and randomized PIT, calibrated on the
    scores of the other groups (its own residual never calibrates it)."""
    n = len(y)
    rng = np.random.default_rng(seed)
    out = OutOfFold(quantiles=np.full((n, len(QUANTILE_LEVELS)), np.nan),
                    lower={t: np.full(n, np.nan) for t in levels},
                    upper={t: np.full(n, np.nan) for t in levels}, pit=np.full(n, np.nan))
    scores = (np.asarray(y, np.float64) - centre) / scale
    finite = np.isfinite(scores)
    for g in np.unique(group[group >= 0]):
        rows = group == g
        others = scores[(group >= 0) & ~rows & finite]
        if not len(others):
            continue  # nothing to calibrate on: the rows keep NaN, never a made-up interval
        cal = Calibration(np.sort(others))
        m, s = centre[rows], scale[rows]
        out.quantiles[rows] = cal.quantiles(m, s, QUANTILE_LEVELS)
        for t in levels:
            out.lower[t][rows], out.upper[t][rows] = cal.interval(m, s, t)
        out.pit[rows] = np.where(finite[rows], cal.pit(y[rows], m, s, rng), np.nan)
    return out


def distribution_metrics(y: np.ndarray, oof: OutOfFold, rows: np.ndarray,
                         levels) -> dict[str, float]:
    """Coverage and mean width per level, CRPS (quantile grid) and the PIT's KS distance
    from uniform, over ``rows`` (a row without a prediction counts as not covered)."""
    out: dict[str, float] = {}
    for t in levels:
        out |= interval_metrics(y[rows], oof.lower[t][rows], oof.upper[t][rows], t)
    ok = rows & np.isfinite(oof.pit)  # a row without a prediction has no distribution
    out["crps"] = crps_quantiles(y[ok], oof.quantiles[ok], np.array(QUANTILE_LEVELS))
    out["pit_ks"] = ks_uniform(oof.pit[ok])
    return out


__all__ = ["CALIBRATION_METHOD", "Calibration", "DEFAULT_LEVELS", "OutOfFold", "QUANTILE_LEVELS",
           "SCALE_FLOOR", "cross_calibrate", "distribution_metrics", "neighbour_spread",
           "scale_floor", "score_rank"]
