"""Predictive distributions: the metric functions against hand computations, the conformal
calibration on a target of known heteroscedastic noise, predict's interval columns, old
saved probes, and the AstroCLIP protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats
from sklearn.metrics import r2_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from astroembed.catalog.reader import read_catalog_info, read_tile
from astroembed.cli import app
from astroembed.probes.estimators import make_estimator, predict_with_spread
from astroembed.probes.metrics import (crps_quantiles, interval_metrics, ks_uniform,
                                       pit_histogram, quantile_weights, randomized_pit,
                                       summarise)
from astroembed.probes.saved import SavedProbe
from astroembed.probes.uncertainty import (QUANTILE_LEVELS, Calibration, cross_calibrate,
                                           score_rank)

from embedded_catalog import heteroscedastic, linear_catalog, vector_column, write_catalog

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------------------- metrics

def test_interval_metrics_by_hand():
    # inside: 1 in [0, 2]; 2 not in [2.5, 3]; 3 in [3, 3] (ends count); 4 not in [5, 6]
    m = interval_metrics(np.array([1.0, 2, 3, 4]), np.array([0.0, 2.5, 3, 5]),
                         np.array([2.0, 3, 3, 6]), 0.68)
    assert m == {"coverage_68": 0.5, "width_68": pytest.approx((2 + 0.5 + 0 + 1) / 4)}
    assert set(interval_metrics(np.zeros(1), np.zeros(1), np.ones(1), 0.997)) == {
        "coverage_99p7", "width_99p7"}


def test_pit_histogram_and_ks_by_hand():
    # bins of 0.1: 0.05 -> bin 0, 0.15 twice -> bin 1, 0.95 -> bin 9; density = count x 10 / 4
    assert pit_histogram(np.array([0.05, 0.15, 0.15, 0.95])) == [2.5, 5.0] + [0.0] * 7 + [2.5]
    assert ks_uniform(np.array([0.5])) == 0.5  # max(1 - 0.5, 0.5 - 0)
    u = np.random.default_rng(1).uniform(size=500) ** 1.2
    assert ks_uniform(u) == pytest.approx(stats.kstest(u, "uniform").statistic, abs=1e-12)


def test_randomized_pit_is_uniform_for_a_discrete_distribution():
    # Poisson(3) outcomes, their true CDF: F(y) alone piles up on the steps; the randomized
    # PIT is uniform (scipy's CDF is the oracle)
    y = np.random.default_rng(2).poisson(3.0, 20_000)
    below, at = stats.poisson.cdf(y - 1, 3.0), stats.poisson.cdf(y, 3.0)
    pit = randomized_pit(below, at, np.random.default_rng(3))
    assert np.all((pit >= below) & (pit <= at))
    assert stats.kstest(pit, "uniform").statistic < 0.015
    assert stats.kstest(at, "uniform").statistic > 0.1


def test_crps_from_quantiles_by_hand_and_against_the_gaussian_closed_form():
    # y = 0, quantiles -1, 0, 1 at 0.25, 0.5, 0.75; weights 0.375, 0.25, 0.375;
    # pinball: 1 x 0.25, 0, (-1) x (0.75 - 1) = 0.25 -> 2 x (0.25 x 0.375 x 2) = 0.375
    np.testing.assert_allclose(quantile_weights([0.25, 0.5, 0.75]), [0.375, 0.25, 0.375])
    assert crps_quantiles(np.zeros(1), np.array([[-1.0, 0, 1]]), [0.25, 0.5, 0.75]) == 0.375
    # N(0, s) forecast: CRPS = s (w (2 Phi(w) - 1) + 2 phi(w) - 1 / sqrt(pi)), w = y / s
    y, s = np.array([-1.0, 0.0, 0.3, 2.0]), 0.7
    w = y / s
    exact = s * (w * (2 * stats.norm.cdf(w) - 1) + 2 * stats.norm.pdf(w) - 1 / np.sqrt(np.pi))
    levels = (np.arange(2000) + 0.5) / 2000
    q = np.tile(stats.norm.ppf(levels, scale=s), (len(y), 1))
    assert crps_quantiles(y, q, levels) == pytest.approx(exact.mean(), rel=2e-3)


def test_summary_keeps_the_distribution_metrics():
    s = summarise([{"r2": 0.5, "rmse": 1.0, "coverage_68": 0.6, "crps": 0.1},
                   {"r2": 0.7, "rmse": 3.0, "coverage_68": 0.7, "crps": 0.3}])
    assert s["coverage_68"] == pytest.approx(0.65) and s["crps"] == pytest.approx(0.2)
    assert s["crps_std"] == pytest.approx(np.std([0.1, 0.3], ddof=1))


def test_conformal_ranks_by_hand():
    # 9 scores: 0.95 -> ceil(9.5) = 10 -> clipped to 9; 0.025 -> floor(0.25) = 0 -> 1;
    # 0.5 -> ceil(5) = 5; 0.84 -> ceil(8.4) = 9; 0.16 -> floor(1.6) = 1
    assert [score_rank(t, 9) for t in (0.95, 0.025, 0.5, 0.84, 0.16)] == [9, 1, 5, 9, 1]


def test_cross_calibration_never_uses_a_rows_own_group():
    # group 1's scores are 1..9, so group 0's 80% interval is [s_1, s_9] = centre + [1, 9]
    # whatever group 0's own residuals are (100 here)
    y = np.concatenate([[100.0, 100.0], np.arange(1.0, 10.0)])
    group = np.array([0, 0] + [1] * 9)
    oof = cross_calibrate(y, np.zeros(11), np.ones(11), group, (0.8,), seed=0)
    np.testing.assert_array_equal(oof.lower[0.8][:2], [1.0, 1.0])
    np.testing.assert_array_equal(oof.upper[0.8][:2], [9.0, 9.0])


# ------------------------------------------------- calibration on known heteroscedastic noise

@pytest.fixture(scope="module")
def calibrated():
    """A k-NN fitted on 20,000 rows, calibrated on 40,000 others, applied to 10,000 more.

    The PIT of test rows against an empirical calibration is a two-sample comparison: its KS
    distance from uniform scatters as sqrt(1/n_test + 1/n_cal); with 40,000 calibration rows
    a calibrated model passes the 0.02 bound with probability about 0.997 (with 10,000, only
    about 0.9)."""
    x, y, _ = heteroscedastic(20_000, seed=11)
    est = make_estimator("image", "knn", k=64, metric="euclidean", index="exact", seed=0,
                         n_features=2, n_train=len(y))
    est.fit(x, y)
    xc, yc, _ = heteroscedastic(40_000, seed=12)
    xt, yt, sigma = heteroscedastic(10_000, seed=13)
    cal = Calibration.from_residuals(yc, *predict_with_spread(est, xc, 1e-4))
    centre, scale = predict_with_spread(est, xt, 1e-4)
    return cal, centre, scale, yt, sigma


def test_intervals_cover_at_the_nominal_rate(calibrated):
    cal, centre, scale, y, sigma = calibrated
    for level, tol in ((0.68, 0.02), (0.95, 0.01)):
        lo, hi = cal.interval(centre, scale, level)
        assert abs(np.mean((y >= lo) & (y <= hi)) - level) <= tol
        # honest where the noise is small and where it is large, not only on average
        for part in (sigma < 0.17, sigma >= 0.17):
            assert abs(np.mean((y[part] >= lo[part]) & (y[part] <= hi[part])) - level) <= 0.05
    lo, hi = cal.interval(centre, scale, 0.68)
    # the width follows the true noise: 68% width ~ 2 sigma
    assert np.corrcoef(hi - lo, sigma)[0, 1] > 0.9


def test_randomized_pit_is_uniform_on_the_test_rows(calibrated):
    cal, centre, scale, y, _ = calibrated
    pit = cal.pit(y, centre, scale, np.random.default_rng(0))
    assert stats.kstest(pit, "uniform").statistic < 0.02


def test_intervals_and_quantiles_are_nested(calibrated):
    cal, centre, scale, _, _ = calibrated
    lo68, hi68 = cal.interval(centre, scale, 0.68)
    lo95, hi95 = cal.interval(centre, scale, 0.95)
    assert np.all((lo95 <= lo68) & (lo68 <= hi68) & (hi68 <= hi95))
    q = cal.quantiles(centre, scale, QUANTILE_LEVELS)
    assert np.all(np.diff(q, axis=1) >= 0)


# ----------------------------------------------------------------------------- probe report

def test_report_has_distribution_metrics_for_every_feature_set(tmp_path):
    path, _, _ = linear_catalog(tmp_path / "cat", n=400, dim=8)
    out = tmp_path / "out"
    result = run("probe", "-c", path, "-e", "image", "-m", "knn,linear", "--k", "16",
                 "--level", "0.5,0.9", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["levels"] == [0.5, 0.9] and doc["quantile_levels"] == list(QUANTILE_LEVELS)
    for r in doc["results"]:
        for key in ("r2", "sigma_nmad", "outlier_fraction", "bias", "coverage_50",
                    "width_50", "coverage_90", "width_90", "crps", "pit_ks"):
            assert r[key] is not None, (r["features"], key)
        assert len(r["pit_histogram"]) == 10
        assert sum(r["pit_histogram"]) == pytest.approx(10.0)
        # split-conformal: out-of-fold coverage near nominal on 400 rows
        assert abs(r["coverage_90"] - 0.9) < 0.06
    assert (out / "probe_Z_image_knn_pit.png").read_bytes()[:4] == b"\x89PNG"
    # the out-of-fold intervals written beside the predictions give the reported coverage
    # (5 folds of 80 rows: the mean over folds is the mean over rows)
    table = pq.read_table(out / "predictions.parquet")
    y = table.column("Z").to_numpy()
    for r in doc["results"]:
        name = f"pred_{r['features']}_{r['method']}"
        lo, hi = (table.column(f"{name}_{side}_90").to_numpy() for side in ("lower", "upper"))
        assert np.mean((y >= lo) & (y <= hi)) == pytest.approx(r["coverage_90"], abs=1e-12)
        q = np.stack(table.column(f"{name}_quantiles").to_pylist())
        assert q.shape == (400, len(QUANTILE_LEVELS)) and np.all(np.diff(q, axis=1) >= 0)
        assert r["pit_histogram"] == pytest.approx(
            list(np.histogram(table.column(f"{name}_pit").to_numpy(), 10, (0, 1))[0] / 40))


@pytest.mark.parametrize("level", ["0", "1", "1.5", "-0.2"])
def test_a_level_outside_0_1_is_refused_before_anything_is_written(tmp_path, level):
    path, _, _ = linear_catalog(tmp_path / "cat", n=100, dim=4)
    out = tmp_path / "out"
    result = run("probe", "-c", path, "--level", level, "--out", out)
    assert result.exit_code == 2 and "--level" in result.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- predict

def _catalog_with_a_null_row(path: Path, n: int = 300) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    z = 0.3 + 0.05 * x[:, 0] + 0.01 * rng.normal(size=n)
    valid = np.ones(n, bool)
    valid[7] = False
    write_catalog(path, {"TARGETID": np.arange(1000, 1000 + n, dtype=np.int64), "Z": z,
                         "ZWARN": np.zeros(n, np.int64),
                         "embedding_image": vector_column(x, valid)})
    return path, valid


def _read(path: Path, columns: list[str]) -> dict[str, list]:
    info = read_catalog_info(path)
    tables = [read_tile(path, *t, columns=columns) for t in info.tiles]
    return {c: sum((t.column(c).to_pylist() for t in tables), []) for c in columns}


def test_predict_writes_quantile_and_interval_columns(tmp_path):
    path, _ = _catalog_with_a_null_row(tmp_path / "cat")
    save = tmp_path / "probe"
    assert run("probe", "-c", path, "-m", "linear", "--save", save).exit_code == 0
    result = run("predict", "-c", path, "--probe", save, "--level", "0.5,0.9", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    names = ["pred_Z", "pred_Z_quantiles", "pred_Z_lower_50", "pred_Z_upper_50",
             "pred_Z_lower_90", "pred_Z_upper_90"]
    assert summary["calibrated"] and summary["columns"] == names and summary["null"] == 1
    info = read_catalog_info(path)
    meta = info.schema.field("pred_Z_quantiles").metadata
    assert json.loads(meta[b"astroembed_quantile_levels"]) == list(QUANTILE_LEVELS)
    assert info.schema.field("pred_Z_lower_90").metadata[b"astroembed_interval_level"] == b"0.9"
    cols = _read(path, ["TARGETID", *names])
    null = [i for i, t in enumerate(cols["TARGETID"]) if t == 1007]
    assert all(cols[c][null[0]] is None for c in names)  # no embedding: nulls, no interval
    # a ridge probe's distribution is its prediction plus the sorted calibration scores' order
    # statistics: lower 50% = floor(0.25 (n + 1)), upper 90% = ceil(0.95 (n + 1))
    with np.load(save / "arrays.npz") as npz:
        s = np.sort(npz["calibration_scores"])
    n = len(s)
    ok = [i for i in range(len(cols["pred_Z"])) if i not in null]
    pred = np.array([cols["pred_Z"][i] for i in ok])
    np.testing.assert_allclose([cols["pred_Z_lower_50"][i] for i in ok],
                               pred + s[int(np.floor(0.25 * (n + 1))) - 1])
    np.testing.assert_allclose([cols["pred_Z_upper_90"][i] for i in ok],
                               pred + s[int(np.ceil(0.95 * (n + 1))) - 1])
    q = np.array([cols["pred_Z_quantiles"][i] for i in ok])
    assert q.dtype == np.float64 and q.shape == (len(ok), len(QUANTILE_LEVELS))
    assert np.all(np.diff(q, axis=1) >= 0)


def test_a_bad_level_leaves_the_catalog_untouched(tmp_path):
    path, _ = _catalog_with_a_null_row(tmp_path / "cat")
    save = tmp_path / "probe"
    assert run("probe", "-c", path, "-m", "linear", "--save", save).exit_code == 0
    before = read_catalog_info(path).schema.names
    result = run("predict", "-c", path, "--probe", save, "--level", "95")
    assert result.exit_code == 2 and "--level 95" in result.stderr
    assert read_catalog_info(path).schema.names == before


def _make_old(save: Path) -> None:
    """Rewrite a saved probe as version 1 wrote it: no calibration in either file."""
    spec = json.loads((save / "probe.json").read_text())
    spec.pop("calibration")
    spec["version"] = 1
    spec["arrays"].remove("calibration_scores")
    (save / "probe.json").write_text(json.dumps(spec))
    with np.load(save / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "calibration_scores"}
    np.savez(save / "arrays.npz", **arrays)


def test_a_probe_saved_without_calibration_still_predicts(tmp_path):
    path, _ = _catalog_with_a_null_row(tmp_path / "cat")
    save = tmp_path / "probe"
    assert run("probe", "-c", path, "-m", "knn", "--k", "8", "--save", save).exit_code == 0
    new = SavedProbe.load(save)
    x = np.random.default_rng(0).normal(size=(20, 4))
    expected = new.predict(x)
    _make_old(save)
    old = SavedProbe.load(save)
    assert old.spec["version"] == 1 and old.calibration is None
    np.testing.assert_array_equal(old.predict(x), expected)
    result = run("predict", "-c", path, "--probe", save, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["calibrated"] is False and summary["columns"] == ["pred_Z"]
    assert "no calibration" in summary["notes"][0]
    names = read_catalog_info(path).schema.names
    assert "pred_Z" in names and not any(c.startswith("pred_Z_") for c in names)


# ----------------------------------------------------------------------------- protocol

def test_astroclip_protocol_is_the_papers_setup(tmp_path):
    mlp = make_estimator("image", "mlp", k=64, metric="cosine", index="exact", seed=0,
                         n_features=8, n_train=100, protocol="astroclip").regressor["mlp"]
    assert (mlp.hidden_layer_sizes, mlp.max_iter, mlp.solver, mlp.learning_rate_init,
            mlp.early_stopping) == ((32,), 10, "adam", 1e-3, False)
    mlp = make_estimator("spectrum", "mlp", k=64, metric="cosine", index="exact", seed=0,
                         n_features=8, n_train=100, protocol="astroclip").regressor["mlp"]
    assert mlp.hidden_layer_sizes == (64, 64)

    path, x, z = linear_catalog(tmp_path / "cat", n=500, dim=8)
    out = tmp_path / "out"
    save = tmp_path / "saved"
    result = run("probe", "-c", path, "-e", "image", "-m", "knn,mlp", "--protocol", "astroclip",
                 "--k", "5", "--metric", "cosine", "--no-baselines", "--out", out, "--save", save,
                 "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["protocol"] == "astroclip" and doc["k"] == 64 and doc["metric"] == "euclidean"
    assert doc["n_test"] == 100 and doc["folds"] == 1
    table = pq.read_table(out / "predictions.parquet").to_pandas()
    test = table["fold"].to_numpy() == 0
    assert test.sum() == 100 and np.isnan(table["pred_image_knn"][~test]).all()
    assert table["pred_image_knn_lower_68"][~test].isna().all()
    assert table["pred_image_knn_lower_68"][test].notna().all()
    # the paper's zero-shot probe, by scikit-learn: scaler and k-NN fitted on the 80%
    xi = x[table["TARGETID"].to_numpy() - 1000]
    zz = table["Z"].to_numpy()
    scaler = StandardScaler().fit(xi[~test])
    knn = KNeighborsRegressor(64, weights="distance").fit(scaler.transform(xi[~test]), zz[~test])
    expected = knn.predict(scaler.transform(xi[test]))
    np.testing.assert_allclose(table["pred_image_knn"][test], expected, rtol=1e-6)
    knn_result = next(r for r in doc["results"] if r["method"] == "knn")
    assert knn_result["r2"] == pytest.approx(r2_score(zz[test], expected), rel=1e-6)
    assert knn_result["coverage_68"] is not None
    saved = SavedProbe.load(save)
    assert saved.spec["protocol"] == "astroclip" and saved.spec["k"] == 64
    assert saved.spec["calibration"]["n"] == 100  # the test rows' scores
    if saved.spec["method"] == "mlp":
        assert saved.spec["mlp_layers"] == 2  # [32] hidden + output


def test_a_row_without_a_prediction_gets_no_distribution():
    # row 0 has no prediction (NaN centre): it neither calibrates the others nor gets an
    # interval, a PIT or a CRPS term; the rest are calibrated as without it
    y = np.arange(12.0)
    centre = np.where(np.arange(12) == 0, np.nan, y - 0.5)
    group = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    oof = cross_calibrate(y, centre, np.ones(12), group, (0.5,), seed=0)
    assert np.isnan(oof.pit[0]) and np.isnan(oof.lower[0.5][0])
    assert np.isfinite(oof.pit[1:]).all() and np.isfinite(oof.quantiles[1:]).all()
    # every score is 0.5, so every interval is [y, y]: all covered
    from astroembed.probes.uncertainty import distribution_metrics

    m = distribution_metrics(y, oof, np.arange(12) > 0, (0.5,))
    assert m["coverage_50"] == 1.0 and m["crps"] == pytest.approx(0.0)


@pytest.mark.parametrize("features, metric, index", [
    ("image", "cosine", "exact"), ("image", "euclidean", "exact"),
    ("photometry", "cosine", "exact"), ("image", "cosine", "faiss")])
def test_spread_comes_with_the_same_point_prediction(features, metric, index):
    if index == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(600, 5)).astype(np.float32), rng.uniform(size=600)
    est = make_estimator(features, "knn", k=10, metric=metric, index=index, seed=0,
                         n_features=5, n_train=500)
    est.fit(x[:500], y[:500])
    pred, spread = predict_with_spread(est, x[500:], 0.0)
    np.testing.assert_allclose(pred, est.predict(x[500:]), rtol=1e-12)
    # the spread is the population standard deviation of the 10 neighbours' targets, found
    # here by scikit-learn's brute force on the same transformed features
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import normalize

    xt = est[:-1].transform(x)
    if metric == "cosine" and features == "image":
        xt = normalize(xt)
    _, idx = NearestNeighbors(n_neighbors=10).fit(xt[:500]).kneighbors(xt[500:])
    expected = y[:500][idx].std(axis=1)
    if index == "faiss":  # approximate neighbours: most rows agree exactly
        assert np.mean(np.isclose(spread, expected)) > 0.9
    else:
        np.testing.assert_allclose(spread, expected, rtol=1e-9)
