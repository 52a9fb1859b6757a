"""astroembed: foundation-model embeddings for survey catalogs.

The public Python API. Heavy dependencies are imported by the functions that need them, so
``import astroembed`` (and ``astroembed --help``) stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

from astroembed.config import CrossmatchConfig, SimulationConfig  # noqa: E402
from astroembed.errors import AstroembedError, ConfigError, InputError, ModelError, OutputError  # noqa: E402


def simulate_survey(out, n_galaxies: int = 2000, seed: int = 0, cutout_size: int = 64,
             overwrite: bool = False, progress=None) -> dict:
    """Write a simulated mini-survey in the real DESI and Legacy Survey formats to ``out``.

    The directory appears complete or not at all. Returns a summary (counts, files).
    """
    from astroembed.simulation.survey import write_survey

    cfg = SimulationConfig(n_galaxies=n_galaxies, seed=seed, cutout_size=cutout_size)
    return write_survey(out, cfg, overwrite=overwrite, progress=progress)


def crossmatch_surveys(images, spectra, out, **options) -> dict:
    """Cross-match Legacy Survey objects (``images``) with DESI spectra (``spectra``) into the
    HATS catalog ``out``; ``options`` are the fields of :class:`CrossmatchConfig` (radius, mode,
    how, margin, match_on, ...). Returns the run summary (rows, matched, dropped per reason).
    """
    from astroembed.config import CrossmatchConfig
    from astroembed.matching.orchestrate import crossmatch

    as_list = lambda x: [str(p) for p in x] if isinstance(x, (list, tuple)) else [str(x)]  # noqa: E731
    cfg = CrossmatchConfig(images=as_list(images), spectra=as_list(spectra), out=str(out), **options)
    return crossmatch(cfg)


def embed_catalog(catalog, **options) -> dict:
    """Add embedding columns to every tile of ``catalog`` with the ONNX encoders; ``options``
    are the fields of :class:`astroembed.config.EmbedConfig` (model, name, modality, device,
    batch_size, ...). Without ``model``, the default model. Returns the run summary."""
    from astroembed.config import EmbedConfig
    from astroembed.runtime.orchestrate import embed

    return embed(EmbedConfig(catalog=str(catalog), **options))


def probe_catalog(catalog, target: str = "redshift", **options) -> dict:
    """Cross-validated probes of ``target`` from the catalog's embeddings and the baselines;
    ``options`` are the fields of :class:`astroembed.config.ProbeConfig` (method, k, out, ...).
    Returns the document ``astroembed probe --json`` prints."""
    from astroembed.config import ProbeConfig
    from astroembed.probes.probe import run_probe

    for key in ("method", "embedding"):
        if isinstance(options.get(key), str):
            options[key] = (options[key],)
    return run_probe(ProbeConfig(catalog=str(catalog), target=target, **options))


def search_catalog(catalog, like, **options) -> dict:
    """Nearest neighbours of the object with ID ``like`` by cosine similarity; ``options`` are
    the fields of :class:`astroembed.config.SearchConfig` (from_modality, to_modality, k, ...)."""
    from astroembed.config import SearchConfig
    from astroembed.similarity import SearchCatalog, neighbours, search_modalities

    cfg = SearchConfig(catalog=str(catalog), like=str(like), **options)
    cfg.validate()
    cat = SearchCatalog.open(catalog, search_modalities(cfg.from_modality, cfg.to_modality, False),
                             name=cfg.name, id_column=cfg.id_column)
    return neighbours(cat, cfg.like, cfg.from_modality, cfg.to_modality, k=cfg.k,
                      index=cfg.index, seed=cfg.seed)


def run_pipeline(config, *, dry_run: bool = False, on_error: str = "fail") -> dict:
    """Run the pipeline in TOML file ``config`` (crossmatch -> embed -> probe/predict),
    incrementally: only tiles touched by new or changed inputs are redone. Returns the
    run's report (what was done per stage, its outcome)."""
    from astroembed.pipeline.run import run

    return run(config, dry_run=dry_run, on_error=on_error)


def catalog_info(path) -> dict:
    """What a catalog written by astroembed holds, as ``astroembed info --json`` prints it:
    ``state`` (complete, partly embedded or incomplete) and ``state_detail``, ``total_rows``,
    ``tiles`` with rows, ``columns``, ``embeddings`` per column with the tiles holding it,
    ``leftover_work_files`` beside it, ``last_run``, ``properties`` and ``provenance``."""
    from astroembed.catalog.hats import describe_catalog

    return describe_catalog(path)


def describe_inputs(paths) -> dict:
    """What astroembed reads from input files or directories: kind, rows, usable spectra, ..."""
    from astroembed.readers.inventory import describe as _describe

    return _describe(list(paths))


__all__ = ["AstroembedError", "ConfigError", "CrossmatchConfig", "InputError", "ModelError",
           "OutputError", "SimulationConfig", "__version__", "catalog_info", "crossmatch_surveys",
           "describe_inputs", "embed_catalog", "probe_catalog", "run_pipeline", "search_catalog",
           "simulate_survey"]
