"""Every ``Example:`` line of a command's ``--help`` and every shell command of README.md runs
as written, with exit code 0, on a small demo made by the test under ``demo-output/`` (a
simulated survey, its cross-match embedded with the default model and again as ``v2``, a saved
probe), from a copy of it as the current directory. A test checks every example either runs or
is skipped with its reason; the skipped ones cannot run in a test: training (minutes),
exporting what training writes, importing AstroCLIP's published checkpoint, a remote
``tcp://`` Dask scheduler.

What stands for what, in the current directory and in the commands:

- ``DEMO_ID`` (the demo object the examples search for): the first object of the small demo;
- ``CAT``: ``demo-output/matched``; ``IMAGES`` and ``SPECTRA``: the small demo's survey,
  ``demo-output/survey/legacysurvey`` and ``demo-output/survey/desi``; ``PIPELINE``:
  ``pipelines/demo.toml``;
- ``legacysurvey/`` and ``desi/``: links to those two survey directories;
- ``pipelines/demo.toml``: a copy of the project's, whose relative paths name
  ``demo-output/survey`` (the small demo's) and write ``demo-output/run``;
- ``mymodel-onnx``: a copy of the default model astroembed ships, standing in for an exported
  model, already embedded into the small demo as ``v2`` (so ``probe --name v2`` has columns);
- ``old-catalog``: the small demo's catalog rewritten in the earlier single-table layout;
- ``simulate ... --n-galaxies N``: N becomes ``SMALL_N`` galaxies.
"""

from __future__ import annotations

import re
import shlex
import shutil
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from astroembed.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
#: The demo object the examples search for; replaced by an object of the small demo.
DEMO_ID = "39627798406496259"

#: The user's own files named in the examples, and what stands for them in the small demo.
PLACEHOLDERS = {
    r"\bCAT\b": "demo-output/matched",
    r"\bIMAGES\b": "demo-output/survey/legacysurvey",
    r"\bSPECTRA\b": "demo-output/survey/desi",
    r"\bPIPELINE(\.toml)?\b": "pipelines/demo.toml",
}
#: Galaxies an example's ``simulate --n-galaxies N`` writes instead of N.
SMALL_N = 40

SKIPS = [
    (r"tcp://", "needs a Dask scheduler running at that address"),
    (r"^train ", "trains for minutes (the `train` extra; tests/training runs it small)"),
    (r"^export ", "needs the model `train` writes (tests/training exports one)"),
    (r"^import-model ", "needs AstroCLIP's published checkpoint"),
]


def help_examples() -> list[str]:
    """The ``Example:`` lines of every command's --help, without the ``astroembed``."""
    out = []
    for name in typer.main.get_command(app).commands:
        text = runner.invoke(app, [name, "--help"], env={"COLUMNS": "1000"}).stdout
        out += [line.split("Example:", 1)[1].strip() for line in text.splitlines()
                if "Example:" in line]
    return [re.sub(r"^astroembed\s+", "", e) for e in out]


def readme_commands() -> list[str]:
    """The astroembed commands of README.md's shell blocks, comments removed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in ("astroembed", ".venv/bin/astroembed"):
                out.append(shlex.join(words[1:]))
    return out


EXAMPLES = [("help", e) for e in help_examples()] + [("readme", c) for c in readme_commands()]


def skip_reason(command: str) -> str | None:
    return next((reason for pattern, reason in SKIPS if re.search(pattern, command)), None)


def as_run(command: str, demo_id: str) -> list[str]:
    """The example's arguments with the substitutions of the module docstring."""
    command = command.replace(DEMO_ID, demo_id)
    for pattern, path in PLACEHOLDERS.items():
        command = re.sub(pattern, path, command)
    command = re.sub(r"(--n-galaxies )[0-9]+", rf"\g<1>{SMALL_N}", command)
    return shlex.split(command)


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    """``demo-output/`` as `make demo` leaves it, small: survey, matched (embedded with the
    default model, and as ``v2``), z_probe (a saved probe); beside it the stand-ins of the
    module docstring."""
    from oracles import single_table_copy

    import astroembed

    root = tmp_path_factory.mktemp("small_demo")
    demo = root / "demo-output"
    astroembed.simulate(demo / "survey", n_galaxies=300, seed=3, cutout_size=64)
    astroembed.crossmatch(demo / "survey" / "legacysurvey", demo / "survey" / "desi",
                          demo / "matched")
    astroembed.embed(demo / "matched")
    astroembed.probe(demo / "matched", method=("knn",), k=5, baselines=False,
                     save=str(demo / "z_probe"))
    shutil.copytree(Path(astroembed.__file__).parent / "data" / "models" / "default",
                    root / "mymodel-onnx")
    astroembed.embed(demo / "matched", model=root / "mymodel-onnx", name="v2")
    single_table_copy(demo / "matched", root / "old-catalog")
    for side in ("legacysurvey", "desi"):
        (root / side).symlink_to(Path("demo-output", "survey", side), target_is_directory=True)
    (root / "pipelines").mkdir()
    shutil.copy(ROOT / "pipelines" / "demo.toml", root / "pipelines" / "demo.toml")
    return root


def test_the_stand_ins_are_what_the_examples_read(small_demo):
    """The demo pipeline's relative paths lead to the small demo's survey, the links to the
    same files, and the old catalog is of the earlier layout (its tiles hold the pixels)."""
    pipeline = small_demo / "pipelines" / "demo.toml"
    config = tomllib.loads(pipeline.read_text(encoding="utf-8"))
    survey = (small_demo / "demo-output" / "survey").resolve()
    for key, side in (("images", "legacysurvey"), ("spectra", "desi")):
        assert (pipeline.parent / config[key]).resolve() == survey / side
        assert (small_demo / side).resolve() == survey / side
        assert any((survey / side).iterdir())
    assert (pipeline.parent / config["catalog"]).resolve().parent.parent == survey.parent
    old = small_demo / "old-catalog"
    assert (old / "hats.properties").is_file() and not (old / "collection.properties").exists()
    tile = next((old / "dataset").rglob("Npix=*.parquet"))
    names = set(pq.read_schema(tile).names)
    assert {"image", "flux", "embedding_image", "embedding_image_v2"} <= names
    assert as_run("simulate out --n-galaxies 6000 --seed 0", "1")[3] == str(SMALL_N)
    assert as_run("probe --catalog CAT --name v2", "1") == [
        "probe", "--catalog", "demo-output/matched", "--name", "v2"]


def test_there_are_examples_and_most_run():
    assert len([e for e in EXAMPLES if e[0] == "help"]) == len(typer.main.get_command(app).commands)
    runnable = [e for e in EXAMPLES if skip_reason(e[1]) is None]
    assert len(runnable) >= 28, runnable
    assert DEMO_ID in " ".join(c for _, c in EXAMPLES)


@pytest.mark.parametrize("source, command", EXAMPLES, ids=[f"{s}:{c[:60]}" for s, c in EXAMPLES])
def test_example_runs(source, command, small_demo, tmp_path, monkeypatch):
    reason = skip_reason(command)
    if reason:
        pytest.skip(reason)
    work = tmp_path / "cwd"
    shutil.copytree(small_demo, work, symlinks=True)
    monkeypatch.chdir(work)
    matched = sorted((work / "demo-output" / "matched" / "main" / "dataset").rglob("*.parquet"))
    first_id = str(pq.read_table(matched[0], columns=["TARGETID"])["TARGETID"][0].as_py())
    result = runner.invoke(app, as_run(command, first_id))
    assert result.exit_code == 0, f"astroembed {command}\n{result.output}"
