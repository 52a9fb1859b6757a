"""``astroembed info``: what a catalog holds and its state."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import CATALOG_ARGUMENT, json_flag, one_catalog, optional_catalog_option
from astroembed.cli.render import print_json

AsJson = json_flag("Print everything as JSON.")

Catalog = optional_catalog_option("A catalog written by astroembed (HATS layout).")


@app.command(context_settings=CATALOG_ARGUMENT)
def info(
    ctx: typer.Context,
    catalog_opt: Catalog = None,
    tiles: Annotated[bool, typer.Option("--tiles", help="Print one ORDER/PIXEL per line (for job arrays).")] = False,
    schema: Annotated[bool, typer.Option("--schema", help="Print every column with its type, unit and meaning (pixel-extension columns marked).")] = False,
    as_json: AsJson = False,
) -> None:
    """What a catalog holds: tiles, rows, columns, embeddings, provenance, and its state:
    complete, partly embedded (after `embed --tile`) or incomplete (a run under way or
    interrupted); work files left beside it, with their sizes.

    Example:  astroembed info --catalog demo-output/matched --schema
    """
    import astroembed

    with user_errors():
        catalog = one_catalog(catalog_opt, ctx.args)
        facts = astroembed.info(catalog, tiles=tiles)
        if as_json:
            print_json(facts)
        elif tiles:
            for order, pixel in facts["tiles"]:
                typer.echo(f"{order}/{pixel}")
        elif schema:
            render_schema(facts)
        else:
            render(facts)


def render_schema(facts: dict) -> None:
    """Every column as a table row: name, type, unit, meaning; pixel columns marked. At a
    terminal too narrow for the whole table, type, unit and meaning wrap, the meaning given
    twice the room of each of the others; a name wraps only when very long."""
    from rich.console import Console

    from astroembed.cli.render import break_lines, share_widths

    headers = ("column", "type", "unit", "meaning", "part")
    rows = [(c["name"], c["type"], c.get("unit") or "", c.get("description") or "",
             c.get("part", "main")) for c in facts["columns"]]
    title = (f"{facts['path']}: {len(facts['columns'])} columns (pixels: in the extension "
             "`pixels`, joined on ROW_ID)")
    console = Console(highlight=False, markup=False)
    natural = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    whole = _schema_table(title, headers, rows, natural)
    over = console.measure(whole, options=console.options.update_width(10**6)).maximum \
        - console.width
    if over <= 0:
        console.print(whole)
        return
    wrapping = [0, 1, 2, 3]
    room = sum(natural[i] for i in wrapping) - over
    shared = share_widths([natural[i] for i in wrapping], [3, 1, 1, 2],
                          [len(headers[i]) for i in wrapping], room)
    widths = list(natural)
    for i, width in zip(wrapping, shared):
        widths[i] = width
    rows = [tuple(break_lines(v, widths[i]) if i in wrapping else v for i, v in enumerate(r))
            for r in rows]
    console.print(_schema_table(title, headers, rows, widths))


def _schema_table(title: str, headers: tuple[str, ...], rows: list[tuple[str, ...]],
                  widths: list[int]):
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name, width in zip(headers, widths):
        table.add_column(name, width=width, no_wrap=True, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def render(facts: dict) -> None:
    """What :func:`astroembed.info` returned, as lines of text."""
    from astroembed.catalog.outputs import human_bytes

    state = facts["state"] + (f": {facts['state_detail']}" if facts["state_detail"] else "")
    tiles = [(t["order"], t["pixel"]) for t in facts["tiles"]]
    typer.echo(f"{facts['path']}: {facts['total_rows']} rows in {len(tiles)} tiles, {state}")
    orders = Counter(o for o, _ in tiles)
    typer.echo("tiles per order: " + ", ".join(f"{o}: {n}" for o, n in sorted(orders.items())))
    columns = facts["columns"]
    main = [c["name"] for c in columns if c.get("part", "main") == "main"]
    pixels = [c["name"] for c in columns if c.get("part") == "pixels"]
    typer.echo(f"columns ({len(main)}): " + ", ".join(main))
    if pixels:
        typer.echo("pixel columns (the extension `pixels`, joined on ROW_ID): "
                   + ", ".join(pixels))
    parts = facts.get("parts") or {}
    if parts:
        typer.echo("on disk: " + ", ".join(
            f"{name} {human_bytes(part['bytes'])}"
            + (f" ({human_bytes(part['bytes_per_row'])} a row)" if part["bytes_per_row"] else "")
            for name, part in parts.items()))
    prov = facts["provenance"] or {}
    if prov.get("config"):
        c = prov["config"]
        typer.echo(f"made by: astroembed {prov.get('command', '?')} radius {c.get('radius')}\" "
                   f"mode {c.get('mode')} how {c.get('how')} from {len(prov.get('inputs', []))} input files")
    for column, e in facts["embeddings"].items():
        models = "; also " + ", ".join(f"{m['model_name']} {m['model_version']} (hash "
                                       f"{m['model_hash'][:12]}) in {m['tiles']} tiles"
                                       for m in e["models"][1:]) if len(e["models"]) > 1 else ""
        typer.echo(f"{column}: {e['model_name']} {e['model_version']} (hash "
                   f"{str(e['model_hash'])[:12]}, d = {e['embedding_dim']}), in "
                   f"{e['tiles']} of {e['tiles_total']} tiles, {e['rows_embedded']} rows "
                   f"embedded, {e['rows_null']} null{models}")
    last_run = facts["last_run"]
    if last_run:
        skipped = len(last_run.get("skipped_inputs") or {})
        typer.echo(f"last run: {last_run.get('outcome')} at {last_run.get('finished')} "
                   f"({last_run.get('seconds')} s" + (f", {skipped} inputs skipped" if skipped else "")
                   + ")" + (f": {last_run['error']}" if last_run.get("error") else ""))
    leftovers = facts["leftover_work_files"]
    if leftovers:
        total = sum(w["bytes"] for w in leftovers)
        typer.echo(f"leftover work files beside the catalog ({human_bytes(total)}; in use while a run "
                   "is under way, else left by an interrupted one: `rm -rf` them to free the "
                   "space):")
        for w in leftovers:
            typer.echo(f"  {w['path']}  {human_bytes(w['bytes'])}  {w['what']}")
