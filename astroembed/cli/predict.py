"""``astroembed predict``: a saved probe's predictions as a new column."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag, split_levels
from astroembed.cli.progress import progress_bars
from astroembed.cli.render import show

AsJson = json_flag("Print the summary as JSON on stdout.")


@app.command()
def predict(
    catalog: Annotated[Path, typer.Option("--catalog", "-c", help="Catalog to add the prediction column to (in place).")],
    probe_path: Annotated[Path, typer.Option("--probe", help="A probe saved by `astroembed probe --save`.")],
    column: Annotated[Optional[str], typer.Option(help="Name of the new column (default pred_<target>).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing column of that name.")] = False,
    level: Annotated[Optional[list[str]], typer.Option("--level", help="Central interval levels written as <column>_lower_<L>/_upper_<L>, in (0, 1) (comma list or repeated; default 0.68,0.95).")] = None,
    as_json: AsJson = False,
) -> None:
    """Append a saved probe's predictions as a column to every tile of a catalog.

    Each tile is rewritten atomically; the catalog reads as incomplete until every tile is done.
    A calibrated probe also writes <column>_quantiles (its predictive distribution at fixed
    quantile levels) and the --level intervals; a probe saved without calibration writes the
    point column only and says so. Rows without the embeddings the probe needs get null. A k-NN probe predicts the rows it
    was trained on (same ID) leave-one-out, so its column is not the training targets copied.

    Example:  astroembed predict --catalog demo-output/matched --probe demo-output/z_probe
    """
    import astroembed

    with user_errors():
        with progress_bars(as_json) as progress:
            summary = astroembed.predict(catalog, probe_path, column=column, overwrite=overwrite,
                                         progress=progress, levels=split_levels(level))
        show(summary, as_json, render)


def render(summary: dict) -> None:
    """One line: the column added, from which probe, to how many rows."""
    typer.echo(f"added {summary['column']} ({summary['features']} {summary['method']} probe of "
               f"{summary['target']}) to {summary['rows']} rows in {summary['tiles']} tiles of "
               f"{summary['catalog']} ({summary['null']} null: no embedding)")
    if summary.get("calibrated"):
        typer.echo(f"with {', '.join(summary['columns'][1:])}")
    for note in summary.get("notes", []):
        typer.echo(f"note: {note}", err=True)
