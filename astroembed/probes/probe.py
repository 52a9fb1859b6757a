"""Probes: how much of a catalog quantity (redshift by default) frozen embeddings hold.

See docs/architecture.md. For each feature set (the image, spectrum or both embeddings, and two
baselines that need no model: g, r, z photometry and a PCA of the raw spectra) and each method
(distance-weighted k-NN as AstroCLIP's zero-shot probe, ridge regression, a small MLP) a
k-fold cross-validation gives out-of-fold predictions for every usable row and per-fold
metrics, reported as mean and fold-to-fold standard deviation.

Everything fitted (standardiser, PCA, imputer, the regressor) sits in one scikit-learn
estimator that is cloned and fitted on the training folds only, so nothing about a test fold
leaks into its own prediction; :func:`cross_validate` can return the fitted estimators so a
test can check that.

A fitted probe is saved without pickle: ``MODEL/probe.json`` (what it is, the embedding
columns and model metadata it was trained on, its CV metrics) and ``MODEL/arrays.npz``
(standardiser, weights, or the k-NN training set), loaded with ``allow_pickle=False``.
:func:`predict_catalog` applies one to every tile of a catalog.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from astroembed.config import ProbeConfig
from astroembed.errors import ConfigError, InputError, InterruptedRun, ModelError, OutputError
from astroembed.catalog.columns import (
    MODALITIES,
    embedding_columns,
    model_fingerprint,
    read_arrays,
    resolve_embeddings,
    resolve_id_column,
    resolve_target,
    scalars,
    vectors,
)
from astroembed.catalog.reader import CatalogInfo, read_catalog_info
from astroembed.catalog.paths import check_output_dir
from astroembed.stamps import astroembed_version

log = logging.getLogger("astroembed")
Progress = Callable[[str, int, int], None]

METHODS = ("knn", "linear", "mlp")
BASELINES = ("photometry", "spectrum_pca")
BASELINE_METRIC = "euclidean"
#: |dz| / (1 + z) above this is an outlier (docs/architecture.md).
OUTLIER_DZ = 0.15
#: Ridge penalties searched by the inner (efficient leave-one-out) cross-validation.
RIDGE_ALPHAS = tuple(np.logspace(-3, 4, 15))
MLP_HIDDEN = (128,)
#: Raw spectra are averaged (ivar-weighted) over this many 0.8 A pixels: 7781 -> 243 values.
SPECTRUM_BIN = 32
PCA_COMPONENTS = 16
#: Photometry: fluxes below this (nanomaggies, i.e. fainter than 27.5 mag) are clipped to it.
FLUX_FLOOR = 0.01
#: ``--index auto``: k-NN on faiss above this many usable rows (exact k-NN costs O(N^2)).
EXACT_KNN_MAX_ROWS = 200_000
PROBE_FORMAT = "astroembed-probe"
REPORT_FORMAT = "astroembed-probe-report"  # probe.json of `probe --out`
PROBE_VERSION = 1


# ----------------------------------------------------------------------------- metrics

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


# ----------------------------------------------------------------------------- features

def _band_column(names: list[str], stem: str) -> str | None:
    """``FLUX_G`` or, when both cross-match sides had it, the Legacy Survey ``FLUX_G_left``."""
    return next((c for c in (stem, f"{stem}_left") if c in names), None)


def photometry_columns(info: CatalogInfo) -> dict[str, str] | None:
    """Columns for the photometry baseline: ``{"FLUX_G": col, ..., "MW_TRANSMISSION_G": col}``
    (transmissions only where present); None without all three fluxes."""
    names = info.schema.names
    cols = {}
    for band in "GRZ":
        flux = _band_column(names, f"FLUX_{band}")
        if flux is None:
            return None
        cols[f"FLUX_{band}"] = flux
        mw = _band_column(names, f"MW_TRANSMISSION_{band}")
        if mw is not None:
            cols[f"MW_TRANSMISSION_{band}"] = mw
    return cols


def photometry_features(table, cols: dict[str, str]) -> np.ndarray:
    """g, r, z magnitudes and g-r, r-z colours, ``(N, 5)``.

    Fluxes (nanomaggies) are divided by MW_TRANSMISSION where the catalog has it (dereddened),
    clipped at :data:`FLUX_FLOOR` so faint or negative fluxes give a finite, faint magnitude;
    a missing flux stays NaN (imputed by the median of the training folds).
    """
    mags = []
    for band in "GRZ":
        flux = scalars(table.column(cols[f"FLUX_{band}"]))
        if f"MW_TRANSMISSION_{band}" in cols:
            mw = scalars(table.column(cols[f"MW_TRANSMISSION_{band}"]))
            flux = np.where(mw > 0, flux / np.where(mw > 0, mw, 1.0), flux)
        with np.errstate(invalid="ignore"):
            mags.append(22.5 - 2.5 * np.log10(np.maximum(flux, FLUX_FLOOR)))
    g, r, z = mags
    return np.stack([g, r, z, g - r, r - z], axis=1).astype(np.float32)


def rebin_spectra(flux: np.ndarray, ivar: np.ndarray | None,
                  width: int = SPECTRUM_BIN) -> np.ndarray:
    """Spectra averaged over ``width``-pixel bins (ivar-weighted) and scaled to unit norm.

    Unit norm leaves the shape (continuum slope, breaks, lines: what says redshift) and
    removes brightness, which would otherwise dominate the PCA.
    """
    n, m = flux.shape
    m = (m // width) * width
    f = flux[:, :m].reshape(n, -1, width).astype(np.float64)
    if ivar is None:
        binned = f.mean(axis=2)
    else:
        w = np.clip(ivar[:, :m].reshape(n, -1, width).astype(np.float64), 0, None)
        wsum = w.sum(axis=2)
        binned = np.where(wsum > 0, (f * w).sum(axis=2) / np.where(wsum > 0, wsum, 1), 0.0)
    norm = np.linalg.norm(binned, axis=1, keepdims=True)
    return (binned / np.where(norm > 0, norm, 1.0)).astype(np.float32)


@dataclass
class ProbeData:
    """The usable rows of a catalog as arrays, ready for cross-validation."""

    target: str  # the catalog column
    redshift: bool
    id_column: str
    ids: np.ndarray
    y: np.ndarray
    features: dict[str, np.ndarray]  # image, spectrum, both, photometry, spectrum_pca
    embedding_columns: dict[str, str]  # modality -> column
    fingerprints: dict[str, dict[str, str]]  # column -> model metadata
    excluded: dict[str, int]
    n_catalog_rows: int
    notes: list[str] = field(default_factory=list)


def _wanted_features(cfg: ProbeConfig, present: list[str], name: str | None) -> list[str]:
    """Embedding feature sets to probe: as asked, or every one the catalog has."""
    if cfg.embedding:
        return list(dict.fromkeys(cfg.embedding))
    from astroembed.catalog.columns import embedding_column

    have = [m for m in MODALITIES if embedding_column(m, name) in present]
    return have + (["both"] if len(have) == 2 else [])


def load_probe_data(cfg: ProbeConfig, info: CatalogInfo | None = None) -> ProbeData:
    """Read the target, IDs, embeddings and baseline features; drop and count unusable rows.

    Rows are excluded when ZWARN != 0 (a redshift target only), when the target is NaN or
    null, or when an embedding used is null; every feature set is then probed on the same
    rows and folds, so their metrics compare like with like.
    """
    info = info or read_catalog_info(cfg.catalog)
    target = resolve_target(info, cfg.target)
    redshift = target in ("Z", "Z_right")
    features = _wanted_features(cfg, embedding_columns(info), cfg.name)
    modalities = [m for m in MODALITIES if m in features or "both" in features]
    if not modalities:
        resolve_embeddings(info, MODALITIES, cfg.name)  # raises: names what there is
    emb = resolve_embeddings(info, modalities, cfg.name)
    idc = resolve_id_column(info, cfg.id_column)
    zwarn = "ZWARN" if redshift and "ZWARN" in info.schema.names else None
    phot = photometry_columns(info) if cfg.baselines else None
    spectra = "flux" if cfg.baselines and "flux" in info.schema.names else None
    ivar = "ivar" if spectra and "ivar" in info.schema.names else None
    columns = list(dict.fromkeys([idc, target, *([zwarn] if zwarn else []), *emb.values(),
                                  *(phot.values() if phot else []),
                                  *([spectra] if spectra else []), *([ivar] if ivar else [])]))

    def convert(table) -> dict[str, np.ndarray]:
        out = {"ids": table.column(idc).to_numpy(zero_copy_only=False),
               "y": scalars(table.column(target))}
        if zwarn:
            zw = scalars(table.column(zwarn))
            out["zwarn_bad"] = ~(zw == 0)
        for modality, column in emb.items():
            out[modality], out[f"{modality}_valid"] = vectors(table.column(column))
        if phot:
            out["photometry"] = photometry_features(table, phot)
        if spectra:
            f, fvalid = vectors(table.column(spectra))
            iv = vectors(table.column(ivar))[0] if ivar else None
            s = rebin_spectra(f, iv)
            s[~fvalid] = np.nan
            out["spectrum_pca"] = s
        return out

    arrays = read_arrays(info, columns, convert)
    n = len(arrays["y"])
    keep = np.ones(n, bool)
    excluded = {"ZWARN": 0, "nan": 0, "no_embedding": 0}
    if zwarn:
        excluded["ZWARN"] = int(arrays["zwarn_bad"].sum())
        keep &= ~arrays["zwarn_bad"]
    bad_y = ~np.isfinite(arrays["y"])
    excluded["nan"] = int((keep & bad_y).sum())
    keep &= ~bad_y
    no_emb = np.zeros(n, bool)
    for modality in emb:
        no_emb |= ~arrays[f"{modality}_valid"]
    excluded["no_embedding"] = int((keep & no_emb).sum())
    keep &= ~no_emb
    feats: dict[str, np.ndarray] = {}
    for name in features:
        if name == "both":
            feats[name] = np.hstack([arrays["image"][keep], arrays["spectrum"][keep]])
        else:
            feats[name] = arrays[name][keep]
    notes = []
    if cfg.baselines:
        for name in BASELINES:
            if name in arrays:
                feats[name] = arrays[name][keep]
        if phot is None:
            notes.append("photometry baseline skipped: no FLUX_G/FLUX_R/FLUX_Z columns")
        if spectra is None:
            notes.append("spectrum_pca baseline skipped: no flux column")
    return ProbeData(target=target, redshift=redshift, id_column=idc, ids=arrays["ids"][keep],
                     y=arrays["y"][keep], features=feats, embedding_columns=emb,
                     fingerprints={c: model_fingerprint(info, c) for c in emb.values()},
                     excluded=excluded, n_catalog_rows=n, notes=notes)


# ----------------------------------------------------------------------------- estimators

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
        self.fast_scan = fast_scan  # None: above search.FAST_SCAN_MIN_ROWS training rows

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        from astroembed.similarity import normalise

        x = np.ascontiguousarray(x, dtype=np.float32)
        return normalise(x) if self.metric == "cosine" else x

    def fit(self, x: np.ndarray, y: np.ndarray) -> FaissKNNRegressor:
        from astroembed.similarity import FAST_SCAN_MIN_ROWS, KNN_NPROBE, build_ivf, build_ivf_fast_scan

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


def blas_threads(method: str) -> int | None:
    """BLAS threads for fitting ``method``: 1 for ridge and MLP, whose small matrix products
    run many times slower with several OpenBLAS threads when the cores are busy; the
    default for k-NN, whose large distance products gain from threads."""
    return None if method == "knn" else 1


def make_estimator(features: str, method: str, *, k: int, metric: str, index: str,
                   seed: int, n_features: int, n_train: int):
    """The unfitted estimator for one feature set and method: a Pipeline whose first step(s)
    (imputer, PCA, standardiser) are fitted with the regressor on the training folds only."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
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
    if method == "mlp":
        mlp = MLPRegressor(hidden_layer_sizes=MLP_HIDDEN, early_stopping=True,
                           validation_fraction=0.1, n_iter_no_change=10, max_iter=200,
                           random_state=seed)
        return TransformedTargetRegressor(regressor=Pipeline(steps + [("mlp", mlp)]),
                                          transformer=StandardScaler())
    raise ValueError(f"unknown probe method {method!r}")


def fold_indices(n: int, folds: int, seed: int) -> np.ndarray:
    """The fold of each row (seeded, shuffled KFold): the same for every feature set."""
    from sklearn.model_selection import KFold

    fold = np.empty(n, np.int16)
    splits = KFold(folds, shuffle=True, random_state=seed).split(np.arange(n))
    for i, (_, test) in enumerate(splits):
        fold[test] = i
    return fold


def min_train_rows(n: int, folds: int) -> int:
    """Rows in the smallest training set of a ``folds``-fold split of ``n`` rows."""
    return n - math.ceil(n / folds)


def check_sizes(n: int, cfg: ProbeConfig, methods: list[str]) -> None:
    """ConfigError when the folds or k cannot work with ``n`` usable rows."""
    if n < max(cfg.folds, 2):
        raise InputError(f"{cfg.catalog}: only {n} usable rows; --folds {cfg.folds} needs at "
                         "least as many rows as folds.")
    n_train = min_train_rows(n, cfg.folds)
    if "knn" in methods and cfg.k > n_train:
        raise ConfigError(f"--k {cfg.k} is larger than the training set: {n} usable rows in "
                          f"{cfg.folds} folds leave {n_train} training rows per fold; use "
                          f"--k {n_train} or less.")


def cross_validate(x: np.ndarray, y: np.ndarray, fold: np.ndarray, make: Callable[[int], object],
                   redshift: bool, progress: Callable[[], None] | None = None,
                   keep_estimators: bool = False, threads: int | None = None
                   ) -> tuple[np.ndarray, list[dict], list]:
    """Out-of-fold predictions and per-fold metrics of the estimator ``make(n_train)``.

    Each fold gets a fresh estimator fitted on the other folds only (``threads``: BLAS
    thread limit, see :func:`blas_threads`). Returns
    ``(predictions, metrics per fold, fitted estimators or [])``.
    """
    from threadpoolctl import threadpool_limits

    pred = np.full(len(y), np.nan)
    per_fold, fitted = [], []
    for f in range(int(fold.max()) + 1):
        test = fold == f
        train = ~test
        est = make(int(train.sum()))
        with threadpool_limits(threads, user_api="blas"):
            est.fit(x[train], y[train])
            pred[test] = est.predict(x[test])
        per_fold.append(fold_metrics(y[test], pred[test], redshift))
        if keep_estimators:
            fitted.append(est)
        if progress:
            progress()
    return pred, per_fold, fitted


def _index_kind(cfg: ProbeConfig, n: int) -> str:
    if cfg.index == "auto":
        if n <= EXACT_KNN_MAX_ROWS:
            return "exact"
        try:
            import faiss  # noqa: F401
        except ImportError:
            log.warning("%d rows: exact k-NN is O(N^2) and will be slow; pip install "
                        "faiss-cpu for the approximate index.", n)
            return "exact"
        return "faiss"
    if cfg.index == "faiss":
        from astroembed.similarity import import_faiss

        import_faiss()
    return cfg.index


@dataclass
class ProbePlan:
    """A probe run ready to go: the data read, the checks passed (see :func:`prepare_probe`)."""

    cfg: ProbeConfig
    info: CatalogInfo
    data: ProbeData
    runs: list[tuple[str, str]]  # (features, method) in report order
    index: str  # exact | faiss
    fold: np.ndarray
    seconds: float


def prepare_probe(cfg: ProbeConfig) -> ProbePlan:
    """Read the catalog and check every argument against it, before any fitting starts.

    Separate from :func:`run_probe` so that the CLI reports a bad argument as one line before
    it draws a progress bar.
    """
    cfg.validate()
    for option, path in (("--out", cfg.out), ("--save", cfg.save)):
        if path:
            check_output_dir(path, option)
    start = time.perf_counter()
    info = read_catalog_info(cfg.catalog)
    data = load_probe_data(cfg, info)
    methods = list(dict.fromkeys(cfg.method))
    runs = [(f, m) for f in data.features if f not in BASELINES for m in methods]
    runs += [(f, "knn") for f in BASELINES if f in data.features]
    n = len(data.y)
    check_sizes(n, cfg, [m for _, m in runs])
    check_outputs(cfg, data.target, runs)
    index = _index_kind(cfg, n)
    return ProbePlan(cfg=cfg, info=info, data=data, runs=runs, index=index,
                     fold=fold_indices(n, cfg.folds, cfg.seed),
                     seconds=time.perf_counter() - start)


def run_probe(cfg: ProbeConfig, progress: Progress | None = None,
              prepared: ProbePlan | None = None) -> dict:
    """Cross-validate every requested feature set and method; write outputs; save a probe.

    Returns the JSON document described in docs/architecture.md (plus extra keys: ``rmse``, ``n_features``,
    ``seconds`` and per-fold metrics per result; ``columns``, ``outputs``, ``saved``, ``notes``
    at the top).
    """
    p = prepared or prepare_probe(cfg)
    cfg, info, data, plan, index, fold = p.cfg, p.info, p.data, p.runs, p.index, p.fold
    start = time.perf_counter() - p.seconds
    n = len(data.y)
    done, total = 0, len(plan) * cfg.folds

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress("probe", done, total)

    results, predictions = [], {}
    for features, method in plan:
        x = data.features[features]
        t0 = time.perf_counter()
        pred, per_fold, _ = cross_validate(
            x, data.y, fold,
            lambda n_train, f=features, m=method: make_estimator(
                f, m, k=cfg.k, metric=cfg.metric, index=index, seed=cfg.seed,
                n_features=x.shape[1], n_train=n_train),
            data.redshift, tick, threads=blas_threads(method))
        predictions[(features, method)] = pred
        results.append({"features": features, "method": method} | summarise(per_fold)
                       | {"n_features": int(x.shape[1]),
                          "seconds": round(time.perf_counter() - t0, 3),
                          "folds": per_fold})
    doc = {"target": data.target, "n_rows": n, "excluded": data.excluded, "folds": cfg.folds,
           "seed": cfg.seed, "results": results, "catalog": str(info.path),
           "n_catalog_rows": data.n_catalog_rows, "id_column": data.id_column,
           "columns": data.embedding_columns, "k": cfg.k, "metric": cfg.metric,
           "index": index, "redshift": data.redshift, "notes": data.notes, "outputs": {},
           "saved": None}
    if cfg.save:
        doc["saved"] = save_best(cfg, data, results, index)
    if cfg.out:
        doc["outputs"] = write_outputs(Path(cfg.out), data, fold, predictions, doc)
    doc["seconds"] = round(time.perf_counter() - start, 3)
    return doc


# ----------------------------------------------------------------------------- outputs

def output_names(target: str, runs: list[tuple[str, str]]) -> list[str]:
    """The files ``--out`` receives: predictions, one plot per result, the report."""
    return ["predictions.parquet", "probe.json",
            *(f"probe_{target}_{features}_{method}.png" for features, method in runs)]


def check_outputs(cfg: ProbeConfig, target: str, runs: list[tuple[str, str]]) -> None:
    """``--out`` and ``--save`` checked before any fitting: writable, and nothing there that
    astroembed did not write would be overwritten or replaced."""
    from astroembed.catalog.outputs import PROBE_REPORT, SAVED_PROBE, check_write_into, claim_directory

    if cfg.out and cfg.save and Path(cfg.out).absolute() == Path(cfg.save).absolute():
        raise OutputError(f"--out and --save are both {cfg.out}: the report and the saved "
                          "probe each need a directory of their own.")
    if cfg.out:
        check_write_into(cfg.out, PROBE_REPORT, output_names(target, runs), "--out")
    if cfg.save:
        claim_directory(cfg.save, SAVED_PROBE, overwrite=cfg.overwrite, option="--save")


def write_outputs(out: Path, data: ProbeData, fold: np.ndarray,
                  predictions: dict[tuple[str, str], np.ndarray], doc: dict) -> dict:
    """``OUT/predictions.parquet`` (ID, fold, true value, one column per feature set and
    method), one PNG per result, and ``OUT/probe.json``; each file written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from astroembed.catalog.atomic import atomic_path
    from astroembed.plots import probe_plot

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output directory: "
                          f"{err.strerror or err}") from err
    if not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory; choose another --out.")
    columns = {data.id_column: data.ids, "fold": fold.astype(np.int16), data.target: data.y}
    for (features, method), pred in predictions.items():
        columns[f"pred_{features}_{method}"] = pred
    table = pa.table(columns).replace_schema_metadata(
        {b"astroembed_probe": json.dumps({k: v for k, v in doc.items() if k != "results"},
                                         default=str).encode()})
    files = {"predictions": str(out / "predictions.parquet"), "plots": []}
    with atomic_path(out / "predictions.parquet") as tmp:
        pq.write_table(table, tmp)
    for (features, method), pred in predictions.items():
        file = out / f"probe_{data.target}_{features}_{method}.png"
        result = next(r for r in doc["results"]
                      if (r["features"], r["method"]) == (features, method))
        probe_plot(data.y, pred, file, title=f"{data.target}: {features} {method}",
                   redshift=data.redshift, metrics=result)
        files["plots"].append(str(file))
    with atomic_path(out / "probe.json") as tmp:
        report = {"format": REPORT_FORMAT} | doc | {"outputs": files}
        tmp.write_text(json.dumps(report, indent=2, default=str))
    files["summary"] = str(out / "probe.json")
    return files


# ----------------------------------------------------------------------------- saved probes

def _best(results: list[dict]) -> dict:
    """The embedding result with the highest mean R^2 (baselines are never saved)."""
    candidates = [r for r in results if r["features"] not in BASELINES]
    return max(candidates, key=lambda r: -np.inf if r["r2"] is None else r["r2"])


def fitted_arrays(est, method: str) -> dict[str, np.ndarray]:
    """The numbers a fitted probe consists of, as plain arrays (no pickle needed)."""
    pipe = est.regressor_ if method == "mlp" else est
    scaler = pipe.named_steps["scale"]
    arrays = {"mean": scaler.mean_, "scale": scaler.scale_}
    if method == "mlp":
        mlp = pipe.named_steps["mlp"]
        if mlp.activation != "relu" or mlp.out_activation_ != "identity":
            raise ValueError("only relu MLPs with an identity output are saved")
        arrays |= {f"W{i}": w for i, w in enumerate(mlp.coefs_)}
        arrays |= {f"b{i}": b for i, b in enumerate(mlp.intercepts_)}
        arrays |= {"y_mean": est.transformer_.mean_, "y_scale": est.transformer_.scale_}
    if method == "linear":
        ridge = pipe.named_steps["ridge"]
        arrays |= {"coef": np.atleast_1d(ridge.coef_), "intercept": np.atleast_1d(ridge.intercept_),
                   "alpha": np.atleast_1d(ridge.alpha_)}
    return arrays


def save_best(cfg: ProbeConfig, data: ProbeData, results: list[dict], index: str) -> dict:
    """Refit the best embedding probe on every usable row and save it to ``cfg.save``."""
    from astroembed.catalog.atomic import atomic_directory
    from astroembed.catalog.outputs import SAVED_PROBE, claim_directory, may_replace

    best = _best(results)
    features, method = best["features"], best["method"]
    x, y = data.features[features], data.y
    est = make_estimator(features, method, k=cfg.k, metric=cfg.metric, index=index,
                         seed=cfg.seed, n_features=x.shape[1], n_train=len(y))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(blas_threads(method), user_api="blas"):
        est.fit(x, y)
    arrays = fitted_arrays(est, method)
    if method == "knn":
        scaler = est.named_steps["scale"]
        ids = np.asarray(data.ids)
        arrays |= {"train_x": scaler.transform(x).astype(np.float32), "train_y": y,
                   "train_ids": ids.astype(str) if ids.dtype == object else ids}
    modalities = ["image", "spectrum"] if features == "both" else [features]
    spec = {
        "format": PROBE_FORMAT, "version": PROBE_VERSION, "target": data.target,
        "target_option": cfg.target, "redshift": data.redshift, "features": features,
        "method": method, "embedding_columns": {m: data.embedding_columns[m] for m in modalities},
        "models": {data.embedding_columns[m]: data.fingerprints[data.embedding_columns[m]]
                   for m in modalities},
        "n_features": int(x.shape[1]), "n_train": int(len(y)), "k": cfg.k,
        "id_column": data.id_column,
        "metric": cfg.metric, "index": index, "seed": cfg.seed,
        "cv": {k: v for k, v in best.items() if k not in ("folds",)},
        "catalog": str(data_path(cfg)), "astroembed_version": astroembed_version(),
        "arrays": sorted(arrays), "mlp_layers": sum(1 for a in arrays if a.startswith("W")),
    }
    path = Path(cfg.save)
    claim_directory(path, SAVED_PROBE, overwrite=cfg.overwrite, option="--save")
    try:
        with atomic_directory(path, lambda p: may_replace(p, SAVED_PROBE, "--save")) as tmp:
            np.savez(tmp / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})
            (tmp / "probe.json").write_text(json.dumps(spec, indent=2, default=str))
    except OSError as err:
        raise OutputError(f"{path}: cannot write the probe: {err.strerror or err}") from err
    return {"path": str(path), "features": features, "method": method, "r2": best["r2"]}


def data_path(cfg: ProbeConfig) -> Path:
    return Path(cfg.catalog).resolve()


@dataclass
class SavedProbe:
    """A probe loaded from ``MODEL/probe.json`` + ``MODEL/arrays.npz`` (no pickle)."""

    path: Path
    spec: dict
    arrays: dict[str, np.ndarray]
    _knn: object | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> SavedProbe:
        path = Path(path)
        spec_file, array_file = path / "probe.json", path / "arrays.npz"
        if not path.exists():
            raise ModelError(f"{path}: no such directory; --probe is a directory written by "
                             "`astroembed probe --save`.")
        if not spec_file.is_file() or not array_file.is_file():
            raise ModelError(f"{path}: not a saved probe (needs probe.json and arrays.npz, as "
                             "`astroembed probe --save` writes).")
        try:
            spec = json.loads(spec_file.read_text())
            with np.load(array_file, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as err:
            raise ModelError(f"{path}: unreadable saved probe ({err}).") from err
        if spec.get("format") != PROBE_FORMAT or spec.get("version") != PROBE_VERSION:
            raise ModelError(f"{spec_file}: format {spec.get('format')!r} version "
                             f"{spec.get('version')!r}; expected {PROBE_FORMAT} version "
                             f"{PROBE_VERSION}.")
        missing = [a for a in spec.get("arrays", []) if a not in arrays]
        if missing:
            raise ModelError(f"{array_file}: missing arrays {', '.join(missing)}.")
        return cls(path=path, spec=spec, arrays=arrays)

    @property
    def modalities(self) -> list[str]:
        return list(self.spec["embedding_columns"])

    def predict(self, x: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Predictions for raw embeddings ``x`` (image then spectrum columns for ``both``).

        For a k-NN probe, rows whose ``ids`` are among its training rows are predicted
        leave-one-out (their own training row is not a neighbour): otherwise a k-NN probe
        applied to the catalog it was trained on would return the training targets exactly.
        """
        a, method = self.arrays, self.spec["method"]
        if x.shape[1] != self.spec["n_features"]:
            raise ModelError(f"{self.path}: the probe expects {self.spec['n_features']} "
                             f"embedding values per row, the catalog has {x.shape[1]}.")
        xs = (np.asarray(x, np.float64) - a["mean"]) / a["scale"]
        if method == "linear":
            return xs @ a["coef"] + a["intercept"][0]
        if method == "mlp":
            h = xs
            layers = self.spec["mlp_layers"]
            for i in range(layers):
                h = h @ a[f"W{i}"] + a[f"b{i}"]
                if i < layers - 1:
                    h = np.maximum(h, 0.0)
            return h[:, 0] * a["y_scale"][0] + a["y_mean"][0]
        if method == "knn":
            k = int(self.spec["k"])
            own = self._training_positions(ids, len(xs))
            dist, idx = self._neighbours(xs.astype(np.float32), k + int(own is not None))
            if own is not None:
                hit = idx == own[:, None]
                idx = np.where(hit, -1, idx)
                idx[~hit.any(axis=1), -1] = -1  # rows not in training: keep k neighbours
            return weighted_mean(dist, idx, a["train_y"])
        raise ModelError(f"{self.path}: unknown probe method {method!r}.")

    def _training_positions(self, ids: np.ndarray | None, n: int) -> np.ndarray | None:
        """Each row's position in the k-NN training set, -1 when it is not in it."""
        if ids is None or "train_ids" not in self.arrays:
            return None
        train = self.arrays["train_ids"]
        ids = np.asarray(ids).astype(train.dtype, copy=False)
        order = np.argsort(train, kind="stable")
        pos = np.clip(np.searchsorted(train[order], ids), 0, len(train) - 1)
        found = train[order][pos] == ids
        return np.where(found, order[pos], -1)

    def _neighbours(self, xs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances (1 - cos, or Euclidean) and training positions of the k nearest rows."""
        spec, a = self.spec, self.arrays
        k = min(k, len(a["train_y"]))
        if self._knn is None:
            if spec["index"] == "faiss":
                self._knn = FaissKNNRegressor(k, spec["metric"], spec.get("seed", 0))
                self._knn.fit(a["train_x"], a["train_y"])
            else:
                from sklearn.neighbors import NearestNeighbors
                from sklearn.preprocessing import normalize

                train = a["train_x"]
                self._knn = NearestNeighbors(algorithm="brute").fit(
                    normalize(train) if spec["metric"] == "cosine" else train)
        if isinstance(self._knn, FaissKNNRegressor):
            return self._knn.neighbours(xs, k)
        from sklearn.preprocessing import normalize

        cosine = spec["metric"] == "cosine"
        dist, idx = self._knn.kneighbors(normalize(xs) if cosine else xs, n_neighbors=k)
        return (np.square(dist) / 2.0 if cosine else dist), idx


# ----------------------------------------------------------------------------- predict

def _check_models(probe: SavedProbe, info: CatalogInfo) -> None:
    """ModelError when the catalog's embeddings come from another model than the probe's."""
    for column, want in probe.spec.get("models", {}).items():
        have = model_fingerprint(info, column)
        differ = {k for k in set(want) & set(have) if want[k] != have[k]}
        if differ:
            key = sorted(differ)[0]
            raise ModelError(f"{info.path}: column {column} was made by another model than the "
                             f"probe {probe.path} was trained on ({key}: {have[key]} here, "
                             f"{want[key]} in the probe); train a probe on these embeddings.")


def predict_catalog(catalog: str | os.PathLike, probe_path: str | os.PathLike,
                    column: str | None = None, overwrite: bool = False,
                    progress: Progress | None = None) -> dict:
    """Append the probe's prediction column to every tile, each tile written atomically.

    Like ``embed``: the catalog is marked incomplete while tiles are rewritten and its
    metadata refreshed at the end; a rerun after an interruption redoes every tile. Rows
    whose embeddings are null get a null prediction. A k-NN probe predicts the rows it was
    trained on (same ID) leave-one-out; ridge and MLP predictions of training rows are
    in-sample (the CV metrics in the probe's spec are the honest ones).
    """
    probe = SavedProbe.load(probe_path)
    info = read_catalog_info(catalog)
    spec = probe.spec
    column = column or f"pred_{spec['target']}"
    columns = spec["embedding_columns"]
    missing = [c for c in columns.values() if c not in info.schema.names]
    if missing:
        resolve_embeddings(info, [m for m, c in columns.items() if c in missing],
                           _name_of(missing[0]))
    _check_models(probe, info)
    probe_id = _probe_id(probe)
    id_column = spec.get("id_column")
    if id_column not in info.schema.names:
        id_column = None
    needed = {*columns.values(), *embedding_columns(info), info.ra_column, info.dec_column,
              "_healpix_29", id_column, spec["target"], "image", "flux", "ivar"}
    if column in needed:
        raise OutputError(f"--column {column}: would replace a column the catalog needs; "
                          "name another.")
    if column in info.schema.names:
        meta = info.schema.field(column).metadata or {}
        made_by = meta.get(b"astroembed_probe_id", b"").decode()
        if not made_by:
            raise OutputError(f"{info.path}: already has a column {column!r} that no probe "
                              "made; predict replaces only its own prediction columns. Name "
                              "another with --column.")
        if not (overwrite or made_by == probe_id):
            raise OutputError(f"{info.path}: already has a prediction column {column!r} from "
                              "another probe; pass --overwrite to replace it or --column to "
                              "name another.")
    field_meta = {b"astroembed_probe_id": probe_id.encode(),
                  b"astroembed_probe": json.dumps({k: spec[k] for k in (
                      "target", "features", "method", "k", "metric", "n_train")}
                      | {"path": str(probe.path), "cv_r2": spec["cv"].get("r2")}).encode()}
    from astroembed.catalog.lock import CatalogLock

    # Every tile is rewritten, so no other writer may change tiles meanwhile: the exclusive
    # catalog lock for the whole run, refused at once (exit 3) rather than waited for.
    with CatalogLock(info.path, "predict").exclusive():
        try:
            return _predict_tiles(info, probe, column, columns, id_column, field_meta,
                                  progress)
        except KeyboardInterrupt as err:
            signal_name = getattr(err, "signal_name", "SIGINT")
            raise InterruptedRun(
                f"{signal_name}: {info.path} keeps the column {column} in the tiles already "
                "rewritten and reads as incomplete; no work files were left. Run the same "
                "command again to redo every tile.") from None


def _predict_tiles(info: CatalogInfo, probe: SavedProbe, column: str, columns: dict[str, str],
                   id_column: str | None, field_meta: dict, progress: Progress | None) -> dict:
    """Rewrite every tile with the prediction column (batch by batch: a tile's cutouts and
    spectra need not fit in memory), then the catalog metadata."""
    import pyarrow as pa

    from astroembed.catalog.layout import PARTIAL, tile_path
    from astroembed.catalog.writer import mark_incomplete, refresh_catalog
    from astroembed.catalog.rewrite import rewrite_tile

    spec = probe.spec
    tiles = [t for t in info.tiles if info.rows.get(t, 0)]
    fld = pa.field(column, pa.float64(), metadata=field_meta)
    n_null = 0

    def predictions(batch: pa.RecordBatch) -> dict[str, pa.Array]:
        nonlocal n_null
        mats, valid = [], np.ones(batch.num_rows, bool)
        for modality in probe.modalities:
            x, ok = vectors(batch.column(columns[modality]))
            mats.append(x)
            valid &= ok
        pred = np.full(batch.num_rows, np.nan)
        if valid.any():
            ids = batch.column(id_column).to_numpy(zero_copy_only=False) if id_column else None
            pred[valid] = probe.predict(np.hstack(mats)[valid],
                                        None if ids is None else ids[valid])
        n_null += int((~valid).sum())
        return {column: pa.array(pred, pa.float64(), mask=~valid)}

    mark_incomplete(info.path)
    n_rows = 0
    for i, (order, pixel) in enumerate(tiles, start=1):
        n_rows += rewrite_tile(tile_path(info.path, order, pixel), [fld], predictions)
        if progress:
            progress("predict", i, len(tiles))
    provenance = dict(info.provenance or {})
    provenance.setdefault("predictions", {})[column] = json.loads(field_meta[b"astroembed_probe"])
    keep = {k: info.properties[k] for k in ("hats_max_rows",) if k in info.properties}
    # a partly embedded catalog stays so: its tiles still differ in their embedding columns
    refresh_catalog(info.path, provenance, extra_properties=keep,
                    partial=info.status == PARTIAL)
    return {"catalog": str(info.path), "column": column, "probe": str(probe.path),
            "target": spec["target"], "features": spec["features"], "method": spec["method"],
            "tiles": len(tiles), "rows": n_rows, "null": n_null}


def _name_of(column: str) -> str | None:
    """The ``--name`` suffix of an embedding column (None for the default columns)."""
    for modality in MODALITIES:
        stem = f"embedding_{modality}"
        if column.startswith(stem + "_"):
            return column[len(stem) + 1:]
    return None


def _probe_id(probe: SavedProbe) -> str:
    """A content hash of the saved probe, recorded with its prediction column."""
    import hashlib

    h = hashlib.sha256(json.dumps(probe.spec, sort_keys=True, default=str).encode())
    for key in sorted(probe.arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(probe.arrays[key]).tobytes())
    return h.hexdigest()[:16]


__all__ = ["FaissKNNRegressor", "ProbeData", "SavedProbe", "cross_validate", "fold_metrics",
           "load_probe_data", "make_estimator", "predict_catalog", "redshift_metrics",
           "run_probe", "summarise"]
