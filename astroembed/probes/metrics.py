"""Probe metrics: R^2 and RMSE for any target, and for a redshift sigma_NMAD, the outlier
fraction and the bias (docs/architecture.md); per-fold values summarised as a mean and a
fold-to-fold standard deviation."""

from __future__ import annotations

import numpy as np

#: |dz| / (1 + z) above this is an outlier (docs/architecture.md).
OUTLIER_DZ = 0.15


def redshift_metrics(z_true: np.ndarray, z_pred: np.ndarray) -> dict[str, float]:
    """sigma_NMAD, outlier fraction and bias of ``dz = z_pred - z_true`` (docs/architecture.md).

    sigma_NMAD = 1.48 median(|dz - median(dz)| / (1 + z)); outliers |dz| / (1 + z) > 0.15;
    bias = median(dz / (1 + z)).
    """
    z_true = np.asarray(z_true, np.float64)
    dz = np.asarray(z_pred, np.float64) - z_true
    one_plus = 1.0 + z_true
    return {
        "sigma_nmad": float(1.48 * np.median(np.abs(dz - np.median(dz)) / one_plus)),
        "outlier_fraction": float(np.mean(np.abs(dz) / one_plus > OUTLIER_DZ)),
        "bias": float(np.median(dz / one_plus)),
    }


def fold_metrics(y_true: np.ndarray, y_pred: np.ndarray, redshift: bool) -> dict[str, float]:
    """R^2 and RMSE, plus the redshift metrics when the target is a redshift."""
    from sklearn.metrics import r2_score

    out = {"r2": float(r2_score(y_true, y_pred)),
           "rmse": float(np.sqrt(np.mean((np.asarray(y_pred) - y_true) ** 2)))}
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


__all__ = ["METRIC_KEYS", "fold_metrics", "redshift_metrics", "summarise"]
