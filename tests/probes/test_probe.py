"""Probes: known relations recovered, no leakage between folds, JSON of the documented shape,
saved probes without pickle, predictions appended to every tile, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import r2_score
from typer.testing import CliRunner

from astroembed.cli import app
from astroembed.config import ProbeConfig
from astroembed.errors import ConfigError, InputError, ModelError
from astroembed.catalog.reader import read_catalog_info, read_tile
from astroembed.probes.crossval import cross_validate, fold_indices, run_probe
from astroembed.probes.estimators import make_estimator
from astroembed.probes.metrics import fold_metrics, r2, summarise
from astroembed.similarity import normalise, partner_ranks, retrieval_rates
from astroembed.probes.saved import SavedProbe

from embedded_catalog import (baseline_catalog, linear_catalog, partner_catalog, vector_column,
                              write_catalog)

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def linear(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    return linear_catalog(tmp_path_factory.mktemp("lin") / "cat", n=600, dim=16)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    return baseline_catalog(tmp_path_factory.mktemp("base") / "cat", n=300)


# ----------------------------------------------------------------------------- metrics

def test_metrics_equal_a_hand_computation():
    # e = dz / (1 + z) = 0.02, 0, -0.02, 0.04, 0.25 -> median 0.02 (the bias);
    # |e - 0.02| = 0, 0.02, 0.04, 0.02, 0.23 -> median 0.02 -> sigma_NMAD = 1.4826 x 0.02;
    # only |0.25| > 0.15 is an outlier. mean z = 0.95, SS_tot = 5.8, SS_res = 1.0077.
    z = np.array([0.0, 0.25, 0.5, 1.0, 3.0])
    zp = np.array([0.02, 0.25, 0.47, 1.08, 4.0])
    m = fold_metrics(z, zp, redshift=True)
    assert m["sigma_nmad"] == pytest.approx(0.029652, rel=1e-9)
    assert m["bias"] == pytest.approx(0.02, rel=1e-9)
    assert m["outlier_fraction"] == 0.2
    assert m["r2"] == pytest.approx(1 - 1.0077 / 5.8, rel=1e-9)
    assert m["rmse"] == pytest.approx(np.sqrt(1.0077 / 5), rel=1e-9)
    assert set(fold_metrics(z, zp, redshift=False)) == {"r2", "rmse"}


def test_r2_equals_scikit_learns():
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    p = y + rng.normal(scale=0.5, size=200)
    assert r2(y, p) == pytest.approx(r2_score(y, p), rel=1e-12)


def test_summary_is_the_fold_mean_and_its_sample_spread():
    folds = [{"r2": 0.5, "rmse": 1.0}, {"r2": 0.7, "rmse": 3.0}]
    s = summarise(folds)
    assert s["r2"] == pytest.approx(0.6) and s["r2_std"] == pytest.approx(np.sqrt(0.02))
    assert s["rmse"] == 2.0 and s["rmse_std"] == pytest.approx(np.sqrt(2.0))
    assert s["sigma_nmad"] is None and s["sigma_nmad_std"] is None


def test_retrieval_rates_count_ranks_by_hand():
    # 300 candidates: the top 1% is the best 3 (rank 0, 1 or 2)
    ranks = np.array([0, 0, 1, 2, 3, 9, 10, 299])
    rates = retrieval_rates(ranks, 300)
    assert rates["top1"] == 2 / 8 and rates["top10"] == 6 / 8 and rates["top1pct"] == 4 / 8
    assert rates["median_rank"] == 3.5 and rates["mean_rank"] == pytest.approx(324 / 8 + 1)


def test_partner_ranks_count_better_candidates():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.9]])  # query 0's partner is orthogonal
    assert partner_ranks(a, normalise(b)).tolist() == [1, 0, 0]


# ----------------------------------------------------------------------------- what probes find

def test_linear_relation_is_recovered(linear):
    path, _, _ = linear
    doc = run_probe(ProbeConfig(catalog=str(path), embedding=("image",),
                                method=("linear", "mlp"), baselines=False))
    r2 = {r["method"]: r["r2"] for r in doc["results"]}
    assert r2["linear"] > 0.98
    assert r2["mlp"] > 0.9
    assert all(r["r2_std"] < 0.05 for r in doc["results"])


def test_shuffled_target_gives_r2_near_zero(tmp_path):
    path, _, _ = linear_catalog(tmp_path / "cat", n=600, dim=16, shuffle_target=True)
    doc = run_probe(ProbeConfig(catalog=str(path), embedding=("image",),
                                method=("knn", "linear"), baselines=False))
    for r in doc["results"]:
        assert abs(r["r2"]) < 0.1, r


def test_baselines_see_colours_and_spectra_and_noise_embeddings_see_nothing(baseline):
    doc = run_probe(ProbeConfig(catalog=str(baseline), k=16, metric="euclidean"))
    r2 = {r["features"]: r["r2"] for r in doc["results"]}
    assert set(r2) == {"image", "photometry", "spectrum_pca"}
    assert r2["photometry"] > 0.8       # needs MW_TRANSMISSION-corrected colours
    assert r2["spectrum_pca"] > 0.9     # the line position
    assert r2["image"] < 0.1            # pure noise


@pytest.mark.parametrize("features, width, sklearn_metric", [
    ("image", 12, "cosine"),         # embeddings: the --metric asked for (cosine)
    ("photometry", 5, "euclidean"),  # baselines: Euclidean whatever --metric says
])
def test_knn_matches_scikit_learn_with_the_metric_of_its_features(features, width,
                                                                   sklearn_metric):
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, width)).astype(np.float32)
    y = x[:, 0] + x[:, 1] ** 2 + 0.1 * rng.normal(size=300)
    ours = make_estimator(features, "knn", k=10, metric="cosine", index="exact", seed=0,
                          n_features=width, n_train=200).fit(x[:200], y[:200])
    ref = make_pipeline(StandardScaler(), KNeighborsRegressor(
        10, weights="distance", metric=sklearn_metric, algorithm="brute")).fit(x[:200], y[:200])
    np.testing.assert_allclose(ours.predict(x[200:]), ref.predict(x[200:]), rtol=1e-4, atol=1e-6)


def test_faiss_knn_close_to_exact():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1]
    fold = fold_indices(len(y), 5, 0)
    preds = {}
    for index in ("exact", "faiss"):
        preds[index], per_fold, _ = cross_validate(
            x, y, fold, lambda n, i=index: make_estimator("image", "knn", k=32, metric="cosine",
                                                          index=i, seed=0, n_features=16, n_train=n),
            redshift=False)
    r2 = {k: 1 - np.mean((p - y) ** 2) / np.var(y) for k, p in preds.items()}
    assert r2["faiss"] == pytest.approx(r2["exact"], abs=0.03)
    # probing every list makes the index exhaustive: the exact predictions, to rounding
    from astroembed.probes.estimators import FaissKNNRegressor

    exact = make_estimator("image", "knn", k=32, metric="cosine", index="exact", seed=0,
                           n_features=16, n_train=2400).fit(x[:2400], y[:2400])
    approx = make_estimator("image", "knn", k=32, metric="cosine", index="faiss", seed=0,
                            n_features=16, n_train=2400).fit(x[:2400], y[:2400])
    knn = approx.named_steps["knn"]
    assert isinstance(knn, FaissKNNRegressor)
    knn.index_.nprobe = knn.index_.nlist
    np.testing.assert_allclose(approx.predict(x[2400:]), exact.predict(x[2400:]), rtol=1e-4)
    # the same for the PQ fast-scan index when every list is probed and every candidate re-ranked
    import faiss

    knn.set_params(fast_scan=True)
    approx.fit(x[:2400], y[:2400])
    pq = approx.named_steps["knn"].index_
    assert "Refine" in type(pq).__name__
    fast = approx.predict(x[2400:])
    assert 1 - np.mean((fast - y[2400:]) ** 2) / np.var(y[2400:]) == pytest.approx(
        1 - np.mean((exact.predict(x[2400:]) - y[2400:]) ** 2) / np.var(y[2400:]), abs=0.03)
    ivf = faiss.extract_index_ivf(pq)
    ivf.nprobe = ivf.nlist
    pq.k_factor = 2400 / 32
    np.testing.assert_allclose(approx.predict(x[2400:]), exact.predict(x[2400:]), rtol=1e-4)


# ----------------------------------------------------------------------------- no leakage

@pytest.mark.parametrize("method", ["knn", "linear", "mlp"])
def test_no_leakage_between_folds(method):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(250, 6)).astype(np.float32)
    x[:50] += 10.0  # test fold 0 far from the rest: its statistics would move a leaky scaler
    y = x[:, 0] * 0.3 + rng.normal(size=250) * 0.1
    fold = np.repeat(np.arange(5), 50)
    make = lambda n: make_estimator("image", method, k=20, metric="cosine", index="exact",  # noqa: E731
                                    seed=0, n_features=6, n_train=n)
    pred, _, fitted = cross_validate(x, y, fold, make, redshift=False, keep_estimators=True)
    for f, est in enumerate(fitted):
        pipe = est.regressor_ if method == "mlp" else est
        scaler = pipe.named_steps["scale"]
        train = fold != f
        np.testing.assert_allclose(scaler.mean_, x[train].mean(axis=0), rtol=1e-5, atol=1e-5)
        assert scaler.n_samples_seen_ == train.sum()
    # Changing the targets of fold 0 must not change fold 0's predictions.
    y2 = y.copy()
    y2[fold == 0] = rng.normal(size=50) * 100
    pred2, _, _ = cross_validate(x, y2, fold, make, redshift=False)
    np.testing.assert_allclose(pred2[fold == 0], pred[fold == 0])
    if method != "knn":  # (fold 0 lies far away, so it is nobody's k-NN neighbour)
        assert not np.allclose(pred2[fold != 0], pred[fold != 0])  # the check can fail


# ----------------------------------------------------------------------------- excluded rows

def test_unusable_rows_are_excluded_and_counted(tmp_path):
    n = 200
    rng = np.random.default_rng(6)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    z = rng.uniform(0.05, 0.5, n)
    zwarn = np.zeros(n, np.int64)
    zwarn[:7] = 4
    z[7:10] = np.nan
    valid = np.ones(n, bool)
    valid[10:15] = False
    valid[0] = False  # also ZWARN: counted once, under ZWARN
    write_catalog(tmp_path / "cat", {"TARGETID": np.arange(n, dtype=np.int64), "Z": z,
                                     "ZWARN": zwarn, "embedding_image": vector_column(x, valid)})
    doc = run_probe(ProbeConfig(catalog=str(tmp_path / "cat"), k=8, baselines=False))
    assert doc["excluded"] == {"ZWARN": 7, "star": 0, "nan": 3, "no_embedding": 5}
    assert doc["n_rows"] == n - 15 and doc["n_catalog_rows"] == n


def _catalog_with_stars(path: Path) -> tuple[Path, np.ndarray]:
    """200 rows, of which rows 0-11 are stars (SPECTYPE as FITS pads it, suffixed as a
    cross-match writes it) and row 3 is also ZWARN != 0; returns the star flags."""
    n = 200
    rng = np.random.default_rng(9)
    spectype = np.array(["GALAXY    "] * n, dtype=object)
    spectype[:12] = "STAR      "
    spectype[12:15] = "QSO       "
    zwarn = np.zeros(n, np.int64)
    zwarn[3] = 4
    write_catalog(path, {"TARGETID": np.arange(n, dtype=np.int64),
                         "Z_right": np.where(np.arange(n) < 12, 1e-4, rng.uniform(0.05, 0.5, n)),
                         "ZWARN": zwarn, "SPECTYPE_right": spectype,
                         "embedding_image": vector_column(rng.normal(size=(n, 8)))})
    return path, np.arange(n) < 12


def test_stars_are_left_out_of_a_redshift_probe_and_counted(tmp_path):
    path, star = _catalog_with_stars(tmp_path / "cat")
    doc = run_probe(ProbeConfig(catalog=str(path), k=8, baselines=False))
    assert doc["target"] == "Z_right"
    assert doc["excluded"] == {"ZWARN": 1, "star": 11, "nan": 0, "no_embedding": 0}
    assert doc["n_rows"] == 200 - 12
    kept = run_probe(ProbeConfig(catalog=str(path), k=8, baselines=False, keep_stars=True))
    assert kept["excluded"]["star"] == 0 and kept["n_rows"] == 200 - 1


def test_keep_stars_on_the_command_line(tmp_path):
    path, _ = _catalog_with_stars(tmp_path / "cat")
    out = tmp_path / "report"
    result = run("probe", "-c", path, "--k", "8", "--no-baselines", "--keep-stars", "--out", out)
    assert result.exit_code == 0, result.output
    ids = pq.read_table(out / "predictions.parquet").column("TARGETID").to_pylist()
    assert set(range(12)) - {3} <= set(ids)
    result = run("probe", "-c", path, "--k", "8", "--no-baselines", "--json")
    assert json.loads(result.stdout)["excluded"]["star"] == 11


def test_stars_stay_in_a_probe_of_another_target(tmp_path):
    path, _ = _catalog_with_stars(tmp_path / "cat")
    doc = run_probe(ProbeConfig(catalog=str(path), target="TARGETID", k=8, baselines=False))
    assert doc["excluded"]["star"] == 0 and doc["n_rows"] == 200


# ----------------------------------------------------------------------------- CLI, JSON, outputs

def test_json_is_alone_on_stdout_and_of_the_documented_shape(baseline):
    proc = subprocess.run([sys.executable, "-m", "astroembed.cli", "probe", "--catalog",
                           str(baseline), "--target", "redshift", "--method", "all", "--k", "16",
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the whole of stdout is one document
    assert {"target", "n_rows", "excluded", "folds", "seed", "results"} <= set(doc)
    assert doc["target"] == "Z" and doc["folds"] == 5 and doc["seed"] == 0
    assert {"ZWARN", "nan"} <= set(doc["excluded"])
    pairs = {(r["features"], r["method"]) for r in doc["results"]}
    assert pairs == {("image", "knn"), ("image", "linear"), ("image", "mlp"),
                     ("photometry", "knn"), ("spectrum_pca", "knn")}
    for r in doc["results"]:
        for key in ("r2", "r2_std", "sigma_nmad", "outlier_fraction", "bias"):
            assert isinstance(r[key], float), (key, r)
        assert r["features"] in ("spectrum", "image", "both", "photometry", "spectrum_pca")


def test_table_out_dir_predictions_and_plots(linear, tmp_path):
    path, _, z = linear
    out = tmp_path / "probe"
    result = run("probe", "--catalog", path, "-e", "image,both", "-m", "knn,linear", "--out", out)
    assert result.exit_code == 0, result.output
    assert "image" in result.stdout and "σ_NMAD" in result.stdout
    table = pq.read_table(out / "predictions.parquet")
    runs = ["pred_image_knn", "pred_image_linear", "pred_both_knn", "pred_both_linear"]
    assert table.column_names == ["TARGETID", "fold", "Z"] + [
        c for run in runs for c in (run, f"{run}_quantiles", f"{run}_lower_68", f"{run}_upper_68",
                                    f"{run}_lower_95", f"{run}_upper_95", f"{run}_pit")]
    assert sorted(table.column("TARGETID").to_pylist()) == list(range(1000, 1600))
    assert set(table.column("fold").to_pylist()) == {0, 1, 2, 3, 4}
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 9 and all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert "summary.png" in pngs
    assert sum(p.endswith("_pit.png") for p in pngs) == 4
    assert json.loads((out / "probe.json").read_text())["n_rows"] == 600
    assert not list(out.glob(".*"))  # no temporary files


def test_non_redshift_target_has_no_redshift_metrics(linear):
    path, _, _ = linear
    doc = run_probe(ProbeConfig(catalog=str(path), target="RA", embedding=("image",),
                                method=("linear",), baselines=False))
    assert doc["target"] == "RA" and doc["results"][0]["sigma_nmad"] is None
    assert doc["excluded"]["ZWARN"] == 0


# ----------------------------------------------------------------------------- saved probes, predict

@pytest.mark.parametrize("method", ["linear", "mlp", "knn"])
def test_saved_probe_reproduces_the_fitted_estimator(linear, tmp_path, method):
    path, x, z = linear
    save = tmp_path / "probe"
    doc = run_probe(ProbeConfig(catalog=str(path), embedding=("image",), method=(method,),
                                baselines=False, save=str(save)))
    assert doc["saved"]["method"] == method and (save / "arrays.npz").is_file()
    with np.load(save / "arrays.npz", allow_pickle=False) as npz:  # loads without pickle
        assert all(npz[k].dtype != object for k in npz.files)
    probe = SavedProbe.load(save)
    est = make_estimator("image", method, k=64, metric="cosine", index="exact", seed=0,
                         n_features=x.shape[1], n_train=len(z))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        est.fit(_catalog_order(path, x), _catalog_order(path, z))
    np.testing.assert_allclose(probe.predict(x[:50]), est.predict(x[:50]), rtol=1e-5, atol=1e-6)


def test_knn_probe_predicts_its_training_rows_leave_one_out(tmp_path):
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import normalize

    path, x, z = linear_catalog(tmp_path / "cat", n=120, dim=6)
    save = tmp_path / "probe"
    run_probe(ProbeConfig(catalog=str(path), embedding=("image",), k=10, baselines=False,
                          save=str(save)))
    probe = SavedProbe.load(save)
    ids = np.arange(1000, 1120)
    a = probe.arrays
    xs = ((x - a["mean"]) / a["scale"]).astype(np.float32)
    train_pos = {int(i): p for p, i in enumerate(a["train_ids"])}
    got = probe.predict(x[:5], ids[:5])
    assert not np.allclose(got, z[:5])  # not the training targets copied back
    for row in range(5):
        others = [p for i, p in train_pos.items() if i != ids[row]]
        ref = KNeighborsRegressor(10, weights="distance", metric="cosine", algorithm="brute")
        ref.fit(normalize(a["train_x"][others]), a["train_y"][others])
        assert got[row] == pytest.approx(ref.predict(normalize(xs[row:row + 1]))[0], rel=1e-4)
    # an ID the probe never saw: ordinary k-NN over all training rows
    ref = KNeighborsRegressor(10, weights="distance", metric="cosine", algorithm="brute")
    ref.fit(a["train_x"], a["train_y"])
    assert probe.predict(x[:1], np.array([-5]))[0] == pytest.approx(ref.predict(xs[:1])[0], rel=1e-4)


def _catalog_order(path: Path, values: np.ndarray) -> np.ndarray:
    """``values`` (in generation order) reordered as the catalog's tiles hold the rows."""
    from astroembed.catalog.columns import read_arrays

    ids = read_arrays(read_catalog_info(path), ["TARGETID"],
                      lambda t: {"id": t.column(0).to_numpy()})["id"]
    return values[ids - 1000]


def test_predict_appends_a_column_to_every_tile(tmp_path):
    path, x, z = linear_catalog(tmp_path / "cat", n=300, dim=8)
    save = tmp_path / "probe"
    assert run("probe", "-c", path, "-e", "image", "-m", "linear", "--save", save,
               "--no-baselines").exit_code == 0
    result = run("predict", "--catalog", path, "--probe", save, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["column"] == "pred_Z" and summary["rows"] == 300
    info = read_catalog_info(path)
    assert info.complete and "pred_Z" in info.schema.names
    probe = SavedProbe.load(save)
    for tile in info.tiles:
        t = read_tile(path, *tile, columns=["embedding_image", "Z", "pred_Z"])
        emb = np.stack(t.column("embedding_image").to_pylist())
        np.testing.assert_allclose(t.column("pred_Z").to_numpy(), probe.predict(emb))
    assert "pred_Z" in info.provenance["predictions"]
    # a different probe may not silently replace the column
    other = tmp_path / "probe2"
    assert run("probe", "-c", path, "-e", "image", "-m", "knn", "--k", "8", "--save", other,
               "--no-baselines").exit_code == 0
    result = run("predict", "--catalog", path, "--probe", other)
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert run("predict", "--catalog", path, "--probe", other, "--overwrite").exit_code == 0


def test_predict_waits_for_no_one_and_protects_columns(tmp_path):
    from astroembed.errors import LockedError, OutputError
    from astroembed.catalog.lock import CatalogLock
    from astroembed.probes.predict import predict_catalog

    path, _, _ = linear_catalog(tmp_path / "cat", n=100, dim=4)
    save = tmp_path / "probe"
    run_probe(ProbeConfig(catalog=str(path), embedding=("image",), method=("linear",),
                          baselines=False, save=str(save)))
    with CatalogLock(path, "embed").shared():  # an embed run at work
        with pytest.raises(LockedError, match="another astroembed process"):
            predict_catalog(path, save)
    assert read_catalog_info(path).complete
    for column in ("Z", "embedding_spectrum", "TARGETID"):
        with pytest.raises(OutputError, match="needs"):
            predict_catalog(path, save, column=column, overwrite=True)


def test_predict_refuses_embeddings_of_another_model(tmp_path):
    a = partner_catalog(tmp_path / "a", n=120)
    save = tmp_path / "probe"
    run_probe(ProbeConfig(catalog=str(a), embedding=("image",), method=("linear",),
                          baselines=False, save=str(save)))
    spec = json.loads((save / "probe.json").read_text())
    assert spec["models"]["embedding_image"]["model_hash"] == "sha256:abc"
    spec["models"]["embedding_image"]["model_hash"] = "sha256:other"
    (save / "probe.json").write_text(json.dumps(spec))
    from astroembed.probes.predict import predict_catalog

    with pytest.raises(ModelError, match="another model"):
        predict_catalog(a, save)


def test_saved_probe_refuses_pickles_and_garbage(tmp_path):
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "p" / "probe.json").write_text(json.dumps({"format": "astroembed-probe",
                                                           "version": 1, "arrays": ["x"]}))
    (tmp_path / "p" / "x.npy").rename(tmp_path / "p" / "arrays.npz")
    with pytest.raises(ModelError):
        SavedProbe.load(tmp_path / "p")
    with pytest.raises(ModelError, match="not a saved probe"):
        SavedProbe.load(tmp_path)


# ----------------------------------------------------------------------------- bad arguments

def test_a_constant_target_is_refused_before_any_fit(tmp_path):
    path, _, _ = linear_catalog(tmp_path / "cat", n=100, dim=4, MAG=np.full(100, 21.5))
    out = tmp_path / "report"
    result = run("probe", "--catalog", path, "--target", "MAG", "--no-baselines",
                 "--out", out)
    assert result.exit_code == 1
    assert "MAG is 21.5 in every one of the 100 usable rows" in result.stderr
    assert "--target" in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def test_unknown_target_column(linear):
    path, _, _ = linear
    result = run("probe", "--catalog", path, "--target", "ZZ")
    assert result.exit_code == 1
    assert "no column 'ZZ'" in result.stderr and "Did you mean 'Z'" in result.stderr
    assert result.stderr.count("\n") == 1


def test_non_numeric_target(tmp_path):
    write_catalog(tmp_path / "cat", {"TARGETID": np.arange(20, dtype=np.int64),
                                     "SPECTYPE": np.array(["GALAXY"] * 20),
                                     "embedding_image": vector_column(np.ones((20, 4)))})
    with pytest.raises(InputError, match="not numeric"):
        run_probe(ProbeConfig(catalog=str(tmp_path / "cat"), target="SPECTYPE"))


def test_catalog_without_embeddings(small_survey, tmp_path):
    import astroembed

    astroembed.crossmatch(small_survey / "legacysurvey", small_survey / "desi",
                                  tmp_path / "cat")
    result = run("probe", "--catalog", tmp_path / "cat")
    assert result.exit_code == 1
    assert "no embedding columns" in result.stderr and "astroembed embed" in result.stderr


def test_wrong_model_name_lists_what_there_is(linear):
    path, _, _ = linear
    result = run("probe", "--catalog", path, "--name", "other")
    assert result.exit_code == 1
    assert "embedding_image_other" in result.stderr and "embedding_image," in result.stderr


def test_k_larger_than_the_training_set(tmp_path):
    path, _, _ = linear_catalog(tmp_path / "cat", n=50, dim=4)
    result = run("probe", "--catalog", path, "--k", "64")
    assert result.exit_code == 2
    assert "--k 64 is larger than the training set" in result.stderr and "--k 40" in result.stderr


@pytest.mark.parametrize("args, words", [
    (["--method", "forest"], "--method must be one of"),
    (["--embedding", "imgae"], "Did you mean 'image'"),
    (["--folds", "1"], "--folds must be at least 2"),
    (["--metric", "manhattan"], "--metric must be one of"),
])
def test_bad_options(linear, args, words):
    path, _, _ = linear
    result = run("probe", "--catalog", path, *args)
    assert result.exit_code == 2 and words in result.stderr


def test_missing_catalog(tmp_path):
    result = run("probe", "--catalog", tmp_path / "nope")
    assert result.exit_code == 1 and "no such catalog" in result.stderr


def test_config_validation_is_reusable():
    with pytest.raises(ConfigError):
        ProbeConfig(catalog="x", k=0).validate()
