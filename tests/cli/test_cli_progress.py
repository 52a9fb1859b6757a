"""Progress bars are for a person at a terminal: drawn on stderr there, never with ``--json``
(a program reads the output) nor when stderr is not a terminal (a log file, a pipe).

``TTY_COMPATIBLE=1`` tells rich that stderr is a terminal (CliRunner's streams are not); a bar
is recognised by what rich's bar column draws (``━``) and its ``done/total`` count.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import astroembed
from astroembed.cli import app

runner = CliRunner()
TERMINAL = {"TTY_COMPATIBLE": "1"}
NOT_A_TERMINAL = {"TTY_COMPATIBLE": "0"}


def has_bar(text: str) -> bool:
    return "━" in text or re.search(r"\b\d+/\d+\b", text) is not None


def simulate(tmp_path, *extra: str, env: dict):
    return runner.invoke(app, ["simulate", str(tmp_path / "s"), "-n", "20", "--seed", "1",
                               "--cutout-size", "16", *extra], env=env)


def test_a_terminal_shows_the_bars(tmp_path):
    result = simulate(tmp_path, env=TERMINAL)
    assert result.exit_code == 0, result.output
    assert has_bar(result.stderr) and "objects" in result.stderr and "fibres" in result.stderr
    assert "Simulated 20 galaxies" in result.stdout


def test_json_draws_no_bar_at_a_terminal(tmp_path):
    result = simulate(tmp_path, "--json", env=TERMINAL)
    assert result.exit_code == 0, result.output
    assert not has_bar(result.stderr), result.stderr
    assert json.loads(result.stdout)["n_galaxies"] == 20


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path):
    result = simulate(tmp_path, env=NOT_A_TERMINAL)
    assert result.exit_code == 0, result.output
    assert not has_bar(result.stderr), result.stderr
    assert "Simulated 20 galaxies" in result.stdout


class Reporting:
    """Stands in for a public function: records the progress callback it is given and, when
    there is one, reports through it as the real function would."""

    def __init__(self):
        self.progress = "not called"

    def __call__(self, *args, progress=None, **kwargs):
        self.progress = progress
        if progress is not None:
            for done in range(4):
                progress("rows", done, 3)
        return {"answer": 42}


@pytest.mark.parametrize("function, argv", [
    ("crossmatch", ["crossmatch", "ls", "desi", "--out", "m"]),
    ("embed", ["embed", "-c", "cat"]),
    ("probe", ["probe", "-c", "cat"]),
    ("predict", ["predict", "-c", "cat", "--probe", "z"]),
    ("train", ["train", "-c", "cat", "--out", "model"]),
])
def test_json_gets_no_progress_callback(function, argv, monkeypatch):
    fake = Reporting()
    monkeypatch.setattr(astroembed, function, fake)
    result = runner.invoke(app, [*argv, "--json"], env=TERMINAL)
    assert result.exit_code == 0, result.output
    assert fake.progress is None
    assert not has_bar(result.stderr), result.stderr
    assert json.loads(result.stdout) == {"answer": 42}


def test_the_fake_draws_a_bar_at_a_terminal_without_json(monkeypatch):
    """The check above can fail: the same fake, without --json, draws its bar."""
    fake = Reporting()
    monkeypatch.setattr(astroembed, "probe", fake)
    result = runner.invoke(app, ["probe", "-c", "cat"], env=TERMINAL)
    assert callable(fake.progress)
    assert has_bar(result.stderr) and "3/3" in result.stderr, result.stderr
