"""Every command given what users get wrong: one error line, at most one hint, no traceback.

Each case runs a command with a bad argument or input and checks the exit code (1, or 2 for
usage and configuration errors), that stderr is one ``error:`` line and at most one hint,
that nothing mentions a traceback, and that nothing was written: the output the case names
does not exist afterwards and the shared inputs are unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astroembed.cli import app

runner = CliRunner()

CROP, DIM = 16, 8
NOT_THERE = "no/such/path"

TRAIN_TOMLS = {
    "train_typo": "batch_sise = 32\n",
    "train_type": "batch_size = \"big\"\n",
    "train_range": "val_fraction = 1.5\n",
    "train_syntax": "batch_size = = 3\n",
}


def _run_toml(images: str, spectra: str, catalog: str, extra: str = "") -> str:
    return f'images = "{images}"\nspectra = "{spectra}"\ncatalog = "{catalog}"\n{extra}'


@pytest.fixture(scope="module")
def fx(small_survey, tmp_path_factory) -> dict[str, Path]:
    """Shared inputs, good and bad, that every case may read and none may change."""
    import astroembed
    import tiny_models

    root = tmp_path_factory.mktemp("bad_inputs")
    paths = {"root": root, "survey": small_survey, "ls": small_survey / "legacysurvey",
             "desi": small_survey / "desi"}
    paths["matched"] = root / "matched"
    astroembed.crossmatch(paths["ls"], paths["desi"], paths["matched"], max_rows=80)
    paths["models"] = tiny_models.model_dir(root / "models", crop=CROP, dim=DIM)
    paths["embedded"] = root / "embedded"
    shutil.copytree(paths["matched"], paths["embedded"])
    astroembed.embed(paths["embedded"], model=str(paths["models"]))
    paths["probe"] = root / "probe"
    astroembed.probe(paths["embedded"], method=("knn",), k=5, baselines=False,
                             save=str(paths["probe"]))
    paths["empty"] = root / "empty"
    paths["empty"].mkdir()
    paths["file"] = root / "notes.txt"
    paths["file"].write_text("not a catalog\n")
    coadd = sorted(small_survey.rglob("coadd-main-*.fits"))[0]
    paths["truncated"] = root / "truncated" / coadd.name
    paths["truncated"].parent.mkdir()
    paths["truncated"].write_bytes(coadd.read_bytes()[:5000])
    paths["junk_fits"] = root / "junk.fits"
    paths["junk_fits"].write_bytes(b"this is not FITS" * 400)
    paths["junk_onnx"] = root / "junk.onnx"
    paths["junk_onnx"].write_bytes(b"\x00\x01 not a protobuf" * 50)
    for name, text in TRAIN_TOMLS.items():
        paths[name] = root / f"{name}.toml"
        paths[name].write_text(text)
    good = (str(paths["ls"]), str(paths["desi"]), str(root / "run_out"))
    runs = {"run_typo": _run_toml(*good, "[crossmatch]\nradus = 1.0\n"),
            "run_type": _run_toml(*good, "[crossmatch]\nradius = \"one\"\n"),
            "run_range": _run_toml(*good, "[embed]\nbatch_size = 0\n"),
            "run_no_catalog": f'images = "{good[0]}"\nspectra = "{good[1]}"\n',
            "run_predict": _run_toml(*good, "[predict]\ncolumn = \"z\"\n"),
            "run_table": _run_toml(*good, "embed = 3\n"),
            "run_missing_input": _run_toml(str(root / NOT_THERE), good[1], good[2]),
            "run_syntax": "images = [\n"}
    for name, text in runs.items():
        paths[name] = root / f"{name}.toml"
        paths[name].write_text(text)
    return paths


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


# (id, arguments with {placeholders} for fx paths and {new}: a path that must stay absent)
CASES = [
    # simulate
    ("simulate-zero-galaxies", ["simulate", "{new}", "--n-galaxies", "0"]),
    ("simulate-negative-galaxies", ["simulate", "{new}", "--n-galaxies", "-5"]),
    ("simulate-tiny-cutout", ["simulate", "{new}", "--cutout-size", "4"]),
    ("simulate-zero-cutout", ["simulate", "{new}", "--cutout-size", "0"]),
    ("simulate-out-is-file", ["simulate", "{file}", "--n-galaxies", "5"]),
    ("simulate-parent-is-file", ["simulate", "{file}/survey", "--n-galaxies", "5"]),
    ("simulate-unwritable", ["simulate", "/proc/astroembed-survey", "--n-galaxies", "5"]),
    ("simulate-bad-int", ["simulate", "{new}", "--n-galaxies", "many"]),
    # inspect
    ("inspect-missing", ["inspect", "{root}/" + NOT_THERE]),
    ("inspect-truncated-fits", ["inspect", "{truncated}"]),
    ("inspect-junk-fits", ["inspect", "{junk_fits}"]),
    ("inspect-empty-dir", ["inspect", "{empty}"]),
    # crossmatch
    ("crossmatch-missing-spectra", ["crossmatch", "{ls}", "{root}/" + NOT_THERE, "--out", "{new}"]),
    ("crossmatch-zero-radius", ["crossmatch", "{ls}", "{desi}", "--out", "{new}", "--radius", "0"]),
    ("crossmatch-negative-radius", ["crossmatch", "{ls}", "{desi}", "--out", "{new}", "--radius", "-1"]),
    ("crossmatch-negative-margin-catalog", ["crossmatch", "{ls}", "{desi}", "--out", "{new}", "--margin-catalog", "-1"]),
    ("convert-missing", ["convert", "--catalog", "{root}/" + NOT_THERE]),
    ("convert-not-single-table", ["convert", "{matched}"]),
    ("convert-empty-dir", ["convert", "{empty}"]),
    ("crossmatch-unknown-mode", ["crossmatch", "{ls}", "{desi}", "--out", "{new}", "--mode", "nearest"]),
    ("crossmatch-unknown-how", ["crossmatch", "{ls}", "{desi}", "--out", "{new}", "--how", "outer"]),
    ("crossmatch-junk-fits", ["crossmatch", "{junk_fits}", "{desi}", "--out", "{new}"]),
    ("crossmatch-truncated-fits", ["crossmatch", "{ls}", "{truncated}", "--out", "{new}"]),
    ("crossmatch-out-is-file", ["crossmatch", "{ls}", "{desi}", "--out", "{file}"]),
    ("crossmatch-out-parent-is-file", ["crossmatch", "{ls}", "{desi}", "--out", "{file}/cat"]),
    ("crossmatch-out-unwritable", ["crossmatch", "{ls}", "{desi}", "--out", "/proc/astroembed-cat"]),
    ("crossmatch-no-out", ["crossmatch", "{ls}", "{desi}"]),
    ("crossmatch-unknown-option", ["crossmatch", "{ls}", "{desi}", "--out", "{new}", "--radus", "1"]),
    # info
    ("info-missing", ["info", "--catalog", "{root}/" + NOT_THERE]),
    ("info-two-catalogs", ["info", "{matched}", "--catalog", "{embedded}"]),
    ("info-no-catalog", ["info", "--tiles"]),
    ("convert-no-catalog", ["convert"]),
    ("info-not-a-catalog", ["info", "{survey}"]),
    ("info-file", ["info", "{file}"]),
    ("info-tiles-not-a-catalog", ["info", "-c", "{empty}", "--tiles"]),
    # embed
    ("embed-missing-catalog", ["embed", "--catalog", "{root}/" + NOT_THERE, "--model", "{models}"]),
    ("embed-not-a-catalog", ["embed", "--catalog", "{survey}", "--model", "{models}"]),
    ("embed-catalog-is-file", ["embed", "--catalog", "{file}", "--model", "{models}"]),
    ("embed-unknown-modality", ["embed", "--catalog", "{matched}", "--model", "{models}", "--modality", "text"]),
    ("embed-unknown-device", ["embed", "--catalog", "{matched}", "--model", "{models}", "--device", "gpu"]),
    ("embed-zero-batch", ["embed", "--catalog", "{matched}", "--model", "{models}", "--batch-size", "0"]),
    ("embed-negative-batch", ["embed", "--catalog", "{matched}", "--model", "{models}", "--batch-size", "-8"]),
    ("embed-malformed-tile", ["embed", "--catalog", "{matched}", "--model", "{models}", "--tile", "3-5"]),
    ("embed-absent-tile", ["embed", "--catalog", "{matched}", "--model", "{models}", "--tile", "0/1"]),
    ("embed-model-without-onnx", ["embed", "--catalog", "{matched}", "--model", "{empty}"]),
    ("embed-model-missing", ["embed", "--catalog", "{matched}", "--model", "{root}/" + NOT_THERE]),
    ("embed-model-corrupt", ["embed", "--catalog", "{matched}", "--model", "{junk_onnx}"]),
    # probe
    ("probe-no-embeddings", ["probe", "--catalog", "{matched}", "--no-baselines"]),
    ("probe-missing-catalog", ["probe", "--catalog", "{root}/" + NOT_THERE]),
    ("probe-unknown-method", ["probe", "--catalog", "{embedded}", "--method", "svm"]),
    ("probe-unknown-embedding", ["probe", "--catalog", "{embedded}", "--embedding", "pixels"]),
    ("probe-one-fold", ["probe", "--catalog", "{embedded}", "--folds", "1"]),
    ("probe-zero-k", ["probe", "--catalog", "{embedded}", "--k", "0"]),
    ("probe-unknown-metric", ["probe", "--catalog", "{embedded}", "--metric", "manhattan"]),
    ("probe-unknown-index", ["probe", "--catalog", "{embedded}", "--index", "annoy"]),
    ("probe-unknown-target", ["probe", "--catalog", "{embedded}", "--target", "MASS"]),
    ("probe-out-is-file", ["probe", "--catalog", "{embedded}", "--k", "5", "--out", "{file}"]),
    ("probe-out-parent-is-file", ["probe", "--catalog", "{embedded}", "--k", "5", "--out", "{file}/probe"]),
    ("probe-out-unwritable", ["probe", "--catalog", "{embedded}", "--k", "5", "--out", "/proc/astroembed-probe"]),
    ("probe-save-parent-is-file", ["probe", "--catalog", "{embedded}", "--k", "5", "--save", "{file}/saved"]),
    ("probe-save-unwritable", ["probe", "--catalog", "{embedded}", "--k", "5", "--save", "/sys/astroembed-probe"]),
    ("probe-bad-int", ["probe", "--catalog", "{embedded}", "--folds", "five"]),
    ("probe-level-one", ["probe", "--catalog", "{embedded}", "--level", "0.68,1", "--out", "{new}"]),
    ("probe-level-not-a-number", ["probe", "--catalog", "{embedded}", "--level", "wide"]),
    ("probe-unknown-protocol", ["probe", "--catalog", "{embedded}", "--protocol", "paper"]),
    # predict
    ("predict-probe-missing", ["predict", "--catalog", "{embedded}", "--probe", "{root}/" + NOT_THERE]),
    ("predict-probe-not-saved", ["predict", "--catalog", "{embedded}", "--probe", "{empty}"]),
    ("predict-probe-is-file", ["predict", "--catalog", "{embedded}", "--probe", "{file}"]),
    ("predict-probe-is-catalog", ["predict", "--catalog", "{embedded}", "--probe", "{matched}"]),
    ("predict-no-embeddings", ["predict", "--catalog", "{matched}", "--probe", "{probe}"]),
    ("predict-missing-catalog", ["predict", "--catalog", "{root}/" + NOT_THERE, "--probe", "{probe}"]),
    ("predict-no-probe-option", ["predict", "--catalog", "{embedded}"]),
    ("predict-level-zero", ["predict", "--catalog", "{embedded}", "--probe", "{probe}", "--level", "0"]),
    # search
    ("search-no-embeddings", ["search", "--catalog", "{matched}", "--like", "1"]),
    ("search-unknown-id", ["search", "--catalog", "{embedded}", "--like", "1"]),
    ("search-text-id", ["search", "--catalog", "{embedded}", "--like", "galaxy"]),
    ("search-zero-k", ["search", "--catalog", "{embedded}", "--like", "1", "--k", "0"]),
    ("search-unknown-index", ["search", "--catalog", "{embedded}", "--like", "1", "--index", "hnsw"]),
    ("search-unknown-modality", ["search", "--catalog", "{embedded}", "--like", "1", "--from", "pixels"]),
    ("search-neither-like-nor-evaluate", ["search", "--catalog", "{embedded}"]),
    ("search-plot-is-dir", ["search", "--catalog", "{embedded}", "--like", "{first_id}", "--plot", "{empty}"]),
    ("search-plot-parent-is-file", ["search", "--catalog", "{embedded}", "--like", "{first_id}", "--plot", "{file}/n.png"]),
    ("search-plot-unwritable", ["search", "--catalog", "{embedded}", "--like", "{first_id}", "--plot", "/proc/astroembed.png"]),
    ("search-missing-catalog", ["search", "--catalog", "{root}/" + NOT_THERE, "--like", "1"]),
    # train
    ("train-config-typo", ["train", "--catalog", "{matched}", "--out", "{new}", "--config", "{train_typo}"]),
    ("train-config-type", ["train", "--catalog", "{matched}", "--out", "{new}", "--config", "{train_type}"]),
    ("train-config-range", ["train", "--catalog", "{matched}", "--out", "{new}", "--config", "{train_range}"]),
    ("train-config-syntax", ["train", "--catalog", "{matched}", "--out", "{new}", "--config", "{train_syntax}"]),
    ("train-config-missing", ["train", "--catalog", "{matched}", "--out", "{new}", "--config", "{root}/" + NOT_THERE]),
    ("train-zero-batch", ["train", "--catalog", "{matched}", "--out", "{new}", "--batch-size", "0"]),
    ("train-missing-catalog", ["train", "--catalog", "{root}/" + NOT_THERE, "--out", "{new}"]),
    ("train-out-parent-is-file", ["train", "--catalog", "{matched}", "--out", "{file}/model"]),
    # export
    ("export-not-a-model", ["export", "{empty}", "--out", "{new}"]),
    ("export-onnx-dir", ["export", "{models}", "--out", "{new}"]),
    ("export-missing", ["export", "{root}/" + NOT_THERE, "--out", "{new}"]),
    ("export-file", ["export", "{file}", "--out", "{new}"]),
    ("export-unknown-precision", ["export", "{empty}", "--out", "{new}", "--precision", "int8"]),
    # doctor
    ("doctor-unknown-device", ["doctor", "--device", "gpu"]),
    ("doctor-zero-rows", ["doctor", "--rows", "0"]),
    ("doctor-zero-batch", ["doctor", "--batch-size", "0"]),
    ("doctor-model-missing", ["doctor", "--model", "{root}/" + NOT_THERE, "--rows", "8"]),
    ("doctor-model-is-a-text-file", ["doctor", "--model", "{file}", "--rows", "8"]),
    ("doctor-model-without-onnx", ["doctor", "--model", "{empty}", "--rows", "8"]),
    # import-model
    ("import-model-missing", ["import-model", "specformer", "{root}/" + NOT_THERE, "--out", "{new}"]),
    ("import-model-not-a-checkpoint", ["import-model", "specformer", "{file}", "--out", "{new}"]),
    ("import-model-checkpoint-is-dir", ["import-model", "specformer", "{empty}", "--out", "{new}"]),
    ("import-model-unknown-kind", ["import-model", "astrodino", "{file}", "--out", "{new}"]),
    ("import-model-no-out", ["import-model", "specformer", "{file}"]),
    ("import-model-out-is-file", ["import-model", "specformer", "{file}", "--out", "{file}"]),
    ("import-model-out-parent-is-file", ["import-model", "specformer", "{file}", "--out", "{file}/m"]),
    ("import-model-out-unwritable", ["import-model", "specformer", "{file}", "--out", "/proc/m"]),
    ("import-model-out-is-a-survey", ["import-model", "specformer", "{file}", "--out", "{survey}", "--overwrite"]),
    # run
    ("run-missing-config", ["run", "{root}/" + NOT_THERE + ".toml"]),
    ("run-config-is-dir", ["run", "{empty}"]),
    ("run-config-typo", ["run", "{run_typo}"]),
    ("run-config-type", ["run", "{run_type}"]),
    ("run-config-range", ["run", "{run_range}"]),
    ("run-config-no-catalog", ["run", "{run_no_catalog}"]),
    ("run-config-predict-without-probe", ["run", "{run_predict}"]),
    ("run-config-table-not-table", ["run", "{run_table}"]),
    ("run-config-missing-input", ["run", "{run_missing_input}"]),
    ("run-config-syntax", ["run", "{run_syntax}"]),
    ("run-unknown-log-format", ["run", "{run_typo}", "--log-format", "xml"]),
    ("run-unknown-on-error", ["run", "{run_typo}", "--on-error", "ignore"]),
]


# What each message must name: the option as written, the path, or the key in the file.
EXPECT = {
    "simulate-zero-galaxies": "--n-galaxies", "simulate-negative-galaxies": "--n-galaxies",
    "simulate-tiny-cutout": "--cutout-size", "simulate-zero-cutout": "--cutout-size",
    "simulate-out-is-file": "OUT {file}", "simulate-parent-is-file": "{file} is a file",
    "simulate-unwritable": "cannot write in /proc", "simulate-bad-int": "--n-galaxies",
    "inspect-missing": NOT_THERE, "inspect-truncated-fits": "{truncated}",
    "inspect-junk-fits": "{junk_fits}", "inspect-empty-dir": "{empty}",
    "crossmatch-missing-spectra": NOT_THERE, "crossmatch-zero-radius": "--radius",
    "crossmatch-negative-radius": "--radius", "crossmatch-negative-margin-catalog": "--margin-catalog",
    "convert-missing": NOT_THERE, "convert-not-single-table": "{matched}: already in the collection",
    "convert-empty-dir": "{empty}: not a catalog in the single-table layout", "crossmatch-unknown-mode": "--mode",
    "crossmatch-unknown-how": "--how", "crossmatch-junk-fits": "{junk_fits}",
    "crossmatch-truncated-fits": "{truncated}", "crossmatch-out-is-file": "--out {file}",
    "crossmatch-out-parent-is-file": "--out {file}/cat",
    "crossmatch-out-unwritable": "--out /proc", "crossmatch-no-out": "--out",
    "crossmatch-unknown-option": "--radus",
    "info-missing": NOT_THERE, "info-not-a-catalog": "{survey}", "info-file": "{file}",
    "info-tiles-not-a-catalog": "{empty}",
    "info-two-catalogs": "--catalog {embedded} and the argument {matched}",
    "info-no-catalog": "--catalog CAT", "convert-no-catalog": "--catalog CAT",
    "embed-missing-catalog": NOT_THERE, "embed-not-a-catalog": "{survey}",
    "embed-catalog-is-file": "{file}", "embed-unknown-modality": "--modality",
    "embed-unknown-device": "--device", "embed-zero-batch": "--batch-size",
    "embed-negative-batch": "--batch-size", "embed-malformed-tile": "--tile",
    "embed-absent-tile": "--tile 0/1", "embed-model-without-onnx": "{empty}",
    "embed-model-missing": NOT_THERE, "embed-model-corrupt": "{junk_onnx}",
    "probe-no-embeddings": "{matched}", "probe-missing-catalog": NOT_THERE,
    "probe-unknown-method": "--method", "probe-unknown-embedding": "--embedding",
    "probe-one-fold": "--folds", "probe-zero-k": "--k", "probe-unknown-metric": "--metric",
    "probe-unknown-index": "--index", "probe-unknown-target": "--target",
    "probe-out-is-file": "--out {file}", "probe-out-parent-is-file": "--out {file}/probe",
    "probe-out-unwritable": "--out /proc", "probe-save-parent-is-file": "--save {file}/saved",
    "probe-save-unwritable": "--save /sys", "probe-bad-int": "--folds",
    "probe-level-one": "--level 1.0", "probe-level-not-a-number": "--level wide",
    "probe-unknown-protocol": "--protocol", "predict-level-zero": "--level 0.0",
    "predict-probe-missing": NOT_THERE, "predict-probe-not-saved": "{empty}",
    "predict-probe-is-file": "{file}", "predict-probe-is-catalog": "{matched}",
    "predict-no-embeddings": "{matched}", "predict-missing-catalog": NOT_THERE,
    "predict-no-probe-option": "--probe",
    "search-no-embeddings": "{matched}", "search-unknown-id": "TARGETID = 1",
    "search-text-id": "--like", "search-zero-k": "--k", "search-unknown-index": "--index",
    "search-unknown-modality": "--from", "search-neither-like-nor-evaluate": "--like",
    "search-plot-is-dir": "--plot {empty}", "search-plot-parent-is-file": "--plot {file}/n.png",
    "search-plot-unwritable": "--plot /proc", "search-missing-catalog": NOT_THERE,
    "train-config-typo": "{train_typo}: unknown key 'batch_sise'",
    "train-config-type": "{train_type}: 'batch_size'",
    "train-config-range": "{train_range}: val_fraction",
    "train-config-syntax": "{train_syntax}", "train-config-missing": NOT_THERE,
    "train-zero-batch": "--batch-size", "train-missing-catalog": NOT_THERE,
    "train-out-parent-is-file": "--out {file}/model",
    "export-not-a-model": "{empty}", "export-onnx-dir": "--model {models}",
    "export-missing": NOT_THERE, "export-file": "{file}",
    "export-unknown-precision": "--precision 'int8'",
    "doctor-unknown-device": "--device gpu", "doctor-zero-rows": "--rows 0",
    "doctor-zero-batch": "--batch-size 0", "doctor-model-missing": NOT_THERE,
    "doctor-model-is-a-text-file": "{file}", "doctor-model-without-onnx": "{empty}",
    "import-model-missing": NOT_THERE,
    "import-model-not-a-checkpoint": "{file}: not a PyTorch checkpoint",
    "import-model-checkpoint-is-dir": "{empty}: a directory",
    "import-model-unknown-kind": "kind 'astrodino'", "import-model-no-out": "--out",
    "import-model-out-is-file": "--out {file}", "import-model-out-parent-is-file": "--out {file}/m",
    "import-model-out-unwritable": "--out /proc",
    "import-model-out-is-a-survey": "--out {survey}: holds an astroembed simulated survey",
    "run-missing-config": NOT_THERE, "run-config-is-dir": "{empty}",
    "run-config-typo": "{run_typo} [crossmatch]: unknown key 'radus'",
    "run-config-type": "{run_type} [crossmatch]: 'radius'",
    "run-config-range": "{run_range} [embed]: 'batch_size'",
    "run-config-no-catalog": "'catalog'", "run-config-predict-without-probe": "[predict]",
    "run-config-table-not-table": "'embed'", "run-config-missing-input": NOT_THERE,
    "run-config-syntax": "{run_syntax}", "run-unknown-log-format": "--log-format",
    "run-unknown-on-error": "--on-error",
}


@pytest.fixture(scope="module")
def first_id(fx) -> str:
    """An ID that is in the embedded catalog (for cases whose fault is elsewhere)."""
    import pyarrow.parquet as pq

    from astroembed.catalog.layout import tile_path
    from astroembed.catalog.reader import read_catalog_info

    info = read_catalog_info(fx["embedded"])
    table = pq.read_table(tile_path(fx["embedded"], *info.tiles[0]), columns=["TARGETID"])
    return str(table.column("TARGETID")[0].as_py())


@pytest.mark.parametrize("case_id,template", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(case_id, template, fx, first_id):
    new = fx["root"] / f"out-{case_id}"
    names = {k: str(v) for k, v in fx.items()} | {"new": str(new), "first_id": first_id}
    args = [a.format(**names) for a in template]
    before = _snapshot(fx["root"])
    result = runner.invoke(app, args)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    if "Usage:" in result.stderr:  # Click's own usage errors: its usage block, exit 2
        assert result.exit_code == 2, output
    else:
        assert result.exit_code in (1, 2), (result.exit_code, output)
        lines = result.stderr.splitlines()
        assert lines and lines[0].startswith("error: "), result.stderr
        assert len(lines) <= 2 and not any(ln.startswith("error:") for ln in lines[1:]), \
            result.stderr
        assert "-vv" not in result.stderr, "an unforeseen error, not a message: " + result.stderr
    assert EXPECT[case_id].format(**names) in output, output
    assert not new.exists()
    assert _snapshot(fx["root"]) == before


def test_unforeseen_error_in_output_is_one_line_and_a_hint(fx, monkeypatch):
    """A failure after the main work (here: reading info's last-run state) is still one error
    line and one hint, not a traceback."""
    import astroembed.pipeline.state

    def broken(catalog):
        raise RuntimeError("disk went away")

    monkeypatch.setattr(astroembed.pipeline.state, "read_state", broken)
    result = runner.invoke(app, ["info", str(fx["embedded"])])
    assert result.exit_code == 1 and "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "error: RuntimeError: disk went away"
    assert len(lines) == 2 and lines[1].startswith("hint:") and "-vv" in lines[1]


def test_plot_creates_missing_parent_directories(fx, first_id, tmp_path):
    """--plot in a directory that does not exist yet: the directories are made, as for the
    other outputs."""
    plot = tmp_path / "plots" / "search" / "neighbours.png"
    result = runner.invoke(app, ["-q", "search", "--catalog", str(fx["embedded"]), "--like",
                                 first_id, "--k", "3", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
