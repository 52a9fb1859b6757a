"""Options and argument parsing shared by several commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def json_flag(help: str = "Print the summary as JSON on stdout.") -> type:  # noqa: A002
    """``--json``: print exactly what the API returned, as strict JSON."""
    return Annotated[bool, typer.Option("--json", help=help)]


ModelName = Annotated[Optional[str], typer.Option(help="Model name: use embedding_<modality>_NAME columns.")]
IdColumn = Annotated[Optional[str], typer.Option("--id-column", help="Object key (default: the catalog's, TARGETID).")]


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
