"""The command line: exit codes, one-line errors naming the file, nothing left half-written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from astroembed.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _one_coadd(survey: Path) -> Path:
    return sorted(survey.rglob("coadd-main-*.fits"))[0]


def test_version_and_help():
    result = run("--version")
    assert result.exit_code == 0 and "astroembed 0.1.0" in result.stdout
    for cmd in ("simulate", "inspect"):
        result = run(cmd, "--help")
        assert result.exit_code == 0 and "Example:" in result.stdout


def test_help_does_not_import_heavy_libraries():
    code = ("import sys, astroembed.cli; "
            "print(sorted(m for m in ('numpy', 'astropy', 'pyarrow', 'dask', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_runs():
    exe = Path(sys.executable).with_name("astroembed")
    if not exe.exists():
        pytest.skip("console script not installed next to this interpreter")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("astroembed ")


def test_simulate_then_inspect(tmp_path):
    out = tmp_path / "survey"
    result = run("-q", "simulate", out, "--n-galaxies", 40, "--seed", 3, "--cutout-size", 16)
    assert result.exit_code == 0, result.output
    assert "Simulated 40 galaxies" in result.stdout
    result = run("inspect", out, "--json")
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert {"desi_spectra", "desi_redshifts", "ls_catalog", "ls_cutout_stack"} <= set(report["totals"])
    assert report["totals"]["ls_catalog"]["rows"] >= 40
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_simulate_refuses_existing_output(small_survey, tmp_path):
    out = tmp_path / "survey"
    shutil.copytree(small_survey, out)
    before = _tree(out)
    result = run("simulate", out, "--n-galaxies", 20)
    assert result.exit_code == 1
    assert str(out) in result.stderr and "--overwrite" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert _tree(out) == before


def test_simulate_overwrite_replaces(small_survey, tmp_path):
    out = tmp_path / "survey"
    shutil.copytree(small_survey, out)
    result = run("-q", "simulate", out, "--n-galaxies", 20, "--cutout-size", 16, "--overwrite")
    assert result.exit_code == 0, result.output
    assert '"n_galaxies": 20' in (out / "simulation.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["survey"]


@pytest.mark.parametrize("args, message", [
    (("--n-galaxies", "0"), "--n-galaxies"),
    (("--cutout-size", "8"), "--cutout-size"),
    (("--seed", "-1"), "--seed"),
])
def test_simulate_bad_arguments_are_usage_errors(tmp_path, args, message):
    out = tmp_path / "survey"
    result = run("simulate", out, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not out.exists()


def test_simulate_onto_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    result = run("simulate", target)
    assert result.exit_code == 1 and str(target) in result.stderr
    assert target.read_text() == "keep me"


def test_simulate_crash_leaves_nothing(tmp_path, monkeypatch):
    """A failure half-way (here: while writing DESI files) leaves no OUT and no temp dirs."""
    from astroembed.simulation import survey

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(survey, "_write_coadd", boom)
    out = tmp_path / "survey"
    with pytest.raises(RuntimeError):
        survey.write_survey(out, survey.SimulationConfig(n_galaxies=20, cutout_size=16))
    assert list(tmp_path.iterdir()) == []


def test_simulate_crash_keeps_previous_output(small_survey, tmp_path, monkeypatch):
    from astroembed.simulation import survey

    out = tmp_path / "survey"
    shutil.copytree(small_survey, out)
    before = _tree(out)
    monkeypatch.setattr(survey, "_write_zcatalogs", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        survey.write_survey(out, survey.SimulationConfig(n_galaxies=20, cutout_size=16), overwrite=True)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["survey"]


# ---- bad inputs, made from simulator output so they run without ../shared ----------------


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _without_hdu(src: Path, dst: Path, name: str) -> Path:
    with fits.open(src) as h:
        fits.HDUList([x.copy() for x in h if x.name != name]).writeto(dst)
    return dst


def _with_fibermap(src: Path, dst: Path, column: str, row: int, value) -> Path:
    with fits.open(src) as h:
        h = fits.HDUList([x.copy() for x in h])
        h["FIBERMAP"].data[column][row] = value
        h.writeto(dst)
    return dst


def _wrong_arm_shape(src: Path, dst: Path) -> Path:
    with fits.open(src) as h:
        h = fits.HDUList([x.copy() for x in h])
        h["R_FLUX"].data = h["R_FLUX"].data[:, :-5]
        h.writeto(dst)
    return dst


def _sweep_without(src: Path, dst: Path, column: str) -> Path:
    with fits.open(src) as h:
        cols = [c for c in h[1].columns if c.name != column]
        fits.HDUList([h[0].copy(), fits.BinTableHDU.from_columns(cols)]).writeto(dst)
    return dst


BAD_INPUTS = {
    "truncated coadd": (lambda s, d: _truncated(_one_coadd(s), d / "coadd-x.fits"), ("coadd-x.fits",)),
    "not FITS": (lambda s, d: (d / "notes.fits").write_text("hello") and d / "notes.fits", ("notes.fits",)),
    "empty file": (lambda s, d: (d / "empty.fits").touch() or d / "empty.fits", ("empty.fits", "empty")),
    "coadd without FIBERMAP": (lambda s, d: _without_hdu(_one_coadd(s), d / "c.fits", "FIBERMAP"), ("c.fits", "FIBERMAP")),
    "coadd without an arm": (lambda s, d: _without_hdu(_one_coadd(s), d / "c.fits", "R_FLUX"), ("c.fits", "R_FLUX")),
    "wrong arm shape": (lambda s, d: _wrong_arm_shape(_one_coadd(s), d / "c.fits"), ("c.fits", "R_FLUX")),
    "NaN RA": (lambda s, d: _with_fibermap(_one_coadd(s), d / "c.fits", "TARGET_RA", 3, np.nan), ("c.fits", "TARGET_RA", "row 3")),
    "Dec out of range": (lambda s, d: _with_fibermap(_one_coadd(s), d / "c.fits", "TARGET_DEC", 2, 95.0), ("c.fits", "TARGET_DEC", "row 2")),
    "sweep without RA": (lambda s, d: _sweep_without(sorted(s.rglob("sweep-*.fits"))[0], d / "sweep-x.fits", "RA"), ("sweep-x.fits",)),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_inspect_bad_input(small_survey, tmp_path, case):
    make, expected = BAD_INPUTS[case]
    bad_dir = tmp_path / "inputs"
    bad_dir.mkdir()
    path = make(small_survey, bad_dir)
    before = _tree(bad_dir)
    result = run("inspect", path)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.stderr, (case, result.stderr)
    assert _tree(bad_dir) == before  # nothing written beside the input


def test_inspect_missing_path(tmp_path):
    result = run("inspect", tmp_path / "nope")
    assert result.exit_code == 1 and "nope" in result.stderr


def test_inspect_reports_every_bad_file_in_a_directory(small_survey, tmp_path):
    inputs = tmp_path / "inputs"
    shutil.copytree(small_survey / "desi", inputs)
    victim = _one_coadd(inputs)
    _truncated(victim, victim.with_name("broken.fits"))
    os.remove(victim)
    result = run("inspect", inputs)
    assert result.exit_code == 1
    assert "broken.fits" in result.stderr
    assert "DESI spectra" in result.stdout  # the good files are still summarised
