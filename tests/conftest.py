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


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory) -> Path:
    """A small simulated survey (written once per test session through the public API)."""
    import astroembed

    out = tmp_path_factory.mktemp("sim") / "survey"
    astroembed.simulate(out, n_galaxies=200, seed=7, cutout_size=32)
    return out


@pytest.fixture(scope="session")
def brick_survey(tmp_path_factory) -> Path:
    """``small_survey`` plus one real-size brick coadd (image, invvar and maskbits files) for
    its most populated brick; read-only."""
    import astroembed

    out = tmp_path_factory.mktemp("bricksim") / "survey"
    astroembed.simulate(out, n_galaxies=200, seed=7, cutout_size=32, bricks=1)
    return out


@pytest.fixture(scope="session")
def run_survey(tmp_path_factory) -> Path:
    """The simulated survey the ``astroembed run`` tests copy as their inputs (700 galaxies,
    32x32 cutouts: several tiles at max_rows 200, and seconds to cross-match and embed)."""
    import astroembed

    out = tmp_path_factory.mktemp("runsim") / "survey"
    astroembed.simulate(out, n_galaxies=700, seed=11, cutout_size=32)
    return out


def coadds(root: Path) -> list[Path]:
    """The DESI main-survey coadd files under ``root``, sorted."""
    return sorted(root.rglob("coadd-main-*.fits"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A matching pair of tiny ONNX encoders (16-pixel crops, 8 dimensions)."""
    import tiny_models

    return tiny_models.model_dir(tmp_path_factory.mktemp("models") / "tiny", crop=16, dim=8)


@pytest.fixture(scope="session")
def tiled_catalog(small_survey, tmp_path_factory) -> Path:
    """``small_survey`` cross-matched into several tiles (at most 40 rows each); copy it
    before changing it."""
    import astroembed

    out = tmp_path_factory.mktemp("tiled") / "matched"
    astroembed.crossmatch(small_survey / "legacysurvey", small_survey / "desi", out,
                                  max_rows=40)
    return out


@pytest.fixture(scope="session")
def embedded_catalog(tiled_catalog, tiny_model, tmp_path_factory) -> Path:
    """``tiled_catalog`` with image and spectrum embeddings of ``tiny_model``; copy it before
    changing it."""
    import shutil

    import astroembed

    out = tmp_path_factory.mktemp("embedded") / "matched"
    shutil.copytree(tiled_catalog, out)
    astroembed.embed(out, model=str(tiny_model))
    return out
