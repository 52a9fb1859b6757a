"""End-to-end cross-match on simulated surveys, checked against the simulator's truth table
and the raw FITS quality columns read here with astropy (not through the pipeline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from astroembed.cli import app
from astroembed.config import CrossmatchConfig
from astroembed.matching.orchestrate import crossmatch, staging_dir

runner = CliRunner()
LS_IDS = ("RELEASE", "BRICKID", "OBJID", "BRICKNAME", "BRICK_OBJID")


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _catalog_rows(path: Path) -> pa.Table:
    """Every row with the pixel extension's columns (main and pixel tiles read by pyarrow)."""
    from oracles import tile_with_pixels

    files = sorted((path / "main" / "dataset").rglob("Npix=*.parquet"))
    tiles = [(int(f.parent.parent.name.split("=")[1]), int(f.stem.split("=")[1])) for f in files]
    return pa.concat_tables([tile_with_pixels(path, *t) for t in tiles]) if files else None


def _usable_truth_pairs(survey: Path) -> set[tuple[float, float]]:
    """(ra_ls, ra_desi) of every object seen by both surveys whose primary spectrum is usable.

    The rule, written out independently: the ZCAT_PRIMARY row of a TARGETID has ZWARN == 0 and
    its spectrum (same SURVEY/PROGRAM) has TARGETID > 0, OBJTYPE 'TGT', COADD_FIBERSTATUS 0.
    """
    primary = {}
    for f in survey.rglob("zpix-*.fits"):
        with fits.open(f) as h:
            d = h["ZCATALOG"].data
            for tid, s, p, zw, prim in zip(d["TARGETID"], d["SURVEY"], d["PROGRAM"], d["ZWARN"], d["ZCAT_PRIMARY"]):
                if prim:
                    primary[int(tid)] = (s.strip(), p.strip(), int(zw))
    good = set()
    for f in survey.rglob("coadd-*.fits"):
        with fits.open(f) as h:
            survey_name, program = h[0].header["SURVEY"], h[0].header["PROGRAM"]
            fm = h["FIBERMAP"].data
            for tid, obj, st, ra in zip(fm["TARGETID"], fm["OBJTYPE"], fm["COADD_FIBERSTATUS"], fm["TARGET_RA"]):
                p = primary.get(int(tid))
                if tid > 0 and obj.strip() == "TGT" and st == 0 and p == (survey_name, program, 0):
                    good.add(float(ra))
    truth = pq.read_table(survey / "truth.parquet").to_pandas()
    seen = truth[truth["in_spectro"]]
    return {(float(a), float(b)) for a, b in zip(seen["ra_ls"], seen["ra_desi"]) if float(b) in good}


def _strip_ids(survey: Path, dest: Path, seed: int = 0) -> tuple[Path, Path]:
    """Copies of the inputs with every Legacy Survey ID removed and TARGETIDs scrambled."""
    rng = np.random.default_rng(seed)
    shutil.copytree(survey / "legacysurvey", dest / "legacysurvey")
    shutil.copytree(survey / "desi", dest / "desi")
    for f in (dest / "legacysurvey").rglob("sweep-*.fits"):
        with fits.open(f) as h:
            cols = [c for c in h[1].columns if c.name not in LS_IDS]
            fits.HDUList([h[0].copy(), fits.BinTableHDU.from_columns(cols)]).writeto(f, overwrite=True)
    for f in (dest / "legacysurvey").rglob("*.h5"):
        import h5py

        with h5py.File(f, "a") as h:
            for name in ("release", "brickid", "objid"):
                del h[name]
    tids = set()
    for f in (dest / "desi").rglob("*.fits"):
        with fits.open(f) as h:
            for hdu in h[1:]:
                if hdu.name in ("FIBERMAP", "ZCATALOG", "REDSHIFTS"):
                    tids.update(int(t) for t in hdu.data["TARGETID"] if t > 0)
    mapping = dict(zip(sorted(tids), rng.permutation(len(tids)) + 1))
    for f in (dest / "desi").rglob("*.fits"):
        with fits.open(f) as h:
            hdus = [h[0].copy()]
            for hdu in h[1:]:
                if hdu.name in ("FIBERMAP", "ZCATALOG", "REDSHIFTS"):
                    cols = [c for c in hdu.columns if c.name not in LS_IDS]
                    new = fits.BinTableHDU.from_columns(cols, name=hdu.name)
                    t = new.data["TARGETID"]
                    new.data["TARGETID"] = [mapping.get(int(x), int(x)) for x in t]
                    hdus.append(new)
                else:
                    hdus.append(hdu.copy())
            fits.HDUList(hdus).writeto(f, overwrite=True)
    return dest / "legacysurvey", dest / "desi"


@pytest.fixture(scope="module")
def matched(small_survey, tmp_path_factory):
    out = tmp_path_factory.mktemp("xm") / "matched"
    summary = crossmatch(CrossmatchConfig(images=[str(small_survey / "legacysurvey")],
                                          spectra=[str(small_survey / "desi")], out=str(out),
                                          compare_ids=True, max_rows=120, workers=2))
    return out, summary  # workers=2: a real LocalCluster (small inputs would run in-process)


def test_positional_matches_equal_truth_without_ids(small_survey, tmp_path):
    left, right = _strip_ids(small_survey, tmp_path / "noids")
    out = tmp_path / "cat"
    summary = crossmatch(CrossmatchConfig(images=[str(left)], spectra=[str(right)], out=str(out),
                                          max_rows=120))
    rows = _catalog_rows(out)
    got = set(zip(rows["RA"].to_pylist(), rows["TARGET_RA"].to_pylist()))
    expected = _usable_truth_pairs(small_survey)
    assert len(expected) > 100
    assert got == expected
    assert summary["matched"] == rows.num_rows == len(expected)
    assert rows.column("image").null_count == 0  # cutouts joined by position when IDs are gone


def test_id_match_gives_the_same_pairs(small_survey, matched, tmp_path):
    out, _ = matched
    by_pos = _catalog_rows(out)
    by_ids_out = tmp_path / "ids"
    crossmatch(CrossmatchConfig(images=[str(small_survey / "legacysurvey")],
                                spectra=[str(small_survey / "desi")], out=str(by_ids_out),
                                match_on="ids", max_rows=120))
    by_ids = _catalog_rows(by_ids_out)
    assert sorted(by_pos["TARGETID"].to_pylist()) == sorted(by_ids["TARGETID"].to_pylist())


def test_summary_counts_and_compare_ids(matched):
    out, summary = matched
    assert summary["id_comparison"]["position_only"] == 0
    assert summary["id_comparison"]["ids_only"] == 0
    assert summary["id_comparison"]["both"] == summary["matched"]
    for reason in ("TARGETID", "OBJTYPE", "FIBERSTATUS", "ZWARN", "not_primary"):
        assert summary["dropped"].get(reason, 0) > 0, reason
    assert summary["right_usable"] == summary["right_rows"] - sum(summary["dropped"].values())


def test_catalog_layout_and_lsdb(matched):
    lsdb = pytest.importorskip("lsdb")
    out, summary = matched
    rows = _catalog_rows(out)
    assert rows.num_rows == summary["output_rows"]
    h29 = rows["_healpix_29"].to_numpy()
    assert (np.diff(h29) != 0).any()
    cat = lsdb.open_catalog(out)
    df = cat.compute()
    assert len(df) == rows.num_rows and "image" not in df.columns
    assert sorted(df["TARGETID"]) == sorted(rows["TARGETID"].to_pylist())
    assert not staging_dir(out).exists()
    for col in ("_dist_arcsec", "flux", "ivar", "Z", "image", "FLUX_R_left", "FLUX_R_right"):
        assert col in rows.column_names, col
    assert (rows["_dist_arcsec"].to_numpy() < 1.0).all()


def test_info_lists_tiles(matched):
    out, summary = matched
    result = run_cli("info", out, "--tiles")
    assert result.exit_code == 0, result.output
    lines = result.stdout.split()
    assert len(lines) == summary["tiles_written"] and all("/" in x for x in lines)
    result = run_cli("info", out, "--json")
    doc = json.loads(result.stdout)
    assert doc["complete"] and doc["total_rows"] == summary["output_rows"]
    assert doc["provenance"]["config"]["radius"] == 1.0


def test_resume_after_a_crash_gives_the_same_catalog(small_survey, matched, tmp_path, monkeypatch):
    from astroembed.matching import tilematch
    out = tmp_path / "resumed"
    cfg = dict(images=[str(small_survey / "legacysurvey")], spectra=[str(small_survey / "desi")],
               out=str(out), compare_ids=True, max_rows=120)
    real = tilematch.build_tile
    calls = {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")  # as if the process died mid-run
        return real(*a, **k)

    monkeypatch.setattr(tilematch, "build_tile", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        crossmatch(CrossmatchConfig(**cfg))
    monkeypatch.setattr(tilematch, "build_tile", real)
    assert staging_dir(out).exists()
    summary = crossmatch(CrossmatchConfig(**cfg))
    assert summary["tiles_skipped"] >= 1
    ref_out, ref_summary = matched
    a, b = _catalog_rows(out), _catalog_rows(ref_out)
    assert a.equals(b)
    for key in ("matched", "output_rows", "dropped", "left_rows", "right_rows"):
        assert summary[key] == ref_summary[key], key


@pytest.mark.parametrize("args, message, code", [
    (("--radius", "0"), "--radius", 2),
    (("--radius", "2", "--margin", "1"), "margin", 2),
    (("--mode", "nearest"), "--mode", 2),
    (("--mode", "best-symmetric", "--margin", "1.5"), "margin", 2),
])
def test_bad_arguments(small_survey, tmp_path, args, message, code):
    out = tmp_path / "cat"
    result = run_cli("crossmatch", small_survey / "legacysurvey", small_survey / "desi",
                     "--out", out, *args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert not out.exists()


def test_unreadable_input_leaves_nothing(small_survey, tmp_path):
    desi = tmp_path / "desi"
    shutil.copytree(small_survey / "desi", desi)
    victim = sorted(desi.rglob("coadd-main-*.fits"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    out = tmp_path / "cat"
    result = run_cli("-q", "crossmatch", small_survey / "legacysurvey", desi, "--out", out)
    assert result.exit_code == 1
    assert victim.name in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_input_without_positions(small_survey, tmp_path):
    table = tmp_path / "nopos.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [3.0, 4.0]}), table)
    out = tmp_path / "cat"
    result = run_cli("-q", "crossmatch", table, small_survey / "desi", "--out", out)
    assert result.exit_code == 1
    assert "nopos.parquet" in result.stderr
    assert not out.exists()


def test_no_overlap_gives_an_empty_valid_catalog(small_survey, tmp_path):
    far = tmp_path / "far.parquet"
    pq.write_table(pa.table({"RA": [180.0, 180.001], "DEC": [-30.0, -30.0], "x": [1, 2]}), far)
    out = tmp_path / "cat"
    result = run_cli("crossmatch", far, small_survey / "desi", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output_rows"] == 0
    info = run_cli("info", out, "--json")
    assert info.exit_code == 0 and json.loads(info.stdout)["total_rows"] == 0


def test_existing_catalog_refused_without_overwrite(matched, tmp_path, small_survey):
    out, _ = matched
    result = run_cli("crossmatch", small_survey / "legacysurvey", small_survey / "desi",
                     "--out", out, "--radius", "2")
    assert result.exit_code == 1 and "--overwrite" in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_external_dask_scheduler_gives_the_same_catalog(small_survey, matched, tmp_path):
    """Real `dask scheduler` and `dask worker` processes on localhost, as on a cluster."""
    import subprocess
    import sys
    import time

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker"]
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        procs += [subprocess.Popen([*worker, address, "--nthreads", "1", "--no-dashboard"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(2)]
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        out = tmp_path / "cat"
        result = run_cli("-q", "crossmatch", small_survey / "legacysurvey", small_survey / "desi",
                         "--out", out, "--compare-ids", "--max-rows", 120, "--scheduler", address)
        assert result.exit_code == 0, result.output
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    ref_out, _ = matched
    assert _catalog_rows(out).equals(_catalog_rows(ref_out))


def test_unreachable_scheduler_is_a_clear_error(small_survey, tmp_path):
    out = tmp_path / "cat"
    result = run_cli("-q", "crossmatch", small_survey / "legacysurvey", small_survey / "desi",
                     "--out", out, "--scheduler", f"tcp://127.0.0.1:{_free_port()}")
    assert result.exit_code == 2
    assert "scheduler" in result.stderr
    assert not out.exists()


def _random_tables(tmp_path, n_left=600, seed=1):
    """Parquet tables around RA = 0: right = 70% of left offset by < 1.5" + unrelated rows."""
    rng = np.random.default_rng(seed)
    ra = np.mod(rng.uniform(-0.3, 0.3, n_left), 360.0)
    dec = rng.uniform(-0.3, 0.3, n_left)
    k = int(0.7 * n_left)
    pa_ = rng.uniform(0, 2 * np.pi, k)
    sep = rng.uniform(0, 1.5, k) / 3600
    r_ra = np.mod(ra[:k] + sep * np.sin(pa_) / np.cos(np.radians(dec[:k])), 360.0)
    r_dec = dec[:k] + sep * np.cos(pa_)
    extra = 200
    r_ra = np.r_[r_ra, np.mod(rng.uniform(-0.3, 0.3, extra), 360)]
    r_dec = np.r_[r_dec, rng.uniform(-0.3, 0.3, extra)]
    left = pa.table({"id": np.arange(n_left), "ra": ra, "dec": dec, "p": rng.normal(size=n_left)})
    right = pa.table({"rid": np.arange(len(r_ra)) + 10_000, "ra": r_ra, "dec": r_dec,
                      "p": rng.normal(size=len(r_ra))})
    pq.write_table(left, tmp_path / "left.parquet")
    pq.write_table(right, tmp_path / "right.parquet")
    return left, right


def _oracle_best(left, right, radius):
    """Each left row's nearest right row within the radius: astropy search_around_sky."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    lc = SkyCoord(left["ra"].to_numpy() * u.deg, left["dec"].to_numpy() * u.deg)
    rc = SkyCoord(right["ra"].to_numpy() * u.deg, right["dec"].to_numpy() * u.deg)
    li, ri, d, _ = search_around_sky(lc, rc, radius * u.arcsec)
    best = {}
    for a, b, s in zip(li, ri, d.arcsec):
        if a not in best or s < best[a][1]:
            best[a] = (b, s)
    lid, rid = left["id"].to_numpy(), right["rid"].to_numpy()
    return {(int(lid[a]), int(rid[b])): s for a, (b, s) in best.items()}


@pytest.mark.parametrize("how", ["inner", "left"])
def test_parquet_tables_in_chunks_equal_astropy(tmp_path, monkeypatch, how):
    from astroembed.matching import partition
    monkeypatch.setattr(partition, "CHUNK_ROWS", 170)  # several chunks per input
    left, right = _random_tables(tmp_path)
    out = tmp_path / "cat"
    summary = crossmatch(CrossmatchConfig(images=[str(tmp_path / "left.parquet")],
                                          spectra=[str(tmp_path / "right.parquet")],
                                          out=str(out), radius=1.0, how=how, max_rows=150,
                                          id_column="id", suffixes=("_l", "_r")))
    rows = _catalog_rows(out)
    assert summary["tiles_written"] > 1
    expected = _oracle_best(left, right, 1.0)
    matched = rows.filter(pa.compute.is_valid(rows["rid"]))
    got = dict(zip(zip(matched["id"].to_pylist(), matched["rid"].to_pylist()),
                   matched["_dist_arcsec"].to_pylist()))
    assert set(got) == set(expected)
    assert max(abs(got[k] - expected[k]) for k in got) < 1e-6
    assert rows.num_rows == (left.num_rows if how == "left" else len(expected))
    assert sorted(rows["id"].to_pylist()) == sorted(
        left["id"].to_pylist() if how == "left" else [k[0] for k in expected])
    assert {"ra_l", "ra_r", "p_l", "p_r"} <= set(rows.column_names)


def test_missing_id_column_is_warned(tmp_path, caplog):
    _random_tables(tmp_path, n_left=100)
    with caplog.at_level("WARNING", logger="astroembed"):
        crossmatch(CrossmatchConfig(images=[str(tmp_path / "left.parquet")],
                                    spectra=[str(tmp_path / "right.parquet")],
                                    out=str(tmp_path / "cat")))
    assert "--id-column TARGETID is not a column" in caplog.text


def test_the_answer_key_is_recognised_by_the_survey_not_by_its_name(small_survey, tmp_path):
    """The simulator's truth.parquet, named in its simulation.json, is never an input; a
    user's table that happens to be called truth.parquet is read like any other."""
    import shutil

    from astroembed.matching.partition import classify_inputs

    images = [str(small_survey / "legacysurvey"), str(small_survey / "truth.parquet")]
    inputs = classify_inputs(images, [str(small_survey / "desi")])
    assert not any(Path(f.path).name == "truth.parquet" for f in inputs)
    mine = tmp_path / "mine"
    mine.mkdir()
    table = pq.read_table(small_survey / "truth.parquet").select(["ra", "dec"]).slice(0, 50)
    pq.write_table(table, mine / "truth.parquet")
    shutil.copy(small_survey / "simulation.json", tmp_path / "simulation.json")  # not beside it
    inputs = classify_inputs([str(mine)], [str(small_survey / "desi")])
    left = [Path(f.path) for f in inputs if f.side == "left"]
    assert left in ([mine], [mine / "truth.parquet"])  # read (a directory of Parquet: one table)
