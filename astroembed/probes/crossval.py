"""The probe run: k-fold cross-validation of every feature set and method.

See docs/architecture.md. A seeded, shuffled k-fold split, the same for every feature set,
gives out-of-fold predictions for every usable row and per-fold metrics, reported as mean and
fold-to-fold standard deviation; each fold's predictive distributions are calibrated on the
other folds' out-of-fold residuals (:mod:`astroembed.probes.uncertainty`). ``--protocol
astroclip`` replaces the folds by one seeded 80/20 split. Each fold gets a fresh estimator
fitted on the other folds only; :func:`cross_validate` can return the fitted estimators so a test can check that.
:func:`prepare_probe` checks every argument before any fitting; :func:`run_probe` runs the
plan, then writes the report (:mod:`astroembed.probes.report`) and saves the best probe
(:mod:`astroembed.probes.saved`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astroembed.config import ProbeConfig
from astroembed.errors import ConfigError, InputError
from astroembed.catalog.reader import CatalogInfo, read_catalog_info
from astroembed.catalog.paths import check_output_dir
from astroembed.probes.estimators import (ASTROCLIP_K, ASTROCLIP_METRIC, blas_threads,
                                          make_estimator, predict_with_spread)
from astroembed.probes.features import BASELINES, ProbeData, load_probe_data
from astroembed.probes.metrics import fold_metrics, pit_histogram, summarise
from astroembed.probes.uncertainty import (CALIBRATION_METHOD, QUANTILE_LEVELS,
                                           cross_calibrate, distribution_metrics, scale_floor)
from astroembed.probes.report import check_outputs, write_outputs
from astroembed.probes.saved import save_best

log = logging.getLogger("astroembed")
Progress = Callable[[str, int, int], None]

#: ``--index auto``: k-NN on faiss above this many usable rows (exact k-NN costs O(N^2)).
EXACT_KNN_MAX_ROWS = 200_000


def fold_indices(n: int, folds: int, seed: int) -> np.ndarray:
    """The fold of each row (seeded, shuffled KFold): the same for every feature set."""
    from sklearn.model_selection import KFold

    fold = np.empty(n, np.int16)
    splits = KFold(folds, shuffle=True, random_state=seed).split(np.arange(n))
    for i, (_, test) in enumerate(splits):
        fold[test] = i
    return fold


#: ``--protocol astroclip``: the fraction of rows held out as the test set.
ASTROCLIP_TEST_FRACTION = 0.2


def holdout_indices(n: int, seed: int, test_fraction: float = ASTROCLIP_TEST_FRACTION
                    ) -> np.ndarray:
    """One seeded train/test split as a fold array: 0 for the test rows, -1 for training
    (``cross_validate`` then fits once, on every row outside fold 0)."""
    fold = np.full(n, -1, np.int16)
    test = np.random.default_rng(seed).permutation(n)[:math.ceil(n * test_fraction)]
    fold[test] = 0
    return fold


def calibration_groups(fold: np.ndarray, seed: int) -> np.ndarray:
    """Which rows calibrate which: the folds themselves (each fold's rows calibrated on the
    other folds' out-of-fold residuals); with a single test fold, its rows in two seeded
    halves that calibrate each other. -1: no prediction, no calibration."""
    if fold.max() > 0:
        return fold
    group = np.full(len(fold), -1, np.int16)
    test = np.flatnonzero(fold == 0)
    half = np.random.default_rng(seed + 1).permutation(len(test)) % 2
    group[test] = half
    return group


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


def check_target_varies(y: np.ndarray, target: str, cfg: ProbeConfig) -> None:
    """InputError when every usable row has the same target: R^2 is undefined and any
    probe would look perfect."""
    if len(y) and np.all(y == y[0]):
        raise InputError(f"{cfg.catalog}: the target column {target} is {y[0]:g} in every "
                         f"one of the {len(y)} usable rows; there is nothing to predict. "
                         "Choose another --target.")


def cross_validate(x: np.ndarray, y: np.ndarray, fold: np.ndarray, make: Callable[[int], object],
                   redshift: bool, progress: Callable[[], None] | None = None,
                   keep_estimators: bool = False, threads: int | None = None,
                   spread: np.ndarray | None = None, floor: float = 0.0
                   ) -> tuple[np.ndarray, list[dict], list]:
    """Out-of-fold predictions and per-fold metrics of the estimator ``make(n_train)``.

    Each fold gets a fresh estimator fitted on the other folds only (``threads``: BLAS
    thread limit, see :func:`blas_threads`). Fold ``-1`` rows only train. With ``spread``,
    each test row's predictive scale is written into it (see :func:`predict_with_spread`;
    ``floor``: the smallest k-NN scale). Returns
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
            if spread is None:
                pred[test] = est.predict(x[test])
            else:
                pred[test], spread[test] = predict_with_spread(est, x[test], floor)
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


def protocol_config(cfg: ProbeConfig) -> ProbeConfig:
    """``--protocol astroclip`` fixes the k-NN to the paper's (k=64, Euclidean) and scores
    one 80/20 split (``folds`` 1 in the report); ``kfold`` leaves ``cfg`` as it is."""
    if cfg.protocol != "astroclip":
        return cfg
    return dataclasses.replace(cfg, k=ASTROCLIP_K, metric=ASTROCLIP_METRIC, folds=1)


def prepare_probe(cfg: ProbeConfig) -> ProbePlan:
    """Read the catalog and check every argument against it, before any fitting starts.

    Separate from :func:`run_probe` so that the CLI reports a bad argument as one line before
    it draws a progress bar.
    """
    cfg.validate()
    cfg = protocol_config(cfg)
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
    check_sizes(n, cfg if cfg.protocol == "kfold" else
                dataclasses.replace(cfg, folds=round(1 / ASTROCLIP_TEST_FRACTION)),
                [m for _, m in runs])
    check_target_varies(data.y, data.target, cfg)
    check_outputs(cfg, data.target, runs)
    index = _index_kind(cfg, n)
    fold = (fold_indices(n, cfg.folds, cfg.seed) if cfg.protocol == "kfold"
            else holdout_indices(n, cfg.seed))
    return ProbePlan(cfg=cfg, info=info, data=data, runs=runs, index=index, fold=fold,
                     seconds=time.perf_counter() - start)


def run_probe(cfg: ProbeConfig, progress: Progress | None = None,
              prepared: ProbePlan | None = None) -> dict:
    """Cross-validate every requested feature set and method; write outputs; save a probe.

    Returns the JSON document described in docs/architecture.md (plus extra keys: ``rmse``,
    ``n_features``, ``seconds`` and per-fold metrics per result; ``columns``, ``outputs``,
    ``saved``, ``notes`` at the top).
    """
    p = prepared or prepare_probe(cfg)
    cfg, info, data, plan, index, fold = p.cfg, p.info, p.data, p.runs, p.index, p.fold
    start = time.perf_counter() - p.seconds
    n = len(data.y)
    n_folds = int(fold.max()) + 1
    done, total = 0, len(plan) * n_folds
    groups = calibration_groups(fold, cfg.seed)
    levels = tuple(float(t) for t in cfg.levels)
    floor = scale_floor(data.y)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress("probe", done, total)

    results, predictions, dists, scales = [], {}, {}, {}
    for features, method in plan:
        x = data.features[features]
        t0 = time.perf_counter()
        spread = np.full(n, np.nan)
        pred, per_fold, _ = cross_validate(
            x, data.y, fold,
            lambda n_train, f=features, m=method: make_estimator(
                f, m, k=cfg.k, metric=cfg.metric, index=index, seed=cfg.seed,
                n_features=x.shape[1], n_train=n_train, protocol=cfg.protocol),
            data.redshift, tick, threads=blas_threads(method), spread=spread, floor=floor)
        oof = cross_calibrate(data.y, pred, spread, groups, levels, cfg.seed)
        for f, metrics in enumerate(per_fold):
            metrics |= distribution_metrics(data.y, oof, fold == f, levels)
        scored = groups >= 0
        predictions[(features, method)] = pred
        if cfg.out:
            oof.quantiles = oof.quantiles.astype(np.float32)  # as predict stores them
            dists[(features, method)] = oof
        scales[(features, method)] = spread
        results.append({"features": features, "method": method} | summarise(per_fold)
                       | {"n_features": int(x.shape[1]),
                          "seconds": round(time.perf_counter() - t0, 3),
                          "pit_histogram": pit_histogram(oof.pit[scored]),
                          "folds": per_fold})
    doc = {"target": data.target, "n_rows": n, "excluded": data.excluded, "folds": cfg.folds,
           "seed": cfg.seed, "results": results, "catalog": str(info.path),
           "n_catalog_rows": data.n_catalog_rows, "id_column": data.id_column,
           "columns": data.embedding_columns, "k": cfg.k, "metric": cfg.metric,
           "index": index, "redshift": data.redshift, "notes": data.notes, "outputs": {},
           "saved": None, "protocol": cfg.protocol, "levels": list(levels),
           "quantile_levels": list(QUANTILE_LEVELS), "calibration": CALIBRATION_METHOD,
           "n_test": int((fold >= 0).sum())}
    if cfg.save:
        doc["saved"] = save_best(cfg, data, results, index, predictions, scales, groups)
    if cfg.out:
        doc["outputs"] = write_outputs(Path(cfg.out), data, fold, predictions, doc, dists)
    doc["seconds"] = round(time.perf_counter() - start, 3)
    return doc


__all__ = ["ProbePlan", "calibration_groups", "check_sizes", "check_target_varies",
           "cross_validate", "fold_indices", "holdout_indices", "prepare_probe",
           "protocol_config", "run_probe"]
