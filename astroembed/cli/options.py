"""Options and argument parsing shared by several commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def json_flag(help: str = "Print the summary as JSON on stdout.") -> type:  # noqa: A002
    """``--json``: print exactly what the API returned, as strict JSON."""
    return Annotated[bool, typer.Option("--json", help=help)]


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
