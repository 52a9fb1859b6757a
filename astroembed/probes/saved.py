"""Saved probes: the best embedding probe refitted on every usable row and saved without
pickle, and loaded back to predict.

``MODEL/probe.json`` holds what it is, the embedding columns and model metadata it was
trained on and its CV metrics; ``MODEL/arrays.npz`` the standardiser, the weights or the
k-NN training set, loaded with ``allow_pickle=False``. Version 2 adds the calibration of its
predictive distribution (``calibration`` in probe.json, the sorted out-of-fold scores
``calibration_scores`` in arrays.npz); a version 1 probe still predicts point values and
reports itself uncalibrated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astroembed.config import ProbeConfig
from astroembed.errors import ModelError, OutputError
from astroembed.probes.estimators import (
    FaissKNNRegressor,
    blas_threads,
    make_estimator,
    weighted_mean,
)
from astroembed.probes.uncertainty import (
    CALIBRATION_METHOD,
    Calibration,
    neighbour_spread,
    scale_floor,
)
from astroembed.probes.features import BASELINES, ProbeData
from astroembed.stamps import astroembed_version

PROBE_FORMAT = "astroembed-probe"
PROBE_VERSION = 2
#: Versions :meth:`SavedProbe.load` reads (1: no calibration, point predictions only).
READABLE_VERSIONS = (1, 2)


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


def save_best(cfg: ProbeConfig, data: ProbeData, results: list[dict], index: str,
              predictions: dict, scales: dict, groups: np.ndarray) -> dict:
    """Refit the best embedding probe on every usable row and save it to ``cfg.save``, with
    the calibration of its out-of-fold residuals (``predictions`` and ``scales`` per
    ``(features, method)``; rows with ``groups`` >= 0 were predicted out of fold)."""
    from astroembed.catalog.atomic import atomic_directory
    from astroembed.catalog.outputs import SAVED_PROBE, claim_directory, may_replace

    best = _best(results)
    features, method = best["features"], best["method"]
    x, y = data.features[features], data.y
    est = make_estimator(features, method, k=cfg.k, metric=cfg.metric, index=index,
                         seed=cfg.seed, n_features=x.shape[1], n_train=len(y),
                         protocol=cfg.protocol)
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
        "metric": cfg.metric, "index": index, "seed": cfg.seed, "protocol": cfg.protocol,
        "cv": {k: v for k, v in best.items() if k not in ("folds",)},
        "catalog": str(data_path(cfg)), "astroembed_version": astroembed_version(),
        "arrays": sorted(arrays), "mlp_layers": sum(1 for a in arrays if a.startswith("W")),
    }
    scored = groups >= 0
    cal = Calibration.from_residuals(y[scored], predictions[(features, method)][scored],
                                     scales[(features, method)][scored])
    arrays["calibration_scores"] = cal.scores
    spec["arrays"] = sorted(arrays)
    spec["calibration"] = {"method": CALIBRATION_METHOD, "n": int(len(cal.scores)),
                           "scale": "neighbour_std" if method == "knn" else "constant",
                           "scale_floor": scale_floor(y), "protocol": cfg.protocol,
                           "levels": [float(t) for t in cfg.levels]}
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
    """The catalog the probe was trained on, absolute, so the record holds wherever it is read."""
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
        if spec.get("format") != PROBE_FORMAT or spec.get("version") not in READABLE_VERSIONS:
            raise ModelError(f"{spec_file}: format {spec.get('format')!r} version "
                             f"{spec.get('version')!r}; expected {PROBE_FORMAT} version "
                             f"{' or '.join(map(str, READABLE_VERSIONS))}.")
        missing = [a for a in spec.get("arrays", []) if a not in arrays]
        if missing:
            raise ModelError(f"{array_file}: missing arrays {', '.join(missing)}.")
        return cls(path=path, spec=spec, arrays=arrays)

    @property
    def modalities(self) -> list[str]:
        return list(self.spec["embedding_columns"])

    @property
    def calibration(self) -> Calibration | None:
        """The predictive distribution's calibration; None for a probe saved without one."""
        scores = self.arrays.get("calibration_scores")
        if "calibration" not in self.spec or scores is None or not len(scores):
            return None
        return Calibration(np.asarray(scores, np.float64))

    def predict(self, x: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Predictions for raw embeddings ``x`` (image then spectrum columns for ``both``).

        For a k-NN probe, rows whose ``ids`` are among its training rows are predicted
        leave-one-out (their own training row is not a neighbour): otherwise a k-NN probe
        applied to the catalog it was trained on would return the training targets exactly.
        """
        return self.predict_with_scale(x, ids)[0]

    def predict_with_scale(self, x: np.ndarray, ids: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
        """``(centre, scale)`` of each row's predictive distribution (see :meth:`predict`;
        scale: the k-NN neighbours' target spread, 1 for ridge and MLP)."""
        a, method = self.arrays, self.spec["method"]
        if x.shape[1] != self.spec["n_features"]:
            raise ModelError(f"{self.path}: the probe expects {self.spec['n_features']} "
                             f"embedding values per row, the catalog has {x.shape[1]}.")
        xs = (np.asarray(x, np.float64) - a["mean"]) / a["scale"]
        ones = np.ones(len(xs))
        if method == "linear":
            return xs @ a["coef"] + a["intercept"][0], ones
        if method == "mlp":
            h = xs
            layers = self.spec["mlp_layers"]
            for i in range(layers):
                h = h @ a[f"W{i}"] + a[f"b{i}"]
                if i < layers - 1:
                    h = np.maximum(h, 0.0)
            return h[:, 0] * a["y_scale"][0] + a["y_mean"][0], ones
        if method == "knn":
            k = int(self.spec["k"])
            own = self._training_positions(ids, len(xs))
            dist, idx = self._neighbours(xs.astype(np.float32), k + int(own is not None))
            if own is not None:
                hit = idx == own[:, None]
                idx = np.where(hit, -1, idx)
                idx[~hit.any(axis=1), -1] = -1  # rows not in training: keep k neighbours
            floor = self.spec.get("calibration", {}).get("scale_floor", 0.0)
            return (weighted_mean(dist, idx, a["train_y"]),
                    neighbour_spread(idx, np.asarray(a["train_y"], np.float64), floor))
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


__all__ = ["SavedProbe", "fitted_arrays", "save_best"]
