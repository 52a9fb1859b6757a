"""``astroembed crossmatch``: Legacy Survey objects with DESI spectra, into a HATS catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag
from astroembed.cli.progress import progress_bars
from astroembed.cli.render import show

AsJson = json_flag("Print the summary as JSON on stdout.")


@app.command()
def crossmatch(
    images: Annotated[Path, typer.Argument(help="Legacy Survey side (left): catalogs + cutouts or brick coadds, or a table with RA/Dec; file or directory.")],
    spectra: Annotated[Path, typer.Argument(help="DESI side (right): coadds + redshift catalogs, or a table with RA/Dec; file or directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Catalog directory to write (HATS layout).")],
    radius: Annotated[float, typer.Option(help="Match radius, arcsec.")] = 1.0,
    mode: Annotated[str, typer.Option(help="best | best-symmetric | all.")] = "best",
    how: Annotated[str, typer.Option(help="inner | left (keep unmatched left rows).")] = "inner",
    margin: Annotated[Optional[float], typer.Option(help="Tile margin, arcsec (default: what the mode needs).")] = None,
    margin_catalog: Annotated[float, typer.Option("--margin-catalog", help="Width of the margin catalog written for LSDB crossmatches, arcsec (0: none).")] = 5.0,
    match_on: Annotated[str, typer.Option("--match-on", help="position | ids (RELEASE, BRICKID, OBJID).")] = "position",
    compare_ids: Annotated[bool, typer.Option("--compare-ids", help="Report how positional and ID matches agree.")] = False,
    keep_all_spectra: Annotated[bool, typer.Option("--keep-all-spectra", help="Turn the spectrum quality cuts off.")] = False,
    suffixes: Annotated[str, typer.Option(help="Suffixes for column names on both sides.")] = "_left,_right",
    id_column: Annotated[str, typer.Option("--id-column", help="Object key of the catalog.")] = "TARGETID",
    max_bytes: Annotated[float, typer.Option("--max-bytes", help="Split a tile above this many bytes.")] = 512e6,
    max_rows: Annotated[int, typer.Option("--max-rows", help="Split a tile above this many rows.")] = 1_000_000,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address, e.g. tcp://host:8786.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Local Dask workers (default 2; inputs under 64 MB run in-process unless given).")] = None,
    processes: Annotated[bool, typer.Option("--processes/--threads", help="Local workers as processes or threads.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing catalog.")] = False,
    cutout_size: Annotated[int, typer.Option("--cutout-size", help="Width and height, in pixels, of the stamps cut from brick coadds (coadd/<ddd>/<brick>/) among IMAGES.")] = 64,
    as_json: AsJson = False,
) -> None:
    """Cross-match Legacy Survey objects with DESI spectra by HEALPix tile into a HATS catalog.

    Spectra are kept when usable (TARGETID > 0, OBJTYPE TGT, fibre status 0, ZWARN 0,
    primary redshift); the summary counts what each cut removed. A killed run started again
    with the same arguments continues where it stopped.

    Example:  astroembed crossmatch demo-output/survey/legacysurvey demo-output/survey/desi --out demo-output/matched-1arcsec --radius 1.0
    """
    import astroembed

    with user_errors():
        with progress_bars(as_json) as progress:
            summary = astroembed.crossmatch(
                images, spectra, out, progress=progress, radius=radius, mode=mode, how=how,
                margin=margin, margin_catalog=margin_catalog, match_on=match_on,
                compare_ids=compare_ids,
                keep_all_spectra=keep_all_spectra,
                suffixes=tuple(s.strip() for s in suffixes.split(",")), id_column=id_column,
                max_bytes=max_bytes, max_rows=max_rows, scheduler=scheduler, workers=workers,
                processes=processes, overwrite=overwrite, cutout_size=cutout_size)
        show(summary, as_json, render, out)


def render(summary: dict, out: Path) -> None:
    """Rows in, cuts, matches, rows out; how positional and ID matches agree if compared."""
    dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped"].items() if v) or "none"
    typer.echo(f"{summary['left_rows']} left rows, {summary['right_rows']} right rows "
               f"({summary['right_usable']} usable; dropped: {dropped}); {summary['matched']} "
               f"matched; {summary['output_rows']} rows in {summary['tiles_written']} tiles of "
               f"{out} ({summary['seconds']} s)")
    if summary["id_comparison"]:
        c = summary["id_comparison"]
        typer.echo(f"positional vs ID match: {c.get('both', 0)} agree, {c.get('position_only', 0)} "
                   f"by position only, {c.get('ids_only', 0)} by IDs only")
