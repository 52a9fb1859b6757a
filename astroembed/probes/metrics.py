"""Probe metrics: R^2 and RMSE for any target, and for a redshift sigma_NMAD, the outlier
fraction and the bias (docs/architecture.md); per-fold values summarised as a mean and a
fold-to-fold standard deviation. The probes and the benchmarks all compute them here, so
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


def summarise(per_fold: list[dict[str, float]]) -> dict[str, float | None]:
    """Mean over folds of each metric and its fold-to-fold standard deviation (``_std``,
    ddof=1); None for a metric the target has not (sigma_NMAD for a non-redshift)."""
    out: dict[str, float | None] = {}
    for key in METRIC_KEYS:
        values = [f[key] for f in per_fold if key in f]
        if not values:
            out[key], out[f"{key}_std"] = None, None
            continue
        out[key] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return out


__all__ = ["METRIC_KEYS", "NMAD_SCALE", "OUTLIER_DZ", "fold_metrics", "r2", "redshift_metrics",
           "summarise"]
