"""Atomic writes leave the final name complete or untouched, and never a temporary behind,
whenever the interruption lands (oracles: directory listings and file contents)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from astroembed.catalog import atomic
from astroembed.catalog.atomic import atomic_directory, atomic_path


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def interrupt_after(monkeypatch, name: str) -> None:
    """Make ``os.<name>`` do its work, then raise as a Ctrl-C landing right after it."""
    real = getattr(os, name)

    def call(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(os, name, call)


def test_a_file_written_is_published_and_a_failure_keeps_the_old(tmp_path):
    final = tmp_path / "tile.parquet"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert final.read_text() == "old" and listing(tmp_path) == ["tile.parquet"]
    with atomic_path(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new" and listing(tmp_path) == ["tile.parquet"]


def test_an_interruption_just_after_the_temporary_file_exists_leaves_nothing(monkeypatch,
                                                                            tmp_path):
    interrupt_after(monkeypatch, "open")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "tile.parquet"):
            pytest.fail("the body must not run")
    monkeypatch.undo()
    assert listing(tmp_path) == []


def test_an_interruption_just_after_the_temporary_directory_exists_leaves_nothing(
        monkeypatch, tmp_path):
    interrupt_after(monkeypatch, "mkdir")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "cat"):
            pytest.fail("the body must not run")
    monkeypatch.undo()
    assert listing(tmp_path) == []


@pytest.mark.parametrize("directory", [False, True], ids=["file", "directory"])
def test_a_taken_temporary_name_is_never_removed(monkeypatch, tmp_path, directory):
    taken = tmp_path / ".out.0123456789abcdef.tmp"
    taken.write_text("someone else's")
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: "0123456789abcdef")
    with pytest.raises(FileExistsError):
        with (atomic_directory if directory else atomic_path)(tmp_path / "out"):
            pytest.fail("the body must not run")
    assert taken.read_text() == "someone else's"
    assert listing(tmp_path) == [taken.name]
