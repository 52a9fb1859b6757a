"""``astroembed simulate``: a simulated mini-survey in the real file formats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag
from astroembed.cli.progress import progress_bars
from astroembed.cli.render import show

AsJson = json_flag("Print the summary as JSON on stdout.")


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="Directory to create (must be new or empty).")],
    n_galaxies: Annotated[int, typer.Option("--n-galaxies", "-n", help="Galaxies with r < 19.5 in the imaging.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives identical files.")] = 0,
    cutout_size: Annotated[int, typer.Option("--cutout-size", help="Cutout width and height in 0.262\" pixels.")] = 64,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it already holds data.")] = False,
    bricks: Annotated[int, typer.Option("--bricks", help="Also write this many brick coadds (legacysurvey/coadd/, 3600x3600 per band), the most populated bricks first.")] = 0,
    as_json: AsJson = False,
) -> None:
    """Write a simulated mini-survey in the real DESI and Legacy Survey file formats.

    Galaxies (BGS-like, r < 19.5, z ~ 0.01-0.6) with DESI coadds and redshift catalogs,
    Legacy Survey sweeps and g,r,z cutouts, and truth.parquet with every true property.

    Example:  astroembed simulate demo-output/survey-2k --n-galaxies 2000 --seed 1
    """
    import astroembed

    with user_errors():
        with progress_bars(as_json) as progress:
            summary = astroembed.simulate(out, n_galaxies=n_galaxies, seed=seed,
                                          cutout_size=cutout_size, overwrite=overwrite,
                                          progress=progress, bricks=bricks)
        show(summary, as_json, render, out)


def render(summary: dict, out: Path) -> None:
    """One line: what was simulated, where."""
    ra0, ra1 = summary["ra_range"]
    typer.echo(
        f"Simulated {summary['n_galaxies']} galaxies and {summary['n_stars']} stars over "
        f"{summary['area_deg2']} deg^2 (RA {ra0} -> {ra1}, Dec {summary['dec_range'][0]} -> "
        f"{summary['dec_range'][1]}), {summary['n_fibres']} DESI fibres, "
        f"{len(summary['files'])} files in {out}")
