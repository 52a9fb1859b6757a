"""The documentation stays true: docs/cli.md is exactly what the commands' --help prints, and
the user-facing documents speak only of astroembed."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cli_reference() -> ModuleType:
    """scripts/ is not a package; load the generator the way `make docs` runs it."""
    spec = importlib.util.spec_from_file_location("cli_reference",
                                                  ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_every_commands_help() -> None:
    ref = _cli_reference()
    expected = ref.render()
    current = ref.REFERENCE.read_text(encoding="utf-8") if ref.REFERENCE.exists() else ""
    stale = ref.stale_commands(current, expected)
    assert not stale, (f"docs/cli.md differs from the --help of: {', '.join(stale)}. "
                       "Run `make docs` and commit docs/cli.md.")
    assert current == expected


def test_cli_reference_has_a_section_per_command() -> None:
    ref = _cli_reference()
    titles = list(ref.split_sections(ref.REFERENCE.read_text(encoding="utf-8")))
    assert titles == ["astroembed"] + [f"astroembed {c}" for c in ref.command_names()]
    assert len(titles) > 5


def test_stale_commands_names_the_changed_command() -> None:
    ref = _cli_reference()
    expected = ref.render()
    changed = expected.replace("Usage: astroembed embed", "Usage: astroembed embed-old", 1)
    assert ref.stale_commands(changed, expected) == ["astroembed embed"]
    assert ref.stale_commands(expected, expected) == []


def test_cli_reference_has_no_terminal_codes() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "\x1b" not in text
    assert all(line == line.rstrip() for line in text.splitlines())


USER_DOCS = ["README.md", "Makefile", "bench/README.md",
             *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("name", USER_DOCS)
def test_documents_speak_only_of_astroembed(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    # written so that this file does not match them itself
    for pattern in (r"issue [0-9]", r"DESIGN\.md", r"edit only [b]etween", r"/tmp/"):
        found = re.search(pattern, text)
        assert found is None, f"{name} mentions {found.group(0)!r}"


def test_readme_is_short_and_links_the_documents() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    for doc in ("docs/architecture.md", "docs/outputs.md", "docs/cli.md", "docs/MODEL_CARD.md",
                "bench/README.md"):
        assert doc in text, f"README.md does not link {doc}"
        assert (ROOT / doc).exists(), f"README.md links {doc}, which does not exist"
