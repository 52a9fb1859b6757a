"""Every ``Example:`` line of a command's ``--help`` and every shell command of README.md runs
as written, with exit code 0, on a small demo made by the test under ``demo-output/`` (a
simulated survey, its cross-match embedded with the default model, a saved probe), from a
copy of it as the current directory. Commands that need the full demo, a trained model or the
user's own files are skipped, each with its reason; a test checks every example is one or the
other."""

from __future__ import annotations

import re
import shlex
import shutil
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

SKIPS = [
    (r"\b(CAT|IMAGES|SPECTRA|PIPELINE)\b|mymodel|tcp://|^(inspect|crossmatch) legacysurvey/",
     "names the user's own files"),
    (r"^simulate .*--n-galaxies [0-9]{4}", "simulates thousands of galaxies (`make demo` "
     "does; tests/simulation runs it small)"),
    (r"^run pipelines/demo\.toml", "the demo pipeline on the full simulated survey"),
    (r"^train ", "trains for minutes (the `train` extra; tests/training runs it small)"),
    (r"^export ", "needs the model `train` writes (tests/training exports one)"),
    (r"^import-model ", "needs AstroCLIP's published checkpoint"),
    (r"^convert ", "needs a catalog of the earlier single-table layout (tests/catalog has one)"),
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


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    """``demo-output/`` as `make demo` leaves it, small: survey, matched (embedded with the
    default model), z_probe (a saved probe)."""
    import astroembed

    root = tmp_path_factory.mktemp("small_demo")
    demo = root / "demo-output"
    astroembed.simulate(demo / "survey", n_galaxies=300, seed=3, cutout_size=64)
    astroembed.crossmatch(demo / "survey" / "legacysurvey", demo / "survey" / "desi",
                          demo / "matched")
    astroembed.embed(demo / "matched")
    astroembed.probe(demo / "matched", method=("knn",), k=5, baselines=False,
                     save=str(demo / "z_probe"))
    return root


def test_there_are_examples_and_most_run():
    assert len([e for e in EXAMPLES if e[0] == "help"]) == len(typer.main.get_command(app).commands)
    runnable = [e for e in EXAMPLES if skip_reason(e[1]) is None]
    assert len(runnable) >= 12, runnable
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
    argv = shlex.split(command.replace(DEMO_ID, first_id))
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, f"astroembed {command}\n{result.output}"
