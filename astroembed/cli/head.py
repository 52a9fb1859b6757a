"""``astroembed head``: a few rows of a catalog, to see its values and IDs to search for."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import IdColumn, catalog_option, json_flag, split_choices
from astroembed.cli.render import show

AsJson = json_flag("Print the rows as JSON on stdout (vectors as their length and first values).")
Catalog = catalog_option("A catalog written by astroembed.")


@app.command()
def head(
    catalog: Catalog,
    columns: Annotated[Optional[list[str]], typer.Option("--columns", help="Columns to show, comma-separated or repeated (default: the ID column, RA, Dec, Z and the embeddings; `info --schema` lists them all).")] = None,
    rows: Annotated[int, typer.Option("--rows", "-n", help="Rows to show.")] = 10,
    tile: Annotated[Optional[str], typer.Option("--tile", help="Only rows of this tile, ORDER/PIXEL (`info --catalog CAT --tiles` lists them).")] = None,
    cone: Annotated[Optional[tuple[float, float, float]], typer.Option("--cone", help="Only rows within RADIUS arcsec of RA DEC (degrees): --cone RA DEC RADIUS.")] = None,
    id_column: IdColumn = None,
    as_json: AsJson = False,
) -> None:
    """A few rows of a catalog as a table: what the columns hold, and IDs to give `search
    --like`. Vector columns (embeddings, spectra, cutouts) show their length and first values.

    Example:  astroembed head --catalog demo-output/matched --rows 5
    """
    import astroembed

    with user_errors():
        result = astroembed.head(catalog, columns=split_choices(columns) or None, rows=rows,
                                 tile=tile, cone=cone, id_column=id_column)
        show(result, as_json, render)


def cell(value: object) -> str:
    """One value as table text: vectors as ``[a, b, c, ...] (n)``, floats to 6 digits."""
    if isinstance(value, dict) and "length" in value:
        values = value["head"][:2]  # two values keep a row of embeddings within 80 columns
        shown = ", ".join(f"{v:.3g}" for v in values)
        more = ", ..." if value["length"] > len(values) else ""
        return f"[{shown}{more}] ({value['length']})"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render(result: dict) -> None:
    """The rows as a table, titled with where they came from."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    where = (f" in tile {result['tile'][0]}/{result['tile'][1]}" if result["tile"] else
             f" within {result['cone'][2]}\" of ({result['cone'][0]}, {result['cone'][1]})"
             if result["cone"] else "")
    table = Table(title=f"{result['path']}: {len(result['rows'])} of {result['total_rows']} "
                        f"rows{where}", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    vectors = {k for row in result["rows"] for k, v in row.items() if isinstance(v, dict)}
    for name in result["columns"]:
        table.add_column(name, overflow="fold", no_wrap=name not in vectors)
    for row in result["rows"]:
        table.add_row(*(cell(row[name]) for name in result["columns"]))
    Console(highlight=False).print(table)
