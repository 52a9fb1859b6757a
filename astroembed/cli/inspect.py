"""``astroembed inspect``: what astroembed reads from input files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag
from astroembed.cli.render import show

AsJson = json_flag("Print the full report as JSON.")
LABELS = {"desi_spectra": "DESI spectra", "desi_redshifts": "DESI redshifts",
          "ls_catalog": "Legacy Survey catalogs", "ls_cutout_stack": "cutout stacks (HDF5)",
          "ls_cutout_fits": "cutouts (FITS)", "table": "tables with RA/Dec"}


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (searched recursively).")],
    files: Annotated[bool, typer.Option("--files", help="One line per file, not just totals.")] = False,
    as_json: AsJson = False,
) -> None:
    """Show what astroembed reads from input files: kind, rows, usable spectra, redshifts.

    Every file is read in full, so a file that would fail a cross-match fails here first,
    with its name and what to fix. Exits 1 if any file cannot be read.

    Example:  astroembed inspect demo-output/survey
    """
    import astroembed

    with user_errors():
        report = astroembed.inspect(paths)
    show(report, as_json, render, files)
    for err in report["errors"]:
        typer.echo(f"error: {err['error']}", err=True)
    if report["errors"]:
        raise typer.Exit(1)


def render(report: dict, per_file: bool) -> None:
    """A table of totals per kind of input, and with ``per_file`` one row per file."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    t = Table(title="inputs", title_justify="left")
    for col in ("kind", "files", "rows", "details"):
        t.add_column(col, justify="right" if col in ("files", "rows") else "left")
    for kind, tot in report["totals"].items():
        details = []
        if "usable" in tot:
            details.append(f"{tot['usable']} usable, {tot['sky']} sky, {tot['bad_status']} bad status")
        if "zwarn_ok" in tot:
            details.append(f"{tot['zwarn_ok']} with ZWARN = 0")
        t.add_row(LABELS.get(kind, kind), str(tot["files"]), str(tot["rows"]), "; ".join(details))
    console.print(t)
    if per_file:
        ft = Table(title="files", title_justify="left")
        for col in ("path", "kind", "rows"):
            ft.add_column(col)
        for f in report["files"]:
            ft.add_row(f["path"], f["kind"], str(f["rows"]))
        console.print(ft)
