"""Options and argument parsing shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def json_flag(help: str = "Print the summary as JSON on stdout.") -> type:  # noqa: A002
    """``--json``: print exactly what the API returned, as strict JSON."""
    return Annotated[bool, typer.Option("--json", help=help)]


def catalog_option(help: str) -> type:  # noqa: A002
    """``--catalog CAT`` / ``-c CAT``: how every command that reads a catalog names it."""
    return Annotated[Path, typer.Option("--catalog", "-c", help=help)]


def optional_catalog_option(help: str) -> type:  # noqa: A002
    """``--catalog``/``-c`` for a command that also takes the catalog as its argument (the
    older form, kept working): optional here, :func:`one_catalog` requires one of the two."""
    return Annotated[Optional[Path], typer.Option("--catalog", "-c", show_default=False,
                                                  help=help + " (required)")]


#: Settings of a command that also takes the catalog as a positional argument, the older
#: form of ``--catalog``: it arrives in ``ctx.args``, so ``--help`` shows only ``--catalog``.
CATALOG_ARGUMENT = {"allow_extra_args": True}


def one_catalog(option: Optional[Path], arguments: list[str]) -> Path:
    """The catalog named by ``--catalog`` or the positional argument: one of them is needed,
    and both may be given only when they name the same path."""
    from astroembed.errors import ConfigError

    if len(arguments) > 1:
        raise ConfigError(f"one catalog at a time, got {len(arguments)}: "
                          f"{' '.join(arguments)}; name it with --catalog CAT")
    argument = Path(arguments[0]) if arguments else None
    if option is None and argument is None:
        raise ConfigError("no catalog: name it with --catalog CAT (or -c CAT)")
    if option is not None and argument is not None and Path(option) != argument:
        raise ConfigError(f"two different catalogs: --catalog {option} and the argument "
                          f"{argument}; give one")
    return option if option is not None else argument  # type: ignore[return-value]


ModelName = Annotated[Optional[str], typer.Option(help="Model name: use embedding_<modality>_NAME columns.")]
IdColumn = Annotated[Optional[str], typer.Option("--id-column", help="Object key (default: the catalog's, TARGETID).")]


def split_levels(values: Optional[list[str]]) -> tuple[float, ...] | None:
    """``--level 0.68,0.95 --level 0.9`` -> (0.68, 0.95, 0.9); None when not given. A value
    that is not a number is a ConfigError (one line, exit 2)."""
    from astroembed.errors import ConfigError

    if not values:
        return None
    out = []
    for part in split_choices(values):
        try:
            out.append(float(part))
        except ValueError:
            raise ConfigError(f"--level {part}: not a number; an interval level is a fraction "
                              "strictly between 0 and 1, e.g. 0.68.") from None
    return tuple(out)


def split_choices(values: Optional[list[str]], everything: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``--x a,b --x c`` -> ("a", "b", "c"); "all" -> ``everything``; repeats dropped."""
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            part = part.strip()
            if part == "all" and everything:
                out.extend(everything)
            elif part:
                out.append(part)
    return tuple(dict.fromkeys(out))
