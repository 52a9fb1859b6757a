"""Search: cosine neighbours checked against plain NumPy, partners found across modalities,
the stored faiss index, the retrieval report, JSON alone on stdout, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from astroembed.cli import app
from astroembed.catalog.reader import read_catalog_info, read_tile
from astroembed.catalog.tiles import write_tile
from astroembed.similarity import (
    SearchCatalog,
    index_files,
    neighbours,
    partner_ranks,
    retrieval_report,
)

from embedded_catalog import partner_catalog, vector_column, write_catalog

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def partners(tmp_path_factory) -> Path:
    return partner_catalog(tmp_path_factory.mktemp("partners") / "cat", n=300, dim=32)


def _all(path: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    """IDs and one embedding column of every row, read independently of astroembed.similarity."""
    info = read_catalog_info(path)
    ids, rows = [], []
    for tile in info.tiles:
        t = read_tile(path, *tile, columns=["TARGETID", column])
        ids += t.column("TARGETID").to_pylist()
        rows += t.column(column).to_pylist()
    return np.array(ids), rows


def test_neighbours_match_a_numpy_oracle(partners):
    ids, img = _all(partners, "embedding_image")
    _, spec = _all(partners, "embedding_spectrum")
    q = 17
    spec_m = np.array(spec, np.float64)
    sims = spec_m @ np.array(img[q]) / np.linalg.norm(spec_m, axis=1) / np.linalg.norm(img[q])
    want = np.argsort(-sims)[:5]
    cat = SearchCatalog.open(partners, ("image", "spectrum"))
    got = neighbours(cat, ids[q], "image", "spectrum", k=5, index="exact")
    assert [n["id"] for n in got["neighbours"]] == ids[want].tolist()
    np.testing.assert_allclose([n["similarity"] for n in got["neighbours"]], sims[want], rtol=1e-5)
    assert got["neighbours"][0]["partner"] and got["neighbours"][0]["id"] == ids[q]


@pytest.mark.parametrize("index", ["exact", "faiss"])
def test_partner_is_found_across_modalities(partners, index):
    if index == "faiss":
        pytest.importorskip("faiss")
    ids, _ = _all(partners, "embedding_image")
    cat = SearchCatalog.open(partners, ("image", "spectrum"))
    for q in (0, 50, 299):
        for src, dst in (("image", "spectrum"), ("spectrum", "image")):
            got = neighbours(cat, int(ids[q]), src, dst, k=3, index=index)
            assert got["neighbours"][0]["id"] == ids[q] and got["neighbours"][0]["partner"]
            assert got["index"] == index


def test_in_modality_search_leaves_the_query_out(partners):
    ids, _ = _all(partners, "embedding_image")
    cat = SearchCatalog.open(partners, ("image",))
    got = neighbours(cat, int(ids[3]), "image", "image", k=10)
    found = [n["id"] for n in got["neighbours"]]
    assert len(found) == 10 and ids[3] not in found
    sims = [n["similarity"] for n in got["neighbours"]]
    assert sims == sorted(sims, reverse=True)
    assert [n["rank"] for n in got["neighbours"]] == list(range(1, 11))


def test_faiss_index_is_stored_and_reused_then_rebuilt_when_tiles_change(tmp_path):
    pytest.importorskip("faiss")
    path = partner_catalog(tmp_path / "cat", n=200, dim=16)
    ids, _ = _all(path, "embedding_image")
    cat = SearchCatalog.open(path, ("image", "spectrum"))
    neighbours(cat, int(ids[0]), "image", "spectrum", index="faiss")
    f_index, f_rows, f_meta = index_files(path, "embedding_spectrum")
    assert f_index.is_file() and f_rows.is_file() and f_meta.is_file()
    stamp = f_index.stat().st_mtime_ns
    cat = SearchCatalog.open(path, ("image", "spectrum"))
    neighbours(cat, int(ids[1]), "image", "spectrum", index="faiss")
    assert f_index.stat().st_mtime_ns == stamp  # reused
    info = read_catalog_info(path)
    tile = info.tiles[0]
    write_tile(path, *tile, read_tile(path, *tile))  # a tile rewritten (as by a new embed)
    cat = SearchCatalog.open(path, ("image", "spectrum"))
    neighbours(cat, int(ids[1]), "image", "spectrum", index="faiss")
    assert f_index.stat().st_mtime_ns != stamp  # rebuilt
    assert read_catalog_info(path).total_rows == 200  # the catalog still reads fine


# ----------------------------------------------------------------------------- retrieval report

def test_partner_ranks_match_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(40, 5))
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    ranks = partner_ranks(a, bn.astype(np.float32))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    s = an @ bn.T
    want = [(s[i] > s[i, i] + 1e-6).sum() for i in range(40)]
    assert ranks.tolist() == want


def test_retrieval_report_perfect_and_chance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16))
    perfect = retrieval_report(x, x + 1e-3 * rng.normal(size=x.shape))
    for d in perfect["directions"]:
        assert d["top1"] == 1.0 and d["top10"] == 1.0 and d["top1pct"] == 1.0
    chance = retrieval_report(x, rng.normal(size=(500, 16)))
    for d in chance["directions"]:
        assert d["top1"] < 0.02 and d["top10"] < 0.06 and d["median_rank"] > 100
    sampled = retrieval_report(x, x, queries=100)
    assert all(d["n_queries"] == 100 and d["top1"] == 1.0 for d in sampled["directions"])


def test_evaluate_cli_json(partners):
    result = run("search", "--catalog", partners, "--evaluate", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_objects"] == 300 and report["excluded"] == {"no_embedding": 0}
    assert [(d["from"], d["to"]) for d in report["directions"]] == [("image", "spectrum"),
                                                                    ("spectrum", "image")]
    assert all(d["top1"] == 1.0 for d in report["directions"])
    table = run("search", "--catalog", partners, "--evaluate")
    assert table.exit_code == 0 and "top-1%" in table.stdout and "chance" in table.stdout


# ----------------------------------------------------------------------------- CLI

def test_search_json_is_alone_on_stdout(partners):
    ids, _ = _all(partners, "embedding_image")
    proc = subprocess.run([sys.executable, "-m", "astroembed.cli", "search", "--catalog",
                           str(partners), "--like", str(ids[5]), "--from", "image", "--to",
                           "spectrum", "-k", "4", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["query"]["id"] == ids[5] and len(doc["neighbours"]) == 4
    assert {"rank", "id", "similarity", "Z", "partner"} <= set(doc["neighbours"][0])


def test_table_and_plot(tmp_path):
    n = 40
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    images = pa.FixedShapeTensorArray.from_numpy_ndarray(
        rng.uniform(0, 5, size=(n, 3, 16, 16)).astype(np.float32))
    path = write_catalog(tmp_path / "cat", {
        "TARGETID": np.arange(n, dtype=np.int64), "Z": rng.uniform(0, 0.5, n),
        "image": images, "flux": vector_column(rng.normal(size=(n, 7781)).astype(np.float32)),
        "embedding_image": vector_column(x), "embedding_spectrum": vector_column(x)})
    png = tmp_path / "nb.png"
    result = run("search", "--catalog", path, "--like", 3, "-k", 5, "--plot", png)
    assert result.exit_code == 0, result.output
    assert "similarity" in result.stdout and png.read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_null_embeddings_are_skipped_and_a_null_query_is_refused(tmp_path):
    path = partner_catalog(tmp_path / "cat", n=60, dim=8, image_null=[4, 9])
    ids, img = _all(path, "embedding_image")
    null_ids = [int(i) for i, v in zip(ids, img) if v is None]
    assert len(null_ids) == 2
    cat = SearchCatalog.open(path, ("image",))
    got = neighbours(cat, int(ids[[v is not None for v in img].index(True)]), "image", k=100)
    assert len(got["neighbours"]) == 57 and not set(null_ids) & {n["id"] for n in got["neighbours"]}
    result = run("search", "--catalog", path, "--like", null_ids[0])
    assert result.exit_code == 1 and "null" in result.stderr
    report = json.loads(run("search", "--catalog", path, "--evaluate", "--json").stdout)
    assert report["excluded"]["no_embedding"] == 2 and report["n_objects"] == 58


def test_unknown_id(partners):
    result = run("search", "--catalog", partners, "--like", "123")
    assert result.exit_code == 1
    assert "no object with TARGETID = 123" in result.stderr and result.stderr.count("\n") == 1
    result = run("search", "--catalog", partners, "--like", "abc")
    assert result.exit_code == 1 and "integer" in result.stderr


def test_catalog_without_embeddings(tmp_path):
    path = write_catalog(tmp_path / "cat", {"TARGETID": np.arange(5, dtype=np.int64)})
    result = run("search", "--catalog", path, "--like", "1")
    assert result.exit_code == 1 and "no embedding columns" in result.stderr


@pytest.mark.parametrize("args, words", [
    (["--like", "1", "--from", "radio"], "--from must be one of"),
    (["--like", "1", "--index", "hnsw"], "--index must be one of"),
    ([], "exactly one of --like ID"),
    (["--like", "1", "--evaluate"], "exactly one of --like ID"),
    (["--like", "1", "-k", "0"], "-k must be at least 1"),
])
def test_bad_options(partners, args, words):
    result = run("search", "--catalog", partners, *args)
    assert result.exit_code == 2 and words in result.stderr


def test_faiss_missing_gives_a_clear_error(partners, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    ids, _ = _all(partners, "embedding_image")
    result = run("search", "--catalog", partners, "--like", int(ids[0]), "--index", "faiss")
    assert result.exit_code == 2 and "pip install faiss-cpu" in result.stderr


def _rows_with_partner() -> list[dict]:
    """A query and three results, the second of which is the query's own partner."""
    return [{"id": 10, "row": 0, "Z": 0.1},
            {"id": 11, "row": 1, "rank": 1, "similarity": 0.9, "Z": 0.2, "partner": False},
            {"id": 10, "row": 0, "rank": 2, "similarity": 0.8, "Z": 0.1, "partner": True},
            {"id": 12, "row": 2, "rank": 3, "similarity": 0.7, "Z": None, "partner": False}]


def test_montage_spectra_carry_units_and_the_partner_is_framed():
    from astroembed.plots import search_figure

    rng = np.random.default_rng(4)
    images = {r: rng.uniform(0, 5, (3, 16, 16)) for r in range(3)}
    spectra = {r: rng.normal(size=500) for r in range(3)}
    wave = 3600.0 + 0.8 * np.arange(500)
    fig = search_figure(_rows_with_partner(), images, spectra, wave)
    assert len(fig.axes) == 8  # an image and a spectrum per row
    image_axes, spectrum_axes = fig.axes[0::2], fig.axes[1::2]
    for ax in spectrum_axes:
        assert ax.get_ylabel() == "flux [10$^{-17}$ erg s$^{-1}$ cm$^{-2}$ Å$^{-1}$]"
    assert spectrum_axes[-1].get_xlabel() == "wavelength [Å]"
    np.testing.assert_allclose(spectrum_axes[0].get_lines()[0].get_xdata(), wave)
    for i, (image, spectrum) in enumerate(zip(image_axes, spectrum_axes)):
        partner = i == 2
        for ax in (image, spectrum):
            widths = {s.get_linewidth() for s in ax.spines.values()}
            assert (widths == {2.5}) is partner, (i, widths)
        assert ("partner" in image.get_ylabel()) is partner
        assert (image.yaxis.label.get_color() == "tab:red") is partner


def test_montage_without_images_labels_rows_beside_the_spectra():
    from astroembed.plots import search_figure

    spectra = {r: np.ones(100) for r in range(3)}
    fig = search_figure(_rows_with_partner(), {}, spectra, None)
    assert len(fig.axes) == 4
    assert fig.axes[-1].get_xlabel() == "pixel"
    labels = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert all(len(t) == 1 for t in labels) and "partner" in labels[2][0]
    assert not any("partner" in t[0] for i, t in enumerate(labels) if i != 2)
