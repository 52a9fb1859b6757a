"""Probe estimators: one unfitted scikit-learn estimator per feature set and method
(distance-weighted k-NN as AstroCLIP's zero-shot probe, ridge regression, a small MLP).

Everything fitted (standardiser, PCA, imputer, the regressor) sits in that one estimator, so
cloning and fitting it on the training folds only leaks nothing about a test fold into its
own prediction. k-NN is exact (scikit-learn, brute force) or, for large catalogs, approximate
on a faiss IVF index (:class:`FaissKNNRegressor`).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.neural_network import MLPRegressor

from astroembed.probes.features import BASELINES

BASELINE_METRIC = "euclidean"
#: Ridge penalties searched by the inner (efficient leave-one-out) cross-validation.
RIDGE_ALPHAS = tuple(np.logspace(-3, 4, 15))
MLP_HIDDEN = (128,)
PCA_COMPONENTS = 16
#: ``--protocol astroclip``: the AstroCLIP paper's few-shot MLPs (hidden layers per feature
#: set, 10 epochs of Adam at lr 1e-3) and its zero-shot k-NN (k=64, Euclidean, 1/distance).
ASTROCLIP_MLP_HIDDEN = {"image": (32,), "spectrum": (64, 64), "both": (64, 64)}
ASTROCLIP_MLP_EPOCHS = 10
ASTROCLIP_K = 64
ASTROCLIP_METRIC = "euclidean"


class FaissKNNRegressor(RegressorMixin, BaseEstimator):
    """Distance-weighted k-NN regression on a faiss IVF index: the k-NN probe for catalogs too
    large for exact neighbours (scikit-learn's brute force is O(N^2)). Above
    ``FAST_SCAN_MIN_ROWS`` training rows the index scans PQ codes and re-ranks exactly
    (:func:`astroembed.similarity.build_ivf_fast_scan`).

    Weights are 1/distance as scikit-learn's ``weights="distance"`` (a zero distance gets all
    the weight); distance is 1 - cosine similarity or Euclidean. A scikit-learn estimator, so
    it sits in the same Pipeline after the standardiser.
    """

    def __init__(self, n_neighbors: int = 64, metric: str = "cosine", seed: int = 0,
                 fast_scan: bool | None = None):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.seed = seed
        self.fast_scan = fast_scan  # None: from similarity.FAST_SCAN_MIN_ROWS training rows

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        from astroembed.similarity import normalise

        x = np.ascontiguousarray(x, dtype=np.float32)
        return normalise(x) if self.metric == "cosine" else x

    def fit(self, x: np.ndarray, y: np.ndarray) -> FaissKNNRegressor:
        from astroembed.similarity import (FAST_SCAN_MIN_ROWS, KNN_NPROBE, build_ivf,
                                           build_ivf_fast_scan)

        fast = self.fast_scan if self.fast_scan is not None else len(x) >= FAST_SCAN_MIN_ROWS
        build = build_ivf_fast_scan if fast else build_ivf
        self.index_ = build(self._prepare(x), "ip" if self.metric == "cosine" else "l2",
                            seed=self.seed, nprobe=KNN_NPROBE)
        self.y_ = np.asarray(y, np.float64)
        return self

    def neighbours(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, positions)`` of the ``k`` nearest training rows (position -1: none)."""
        sims, idx = self.index_.search(self._prepare(x), min(k, len(self.y_)))
        dist = (np.clip(1.0 - sims, 0.0, None) if self.metric == "cosine"
                else np.sqrt(np.clip(sims, 0.0, None)))
        return dist.astype(np.float64), idx.astype(np.int64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        dist, idx = self.neighbours(x, self.n_neighbors)
        return weighted_mean(dist, idx, self.y_)


class AstroclipMLP(MLPRegressor):
    """An MLP trained for a fixed number of epochs (``--protocol astroclip``): stopping before
    convergence is the protocol, not a warning."""

    def fit(self, x, y):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return super().fit(x, y)


def weighted_mean(dist: np.ndarray, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean of ``y[idx]`` weighted by 1/distance, scikit-learn's ``weights="distance"`` rule
    (a row with a zero distance takes only its zero-distance neighbours); ``idx`` -1 = none."""
    found = idx >= 0
    with np.errstate(divide="ignore"):
        w = 1.0 / np.asarray(dist, np.float64)
    exact = np.isinf(w) & found
    rows = exact.any(axis=1)
    w[rows] = exact[rows]
    w[~found] = 0.0
    yk = y[np.where(found, idx, 0)]
    wsum = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, (w * yk).sum(axis=1) / wsum, np.nan)


def cosine_weights(dist: np.ndarray) -> np.ndarray:
    """k-NN weights 1 / (1 - cos) from Euclidean distances between unit vectors.

    For unit vectors |a - b|^2 = 2 (1 - cos), so neighbours found by scikit-learn's fast
    Euclidean path on normalised vectors are the cosine neighbours, and these weights are
    exactly ``weights="distance"`` with ``metric="cosine"`` (several times faster than that
    path). A zero distance takes all the weight, as in scikit-learn.
    """
    with np.errstate(divide="ignore"):
        w = 1.0 / (np.square(dist) / 2.0)
    inf = np.isinf(w)
    rows = inf.any(axis=1)
    w[rows] = inf[rows]
    return w


def knn_regressor(k: int, metric: str, index: str, seed: int = 0):
    """The distance-weighted k-NN regressor: exact (scikit-learn, brute force) or
    approximate (faiss IVF); cosine as Euclidean on L2-normalised vectors."""
    if index == "faiss":
        return FaissKNNRegressor(n_neighbors=k, metric=metric, seed=seed)
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer

    if metric == "cosine":
        return Pipeline([("normalize", Normalizer()),
                         ("knn", KNeighborsRegressor(n_neighbors=k, weights=cosine_weights,
                                                     algorithm="brute"))])
    return KNeighborsRegressor(n_neighbors=k, weights="distance", algorithm="brute")


def _knn_parts(est) -> tuple[list, object] | None:
    """``(transform steps, k-NN regressor)`` of a fitted k-NN pipeline; None otherwise."""
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import Pipeline

    if not isinstance(est, Pipeline):
        return None
    steps = [step for _, step in est.steps[:-1]]
    last = est.steps[-1][1]
    if isinstance(last, Pipeline):
        steps += [step for _, step in last.steps[:-1]]
        last = last.steps[-1][1]
    if isinstance(last, (KNeighborsRegressor, FaissKNNRegressor)):
        return steps, last
    return None


def predict_with_spread(est, x: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Point predictions and the scale of each row's predictive distribution.

    k-NN: the same distance-weighted mean as ``est.predict``, from one neighbour query whose
    targets also give the scale (their standard deviation, at least ``floor``); ridge and
    MLP: scale 1 (the calibration alone sets the width).
    """
    from astroembed.probes.uncertainty import neighbour_spread

    parts = _knn_parts(est)
    if parts is None:
        pred = np.asarray(est.predict(x), np.float64)
        return pred, np.ones(len(pred))
    steps, knn = parts
    xt = x
    for step in steps:
        xt = step.transform(xt)
    if isinstance(knn, FaissKNNRegressor):
        dist, idx = knn.neighbours(xt, knn.n_neighbors)
        y = knn.y_
    else:
        dist, idx = knn.kneighbors(xt)
        y = np.asarray(knn._y, np.float64)  # the fitted targets scikit-learn's predict uses
        if knn.weights is cosine_weights:
            dist = np.square(dist) / 2.0  # 1 - cos: weighted_mean's 1/d is cosine_weights
    return weighted_mean(dist, idx, y), neighbour_spread(idx, y, floor)


def blas_threads(method: str) -> int | None:
    """BLAS threads for fitting ``method``: 1 for ridge and MLP, whose small matrix products
    run many times slower with several OpenBLAS threads when the cores are busy; the
    default for k-NN, whose large distance products gain from threads."""
    return None if method == "knn" else 1


def make_estimator(features: str, method: str, *, k: int, metric: str, index: str,
                   seed: int, n_features: int, n_train: int, protocol: str = "kfold"):
    """The unfitted estimator for one feature set and method: a Pipeline whose first step(s)
    (imputer, PCA, standardiser) are fitted with the regressor on the training folds only.
    ``protocol="astroclip"``: the paper's MLP (see :data:`ASTROCLIP_MLP_HIDDEN`)."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = []
    if features in BASELINES:
        steps.append(("impute", SimpleImputer(strategy="median")))
    if features == "spectrum_pca":
        steps.append(("pca", PCA(n_components=min(PCA_COMPONENTS, n_features, n_train),
                                 random_state=seed)))
    steps.append(("scale", StandardScaler()))
    if method == "knn":
        # Magnitudes, colours and PCA scores are coordinates, not directions: the baselines
        # get the Euclidean k-NN (cosine on five standardised magnitudes loses ~0.15 in R^2).
        knn_metric = BASELINE_METRIC if features in BASELINES else metric
        return Pipeline(steps + [("knn", knn_regressor(k, knn_metric, index, seed))])
    if method == "linear":
        return Pipeline(steps + [("ridge", RidgeCV(alphas=RIDGE_ALPHAS))])
    if method == "mlp" and protocol == "astroclip":
        mlp = AstroclipMLP(hidden_layer_sizes=ASTROCLIP_MLP_HIDDEN.get(features, (64, 64)),
                           solver="adam", learning_rate_init=1e-3,
                           max_iter=ASTROCLIP_MLP_EPOCHS, early_stopping=False,
                           random_state=seed)
        return TransformedTargetRegressor(regressor=Pipeline(steps + [("mlp", mlp)]),
                                          transformer=StandardScaler())
    if method == "mlp":
        mlp = MLPRegressor(hidden_layer_sizes=MLP_HIDDEN, early_stopping=True,
                           validation_fraction=0.1, n_iter_no_change=10, max_iter=200,
                           random_state=seed)
        return TransformedTargetRegressor(regressor=Pipeline(steps + [("mlp", mlp)]),
                                          transformer=StandardScaler())
    raise ValueError(f"unknown probe method {method!r}")


__all__ = ["ASTROCLIP_K", "ASTROCLIP_METRIC", "ASTROCLIP_MLP_EPOCHS", "ASTROCLIP_MLP_HIDDEN",
           "AstroclipMLP", "FaissKNNRegressor", "blas_threads", "predict_with_spread", "cosine_weights", "knn_regressor",
           "make_estimator", "weighted_mean"]
