"""``astroembed convert``: a catalog of an earlier layout to the collection layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag
from astroembed.cli.render import show

AsJson = json_flag("Print what was converted as JSON.")


@app.command()
def convert(
    catalog: Annotated[Path, typer.Argument(help="A catalog in the single-table layout (pixels in every row).")],
    as_json: AsJson = False,
) -> None:
    """Convert a catalog written by an earlier astroembed (pixels in every row) to the
    collection layout, in place: the main catalog with every column, embeddings and
    predictions included, and the pixels in their extension. The old catalog stays as it
    was until the new one is complete.

    Example:  astroembed convert old/matched
    """
    import astroembed

    with user_errors():
        result = astroembed.convert(catalog)
        show(result, as_json, render)


def render(result: dict) -> None:
    """One line: what was converted."""
    pixels = ", ".join(result["pixel_columns"]) or "none"
    typer.echo(f"{result['path']}: {result['tiles']} tiles, {result['rows']} rows converted; "
               f"pixel columns ({pixels}) in {result['pixels'] or 'no extension'}; "
               f"{result['state']}")
