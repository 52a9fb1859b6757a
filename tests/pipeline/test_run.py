"""``astroembed run``: incremental updates equal a full rebuild, nothing to do twice, the lock,
bad inputs with fail/skip, killed runs, JSON logs.

Oracles: which tiles a new file may touch comes from healpy (the file's fibre positions,
read with astropy, and discs of the margin radius around them); "equal to a full rebuild"
compares with ``crossmatch`` run from scratch on the same tile layout, row by row by ID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import coadds

ROOT = Path(__file__).resolve().parents[2]
EXE = [sys.executable, "-m", "astroembed.cli"]


def cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def survey(run_survey) -> Path:
    return run_survey


def setup_pipeline(tmp_path: Path, survey: Path, hold: int = 0, probe: bool = False) -> Path:
    """A copy of the survey as the inputs (``hold`` coadds set aside in tmp/held) and a config."""
    shutil.copytree(survey, tmp_path / "in")
    held = tmp_path / "held"
    held.mkdir()
    files = coadds(tmp_path / "in")
    for f in [files[0], files[-1]][:hold]:
        shutil.move(f, held / f.name)
        (held / f.name).with_suffix(".where").write_text(str(f))
    probe_table = ('[probe]\ntargets = "redshift"\nmethod = "knn"\nbaselines = false\n'
                   'out = "out/probe"\n') if probe else ""
    config = tmp_path / "pipe.toml"
    config.write_text('images = "in/legacysurvey"\nspectra = "in/desi"\ncatalog = "out/cat"\n'
                      '[crossmatch]\nradius = 1.0\nmax_rows = 200\n' + probe_table)
    return config


def restore_held(tmp_path: Path) -> list[Path]:
    back = []
    for marker in sorted((tmp_path / "held").glob("*.where")):
        dest = Path(marker.read_text())
        shutil.move(marker.with_suffix(".fits"), dest)
        back.append(dest)
    return back


def tile_files(catalog: Path) -> dict[str, tuple[float, int]]:
    return {str(p.relative_to(catalog)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in (catalog / "main" / "dataset").rglob("Npix=*.parquet")}


def tile_of(path: str) -> tuple[int, int]:
    parts = Path(path).parts
    return int(parts[-3].split("=")[1]), int(parts[-1].split("=")[1].split(".")[0])


def read_rows(catalog: Path) -> dict[int, dict]:
    table = pq.ParquetDataset(catalog / "main" / "dataset").read()
    cols = [c for c in table.column_names if not c.startswith("embedding_")]
    rows = {}
    for i, tid in enumerate(table.column("TARGETID").to_pylist()):
        assert tid not in rows, f"TARGETID {tid} twice"
        rows[tid] = {c: table.column(c)[i].as_py() for c in cols}
        for c in ("embedding_image", "embedding_spectrum"):
            if c in table.column_names:
                v = table.column(c)[i].as_py()
                rows[tid][c] = None if v is None else np.asarray(v)
    return rows


def assert_same_rows(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for tid, ra in a.items():
        rb = b[tid]
        assert ra.keys() == rb.keys()
        for c, va in ra.items():
            if c.startswith("embedding_"):
                np.testing.assert_allclose(va, rb[c], atol=1e-5)
            elif c not in ("image", "flux", "ivar"):
                assert va == rb[c] or (va != va and rb[c] != rb[c]), (tid, c, va, rb[c])
            else:
                np.testing.assert_array_equal(np.asarray(va, dtype=float), np.asarray(rb[c], dtype=float))


# ----------------------------------------------------------------------------- incremental

def test_new_inputs_redo_only_the_tiles_they_reach_and_equal_a_full_rebuild(tmp_path, survey):
    import healpy as hp
    from astropy.io import fits

    import astroembed
    from astroembed.config import load_run_config
    from astroembed.catalog.reader import read_catalog_info
    from astroembed.matching.orchestrate import crossmatch
    from astroembed.pipeline.state import read_state

    config = setup_pipeline(tmp_path, survey, hold=2)
    first = cli("-q", "run", config, "--json")
    assert first.returncode == 0, first.stderr
    catalog = tmp_path / "out" / "cat"
    before = tile_files(catalog)
    state = read_state(catalog)
    layout = [tuple(t) for t in state["layout"]]
    assert len(layout) > 4

    back = restore_held(tmp_path)
    time.sleep(0.05)
    dry = json.loads(cli("-q", "run", config, "--dry-run", "--json").stdout)
    assert sorted(dry["inputs"]["new"]) == sorted(str(p.resolve()) for p in back)
    assert tile_files(catalog) == before  # a dry run changes nothing

    second = cli("-q", "run", config, "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["stages"]["crossmatch"]["mode"] == "update"
    after = tile_files(catalog)
    rewritten = {tile_of(p) for p in after if before.get(p) != after[p]}
    assert rewritten, "the new files reached no tile"

    # Oracle: tiles holding a fibre of the new files, or within the margin of one.
    ra, dec = [], []
    for f in back:
        with fits.open(f) as hdul:
            ra.append(hdul["FIBERMAP"].data["TARGET_RA"])
            dec.append(hdul["FIBERMAP"].data["TARGET_DEC"])
    ra, dec = np.concatenate(ra), np.concatenate(dec)
    margin = np.radians((1.0 + 1.0) / 3600)  # the radius, and slack for the tile's margin
    reachable = set()
    for order, pixel in layout:
        nside = 2 ** order
        inside = hp.ang2pix(nside, ra, dec, nest=True, lonlat=True) == pixel
        near = any(pixel in hp.query_disc(nside, hp.ang2vec(r, d, lonlat=True), margin,
                                          inclusive=True, nest=True)
                   for r, d in zip(ra, dec))
        if inside.any() or near:
            reachable.add((order, pixel))
    assert rewritten <= reachable
    holding = {t for t in layout
               if (hp.ang2pix(2 ** t[0], ra, dec, nest=True, lonlat=True) == t[1]).any()}
    assert {t for t in holding if t in {tile_of(p) for p in after}} <= rewritten

    # Provenance names today's inputs and records the update (not only the first full run).
    provenance = read_catalog_info(catalog).provenance
    new_paths = sorted(str(p.resolve()) for p in back)
    assert set(new_paths) <= {i["path"] for i in provenance["inputs"]}
    update = provenance["updates"][-1]
    assert update["inputs_changed"] == new_paths
    assert rewritten <= {tuple(t) for t in update["tiles_redone"]}
    assert update["summary"]["matched"] > 0

    # A full rebuild on the same layout, embedded the same way, holds the same rows.
    cfg = load_run_config(config)
    rebuilt = tmp_path / "rebuilt"
    crossmatch(cfg.crossmatch.__class__(**{**cfg.crossmatch.__dict__, "out": str(rebuilt),
                                           "images": cfg.images, "spectra": cfg.spectra}),
               layout=layout)
    astroembed.embed(rebuilt)
    assert_same_rows(read_rows(catalog), read_rows(rebuilt))


def test_a_first_dry_run_writes_nothing(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey)
    dry = cli("-q", "run", config, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["stages"]["crossmatch"]["mode"] == "full"
    assert not (tmp_path / "out").exists()  # not even the lock's directory


def test_a_rerun_with_nothing_new_does_nothing_and_says_so(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey)
    assert cli("-q", "run", config).returncode == 0
    catalog = tmp_path / "out" / "cat"
    before = tile_files(catalog)
    again = cli("run", config)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert tile_files(catalog) == before
    info = cli("info", catalog)
    assert "last run: nothing to do" in info.stdout
    assert "embedding_spectrum: astroembed-sim" in info.stdout


def test_a_touched_but_identical_input_is_not_a_change(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey)
    assert cli("-q", "run", config).returncode == 0
    f = coadds(tmp_path / "in")[0]
    os.utime(f, (time.time() + 10, time.time() + 10))
    report = json.loads(cli("-q", "run", config, "--json").stdout)
    assert report["outcome"] == "nothing to do"
    assert report["inputs"]["changed"] == [] and report["inputs"]["new"] == []


# ----------------------------------------------------------------------------- lock

def test_a_second_run_while_one_holds_the_catalog_exits_3(tmp_path, survey):
    from astroembed.catalog.lock import CatalogLock

    config = setup_pipeline(tmp_path, survey)
    catalog = tmp_path / "out" / "cat"
    with CatalogLock(catalog, "run").exclusive():
        blocked = cli("run", config)
    assert blocked.returncode == 3
    assert "another astroembed process is working on it (astroembed run" in blocked.stderr
    assert f"pid {os.getpid()}" in blocked.stderr
    assert not catalog.exists()


def test_two_runs_at_once_one_runs_one_exits_3(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([*EXE, "-q", "run", str(config)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes == [0, 3], [p.stderr.read() for p in procs]


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey)
    lock = tmp_path / "out" / ".cat.astroembed.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("pid 999999 on elsewhere since 2026-01-01T00:00:00+00:00")
    done = cli("run", config)
    assert done.returncode == 0, done.stderr
    assert "taking over the lock" in done.stderr


# ----------------------------------------------------------------------------- bad inputs

def snapshot(path: Path) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob("*") if p.is_file()}


def test_a_corrupt_input_fails_with_its_name_or_is_skipped_with_exit_4(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey, hold=1)
    assert cli("-q", "run", config).returncode == 0
    catalog = tmp_path / "out" / "cat"
    restore_held(tmp_path)
    bad = coadds(tmp_path / "in")[0].parent / "coadd-main-bright-99999.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + os.urandom(5000))
    before = snapshot(catalog)

    failed = cli("run", config)
    assert failed.returncode == 1
    assert str(bad) in failed.stderr.splitlines()[-1]
    after = snapshot(catalog)
    state_file = str(catalog / "astroembed_state.json")
    assert {k: v for k, v in after.items() if k != state_file} == \
        {k: v for k, v in before.items() if k != state_file}
    assert "failed" in cli("info", catalog).stdout

    skipped = cli("run", config, "--on-error", "skip", "--json")
    assert skipped.returncode == 4, skipped.stderr
    report = json.loads(skipped.stdout)
    assert list(report["skipped_inputs"]) == [str(bad)]
    assert report["stages"]["crossmatch"]["mode"] == "update"
    assert report["stages"]["embed"]["tiles_embedded"] > 0
    assert str(bad) in skipped.stderr


def test_config_errors_exit_2_with_a_suggestion(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey)
    config.write_text(config.read_text().replace("radius = 1.0", "radus = 1.0"))
    result = cli("run", config)
    assert result.returncode == 2
    assert "Did you mean 'radius'" in result.stderr
    bad_flag = cli("run", config, "--on-error", "ignore")
    assert bad_flag.returncode == 2


# ----------------------------------------------------------------------------- logs

def test_json_logs_are_one_object_per_line_with_the_documented_keys(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey, hold=1)
    assert cli("-q", "run", config).returncode == 0
    restore_held(tmp_path)
    result = cli("run", config, "--log-format", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert all({"time", "level", "event", "message"} <= e.keys() for e in events)
    names = [e["event"] for e in events]
    assert names[0] == "run_start" and names[-1] == "run_end"
    assert "crossmatch_update" in names and "embed_done" in names
    tiles = [e for e in events if e["event"] == "tile_redone"]
    assert tiles and all("/" in e["tile"] for e in tiles)
    assert any(e.get("counts") for e in events)


# ----------------------------------------------------------------------------- killed runs

@pytest.fixture(scope="module")
def uninterrupted(survey, tmp_path_factory) -> dict[int, dict]:
    """The rows of one uninterrupted run of the pipeline (no column records an input path, so
    runs over other copies of the survey must give the same rows)."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    config = setup_pipeline(tmp_path, survey)
    assert cli("-q", "run", config).returncode == 0
    return read_rows(tmp_path / "out" / "cat")


@pytest.mark.slow
@pytest.mark.parametrize("after, delay", [("run_start", 0.0), ("crossmatch_full", 0.3),
                                          ("crossmatch_full", 1.5), ("embed_start", 0.2),
                                          ("embed_start", 1.0)])
def test_a_run_killed_at_any_point_finishes_identically_when_run_again(tmp_path, survey, after,
                                                                      delay, uninterrupted):
    config = setup_pipeline(tmp_path, survey)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*EXE, "run", str(config), "--log-format", "json"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = False
    for line in proc.stderr:  # kill it `delay` seconds after the event `after`
        if line.startswith("{") and json.loads(line)["event"] == after:
            seen = True
            break
    assert seen, f"the run never logged {after}"
    time.sleep(delay)
    if proc.poll() is not None:  # nothing was killed: there is no resume to test
        pytest.skip(f"the run finished within {delay} s of {after}, before the kill")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed while running, not finished
    again = cli("-q", "run", config)
    assert again.returncode == 0, again.stderr
    catalog = tmp_path / "out" / "cat"
    assert "complete" in cli("info", catalog).stdout.splitlines()[0]
    assert_same_rows(read_rows(catalog), uninterrupted)
    leftovers = [p for p in (tmp_path / "out").iterdir()
                 if p.name not in ("cat", ".cat.astroembed.lock")]
    assert not leftovers, leftovers


def test_skip_never_drops_the_rows_of_a_file_an_earlier_run_read(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey)
    assert cli("-q", "run", config).returncode == 0
    catalog = tmp_path / "out" / "cat"
    before = snapshot(catalog)
    known = coadds(tmp_path / "in")[0]
    known.write_bytes(b"not a FITS file at all" * 100)
    result = cli("run", config, "--on-error", "skip")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert str(known) in line and "read by an earlier run" in line
    after = snapshot(catalog)
    state_file = str(catalog / "astroembed_state.json")
    assert {k: v for k, v in after.items() if k != state_file} == \
        {k: v for k, v in before.items() if k != state_file}


def test_json_logs_stay_json_when_a_run_fails(tmp_path, survey):
    config = setup_pipeline(tmp_path, survey)
    bad = coadds(tmp_path / "in")[0].parent / "coadd-main-bright-99999.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + os.urandom(5000))
    result = cli("run", config, "--log-format", "json")
    assert result.returncode == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and str(bad) in lines[-1]
    events = [json.loads(ln) for ln in lines[:-1]]  # everything before the error line is JSON
    assert events[-1]["event"] == "run_failed" and str(bad) in events[-1]["error"]
