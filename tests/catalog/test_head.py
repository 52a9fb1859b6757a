"""`astroembed head` shows rows that are in the catalog, from the tile or cone asked for, with
IDs that `search --like` accepts; `info --schema` gives every column a type, unit and meaning.

Oracles: the tile files read with pyarrow, a brute-force angular separation with astropy, and
the exit codes of the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from typer.testing import CliRunner

import astroembed
from astroembed.cli import app

runner = CliRunner()


def _all_rows(catalog: Path, columns: list[str]) -> pa.Table:
    files = sorted((catalog / "main" / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
    return pa.concat_tables(pq.read_table(f, columns=columns) for f in files)


def _json(*argv: str) -> dict:
    out = runner.invoke(app, [str(a) for a in argv] + ["--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_head_rows_are_rows_of_the_catalog(embedded_catalog):
    doc = _json("head", "--catalog", embedded_catalog, "--rows", "7")
    assert doc["columns"] == ["TARGETID", "RA", "DEC", "Z", "embedding_image",
                              "embedding_spectrum"]
    truth = _all_rows(embedded_catalog, ["TARGETID", "RA", "DEC", "Z", "embedding_image"])
    by_id = {r["TARGETID"]: r for r in truth.to_pylist()}
    assert len(doc["rows"]) == 7 and doc["total_rows"] == truth.num_rows
    for row in doc["rows"]:
        expected = by_id[row["TARGETID"]]
        assert row["RA"] == expected["RA"] and row["Z"] == expected["Z"]
        assert row["embedding_image"]["length"] == 8
        assert row["embedding_image"]["head"] == pytest.approx(expected["embedding_image"][:3],
                                                               abs=1e-6)


def test_head_tile_gives_rows_of_that_tile(tiled_catalog):
    tiles = runner.invoke(app, ["info", "-c", str(tiled_catalog), "--tiles"]).stdout.split()
    order, pixel = map(int, tiles[-1].split("/"))
    doc = _json("head", "-c", tiled_catalog, "--tile", tiles[-1], "--rows", "1000",
                "--columns", "ROW_ID,_healpix_29", "--columns", "FLUX_R_left")
    assert doc["columns"] == ["ROW_ID", "_healpix_29", "FLUX_R_left"]
    healpix = np.array([r["_healpix_29"] for r in doc["rows"]], dtype=np.int64)
    assert (healpix >> 2 * (29 - order) == pixel).all()
    on_disk = _all_rows(tiled_catalog, ["_healpix_29"]).column("_healpix_29").to_numpy()
    assert len(doc["rows"]) == int((on_disk >> 2 * (29 - order) == pixel).sum())


def test_head_cone_matches_a_brute_force_search(tiled_catalog):
    truth = _all_rows(tiled_catalog, ["ROW_ID", "RA", "DEC"])
    centre = truth.slice(17, 1).to_pylist()[0]
    radius = 900.0
    sky = SkyCoord(truth.column("RA").to_numpy() * u.deg, truth.column("DEC").to_numpy() * u.deg)
    sep = sky.separation(SkyCoord(centre["RA"] * u.deg, centre["DEC"] * u.deg)).arcsec
    inside = set(truth.column("ROW_ID").to_numpy()[sep <= radius].tolist())
    assert 1 < len(inside) < truth.num_rows
    doc = _json("head", "-c", tiled_catalog, "--cone", centre["RA"], centre["DEC"], radius,
                "--rows", "100000", "--columns", "ROW_ID")
    assert {r["ROW_ID"] for r in doc["rows"]} == inside
    few = _json("head", "-c", tiled_catalog, "--cone", centre["RA"], centre["DEC"], radius,
                "--rows", "1", "--columns", "ROW_ID")
    assert len(few["rows"]) == 1 and few["rows"][0]["ROW_ID"] in inside


def test_head_pixel_columns_are_abbreviated(tiled_catalog):
    doc = _json("head", "-c", tiled_catalog, "--rows", "2", "--columns", "ROW_ID,image,flux")
    for row in doc["rows"]:
        assert row["image"]["length"] == 3 * 32 * 32 and len(row["image"]["head"]) == 3
        assert row["flux"]["length"] == 7781


def test_head_ids_are_what_search_takes(embedded_catalog):
    out = runner.invoke(app, ["head", "-c", str(embedded_catalog), "--rows", "2"],
                        env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    first = astroembed.head(embedded_catalog, rows=1)["rows"][0]["TARGETID"]
    assert str(first) in out.stdout
    found = _json("search", "-c", embedded_catalog, "--like", str(first), "-k", "3")
    assert found["query"]["id"] == first


@pytest.mark.parametrize("argv, message", [
    (["--rows", "0"], "--rows 0"),
    (["--columns", "NOPE"], "no column 'NOPE'"),
    (["--tile", "0/1"], "--tile 0/1"),
    (["--tile", "5-3"], "--tile '5-3'"),
    (["--cone", "400", "0", "10"], "--cone 400.0 0.0 10.0"),
    (["--cone", "10", "0", "-1"], "radius"),
    (["--cone", "10", "0", "1", "--tile", "0/1"], "--tile and --cone"),
])
def test_head_bad_input_is_one_error_line(tiled_catalog, argv, message):
    out = runner.invoke(app, ["head", "-c", str(tiled_catalog), *argv])
    assert out.exit_code in (1, 2) and out.stdout == ""
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert message in out.stderr


def test_info_schema_gives_unit_and_meaning(embedded_catalog):
    columns = {c["name"]: c for c in _json("info", "-c", embedded_catalog, "--schema")["columns"]}
    on_disk = pq.read_schema(next((embedded_catalog / "main" / "dataset").rglob("*.parquet")))
    assert set(on_disk.names) == {n for n, c in columns.items() if c["part"] == "main"}
    assert {n for n, c in columns.items() if c["part"] == "pixels"} == {"image", "flux", "ivar"}
    assert columns["FLUX_R_left"]["unit"] == "nanomaggy"
    assert "Legacy Survey" in columns["FLUX_R_left"]["description"]
    assert "DESI" in columns["FLUX_R_right"]["description"]
    assert columns["_dist_arcsec"]["unit"] == "arcsec" and columns["RA"]["unit"] == "deg"
    assert columns["embedding_image"]["type"] == "fixed_size_list<float32>[8]"
    assert columns["image"]["type"] == "fixed_shape_tensor<float32>[3, 32, 32]"
    out = runner.invoke(app, ["info", "-c", str(embedded_catalog), "--schema"],
                        env={"COLUMNS": "200"})
    assert out.exit_code == 0
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert "nanomaggy" in lines["FLUX_G_left"] and lines["flux"].rstrip().endswith("pixels")


def test_head_and_schema_fit_80_columns_and_keep_the_ids_whole(embedded_catalog):
    """At COLUMNS=80 no line is longer, every column is shown and every ID is whole; a wide
    terminal has every column in one table."""
    doc = _json("head", "-c", embedded_catalog, "--rows", "4")
    narrow = runner.invoke(app, ["head", "-c", str(embedded_catalog), "--rows", "4"],
                           env={"COLUMNS": "80"}).stdout
    wide = runner.invoke(app, ["head", "-c", str(embedded_catalog), "--rows", "4"],
                         env={"COLUMNS": "300"}).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    words = narrow.split()
    tables = len([line for line in narrow.splitlines() if set(line.strip()) == {"─"}])
    for row in doc["rows"]:
        assert words.count(str(row["TARGETID"])) == tables  # whole, once a table
    assert set(doc["columns"]) <= set(words)
    header = next(line for line in wide.splitlines() if "TARGETID" in line)
    assert header.split() == doc["columns"]
    assert len([line for line in wide.splitlines() if set(line.strip()) == {"─"}]) == 1
    names = [c["name"] for c in _json("info", "-c", embedded_catalog)["columns"]]
    schema = runner.invoke(app, ["info", "-c", str(embedded_catalog), "--schema"],
                           env={"COLUMNS": "80"}).stdout
    assert max(len(line) for line in schema.splitlines()) <= 80, schema
    firsts = [line.split()[0] for line in schema.splitlines()
              if line.rstrip().endswith(("main", "pixels"))]
    assert firsts == names


def test_a_prediction_column_with_unreadable_probe_metadata_is_still_described():
    from astroembed.catalog.schema import describe_field

    for text in (b"not json", b"[1, 2]"):
        fld = pa.field("pred_Z", pa.float64(), metadata={b"astroembed_probe": text})
        assert describe_field(fld).meaning == "a probe's prediction"
    made = pa.field("pred_Z", pa.float64(), metadata={
        b"astroembed_probe": b'{"target": "Z", "features": "spectrum", "method": "knn"}'})
    assert describe_field(made).meaning == "knn probe's prediction of Z from the spectrum embedding"


def test_a_reader_that_leaves_early_is_not_an_error(tiled_catalog):
    """`astroembed info --catalog CAT | head -0`: the pipe is closed before anything is written;
    the command ends quietly, as a tool stopped by SIGPIPE does."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "astroembed.cli", "info", "--catalog", str(tiled_catalog)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(root)))
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 141, stderr
    assert stderr == ""
