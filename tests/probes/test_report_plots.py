"""What ``probe --out`` draws and keeps: the predicted-vs-true figure (a density above
SCATTER_MAX points, the 1:1 line, the redshift outlier bounds), the summary figure with one
bar per result, and an --out directory cleared of the earlier run's files only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.container import BarContainer
from matplotlib.colors import LogNorm
from typer.testing import CliRunner

from astroembed.cli import app
from astroembed.plots import SCATTER_MAX, probe_figure, summary_figure

from embedded_catalog import linear_catalog

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    return linear_catalog(tmp_path_factory.mktemp("lin") / "cat", n=300, dim=8)[0]


def _line(ax, label: str):
    return next(line for line in ax.get_lines() if line.get_label() == label)


@pytest.mark.parametrize("n", [500, SCATTER_MAX + 1])
def test_predicted_vs_true_is_a_density_above_the_threshold(n):
    rng = np.random.default_rng(1)
    z = rng.uniform(0.0, 0.6, n)
    fig = probe_figure(z, z + rng.normal(0, 0.02, n), redshift=True,
                       metrics={"r2": 0.9, "r2_std": 0.01, "sigma_nmad": 0.02,
                                "outlier_fraction": 0.0, "bias": 0.0})
    ax = fig.axes[0]
    if n > SCATTER_MAX:
        (hexbin,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert isinstance(hexbin.norm, LogNorm)
        assert hexbin.get_array().sum() == n  # every point in some cell
        assert len(fig.axes) == 3  # the two panels and the colour bar
    else:
        (dots,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(dots.get_offsets()) == n and dots.get_alpha() < 1
    x, y = _line(ax, "1:1").get_data()
    np.testing.assert_allclose(y, x)
    x, y = _line(ax, "|dz|/(1+z) = 0.15").get_data()
    np.testing.assert_allclose(y, x + 0.15 * (1 + x))
    assert ax.get_xlabel() == "true z" and ax.get_ylabel() == "predicted z"


def test_summary_figure_has_one_bar_per_result():
    results = [{"features": f, "method": m, "r2": r2, "r2_std": 0.01, "sigma_nmad": s,
                "sigma_nmad_std": 0.001, "outlier_fraction": 0.01, "outlier_fraction_std": 0.0}
               for f, m, r2, s in [("image", "knn", 0.8, 0.03), ("image", "linear", 0.7, 0.04),
                                   ("spectrum", "knn", 0.95, 0.01),
                                   ("photometry", "knn", 0.5, 0.06)]]
    fig = summary_figure(results, redshift=True)
    assert len(fig.axes) == 3  # R^2, sigma_NMAD, outlier fraction
    r2_ax, nmad_ax = fig.axes[:2]
    def heights(ax):
        return sorted(b.get_height() for c in ax.containers if isinstance(c, BarContainer)
                      for b in c.patches)


    assert heights(r2_ax) == sorted(r["r2"] for r in results)
    assert heights(nmad_ax) == pytest.approx(sorted(r["sigma_nmad"] for r in results))
    assert [t.get_text() for t in r2_ax.get_xticklabels()] == ["image", "spectrum", "photometry"]
    other = summary_figure([{**r, "rmse": 1.0, "rmse_std": 0.1} for r in results])
    assert [ax.get_title().split(" (")[0] for ax in other.axes] == ["R$^2$", "RMSE"]


def test_out_holds_the_report_plots_and_summary(catalog, tmp_path):
    out = tmp_path / "report"
    result = run("probe", "-c", catalog, "-e", "image", "-m", "knn,linear", "--k", "8",
                 "--no-baselines", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "predictions.parquet", "probe.json", "summary.png",
        "probe_Z_image_knn.png", "probe_Z_image_knn_pit.png",
        "probe_Z_image_linear.png", "probe_Z_image_linear_pit.png"])
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "probe.json").read_text())
    assert Path(report["outputs"]["summary_plot"]).name == "summary.png"


def test_a_rerun_removes_its_stale_files_and_keeps_the_users(catalog, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "probe_mine.png").write_bytes(b"mine")  # named like ours, but not written by us
    first = run("probe", "-c", catalog, "-e", "image", "-m", "knn,linear", "--k", "8",
                "--no-baselines", "--out", out)
    assert first.exit_code == 0, first.output
    (out / "probe_Z_image_mlp.png").write_bytes(b"also mine")  # added after the run
    assert (out / "probe_Z_image_linear.png").exists()
    second = run("probe", "-c", catalog, "-e", "image", "-m", "knn", "--k", "8",
                 "--no-baselines", "--out", out)
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "notes.txt", "probe_mine.png", "probe_Z_image_mlp.png",
        "predictions.parquet", "probe.json", "summary.png",
        "probe_Z_image_knn.png", "probe_Z_image_knn_pit.png"])
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "probe_mine.png").read_bytes() == b"mine"


def test_a_directory_without_our_report_loses_nothing(catalog, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "probe.json").write_text(json.dumps({"outputs": {"plots": ["notes.png"]}}))
    (out / "probe_Z_image_linear.png").write_bytes(b"mine")
    result = run("probe", "-c", catalog, "-e", "image", "-m", "knn", "--k", "8",
                 "--no-baselines", "--out", out)
    # probe.json there is not a probe report: the run refuses to overwrite it
    assert result.exit_code != 0
    assert (out / "probe_Z_image_linear.png").read_bytes() == b"mine"
