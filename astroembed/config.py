"""Configuration dataclasses and their loading: defaults < TOML file < command-line flags.

Unknown keys are errors with a suggestion of the closest valid name, because a misspelt key
in a cron job's config silently falling back to a default is the worst kind of bug.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with a suggestion."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(names)}."
            raise ConfigError(f"{source}: unknown key '{key}'.{hint}")
    obj = cls(**data)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def load_toml(path) -> dict[str, Any]:
    """Read a TOML file, turning syntax errors into a ConfigError that names the file."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None


@dataclass
class SimulationConfig:
    """What ``astroembed simulate`` makes. See DESIGN.md section 6."""

    n_galaxies: int = 2000
    seed: int = 0
    cutout_size: int = 64
    dec_centre: float = 2.0

    def validate(self) -> None:
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
    """What ``astroembed crossmatch`` does. See DESIGN.md sections 3 and 4."""

    images: list[str] = dataclasses.field(default_factory=list)
    spectra: list[str] = dataclasses.field(default_factory=list)
    out: str = ""
    radius: float = 1.0  # arcsec
    mode: str = "best"
    how: str = "inner"
    margin: float | None = None  # arcsec; None = the smallest the mode needs
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

    def validate(self) -> None:
        def choice(name: str, value: str, options: tuple[str, ...]) -> None:
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"--{name} must be one of {', '.join(options)} (got '{value}').{hint}")

        if not self.radius > 0:
            raise ConfigError(f"--radius must be > 0 arcsec (got {self.radius}).")
        choice("mode", self.mode, MATCH_MODES)
        choice("how", self.how, JOINS)
        choice("match-on", self.match_on, ("position", "ids"))
        if self.margin is not None and not self.margin >= 0:
            raise ConfigError(f"--margin must be >= 0 arcsec (got {self.margin}).")
        if len(self.suffixes) != 2 or self.suffixes[0] == self.suffixes[1]:
            raise ConfigError(f"--suffixes needs two different suffixes, e.g. _left,_right "
                              f"(got {','.join(self.suffixes)}).")
        if self.max_rows < 1 or self.max_bytes <= 0:
            raise ConfigError("--max-rows and --max-bytes must be positive.")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1 (got {self.workers}).")
        if not self.images or not self.spectra or not self.out:
            raise ConfigError("crossmatch needs IMAGES, SPECTRA and --out.")


PROBE_METHODS = ("knn", "linear", "mlp")
PROBE_EMBEDDINGS = ("image", "spectrum", "both")
KNN_METRICS = ("cosine", "euclidean")
INDEX_KINDS = ("auto", "exact", "faiss")


def _choices(option: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    """ConfigError naming the option and the closest allowed value for each unknown value."""
    for value in values:
        if value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"--{option} must be one of {', '.join(allowed)} "
                              f"(got '{value}').{hint}")


@dataclass
class ProbeConfig:
    """What ``astroembed probe`` does. See DESIGN.md section 9.

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

    def validate(self) -> None:
        if not self.catalog:
            raise ConfigError("probe needs --catalog.")
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
            raise ConfigError(f"-k must be at least 1 (got {self.k}).")
        if self.queries < 1:
            raise ConfigError(f"--queries must be at least 1 (got {self.queries}).")
        if self.evaluate == (self.like is not None):
            raise ConfigError("search needs exactly one of --like ID (neighbours of one "
                              "object) or --evaluate (the retrieval report).")


EMBED_MODALITIES = ("image", "spectrum", "both")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class EmbedConfig:
    """What ``astroembed embed`` does. See DESIGN.md section 8.

    Checks here need no files; :func:`astroembed.embedding.plan_embed` checks the catalog,
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

        def choice(option: str, value: str, options: tuple[str, ...]) -> None:
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"--{option} must be one of {', '.join(options)} "
                                  f"(got '{value}').{hint}")

        if not self.catalog:
            raise ConfigError("embed needs --catalog.")
        choice("modality", self.modality, EMBED_MODALITIES)
        choice("device", self.device, DEVICES)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1 (got {self.batch_size}).")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1 (got {self.threads}).")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1 (got {self.workers}).")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_]+", self.name):
            raise ConfigError(f"--name {self.name!r}: use letters, digits and '_' only (it "
                              "becomes part of the column names embedding_<modality>_<name>).")
