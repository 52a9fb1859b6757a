"""Probe metrics: R^2 and RMSE for any target, and for a redshift sigma_NMAD, the outlier
fraction and the bias (docs/architecture.md); for a predictive distribution the interval
coverage and width, the randomized PIT, its histogram and KS distance, and the CRPS from a
quantile grid; per-fold values summarised as a mean and a fold-to-fold standard deviation. The probes and the benchmarks all compute them here, so
one name means one formula (the retrieval rates live beside the ranks, in
:mod:`astroembed.similarity`)."""

from __future__ import annotations

import numpy as np

#: |e| = |dz| / (1 + z) above this is an outlier (docs/architecture.md).
OUTLIER_DZ = 0.15

#: sigma = 1.4826 x MAD for a Gaussian (1 / Phi^-1(3/4)).
NMAD_SCALE = 1.4826


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, 1 - sum (y - p)^2 / sum (y - mean y)^2 (NaN for a
    constant target: nothing to explain)."""
    y = np.asarray(y_true, np.float64)
    resid = np.sum((np.asarray(y_pred, np.float64) - y) ** 2)
    total = np.sum((y - y.mean()) ** 2)
    return float(1.0 - resid / total) if total > 0 else float("nan")


def redshift_metrics(z_true: np.ndarray, z_pred: np.ndarray) -> dict[str, float]:
    """sigma_NMAD, outlier fraction and bias of the scaled error ``e = dz / (1 + z_true)``
    with ``dz = z_pred - z_true`` (docs/architecture.md): sigma_NMAD =
    1.4826 median(|e - median(e)|), outliers |e| > 0.15, bias = median(e)."""
    z_true = np.asarray(z_true, np.float64)
    e = (np.asarray(z_pred, np.float64) - z_true) / (1.0 + z_true)
    return {
        "sigma_nmad": float(NMAD_SCALE * np.median(np.abs(e - np.median(e)))),
        "outlier_fraction": float(np.mean(np.abs(e) > OUTLIER_DZ)),
        "bias": float(np.median(e)),
    }


def fold_metrics(y_true: np.ndarray, y_pred: np.ndarray, redshift: bool) -> dict[str, float]:
    """R^2 and RMSE, plus the redshift metrics when the target is a redshift."""
    y_true = np.asarray(y_true, np.float64)
    out = {"r2": r2(y_true, y_pred),
           "rmse": float(np.sqrt(np.mean((np.asarray(y_pred, np.float64) - y_true) ** 2)))}
    if redshift:
        out |= redshift_metrics(y_true, y_pred)
    return out


METRIC_KEYS = ("r2", "rmse", "sigma_nmad", "outlier_fraction", "bias")


def level_label(level: float) -> str:
    """``0.68`` -> ``"68"``, ``0.997`` -> ``"99p7"``: the level in metric keys and column names
    (no dot, so the names stay plain identifiers)."""
    return f"{round(100 * float(level), 6):g}".replace(".", "p")


def interval_metrics(y: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                     level: float) -> dict[str, float]:
    """``coverage_<L>``: the fraction of ``y`` inside ``[lower, upper]`` (ends included);
    ``width_<L>``: the mean of ``upper - lower``."""
    y = np.asarray(y, np.float64)
    inside = (y >= lower) & (y <= upper)
    label = level_label(level)
    return {f"coverage_{label}": float(np.mean(inside)),
            f"width_{label}": float(np.mean(np.asarray(upper, np.float64) - lower))}


def randomized_pit(cdf_below: np.ndarray, cdf_at: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """PIT ``u = F(y-) + V (F(y) - F(y-))``, V ~ U(0, 1): uniform for a calibrated discrete
    distribution too, where the plain ``F(y)`` piles up on the steps."""
    below = np.asarray(cdf_below, np.float64)
    return below + rng.uniform(size=below.shape) * (np.asarray(cdf_at, np.float64) - below)


def pit_histogram(pit: np.ndarray, bins: int = 10) -> list[float]:
    """Density of the (finite) PIT values in ``bins`` equal bins of [0, 1] (1 everywhere when
    calibrated)."""
    pit = np.asarray(pit, np.float64)
    pit = pit[np.isfinite(pit)]
    counts, _ = np.histogram(np.clip(pit, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    return [float(c) for c in counts * bins / max(len(pit), 1)]


def ks_uniform(pit: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance of the (finite) PIT values from U(0, 1):
    ``max_i max(i/n - u_(i), u_(i) - (i-1)/n)``."""
    u = np.asarray(pit, np.float64)
    u = np.sort(u[np.isfinite(u)])
    n = len(u)
    if n == 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - u), np.max(u - (i - 1) / n)))


def quantile_weights(levels: np.ndarray) -> np.ndarray:
    """Quadrature weights of quantile levels on [0, 1]: each level's share of the interval
    between the midpoints to its neighbours (the first from 0, the last to 1)."""
    t = np.asarray(levels, np.float64)
    edges = np.concatenate([[0.0], (t[1:] + t[:-1]) / 2, [1.0]])
    return np.diff(edges)


def crps_quantiles(y: np.ndarray, quantiles: np.ndarray, levels: np.ndarray) -> float:
    """Mean CRPS from a quantile grid: ``CRPS = 2 int_0^1 rho_t(y - q_t) dt`` with the pinball
    loss ``rho_t(u) = u (t - [u < 0])``, the integral a sum with :func:`quantile_weights`.

    ``quantiles`` is ``(N, L)`` at ``levels`` (L ascending). Exact as the grid gets fine; on a
    coarse grid it misses the tails beyond the outer levels (an underestimate).
    """
    y = np.asarray(y, np.float64)[:, None]
    t = np.asarray(levels, np.float64)[None, :]
    u = y - np.asarray(quantiles, np.float64)
    loss = u * (t - (u < 0))
    return float(np.mean(2.0 * loss @ quantile_weights(levels)))


def summarise(per_fold: list[dict[str, float]]) -> dict[str, float | None]:
    """Mean over folds of each metric and its fold-to-fold standard deviation (``_std``,
    ddof=1); None for a metric the target has not (sigma_NMAD for a non-redshift). Metrics
    beyond :data:`METRIC_KEYS` (coverage, width, CRPS, PIT KS) follow in their fold order."""
    out: dict[str, float | None] = {}
    extra = [k for k in (per_fold[0] if per_fold else {}) if k not in METRIC_KEYS]
    for key in (*METRIC_KEYS, *extra):
        values = [f[key] for f in per_fold if key in f]
        if not values:
            out[key], out[f"{key}_std"] = None, None
            continue
        out[key] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return out


__all__ = ["METRIC_KEYS", "NMAD_SCALE", "OUTLIER_DZ", "crps_quantiles", "fold_metrics",
           "interval_metrics", "ks_uniform", "level_label", "pit_histogram", "quantile_weights",
           "r2", "randomized_pit", "redshift_metrics", "summarise"]
