"""astroembed: foundation-model embeddings for survey catalogs.

The public Python API: one function per command of the ``astroembed`` CLI, named as the
command, each returning the dict that the command's ``--json`` prints. Heavy dependencies are
imported by the functions that need them, so ``import astroembed`` (and ``astroembed --help``)
stays fast.

Functions that do long work take ``progress``: ``None``, or a callable
``progress(stage, done, total)`` (``train`` adds a dict of metrics) called as the work
advances.
"""

from __future__ import annotations

__version__ = "0.1.0"

import os  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

from astroembed.config import CrossmatchConfig, SimulationConfig  # noqa: E402
from astroembed.errors import AstroembedError, ConfigError, InputError, ModelError, OutputError  # noqa: E402

PathLike = str | os.PathLike
Progress = Callable[..., None] | None


def simulate(out: PathLike, n_galaxies: int = 2000, seed: int = 0, cutout_size: int = 64,
             overwrite: bool = False, progress: Progress = None, bricks: int = 0) -> dict:
    """Write a simulated mini-survey in the real DESI and Legacy Survey formats to ``out``.

    The arguments and ``out`` are checked before anything is written, and the directory
    appears complete or not at all. ``bricks`` > 0 also writes that many brick coadds
    (3600 x 3600, the most populated bricks first). Returns a summary (counts, sky area,
    files).
    """
    from astroembed.catalog.paths import check_output_dir
    from astroembed.simulation.survey import write_survey

    cfg = SimulationConfig(n_galaxies=n_galaxies, seed=seed, cutout_size=cutout_size,
                           bricks=bricks)
    cfg.validate()
    check_output_dir(out, "OUT")
    return write_survey(out, cfg, overwrite=overwrite, progress=progress)


def inspect(paths: PathLike | Iterable[PathLike]) -> dict:
    """What astroembed reads from input files or directories (searched recursively): kind,
    rows, usable spectra, redshifts per file and in total. Every file is read in full, so a
    file that would fail a cross-match is listed under ``errors`` here first."""
    from astroembed.readers.inventory import describe

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return describe(list(paths))


def crossmatch(images: PathLike | Iterable[PathLike], spectra: PathLike | Iterable[PathLike],
               out: PathLike, progress: Progress = None, **options: Any) -> dict:
    """Cross-match Legacy Survey objects (``images``) with DESI spectra (``spectra``) into the
    HATS catalog ``out``; ``options`` are the fields of :class:`CrossmatchConfig` (radius, mode,
    how, margin, match_on, suffixes, ...). Returns the run summary (rows, matched, dropped per
    reason, tiles written)."""
    from astroembed.catalog.paths import check_output_dir
    from astroembed.matching.orchestrate import crossmatch as run_crossmatch

    if isinstance(options.get("suffixes"), str):
        options["suffixes"] = tuple(s.strip() for s in options["suffixes"].split(","))
    cfg = CrossmatchConfig(images=_as_list(images), spectra=_as_list(spectra), out=str(out),
                           **options)
    cfg.validate()
    check_output_dir(out, "--out")
    summary = run_crossmatch(cfg, progress=progress)
    for internal in ("input_tiles", "layout"):  # state for `astroembed run`, not a result
        summary.pop(internal, None)
    return summary


def _as_list(paths: PathLike | Iterable[PathLike]) -> list[str]:
    """One path or several, as the list of strings the configs hold."""
    if isinstance(paths, (str, os.PathLike)):
        return [str(paths)]
    return [str(p) for p in paths]


def info(catalog: PathLike, tiles: bool = False) -> dict:
    """What a catalog written by astroembed holds: ``state`` (complete, partly embedded or
    incomplete) and ``state_detail``, ``total_rows``, ``tiles`` with rows, ``columns``,
    ``embeddings`` per column with the tiles holding it, ``leftover_work_files`` beside it,
    ``last_run``, ``properties`` and ``provenance``.

    With ``tiles=True`` only the catalog's index is read and the result is
    ``{"path", "tiles": [[order, pixel], ...]}``: quick enough to plan job arrays on.
    """
    from astroembed.catalog.describe import describe_catalog
    from astroembed.catalog.reader import read_catalog_info

    if tiles:
        return {"path": str(catalog),
                "tiles": [[order, pixel] for order, pixel in read_catalog_info(catalog).tiles]}
    return describe_catalog(catalog)


def head(catalog: PathLike, columns: Iterable[str] | None = None, rows: int = 10,
         tile: str | tuple[int, int] | None = None,
         cone: tuple[float, float, float] | None = None, id_column: str | None = None) -> dict:
    """A few rows of a catalog: ``rows`` rows of ``columns`` (default: the object key, RA,
    Dec, Z and the embeddings) from the first tiles, from one ``tile`` ("ORDER/PIXEL") or
    within a ``cone`` (RA, Dec in degrees, radius in arcsec). Vector values come as
    ``{"length", "head"}`` (their first values). Returns ``{"path", "id_column", "columns",
    "rows", "total_rows", "tile", "cone"}``; ``rows`` are dicts keyed by column, and their
    ``id_column`` values are what ``search(like=...)`` takes."""
    from astroembed.catalog.layout import parse_tile
    from astroembed.catalog.peek import head_rows

    if isinstance(tile, str):
        tile = parse_tile(tile)
    return head_rows(catalog, columns=list(columns) if columns else None, rows=rows,
                     tile=tile, cone=tuple(cone) if cone is not None else None,
                     id_column=id_column)


def convert(catalog: PathLike) -> dict:
    """Convert a catalog written in the single-table layout of earlier versions (pixels in
    every row) to the collection layout, in place: every column kept, embeddings and
    predictions included; the old catalog stays intact until the new one is complete.
    Returns what was converted (tiles, rows, columns, pixel columns, state)."""
    from astroembed.catalog.convert import convert_catalog

    return convert_catalog(catalog)


def pixels(catalog: PathLike, row_ids: Any, columns: list[str] | None = None) -> Any:
    """The pixel columns (``image``, ``flux``, ``ivar``; default all) of the rows ``row_ids``
    (values of the catalog's ``ROW_ID`` column), as a pyarrow Table in that order with
    ``ROW_ID`` first. Only the pixel files of the rows' tiles are read. In LSDB the same
    columns come with ``lsdb.open_catalog(catalog).load_extension("pixels")``.
    """
    from astroembed.catalog.reader import pixels_of_rows

    return pixels_of_rows(catalog, row_ids, columns)


def embed(catalog: PathLike, progress: Progress = None, **options: Any) -> dict:
    """Add embedding columns to the tiles of ``catalog`` with the ONNX encoders; ``options``
    are the fields of :class:`astroembed.config.EmbedConfig` (tiles, model, name, modality,
    device, batch_size, ...). Without ``model``, the model shipped with astroembed. Returns the
    run summary; a run that leaves tiles failed raises an error carrying it as ``.summary``."""
    from astroembed.runtime.orchestrate import embed as run_embed
    from astroembed.config import EmbedConfig

    if isinstance(options.get("tiles"), str):
        options["tiles"] = (options["tiles"],)
    if options.get("tiles") is not None:
        options["tiles"] = tuple(options["tiles"])
    if options.get("model") is not None:
        options["model"] = str(options["model"])
    return run_embed(EmbedConfig(catalog=str(catalog), **options), progress=progress)


def train(catalog: PathLike, out: PathLike, config: PathLike | None = None,
          resume: bool = False, progress: Progress = None, **settings: Any) -> dict:
    """Train an image + spectrum encoder pair on a cross-matched catalog into ``out``.

    Settings are the fields of :class:`astroembed.training.trainer.TrainConfig`, merged as
    defaults < the TOML file ``config`` < keyword ``settings`` (``None`` values are unset), so
    a flag overrides the file and an error about a value read from the file names the file.
    ``resume`` continues from the last checkpoint in ``out``. Returns the training summary.
    """
    from astroembed.catalog.paths import check_output_dir
    from astroembed.config import from_mapping, load_toml
    from astroembed.training.trainer import TrainConfig, train as run_train

    values = load_toml(config) if config else {}
    given = {key: value for key, value in settings.items() if value is not None}
    file_keys = set(values) - set(given)
    values.update(given)
    values.update(catalog=str(catalog), out=str(out))
    cfg = from_mapping(TrainConfig, values, source=str(config or "train"), file_keys=file_keys)
    check_output_dir(out, "--out")
    return run_train(cfg, resume=resume, progress=progress)


def export(model_dir: PathLike, out: PathLike, overwrite: bool = False,
           precision: str = "fp32") -> dict:
    """Export the pair trained in ``model_dir`` to ONNX in ``out`` (``image.onnx``,
    ``spectrum.onnx``, ``model.json``) after a torch-vs-ONNX parity check; nothing is written
    if it fails. ``precision="fp16"`` writes fp16 encoders (float32 inputs and outputs, so
    ``embed`` is unchanged), compared with fp32 after L2 normalisation. Returns what was
    written per encoder (file, bytes, parity, hash, and the fp16 difference)."""
    from astroembed.catalog.paths import check_output_dir
    from astroembed.training.export import export_model

    check_output_dir(out, "--out")
    return export_model(model_dir, out, overwrite=overwrite, precision=precision)


def import_model(kind: str, checkpoint: PathLike, out: PathLike,
                 overwrite: bool = False) -> dict:
    """Import the published checkpoint ``checkpoint`` of ``kind`` (``specformer``:
    AstroCLIP's ``specformer.ckpt``) as an ONNX model directory ``out`` for ``embed``
    (encoders, ``model.json``, a generated ``MODEL_CARD.md``), after a parity check of ONNX
    against the checkpoint's torch module; nothing is written if anything fails. The
    checkpoint's pickle is read without importing or running what it names. Returns what
    was written (source file and SHA-256, encoders with parity and CPU rows/s)."""
    from astroembed.catalog.paths import check_output_dir
    from astroembed.training.importer import import_model as run_import

    check_output_dir(out, "--out")
    return run_import(kind, checkpoint, out, overwrite=overwrite)


def doctor(model: PathLike | None = None, devices: str | Iterable[str] = ("auto",),
           rows: int = 256, batch_size: int = 64) -> dict:
    """Check this installation: the onnxruntime version, package and build, its providers,
    what a session really gets for each device (``cpu``, ``auto``, ``cuda``), and for the
    default model and ``model`` (a model directory or .onnx file) each encoder's parity on
    every device in ``devices`` against onnxruntime on CPU and its rows/s over ``rows`` rows
    at ``batch_size``. Returns the report; ``ok`` is False (and ``problems`` says why) when
    a device in ``devices`` does not work or an encoder disagrees with CPU there."""
    from astroembed.runtime.doctor import diagnose

    if isinstance(devices, str):
        devices = (devices,)
    return diagnose(model=None if model is None else str(model), devices=tuple(devices),
                    rows=rows, batch_size=batch_size)


def probe(catalog: PathLike, target: str = "redshift", progress: Progress = None,
          per_fold: bool = False, **options: Any) -> dict:
    """Cross-validated probes of ``target`` from the catalog's embeddings and the baselines;
    ``options`` are the fields of :class:`astroembed.config.ProbeConfig` (embedding, method,
    folds, k, metric, out, save, ...). Every argument is checked against the catalog before
    any fitting. Returns the results (mean and spread over folds); ``per_fold=True`` keeps
    each fold's metrics under ``results[i]["folds"]``."""
    from astroembed.config import ProbeConfig
    from astroembed.probes.crossval import prepare_probe, run_probe

    if isinstance(options.get("levels"), (int, float)):
        options["levels"] = (options["levels"],)
    elif options.get("levels") is not None:
        options["levels"] = tuple(options["levels"])
    for key in ("method", "embedding"):
        if isinstance(options.get(key), str):
            options[key] = (options[key],)
        elif options.get(key) is not None:
            options[key] = tuple(options[key])
    for key in ("out", "save"):
        if options.get(key) is not None:
            options[key] = str(options[key])
    cfg = ProbeConfig(catalog=str(catalog), target=target, **options)
    plan = prepare_probe(cfg)
    doc = run_probe(cfg, progress=progress, prepared=plan)
    if not per_fold:
        for result in doc["results"]:
            result.pop("folds", None)
    return doc


def predict(catalog: PathLike, probe: PathLike, column: str | None = None,
            overwrite: bool = False, progress: Progress = None,
            levels: tuple[float, ...] | None = None) -> dict:
    """Append the predictions of the probe saved in ``probe`` (by ``probe(..., save=DIR)``)
    as ``column`` (default ``pred_<target>``) to every tile of ``catalog``, each tile
    rewritten atomically; a calibrated probe adds ``<column>_quantiles`` and the central
    intervals at ``levels`` (default 0.68 and 0.95). Returns a summary (rows, tiles, nulls,
    columns, whether the probe was calibrated)."""
    from astroembed.config import INTERVAL_LEVELS
    from astroembed.probes.predict import predict_catalog

    return predict_catalog(catalog, probe, column=column, overwrite=overwrite, progress=progress,
                           levels=INTERVAL_LEVELS if levels is None else tuple(levels))


def search(catalog: PathLike, like: str | int | None = None, **options: Any) -> dict:
    """Nearest neighbours by cosine similarity of the object with ID ``like``, or with
    ``evaluate=True`` the retrieval report (how often each object's partner is found across
    modalities); ``options`` are the fields of :class:`astroembed.config.SearchConfig`
    (from_modality, to_modality, k, index, plot, queries, seed, ...). With ``plot`` a PNG of
    the neighbours is written and its path returned under ``plot``."""
    from astroembed.config import SearchConfig
    from astroembed.similarity import search as run_search

    if options.get("plot") is not None:
        options["plot"] = str(options["plot"])
    return run_search(SearchConfig(catalog=str(catalog),
                                   like=None if like is None else str(like), **options))


def run(config: PathLike, *, dry_run: bool = False, on_error: str = "fail") -> dict:
    """Run the pipeline in TOML file ``config`` (crossmatch -> embed -> probe/predict),
    incrementally: only tiles touched by new or changed inputs are redone. Returns the run's
    report (what was done per stage, its outcome); with ``on_error="skip"`` and inputs left
    out, raises :class:`astroembed.pipeline.run.PartialSuccess` carrying it as ``.report``."""
    from astroembed.pipeline.run import run as run_config

    return run_config(config, dry_run=dry_run, on_error=on_error)


def _deprecated(old: str, new: Callable) -> Callable:
    """``old`` as a thin alias of ``new`` that warns, kept for one release."""
    def alias(*args: Any, **kwargs: Any):
        warnings.warn(f"astroembed.{old} is deprecated; use astroembed.{new.__name__}.",
                      DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of :func:`{new.__name__}`."
    return alias


def _probe_with_folds(*args: Any, **kwargs: Any) -> dict:
    """What ``probe_catalog`` returned: per-fold metrics included."""
    kwargs.setdefault("per_fold", True)
    return probe(*args, **kwargs)


_probe_with_folds.__name__ = "probe"

simulate_survey = _deprecated("simulate_survey", simulate)
crossmatch_surveys = _deprecated("crossmatch_surveys", crossmatch)
embed_catalog = _deprecated("embed_catalog", embed)
probe_catalog = _deprecated("probe_catalog", _probe_with_folds)
search_catalog = _deprecated("search_catalog", search)
run_pipeline = _deprecated("run_pipeline", run)
catalog_info = _deprecated("catalog_info", info)
describe_inputs = _deprecated("describe_inputs", inspect)

__all__ = ["AstroembedError", "ConfigError", "CrossmatchConfig", "InputError", "ModelError",
           "OutputError", "SimulationConfig", "__version__", "convert", "crossmatch", "doctor", "embed",
           "export", "import_model",
           "info", "inspect", "pixels", "predict", "probe", "run", "search", "simulate",
           "train",
           # deprecated aliases, removed in the next release
           "catalog_info", "crossmatch_surveys", "describe_inputs", "embed_catalog",
           "probe_catalog", "run_pipeline", "search_catalog", "simulate_survey"]
