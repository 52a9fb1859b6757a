"""Configuration dataclasses and their loading: defaults < TOML file < command-line flags.

Unknown keys are errors with a suggestion of the closest valid name, because a misspelt key
in a cron job's config silently falling back to a default is the worst kind of bug.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from astroembed.errors import ConfigError, did_you_mean

T = TypeVar("T")


def from_mapping(cls: type[T], data: dict[str, Any], source: str = "config",
                 file_keys: Collection[str] | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with a suggestion.

    ``file_keys``: the keys whose values came from the file ``source`` (default: all); a
    range error about one of them names the file and the key as written there, not the flag.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{key}'."
                              + did_you_mean(key, names, list_all=True))
    hints = typing.get_type_hints(cls)
    data = dict(data)
    for key, value in data.items():
        hint = hints.get(key, Any)
        if dataclasses.is_dataclass(hint):  # a table of its own: loaded the same way
            if isinstance(value, hint):
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a table ([{key}]) (got {value!r}).")
            data[key] = from_mapping(hint, value, f"{source} [{key}]")
        elif not _type_ok(value, hint):
            raise ConfigError(f"{source}: '{key}' must be {_type_name(hints[key])} "
                              f"(got {value!r}).")
    try:
        obj = cls(**data)
    except ValueError as err:  # a dataclass that checks itself on construction
        raise ConfigError(f"{source}: {err}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as err:
            if source == "config":
                raise
            raise ConfigError(_in_file(str(err), source,
                                       set(data if file_keys is None else file_keys))) from None
    return obj


def _in_file(message: str, source: str, keys: set[str]) -> str:
    """A validate() message about a value read from a file: ``--batch-size`` becomes
    ``'batch_size'`` and the file is named, since that is what the user has to edit."""
    def as_key(match: re.Match) -> str:
        key = match.group(1).replace("-", "_")
        return f"'{key}'" if key in keys else match.group(0)

    text = re.sub(r"(?<![\w-])--?([a-z][a-z0-9-]*)", as_key, message)
    if any(re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", text) for k in keys):
        return f"{source}: {text}"
    return message


def _type_ok(value, hint) -> bool:
    """Whether a TOML value fits a dataclass field's annotation (the simple types used here)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            return False
        inner = args[:1] if (origin is list or (args and args[-1] is Ellipsis)) else args
        return all(_type_ok(v, inner[0] if len(inner) == 1 else inner[i])
                   for i, v in enumerate(value)) if inner else True
    return True


def _type_name(hint) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _type_name(args[0]) + " (or absent)"
    if typing.get_origin(hint) in (list, tuple):
        plural = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        return "a list" + (f" of {plural[args[0]]}" if args and args[0] in plural else "")
    return str(hint)


def load_toml(path) -> dict[str, Any]:
    """Read a TOML file, turning syntax errors into a ConfigError that names the file."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file.") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None


@dataclass
class SimulationConfig:
    """What ``astroembed simulate`` makes. See docs/architecture.md."""

    n_galaxies: int = 2000
    seed: int = 0
    cutout_size: int = 64
    dec_centre: float = 2.0
    bricks: int = 0  # brick coadds written for the most populated bricks (0: none)

    def validate(self) -> None:
        if not 0 <= self.bricks <= 20:
            raise ConfigError(f"--bricks must be between 0 and 20 (got {self.bricks}).")
        if self.n_galaxies < 1:
            raise ConfigError(f"--n-galaxies must be at least 1 (got {self.n_galaxies}).")
        if not 16 <= self.cutout_size <= 512:
            raise ConfigError(
                f"--cutout-size must be between 16 and 512 pixels (got {self.cutout_size}).")
        if not -80 <= self.dec_centre <= 80:
            raise ConfigError(
                f"the declination centre must be within +-80 deg (got {self.dec_centre}).")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer (got {self.seed}).")


MATCH_MODES = ("best", "best-symmetric", "all")
JOINS = ("inner", "left")


@dataclass
class CrossmatchConfig:
    """What ``astroembed crossmatch`` does. See docs/architecture.md."""

    images: list[str] = dataclasses.field(default_factory=list)
    spectra: list[str] = dataclasses.field(default_factory=list)
    out: str = ""
    radius: float = 1.0  # arcsec
    mode: str = "best"
    how: str = "inner"
    margin: float | None = None  # arcsec; None = the smallest the mode needs
    # arcsec: width of the margin catalog LSDB crossmatches against this one use (0: none);
    # hats-import's and LSDB's default
    margin_catalog: float = 5.0
    match_on: str = "position"
    compare_ids: bool = False
    keep_all_spectra: bool = False
    suffixes: tuple[str, str] = ("_left", "_right")
    id_column: str = "TARGETID"
    max_bytes: float = 512e6
    max_rows: int = 1_000_000
    scheduler: str | None = None
    workers: int | None = None  # None: 2 local workers, or in-process for small inputs
    processes: bool = False  # threads measured faster on 2 cores (see README)
    overwrite: bool = False
    cutout_size: int = 64  # pixels: stamps cut from brick coadds among the IMAGES

    def validate(self) -> None:
        if not self.radius > 0:
            raise ConfigError(f"--radius must be > 0 arcsec (got {self.radius}).")
        _choices("mode", (self.mode,), MATCH_MODES)
        _choices("how", (self.how,), JOINS)
        _choices("match-on", (self.match_on,), ("position", "ids"))
        if self.margin is not None and not self.margin >= 0:
            raise ConfigError(f"--margin must be >= 0 arcsec (got {self.margin}).")
        if not self.margin_catalog >= 0:
            raise ConfigError(f"--margin-catalog must be >= 0 arcsec (got {self.margin_catalog}).")
        if len(self.suffixes) != 2 or self.suffixes[0] == self.suffixes[1]:
            raise ConfigError(f"--suffixes needs two different suffixes, e.g. _left,_right "
                              f"(got {','.join(self.suffixes)}).")
        if self.max_rows < 1 or self.max_bytes <= 0:
            raise ConfigError("--max-rows and --max-bytes must be positive.")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1 (got {self.workers}).")
        if not self.images or not self.spectra or not self.out:
            raise ConfigError("crossmatch needs IMAGES, SPECTRA and --out.")
        if not 16 <= self.cutout_size <= 512:
            raise ConfigError(
                f"--cutout-size must be between 16 and 512 pixels (got {self.cutout_size}).")


PROBE_METHODS = ("knn", "linear", "mlp")
PROBE_EMBEDDINGS = ("image", "spectrum", "both")
KNN_METRICS = ("cosine", "euclidean")
INDEX_KINDS = ("auto", "exact", "faiss")
PROBE_PROTOCOLS = ("kfold", "astroclip")
#: Central interval levels of the predictive distributions (``--level``).
INTERVAL_LEVELS = (0.68, 0.95)


def check_levels(levels: tuple[float, ...]) -> None:
    """ConfigError unless every interval level is a number strictly between 0 and 1."""
    if not levels:
        raise ConfigError("--level needs at least one interval level, e.g. 0.68.")
    for level in levels:
        if not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
            raise ConfigError(f"--level {level}: an interval level is a fraction strictly "
                              "between 0 and 1, e.g. 0.68 or 0.95.")


def _choices(option: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    """ConfigError naming the option and the closest allowed value for each unknown value."""
    for value in values:
        if value not in allowed:
            raise ConfigError(f"--{option} must be one of {', '.join(allowed)} "
                              f"(got '{value}').{did_you_mean(value, allowed)}")


@dataclass
class ProbeConfig:
    """What ``astroembed probe`` does. See docs/architecture.md.

    ``embedding`` empty means every embedding present (image, spectrum, and both when the
    catalog has the two); ``method`` ("knn", "linear", "mlp") in the order reported.
    """

    catalog: str = ""
    target: str = "redshift"
    embedding: tuple[str, ...] = ()
    method: tuple[str, ...] = ("knn",)
    folds: int = 5
    k: int = 64
    metric: str = "cosine"
    seed: int = 0
    index: str = "auto"  # k-NN: exact (scikit-learn) or faiss IVF; auto = faiss above 2e5 rows
    name: str | None = None  # embedding_<modality>_<name> columns
    id_column: str | None = None
    baselines: bool = True
    out: str | None = None
    save: str | None = None
    overwrite: bool = False
    levels: tuple[float, ...] = INTERVAL_LEVELS  # central intervals of the distributions
    protocol: str = "kfold"  # kfold | astroclip (80/20 split, the paper's k-NN and MLPs)
    keep_stars: bool = False  # a star's redshift is ~0 whatever it looks like: left out

    def validate(self) -> None:
        if not self.catalog:
            raise ConfigError("probe needs --catalog.")
        _choices("protocol", (self.protocol,), PROBE_PROTOCOLS)
        check_levels(tuple(self.levels))
        _choices("embedding", tuple(self.embedding), PROBE_EMBEDDINGS)
        _choices("method", tuple(self.method), PROBE_METHODS)
        if not self.method:
            raise ConfigError(f"--method needs at least one of {', '.join(PROBE_METHODS)} or all.")
        _choices("metric", (self.metric,), KNN_METRICS)
        _choices("index", (self.index,), INDEX_KINDS)
        if self.folds < 2:
            raise ConfigError(f"--folds must be at least 2 (got {self.folds}).")
        if self.k < 1:
            raise ConfigError(f"--k must be at least 1 (got {self.k}).")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer (got {self.seed}).")


@dataclass
class SearchConfig:
    """What ``astroembed search`` does: neighbours of one object, or the retrieval report."""

    catalog: str = ""
    like: str | None = None
    from_modality: str = "image"
    to_modality: str | None = None  # None: the same as from_modality
    k: int = 10
    index: str = "auto"  # exact up to 1e6 rows, faiss above
    name: str | None = None
    id_column: str | None = None
    plot: str | None = None
    evaluate: bool = False
    queries: int = 10_000  # --evaluate: queries per direction (sampled; the database is all)
    seed: int = 0

    def validate(self) -> None:
        if not self.catalog:
            raise ConfigError("search needs --catalog.")
        _choices("from", (self.from_modality,), ("image", "spectrum"))
        _choices("to", (self.to_modality or self.from_modality,), ("image", "spectrum"))
        _choices("index", (self.index,), INDEX_KINDS)
        if self.k < 1:
            raise ConfigError(f"--k must be at least 1 (got {self.k}).")
        if self.queries < 1:
            raise ConfigError(f"--queries must be at least 1 (got {self.queries}).")
        if self.evaluate == (self.like is not None):
            raise ConfigError("search needs exactly one of --like ID (neighbours of one "
                              "object) or --evaluate (the retrieval report).")


EMBED_MODALITIES = ("image", "spectrum", "both")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class EmbedConfig:
    """What ``astroembed embed`` does. See docs/architecture.md.

    Checks here need no files; :func:`astroembed.runtime.embedding.plan_embed` checks the catalog,
    the tiles and the model before any tile is touched.
    """

    catalog: str = ""
    tiles: tuple[str, ...] = ()  # "ORDER/PIXEL"; empty = every tile
    model: str | None = None  # model directory or .onnx file; None = the default model
    name: str | None = None  # columns embedding_<modality>_<name>
    modality: str = "both"
    batch_size: int = 256
    device: str = "auto"
    threads: int | None = None  # onnxruntime threads per task; None = cores / local workers
    scheduler: str | None = None
    workers: int | None = None  # None: in-process (one session using every core)
    processes: bool = False
    force: bool = False

    def validate(self) -> None:
        import re

        if not self.catalog:
            raise ConfigError("embed needs --catalog.")
        _choices("modality", (self.modality,), EMBED_MODALITIES)
        _choices("device", (self.device,), DEVICES)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1 (got {self.batch_size}).")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1 (got {self.threads}).")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1 (got {self.workers}).")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_]+", self.name):
            raise ConfigError(f"--name {self.name!r}: use letters, digits and '_' only (it "
                              "becomes part of the column names embedding_<modality>_<name>).")


ON_ERROR = ("fail", "skip")
LOG_FORMATS = ("text", "json")
# Keys a pipeline's [crossmatch] / [embed] / [probe] table may not set: the pipeline sets them.
_RUN_OWNED = {"crossmatch": ("images", "spectra", "out", "overwrite", "scheduler", "workers",
                             "processes"),
              "embed": ("catalog", "tiles", "scheduler", "workers", "processes", "force"),
              "probe": ("catalog", "overwrite", "target")}


@dataclass
class ComputeConfig:
    """Where the Dask work runs: an existing scheduler, or local workers."""

    scheduler: str | None = None
    workers: int | None = None
    processes: bool = False

    def validate(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"[compute] workers must be at least 1 (got {self.workers}).")


@dataclass
class PredictConfig:
    """The ``[predict]`` table of a pipeline: a saved probe applied to every tile."""

    probe: str  # a directory written by `astroembed probe --save`
    column: str | None = None  # the new column's name (default: the probe's own)
    levels: tuple[float, ...] = INTERVAL_LEVELS  # interval columns written (calibrated probes)


@dataclass
class RunConfig:
    """One ``astroembed run`` pipeline (a TOML file; see ``pipelines/``).

    Top level: ``images``, ``spectra`` (lists of files or directories), ``catalog`` (the
    output). Tables: ``[crossmatch]`` (CrossmatchConfig keys), ``[embed]`` (EmbedConfig keys),
    ``[probe]`` (ProbeConfig keys, plus ``targets``; optional), ``[predict]`` (``probe``, a
    saved probe directory, and ``column``; optional), ``[compute]``. Relative paths are
    relative to the config file.
    """

    images: list[str]
    spectra: list[str]
    catalog: str
    crossmatch: CrossmatchConfig
    embed: EmbedConfig
    probe: ProbeConfig | None
    probe_targets: tuple[str, ...]
    predict: PredictConfig | None
    compute: ComputeConfig
    source: str = "config"

    def resolved(self) -> dict:
        """The whole pipeline as it will run (stored in the catalog's provenance)."""
        def plain(obj):
            return None if obj is None else {k: (list(v) if isinstance(v, tuple) else v)
                                             for k, v in dataclasses.asdict(obj).items()}

        return {"images": self.images, "spectra": self.spectra, "catalog": self.catalog,
                "crossmatch": plain(self.crossmatch), "embed": plain(self.embed),
                "probe": plain(self.probe), "probe_targets": list(self.probe_targets),
                "predict": plain(self.predict), "compute": plain(self.compute),
                "source": self.source}


def _unknown(keys, allowed, where: str) -> None:
    for key in keys:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}'."
                              + did_you_mean(key, list(allowed), list_all=True))


def _paths(value, key: str, base, where: str) -> list[str]:
    from pathlib import Path

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{where}: '{key}' must be a path or a list of paths.")
    return [str((Path(base) / Path(v).expanduser()).resolve()) for v in items]


def load_run_config(path) -> RunConfig:
    """Read and check a pipeline TOML file before anything runs; paths resolved relative to it."""
    from pathlib import Path

    path = Path(path)
    data = load_toml(path)
    where = str(path)
    base = path.resolve().parent
    tables = ("crossmatch", "embed", "probe", "predict", "compute")
    _unknown(data, ("images", "spectra", "catalog") + tables, where)
    for key in ("images", "spectra", "catalog"):
        if key not in data:
            raise ConfigError(f"{where}: '{key}' is required (see pipelines/demo.toml).")
    for key in tables:
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{where}: '{key}' must be a table ([{key}]).")
    images = _paths(data["images"], "images", base, where)
    spectra = _paths(data["spectra"], "spectra", base, where)
    if not isinstance(data["catalog"], str):
        raise ConfigError(f"{where}: 'catalog' must be a path.")
    catalog = _paths(data["catalog"], "catalog", base, where)[0]

    def section(name: str, cls, extra: tuple[str, ...] = ()):
        table = dict(data.get(name, {}))
        for key in table:
            if key in _RUN_OWNED.get(name, ()):
                hint = " (use 'targets', a list)" if (name, key) == ("probe", "target") else ""
                raise ConfigError(f"{where}: [{name}] {key} is set by the pipeline, not "
                                  f"here{hint}.")
        allowed = [f.name for f in dataclasses.fields(cls) if f.name not in _RUN_OWNED.get(name, ())]
        _unknown(table, allowed + list(extra), f"{where} [{name}]")
        return table

    compute = from_mapping(ComputeConfig, section("compute", ComputeConfig), f"{where} [compute]")
    xm = section("crossmatch", CrossmatchConfig)
    if isinstance(xm.get("suffixes"), list):
        xm["suffixes"] = tuple(xm["suffixes"])
    crossmatch = from_mapping(CrossmatchConfig, xm | {
        "images": images, "spectra": spectra, "out": catalog, "scheduler": compute.scheduler,
        "workers": compute.workers, "processes": compute.processes}, f"{where} [crossmatch]")
    em = section("embed", EmbedConfig)
    if em.get("model"):
        em["model"] = _paths(em["model"], "model", base, f"{where} [embed]")[0]
    else:
        em["model"] = None
    embed = from_mapping(EmbedConfig, em | {"catalog": catalog, "scheduler": compute.scheduler,
                                            "workers": compute.workers,
                                            "processes": compute.processes}, f"{where} [embed]")
    probe, targets = None, ()
    if "probe" in data:
        pr = section("probe", ProbeConfig, extra=("targets",))
        targets = pr.pop("targets", ["redshift"])
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets or not all(
                isinstance(t, str) and t for t in targets):
            raise ConfigError(f"{where} [probe]: 'targets' must be a column name or a non-empty "
                              f"list of them (got {targets!r}).")
        for key in ("embedding", "method"):
            if key in pr:
                if isinstance(pr[key], str):
                    pr[key] = [pr[key]]
                if not isinstance(pr[key], list):
                    raise ConfigError(f"{where} [probe]: '{key}' must be a name or a list of "
                                      f"names (got {pr[key]!r}).")
                pr[key] = tuple(pr[key])
        if isinstance(pr.get("levels"), list):
            pr["levels"] = tuple(pr["levels"])
        for key in ("out", "save"):
            if pr.get(key):
                pr[key] = _paths(pr[key], key, base, f"{where} [probe]")[0]
        probe = from_mapping(ProbeConfig, pr | {"catalog": catalog, "overwrite": True},
                             f"{where} [probe]")
        targets = tuple(targets)
    predict = None
    if "predict" in data:
        pd_ = section("predict", PredictConfig)
        if "probe" not in pd_:
            raise ConfigError(f"{where} [predict]: 'probe' (a directory saved by `astroembed "
                              "probe --save`) is required.")
        pd_["probe"] = _paths(pd_["probe"], "probe", base, f"{where} [predict]")[0]
        if isinstance(pd_.get("levels"), list):
            pd_["levels"] = tuple(pd_["levels"])
        predict = from_mapping(PredictConfig, pd_, f"{where} [predict]")
        check_levels(predict.levels)
    return RunConfig(images=images, spectra=spectra, catalog=catalog, crossmatch=crossmatch,
                     embed=embed, probe=probe, probe_targets=targets, predict=predict,
                     compute=compute, source=str(path.resolve()))
