"""The examples run as documented (the quickstart is the README's first walkthrough step)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_runs_the_whole_chain(tmp_path):
    out = tmp_path / "qs"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), str(out)],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-3000:]
    for words in ("cross-match:", "embed: embedding_image", "probe of redshift",
                  "search: spectra nearest"):
        assert words in result.stdout, result.stdout
    assert (out / "matched" / "collection.properties").is_file()
