"""Shared fixtures: the real survey files beside the project (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "real"


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """Path to ``../shared/fixtures/real`` (read-only); skips the test when it is absent."""
    if not (REAL_FIXTURES / "desi").is_dir() or not (REAL_FIXTURES / "legacysurvey").is_dir():
        pytest.skip(f"real survey fixtures not found at {REAL_FIXTURES} (a fresh clone has "
                    "no ../shared/fixtures/real)")
    return REAL_FIXTURES
