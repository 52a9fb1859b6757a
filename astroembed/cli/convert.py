"""``astroembed convert``: a catalog of an earlier layout to the collection layout."""

from __future__ import annotations

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import CATALOG_ARGUMENT, json_flag, one_catalog, optional_catalog_option
from astroembed.cli.render import show

AsJson = json_flag("Print what was converted as JSON.")

Catalog = optional_catalog_option("A catalog in the single-table layout (pixels in every row).")


@app.command(context_settings=CATALOG_ARGUMENT)
def convert(
    ctx: typer.Context,
    catalog_opt: Catalog = None,
    as_json: AsJson = False,
) -> None:
    """Convert a catalog written by an earlier astroembed (pixels in every row) to the
    collection layout, in place: the main catalog with every column, embeddings and
    predictions included, and the pixels in their extension. The old catalog stays as it
    was until the new one is complete.

    Example:  astroembed convert --catalog old-catalog
    """
    import astroembed

    with user_errors():
        result = astroembed.convert(one_catalog(catalog_opt, ctx.args))
        show(result, as_json, render)


def render(result: dict) -> None:
    """One line: what was converted."""
    pixels = ", ".join(result["pixel_columns"]) or "none"
    typer.echo(f"{result['path']}: {result['tiles']} tiles, {result['rows']} rows converted; "
               f"pixel columns ({pixels}) in {result['pixels'] or 'no extension'}; "
               f"{result['state']}")
