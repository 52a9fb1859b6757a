"""astroembed: foundation-model embeddings for survey catalogs.

The public Python API. Heavy dependencies are imported by the functions that need them, so
``import astroembed`` (and ``astroembed --help``) stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import SimulationConfig  # noqa: E402
from .errors import AstroembedError, ConfigError, InputError, ModelError, OutputError  # noqa: E402


def simulate_survey(out, n_galaxies: int = 2000, seed: int = 0, cutout_size: int = 64,
             overwrite: bool = False, progress=None) -> dict:
    """Write a simulated mini-survey in the real DESI and Legacy Survey formats to ``out``.

    The directory appears complete or not at all. Returns a summary (counts, files).
    """
    from .simulate.survey import write_survey

    cfg = SimulationConfig(n_galaxies=n_galaxies, seed=seed, cutout_size=cutout_size)
    return write_survey(out, cfg, overwrite=overwrite, progress=progress)


def describe_inputs(paths) -> dict:
    """What astroembed reads from input files or directories: kind, rows, usable spectra, ..."""
    from .inventory import describe as _describe

    return _describe(list(paths))


__all__ = ["AstroembedError", "ConfigError", "InputError", "ModelError", "OutputError",
           "SimulationConfig", "__version__", "describe_inputs", "simulate_survey"]
