"""What ``--help`` shows: options that take no value show no type, options with a value keep
theirs, and shell completion is offered."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from astroembed.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1", "TERM": "dumb"}


def _commands() -> list[str]:
    return list(typer.main.get_command(app).commands)


def _help(*argv: str) -> str:
    out = runner.invoke(app, [*argv, "--help"], env=WIDE, prog_name="astroembed")
    assert out.exit_code == 0, out.output
    return out.stdout


def _type_of(help_text: str, option: str) -> str | None:
    """The ``<type>`` shown on the row of ``option`` in a help table, or None."""
    for line in help_text.splitlines():
        cells = line.strip("│ *").split()
        if cells and cells[0] == option:
            found = re.search(r"<[^>]+>", line)
            return found.group(0) if found else None
    raise AssertionError(f"{option} is not in the help:\n{help_text}")


@pytest.mark.parametrize("command", [None, *_commands()])
def test_no_option_shows_a_bool_type(command):
    text = _help(*([command] if command else []))
    assert "<bool>" not in text
    assert _type_of(text, "--help") is None


def test_flags_and_counters_show_no_type():
    text = _help()
    for flag in ("--version", "--verbose", "--quiet", "--install-completion"):
        assert _type_of(text, flag) is None, flag
    embed = _help("embed")
    assert _type_of(embed, "--force") is None and _type_of(embed, "--json") is None


@pytest.mark.parametrize("command, option, shown", [
    ("embed", "--batch-size", "<int>"), ("embed", "--model", "<path>"),
    ("embed", "--modality", "<str>"), ("probe", "--folds", "<int>"),
    ("crossmatch", "--radius", "<float>"), ("search", "--catalog", "<path>"),
])
def test_options_with_a_value_keep_their_type(command, option, shown):
    assert _type_of(_help(command), option) == shown


def test_show_completion_prints_a_bash_script():
    out = runner.invoke(app, ["--show-completion", "bash"], env={"SHELL": "/bin/bash"},
                        prog_name="astroembed")
    assert out.exit_code == 0, out.output
    assert "complete " in out.stdout and "_ASTROEMBED_COMPLETE=complete_bash" in out.stdout


def test_help_lists_completion_options():
    text = _help()
    assert "--install-completion" in text and "--show-completion" in text
