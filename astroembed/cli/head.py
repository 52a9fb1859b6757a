"""``astroembed head``: a few rows of a catalog, to see its values and IDs to search for."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import IdColumn, catalog_option, json_flag, split_choices
from astroembed.cli.render import break_lines, show

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
    """The rows as a table, titled with where they came from. Columns that do not fit the
    terminal's width go on to further tables of the same rows, each led by the ID column;
    only a column too wide for the terminal beside the ID column wraps."""
    from rich.console import Console

    where = (f" in tile {result['tile'][0]}/{result['tile'][1]}" if result["tile"] else
             f" within {result['cone'][2]}\" of ({result['cone'][0]}, {result['cone'][1]})"
             if result["cone"] else "")
    title = f"{result['path']}: {len(result['rows'])} of {result['total_rows']} rows{where}"
    cells = {name: [cell(row[name]) for row in result["rows"]] for name in result["columns"]}
    console = Console(highlight=False, markup=False)
    unlimited = console.options.update_width(10**6)
    key = [result["id_column"]] if result.get("id_column") in cells else []
    blocks: list[list[str]] = []
    for name in result["columns"]:
        if blocks and name in blocks[-1]:  # the ID column, leading this table already
            continue
        wider = blocks[-1] + [name] if blocks else [name]
        if blocks and (set(blocks[-1]) <= set(key) or console.measure(
                _table(wider, cells), options=unlimited).maximum <= console.width):
            blocks[-1].append(name)
        else:
            blocks.append([k for k in key if blocks and k != name] + [name])
    console.print(title)
    for names in blocks:
        table = _table(names, cells)
        over = console.measure(table, options=unlimited).maximum - console.width
        if over > 0:  # one column wider than the terminal by itself: its values wrap
            last = names[-1]
            room = max(len(v) for v in [last, *cells[last]]) - over
            table = _table(names, {**cells, last: [break_lines(v, max(room, 10))
                                                   for v in cells[last]]})
        console.print(table)


def _table(names: list[str], cells: dict[str, list[str]]):
    """The rows' values of ``names``, each on as many lines as it holds."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in names:
        table.add_column(name, no_wrap=True)
    for i in range(len(next(iter(cells.values()), []))):
        table.add_row(*(cells[name][i] for name in names))
    return table
