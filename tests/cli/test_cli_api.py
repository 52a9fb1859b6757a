"""Every command is parse -> one call of the public function -> render: with the function
replaced by a recording fake, the command passes the parsed arguments and ``--json`` prints
exactly what the function returned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import astroembed
from astroembed.cli import app

runner = CliRunner()
RESULT = {"answer": 42, "nested": {"list": [1, 2.5, None], "text": "ok"}, "flag": True}


class Fake:
    """Stands in for a public function: records each call, returns a fixed document."""

    def __init__(self, result: dict = RESULT):
        self.calls: list[tuple[tuple, dict]] = []
        self.result = result

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


def _invoke(monkeypatch, function: str, argv: list[str], result: dict = RESULT) -> tuple[tuple, dict]:
    fake = Fake(result)
    monkeypatch.setattr(astroembed, function, fake)
    out = runner.invoke(app, ["-q", *argv, "--json"])
    assert out.exit_code == 0, out.output
    assert len(fake.calls) == 1
    assert json.loads(out.stdout) == result
    return fake.calls[0]


def test_simulate(monkeypatch, tmp_path):
    args, kwargs = _invoke(monkeypatch, "simulate",
                           ["simulate", str(tmp_path / "s"), "-n", "7", "--seed", "3",
                            "--cutout-size", "16", "--overwrite"])
    assert args == (tmp_path / "s",)
    assert kwargs == {"n_galaxies": 7, "seed": 3, "cutout_size": 16, "overwrite": True,
                      "progress": None, "bricks": 0}


def test_inspect(monkeypatch, tmp_path):
    result = {"files": [], "totals": {}, "errors": []}
    args, kwargs = _invoke(monkeypatch, "inspect", ["inspect", str(tmp_path), "a.fits"], result)
    assert args == ([tmp_path, Path("a.fits")],) and kwargs == {}


def test_inspect_exits_1_when_a_file_failed(monkeypatch, tmp_path):
    result = {"files": [], "totals": {}, "errors": [{"path": "a.fits", "error": "a.fits: bad"}]}
    monkeypatch.setattr(astroembed, "inspect", Fake(result))
    out = runner.invoke(app, ["inspect", str(tmp_path), "--json"])
    assert out.exit_code == 1 and json.loads(out.stdout) == result
    assert "error: a.fits: bad" in out.stderr


def test_crossmatch(monkeypatch, tmp_path):
    args, kwargs = _invoke(monkeypatch, "crossmatch",
                           ["crossmatch", "ls", "desi", "--out", str(tmp_path / "m"), "--radius",
                            "2", "--mode", "all", "--suffixes", "_a, _b", "--workers", "3",
                            "--processes", "--compare-ids", "--cutout-size", "32"])
    assert args == (Path("ls"), Path("desi"), tmp_path / "m")
    assert kwargs == {"progress": None, "radius": 2.0, "mode": "all", "how": "inner",
                      "margin": None, "margin_catalog": 5.0, "match_on": "position",
                      "compare_ids": True,
                      "keep_all_spectra": False, "suffixes": ("_a", "_b"),
                      "id_column": "TARGETID", "max_bytes": 512e6, "max_rows": 1_000_000,
                      "scheduler": None, "workers": 3, "processes": True, "overwrite": False,
                      "cutout_size": 32}


@pytest.mark.parametrize("form", [["--catalog", "{cat}"], ["-c", "{cat}"], ["{cat}"],
                                  ["{cat}", "--catalog", "{cat}"]])
def test_convert(monkeypatch, tmp_path, form):
    argv = [a.format(cat=tmp_path) for a in form]
    args, kwargs = _invoke(monkeypatch, "convert", ["convert", *argv])
    assert args == (tmp_path,) and kwargs == {}


@pytest.mark.parametrize("form", [["--catalog", "{cat}"], ["-c", "{cat}"], ["{cat}"],
                                  ["{cat}", "-c", "{cat}/"]])
def test_info(monkeypatch, tmp_path, form):
    argv = [a.format(cat=tmp_path) for a in form]
    args, kwargs = _invoke(monkeypatch, "info", ["info", *argv])
    assert args == (tmp_path,) and kwargs == {"tiles": False}


@pytest.mark.parametrize("command", ["info", "convert"])
@pytest.mark.parametrize("argv, message", [
    (["a", "--catalog", "b"], "error: two different catalogs: --catalog b and the argument a; "
                              "give one\n"),
    (["a", "b"], "error: one catalog at a time, got 2: a b; name it with --catalog CAT\n"),
    ([], "error: no catalog: name it with --catalog CAT (or -c CAT)\n"),
])
def test_catalog_named_twice_or_not_at_all(monkeypatch, command, argv, message):
    fake = Fake()
    monkeypatch.setattr(astroembed, command, fake)
    out = runner.invoke(app, [command, *argv])
    assert out.exit_code == 2 and out.stderr == message and fake.calls == []


def test_info_tiles(monkeypatch, tmp_path):
    result = {"path": str(tmp_path), "tiles": [[5, 17], [6, 100]]}
    args, kwargs = _invoke(monkeypatch, "info", ["info", "-c", str(tmp_path), "--tiles"], result)
    assert kwargs == {"tiles": True}
    monkeypatch.setattr(astroembed, "info", Fake(result))
    out = runner.invoke(app, ["info", "--catalog", str(tmp_path), "--tiles"])
    assert out.exit_code == 0 and out.stdout.split() == ["5/17", "6/100"]


def test_info_schema(monkeypatch, tmp_path):
    result = {"path": str(tmp_path), "columns": [
        {"name": "Z", "type": "float64", "unit": "", "description": "redshift", "part": "main"},
        {"name": "flux", "type": "fixed_size_list<float32>[4]", "unit": "1e-17 erg",
         "description": "spectrum", "part": "pixels"}]}
    args, kwargs = _invoke(monkeypatch, "info", ["info", "-c", str(tmp_path), "--schema"], result)
    assert args == (tmp_path,) and kwargs == {"tiles": False}
    monkeypatch.setattr(astroembed, "info", Fake(result))
    out = runner.invoke(app, ["info", "-c", str(tmp_path), "--schema"], env={"COLUMNS": "200"})
    rows = [line.split() for line in out.stdout.splitlines()[2:] if line.strip()][2:]
    assert out.exit_code == 0 and [r[0] for r in rows] == ["Z", "flux"]
    assert rows[1][-1] == "pixels" and "redshift" in rows[0]


def test_head(monkeypatch, tmp_path):
    result = {"path": str(tmp_path), "id_column": "TARGETID", "columns": ["TARGETID", "e"],
              "rows": [{"TARGETID": 7, "e": {"length": 8, "head": [0.5, 0.25, 0.125]}}],
              "total_rows": 1, "tile": None, "cone": None}
    args, kwargs = _invoke(monkeypatch, "head", ["head", "-c", str(tmp_path)], result)
    assert args == (tmp_path,)
    assert kwargs == {"columns": None, "rows": 10, "tile": None, "cone": None, "id_column": None}
    _, kwargs = _invoke(monkeypatch, "head",
                        ["head", "--catalog", str(tmp_path), "--columns", "a,b", "--columns",
                         "c", "-n", "3", "--tile", "5/17", "--id-column", "ROW_ID"], result)
    assert kwargs == {"columns": ("a", "b", "c"), "rows": 3, "tile": "5/17", "cone": None,
                      "id_column": "ROW_ID"}
    _, kwargs = _invoke(monkeypatch, "head", ["head", "-c", str(tmp_path), "--cone", "1.5",
                                              "-2", "30"], result)
    assert kwargs["cone"] == (1.5, -2.0, 30.0)
    monkeypatch.setattr(astroembed, "head", Fake(result))
    out = runner.invoke(app, ["head", "-c", str(tmp_path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "[0.5, 0.25, ...] (8)" in out.stdout
    assert out.stdout.splitlines()[-2].split()[0] == "7"


def test_embed(monkeypatch, tmp_path):
    args, kwargs = _invoke(monkeypatch, "embed",
                           ["embed", "-c", str(tmp_path), "--tile", "5/17", "--tile",
                            "6/100", "--model", "m.onnx", "--modality", "image", "--force"])
    assert args == (tmp_path,)
    assert kwargs == {"progress": None, "tiles": ("5/17", "6/100"), "model": "m.onnx",
                      "name": None, "modality": "image", "batch_size": 256, "device": "auto",
                      "threads": None, "scheduler": None, "workers": None, "force": True}


def test_train(monkeypatch, tmp_path):
    args, kwargs = _invoke(monkeypatch, "train",
                           ["train", "-c", str(tmp_path), "--out", "model", "--config",
                            "t.toml", "--align-epochs", "2", "--resume"])
    assert args == (tmp_path, Path("model"))
    assert kwargs == {"config": Path("t.toml"), "resume": True, "progress": None, "seed": None,
                      "pretrain_epochs": None, "align_epochs": 2, "batch_size": None,
                      "max_rows": None, "threads": None}


def test_export(monkeypatch, tmp_path):
    args, kwargs = _invoke(monkeypatch, "export", ["export", str(tmp_path), "-o", "onnx"])
    assert args == (tmp_path, Path("onnx")) and kwargs == {"overwrite": False,
                                                           "precision": "fp32"}
    _, kwargs = _invoke(monkeypatch, "export", ["export", str(tmp_path), "-o", "onnx",
                                                "--precision", "fp16", "--overwrite"])
    assert kwargs == {"overwrite": True, "precision": "fp16"}


def test_import_model(monkeypatch, tmp_path):
    args, kwargs = _invoke(monkeypatch, "import_model",
                           ["import-model", "specformer", str(tmp_path / "s.ckpt"), "--out",
                            "m", "--overwrite"])
    assert args == ("specformer", tmp_path / "s.ckpt", Path("m"))
    assert kwargs == {"overwrite": True}


def test_probe(monkeypatch, tmp_path):
    args, kwargs = _invoke(monkeypatch, "probe",
                           ["probe", "-c", str(tmp_path), "--target", "FLUX_R", "-e", "image",
                            "-m", "knn,linear", "-m", "knn", "--k", "8", "--no-baselines",
                            "--out", "p", "--keep-stars"])
    assert args == (tmp_path,)
    assert kwargs == {"target": "FLUX_R", "progress": None, "embedding": ("image",),
                      "method": ("knn", "linear"), "folds": 5, "k": 8, "metric": "cosine",
                      "seed": 0, "index": "auto", "name": None, "id_column": None,
                      "baselines": False, "out": "p", "save": None, "overwrite": False,
                      "protocol": "kfold", "keep_stars": True, "levels": (0.68, 0.95)}


def test_probe_levels_and_protocol(monkeypatch, tmp_path):
    _, kwargs = _invoke(monkeypatch, "probe",
                        ["probe", "-c", str(tmp_path), "--level", "0.5,0.9", "--level", "0.99",
                         "--protocol", "astroclip"])
    assert kwargs["levels"] == (0.5, 0.9, 0.99) and kwargs["protocol"] == "astroclip"


@pytest.mark.parametrize("command", [["probe"], ["predict", "--probe", "z"]])
def test_a_level_that_is_not_a_number_is_one_line(monkeypatch, tmp_path, command):
    fake = Fake()
    monkeypatch.setattr(astroembed, command[0], fake)
    out = runner.invoke(app, [command[0], "-c", str(tmp_path), *command[1:], "--level", "wide"])
    assert out.exit_code == 2 and not fake.calls
    assert "--level wide" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_probe_method_all(monkeypatch, tmp_path):
    from astroembed.config import PROBE_METHODS

    _, kwargs = _invoke(monkeypatch, "probe", ["probe", "-c", str(tmp_path), "-m", "all"])
    assert kwargs["method"] == PROBE_METHODS


def test_predict(monkeypatch, tmp_path):
    args, kwargs = _invoke(monkeypatch, "predict",
                           ["predict", "-c", str(tmp_path), "--probe", "z", "--column", "zz"])
    assert args == (tmp_path, Path("z"))
    assert kwargs == {"column": "zz", "overwrite": False, "progress": None, "levels": None}
    _, kwargs = _invoke(monkeypatch, "predict",
                        ["predict", "-c", str(tmp_path), "--probe", "z", "--level", "0.9"])
    assert kwargs["levels"] == (0.9,)


@pytest.mark.parametrize("argv, expected", [
    (["--like", "123", "--from", "image", "--to", "spectrum", "-k", "3", "--plot", "n.png"],
     {"like": "123", "from_modality": "image", "to_modality": "spectrum", "k": 3,
      "evaluate": False, "plot": "n.png"}),
    (["--evaluate", "--queries", "50", "--seed", "2"],
     {"like": None, "from_modality": "image", "to_modality": None, "k": 10, "evaluate": True,
      "queries": 50, "seed": 2, "plot": None}),
])
def test_search(monkeypatch, tmp_path, argv, expected):
    args, kwargs = _invoke(monkeypatch, "search", ["search", "-c", str(tmp_path), *argv])
    assert args == (tmp_path,)
    defaults = {"index": "auto", "name": None, "id_column": None, "queries": 10_000, "seed": 0}
    assert kwargs == defaults | expected


def test_run(monkeypatch, tmp_path):
    args, kwargs = _invoke(monkeypatch, "run",
                           ["run", str(tmp_path / "p.toml"), "--dry-run", "--on-error", "skip"])
    assert args == (tmp_path / "p.toml",) and kwargs == {"dry_run": True, "on_error": "skip"}


def test_doctor(monkeypatch, tmp_path):
    result = {"ok": True, "problems": [], "sessions": {}, "models": []}
    args, kwargs = _invoke(monkeypatch, "doctor", ["doctor"], result)
    assert args == (None,) and kwargs == {"devices": ("auto",), "rows": 256, "batch_size": 64}
    args, kwargs = _invoke(monkeypatch, "doctor",
                           ["doctor", "--model", str(tmp_path), "--device", "cuda",
                            "--device", "cpu,auto", "--rows", "32", "--batch-size", "8"], result)
    assert args == (tmp_path,)
    assert kwargs == {"devices": ("cuda", "cpu", "auto"), "rows": 32, "batch_size": 8}


def test_doctor_exits_1_on_a_problem(monkeypatch):
    result = {"ok": False, "problems": ["--device cuda: no GPU"], "sessions": {}, "models": []}
    monkeypatch.setattr(astroembed, "doctor", Fake(result))
    out = runner.invoke(app, ["doctor", "--device", "cuda", "--json"])
    assert out.exit_code == 1 and json.loads(out.stdout) == result
    assert out.stderr == "error: --device cuda: no GPU\n"


def test_json_is_strict(monkeypatch, tmp_path):
    """Non-finite floats, which JSON has no spelling for, print as null."""
    monkeypatch.setattr(astroembed, "info", Fake({"r2": float("nan"), "rmse": float("inf")}))
    out = runner.invoke(app, ["info", str(tmp_path), "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout) == {"r2": None, "rmse": None}
    assert "NaN" not in out.stdout


def test_an_api_error_is_one_line(monkeypatch, tmp_path):
    def fails(*args, **kwargs):
        raise astroembed.InputError(f"{tmp_path}: not a catalog.")

    monkeypatch.setattr(astroembed, "info", fails)
    out = runner.invoke(app, ["info", str(tmp_path)])
    assert out.exit_code == 1 and out.stderr == f"error: {tmp_path}: not a catalog.\n"


@pytest.mark.parametrize("old, new", [
    ("simulate_survey", "simulate"), ("crossmatch_surveys", "crossmatch"),
    ("embed_catalog", "embed"), ("search_catalog", "search"), ("run_pipeline", "run"),
    ("catalog_info", "info"), ("describe_inputs", "inspect"), ("probe_catalog", "probe"),
])
def test_old_names_warn_and_name_the_new_function(old, new):
    with pytest.warns(DeprecationWarning, match=rf"astroembed\.{old} is deprecated; use "
                                                rf"astroembed\.{new}\."):
        with pytest.raises(Exception):  # noqa: B017 - only the warning matters here
            getattr(astroembed, old)(None)


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, astroembed; print(sorted(m for m in ('numpy', 'pyarrow', 'dask', "
            "'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_train_merges_defaults_then_file_then_keywords(monkeypatch, tmp_path):
    """The library does the merge the CLI used to: a keyword beats the file, the file beats
    the defaults, and None means "not given"."""
    from astroembed.training import trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda cfg, resume, progress: seen.append(cfg) or {})
    config = tmp_path / "train.toml"
    config.write_text("align_epochs = 3\nbatch_size = 8\n")
    astroembed.train(tmp_path / "cat", tmp_path / "model", config=config, batch_size=16,
                     seed=None)
    (cfg,) = seen
    assert (cfg.align_epochs, cfg.batch_size, cfg.seed) == (3, 16, trainer.TrainConfig().seed)
    assert (cfg.catalog, cfg.out) == (str(tmp_path / "cat"), str(tmp_path / "model"))


def test_train_names_the_file_for_a_bad_value_read_from_it(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text("batch_size = 0\n")
    with pytest.raises(astroembed.ConfigError, match="train.toml"):
        astroembed.train(tmp_path / "cat", tmp_path / "model", config=config)


def test_every_command_has_its_call_checked_here():
    """A new command gets a ``test_<command>`` above, or this fails naming it."""
    import typer

    commands = typer.main.get_command(app).commands
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    missing = sorted(c for c in commands if c.replace("-", "_") not in tested)
    assert not missing, f"commands without a call test: {missing}"
    assert all(hasattr(astroembed, c.replace("-", "_")) for c in commands)
