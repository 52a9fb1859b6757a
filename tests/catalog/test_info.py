"""`astroembed info` says what holds, and provenance does not depend on the current directory.

Oracles outside the code under test: the tile files listed on disk, their Parquet footers
read with pyarrow, lsdb opening the catalog, file sizes from ``os.stat``, exit codes.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import astroembed
from astroembed.cli import app
from astroembed.catalog.layout import read_properties
from astroembed.catalog.writer import mark_incomplete

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def cli(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def tile_files(catalog: Path) -> list[Path]:
    """The tiles on disk, as a HATS reader finds them."""
    return sorted((catalog / "main" / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))


def tiles_with(catalog: Path, column: str) -> int:
    """How many tile files have ``column``, from their Parquet footers."""
    return sum(column in pq.read_schema(f).names for f in tile_files(catalog))


@pytest.fixture(scope="module")
def model(tiny_model) -> Path:
    return tiny_model


@pytest.fixture(scope="module")
def matched(tiled_catalog) -> Path:
    assert len(tile_files(tiled_catalog)) >= 3
    return tiled_catalog


@pytest.fixture
def catalog(matched, tmp_path) -> Path:
    path = tmp_path / "cat"
    shutil.copytree(matched, path)
    return path


# ----------------------------------------------------------------------------- info's state

@pytest.mark.filterwarnings("ignore:The inplace keyword")  # nested-pandas vs pandas 3.1
def test_info_after_one_tile_embed_says_partly_embedded(catalog, model):
    lsdb = pytest.importorskip("lsdb")
    assert cli("-q", "embed", "--catalog", catalog, "--model", model).exit_code == 0
    files = tile_files(catalog)
    one = files[len(files) // 2]
    order, pixel = (int(p.split("=")[1].split(".")[0]) for p in (one.parts[-3], one.name))
    result = cli("-q", "embed", "--catalog", catalog, "--model", model, "--tile",
                 f"{order}/{pixel}", "--name", "x", "--modality", "image")
    assert result.exit_code == 0, result.output

    text = cli("info", catalog)
    assert text.exit_code == 0, text.output
    assert "partly embedded" in text.stdout and "incomplete" not in text.stdout.lower()
    assert f"embedding_image_x in 1 of {len(files)} tiles" in text.stdout
    doc = json.loads(cli("info", catalog, "--json").stdout)
    assert doc["state"] == "partly embedded" and not doc["complete"]
    assert {c["name"] for c in doc["columns"]} >= {"embedding_image", "embedding_image_x"}
    for column in ("embedding_image", "embedding_spectrum", "embedding_image_x"):
        entry = doc["embeddings"][column]
        assert entry["tiles"] == tiles_with(catalog, column), column
        assert entry["tiles_total"] == len(files)
    assert doc["embeddings"]["embedding_image_x"]["tiles"] == 1
    assert doc == json.loads(json.dumps(astroembed.info(catalog), default=str))

    # lsdb opens it; the rows of tiles without the new column read as nulls.
    frame = lsdb.open_catalog(catalog).compute()
    rows = {f: pq.read_metadata(f).num_rows for f in files}
    assert len(frame) == sum(rows.values())
    tile = pq.read_table(one, columns=["_healpix_29", "embedding_image_x"])
    assert frame["embedding_image_x"].notna().sum() == len(tile["embedding_image_x"].drop_null())
    got = frame.loc[tile["_healpix_29"].to_numpy(), "embedding_image_x"]
    for value, want in zip(got, tile["embedding_image_x"].to_pylist()):
        if want is not None:
            np.testing.assert_array_equal(np.asarray(value, np.float32), np.float32(want))

    # The command info suggests finishes the catalog.
    command = doc["state_detail"].split("`")[1]
    assert command.startswith(f"astroembed embed --catalog {catalog}") and "--name x" in command
    result = cli("-q", *shlex.split(command)[1:], "--model", model)
    assert result.exit_code == 0, result.output
    doc = json.loads(cli("info", catalog, "--json").stdout)
    assert doc["state"] == "complete" and doc["complete"] and doc["state_detail"] is None
    assert doc["embeddings"]["embedding_image_x"]["tiles"] == tiles_with(
        catalog, "embedding_image_x") == len(files)
    assert read_properties(catalog / "main" / "hats.properties")["astroembed_status"] == "complete"
    assert (catalog / "main" / "dataset" / "_metadata").is_file()
    assert len(lsdb.open_catalog(catalog).compute()) == sum(rows.values())


def test_info_says_incomplete_while_a_run_is_at_work(catalog):
    mark_incomplete(catalog)
    result = cli("info", catalog)
    assert result.exit_code == 0 and "incomplete" in result.stdout
    assert json.loads(cli("info", catalog, "--json").stdout)["state"] == "incomplete"


def test_info_lists_leftover_work_files_with_their_sizes(catalog):
    staging = catalog.with_name(f".{catalog.name}.astroembed-staging")
    (staging / "inputs").mkdir(parents=True)
    (staging / "inputs" / "a.arrow").write_bytes(b"x" * 3000)
    (staging / "plan.json").write_bytes(b"{}")
    old = catalog.with_name(f".{catalog.name}.old-4242")
    (old / "main").mkdir(parents=True)
    (old / "main" / "hats.properties").write_bytes(b"y" * 10)
    other = catalog.with_name(f".{catalog.name}2.partial")  # another catalog's, not this one's
    other.mkdir()
    doc = json.loads(cli("info", catalog, "--json").stdout)
    found = {w["path"]: w["bytes"] for w in doc["leftover_work_files"]}
    sizes = {str(d): sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
             for d in (staging, old)}
    assert found == sizes == {str(staging): 3002, str(old): 10}
    text = cli("info", catalog).stdout
    assert "leftover work files" in text and str(staging) in text and str(other) not in text


# ----------------------------------------------------------------------------- provenance

def _default_model_warning(catalog: Path, cwd: Path, caplog) -> str:
    """The warnings planning a default-model embed gives, run from ``cwd``."""
    from astroembed.runtime.embedding import plan_embed

    old = Path.cwd()
    os.chdir(cwd)
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="astroembed"):
            plan_embed(catalog, modality="image")
    finally:
        os.chdir(old)
    return caplog.text


def test_provenance_records_absolute_inputs_and_simulated_origin(small_survey, tmp_path,
                                                                 monkeypatch, caplog):
    survey = tmp_path / "survey"
    shutil.copytree(small_survey, survey)
    monkeypatch.chdir(tmp_path)
    astroembed.crossmatch("survey/legacysurvey", "survey/desi", "cat")
    inputs = astroembed.info(tmp_path / "cat")["provenance"]["inputs"]
    assert inputs and all(Path(i["path"]).is_absolute() for i in inputs)
    for record in inputs:
        stat = os.stat(record["path"])
        assert (record["size"], record["mtime"]) == (stat.st_size, stat.st_mtime)
        assert record["simulated"] is True
        assert Path(record["path"]).is_relative_to(survey.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Moved catalog, moved survey, another directory: it still knows its origin.
    shutil.move(tmp_path / "cat", elsewhere / "copy")
    shutil.move(survey, tmp_path / "moved")
    assert "simulated galaxies" not in _default_model_warning(elsewhere / "copy", elsewhere,
                                                              caplog)


def test_catalog_from_other_data_still_warns(small_survey, tmp_path, caplog):
    real = tmp_path / "real"  # the same files without simulation.json: not the simulator's
    for side in ("legacysurvey", "desi"):
        shutil.copytree(small_survey / side, real / side)
    astroembed.crossmatch(real / "legacysurvey", real / "desi", tmp_path / "cat")
    inputs = astroembed.info(tmp_path / "cat")["provenance"]["inputs"]
    assert inputs and not any(i["simulated"] for i in inputs)
    assert "comes from other data" in _default_model_warning(tmp_path / "cat", tmp_path, caplog)


def test_older_provenance_without_the_record(matched, small_survey, tmp_path, caplog):
    """Absolute paths are looked up on disk; relative ones cannot be, and the warning says
    that it does not know rather than that the data are not simulated."""
    old = tmp_path / "old"
    shutil.copytree(matched, old)
    file = old / "main" / "astroembed_provenance.json"
    prov = json.loads(file.read_text())
    for record in prov["inputs"]:
        del record["simulated"]
    file.write_text(json.dumps(prov))
    assert "simulated galaxies" not in _default_model_warning(old, tmp_path, caplog)
    for record in prov["inputs"]:
        record["path"] = os.path.relpath(record["path"], small_survey.parent)
    file.write_text(json.dumps(prov))
    text = _default_model_warning(old, tmp_path, caplog)
    assert "does not record whether" in text and "other data" not in text


def test_embed_from_another_directory_gives_no_origin_warning(small_survey, tmp_path,
                                                              monkeypatch):
    """The command line, in a process started elsewhere, on one tile with the default model,
    of a catalog cross-matched from relative paths."""
    catalog = tmp_path / "cat"
    monkeypatch.chdir(small_survey.parent)
    astroembed.crossmatch(f"{small_survey.name}/legacysurvey",
                                  f"{small_survey.name}/desi", catalog, max_rows=40)
    tile = cli("info", catalog, "--tiles").stdout.split()[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-c", "from astroembed.cli import app; app()",
                             "embed", "--catalog", str(catalog), "--tile", tile,
                             "--modality", "image"],
                            cwd=elsewhere, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "simulated galaxies" not in result.stderr and "other data" not in result.stderr
    assert "partly embedded" in result.stderr
