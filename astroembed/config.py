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
