"""The ``astroembed`` command line: parse, call one API function, print.

Nothing imports this module. Heavy libraries are imported inside commands so that
``astroembed --help`` is instant. Problems the user can fix arrive as ``AstroembedError`` and
leave as one line on stderr and a non-zero exit code (1, or 2 for usage errors).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import AstroembedError

app = typer.Typer(
    name="astroembed",
    help="Foundation-model embeddings for survey catalogs: cross-match Legacy Survey images "
    "with DESI spectra, embed them with ONNX encoders, probe and search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
log = logging.getLogger("astroembed")


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def _user_errors():
    """Turn AstroembedError into one line on stderr and its exit code."""
    try:
        yield
    except AstroembedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted; no partial output was kept.", err=True)
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"astroembed {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True,
                                         help="More detail on stderr (-vv for debug).")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet",
                                        help="Only errors on stderr; no progress.")] = False,
) -> None:
    """astroembed: survey catalogs in, catalogs with embeddings out."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.captureWarnings(True)
    log.setLevel(level)


def _quiet() -> bool:
    return log.getEffectiveLevel() >= logging.ERROR


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="Directory to create (must be new or empty).")],
    n_galaxies: Annotated[int, typer.Option("--n-galaxies", "-n", help="Galaxies with r < 19.5 in the imaging.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives identical files.")] = 0,
    cutout_size: Annotated[int, typer.Option("--cutout-size", help="Cutout width and height in 0.262\" pixels.")] = 64,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it already holds data.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Write a simulated mini-survey in the real DESI and Legacy Survey file formats.

    Galaxies (BGS-like, r < 19.5, z ~ 0.01-0.6) with DESI coadds and redshift catalogs,
    Legacy Survey sweeps and g,r,z cutouts, and truth.parquet with every true property.

    Example:  astroembed simulate demo/survey --n-galaxies 2000 --seed 0
    """
    from . import simulate_survey as run_simulation

    with _user_errors():
        if _quiet():
            summary = run_simulation(out, n_galaxies=n_galaxies, seed=seed,
                                     cutout_size=cutout_size, overwrite=overwrite)
        else:
            with _stderr().status("simulating...") as status:
                summary = run_simulation(
                    out, n_galaxies=n_galaxies, seed=seed, cutout_size=cutout_size,
                    overwrite=overwrite, progress=lambda m: status.update(f"simulating {m}..."))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    ra0, ra1 = summary["ra_range"]
    typer.echo(
        f"Simulated {summary['n_galaxies']} galaxies and {summary['n_stars']} stars over "
        f"{summary['area_deg2']} deg^2 (RA {ra0} -> {ra1}, Dec {summary['dec_range'][0]} -> "
        f"{summary['dec_range'][1]}), {summary['n_fibres']} DESI fibres, "
        f"{len(summary['files'])} files in {out}")


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (searched recursively).")],
    files: Annotated[bool, typer.Option("--files", help="One line per file, not just totals.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Show what astroembed reads from input files: kind, rows, usable spectra, redshifts.

    Every file is read in full, so a file that would fail a cross-match fails here first,
    with its name and what to fix. Exits 1 if any file cannot be read.

    Example:  astroembed inspect demo/survey
    """
    from .inventory import describe

    with _user_errors():
        report = describe(paths)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_inventory(report, files)
    for err in report["errors"]:
        typer.echo(f"error: {err['error']}", err=True)
    if report["errors"]:
        raise typer.Exit(1)


def _print_inventory(report: dict, per_file: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    labels = {"desi_spectra": "DESI spectra", "desi_redshifts": "DESI redshifts",
              "ls_catalog": "Legacy Survey catalogs", "ls_cutout_stack": "cutout stacks (HDF5)",
              "ls_cutout_fits": "cutouts (FITS)", "table": "tables with RA/Dec"}
    t = Table(title="inputs", title_justify="left")
    for col in ("kind", "files", "rows", "details"):
        t.add_column(col, justify="right" if col in ("files", "rows") else "left")
    for kind, tot in report["totals"].items():
        details = []
        if "usable" in tot:
            details.append(f"{tot['usable']} usable, {tot['sky']} sky, {tot['bad_status']} bad status")
        if "zwarn_ok" in tot:
            details.append(f"{tot['zwarn_ok']} with ZWARN = 0")
        t.add_row(labels.get(kind, kind), str(tot["files"]), str(tot["rows"]), "; ".join(details))
    console.print(t)
    if per_file:
        ft = Table(title="files", title_justify="left")
        for col in ("path", "kind", "rows"):
            ft.add_column(col)
        for f in report["files"]:
            ft.add_row(f["path"], f["kind"], str(f["rows"]))
        console.print(ft)


@app.command()
def crossmatch(
    images: Annotated[Path, typer.Argument(help="Legacy Survey side (left): catalogs + cutouts, or a table with RA/Dec; file or directory.")],
    spectra: Annotated[Path, typer.Argument(help="DESI side (right): coadds + redshift catalogs, or a table with RA/Dec; file or directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Catalog directory to write (HATS layout).")],
    radius: Annotated[float, typer.Option(help="Match radius, arcsec.")] = 1.0,
    mode: Annotated[str, typer.Option(help="best | best-symmetric | all.")] = "best",
    how: Annotated[str, typer.Option(help="inner | left (keep unmatched left rows).")] = "inner",
    margin: Annotated[Optional[float], typer.Option(help="Tile margin, arcsec (default: what the mode needs).")] = None,
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Cross-match Legacy Survey objects with DESI spectra by HEALPix tile into a HATS catalog.

    Spectra are kept when usable (TARGETID > 0, OBJTYPE TGT, fibre status 0, ZWARN 0,
    primary redshift); the summary counts what each cut removed. A killed run started again
    with the same arguments continues where it stopped.

    Example:  astroembed crossmatch demo/survey/legacysurvey demo/survey/desi --out demo/matched
    """
    from .config import CrossmatchConfig
    from .pipeline import crossmatch as run_crossmatch

    with _user_errors():
        parts = tuple(s.strip() for s in suffixes.split(","))
        cfg = CrossmatchConfig(
            images=[str(images)], spectra=[str(spectra)], out=str(out), radius=radius, mode=mode,
            how=how, margin=margin, match_on=match_on, compare_ids=compare_ids,
            keep_all_spectra=keep_all_spectra, suffixes=parts, id_column=id_column,
            max_bytes=max_bytes, max_rows=max_rows, scheduler=scheduler, workers=workers,
            processes=processes, overwrite=overwrite)
        summary = _with_progress(lambda p: run_crossmatch(cfg, progress=p))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped"].items() if v) or "none"
    typer.echo(f"{summary['left_rows']} left rows, {summary['right_rows']} right rows "
               f"({summary['right_usable']} usable; dropped: {dropped}); {summary['matched']} "
               f"matched; {summary['output_rows']} rows in {summary['tiles_written']} tiles of "
               f"{out} ({summary['seconds']} s)")
    if summary["id_comparison"]:
        c = summary["id_comparison"]
        typer.echo(f"positional vs ID match: {c.get('both', 0)} agree, {c.get('position_only', 0)} "
                   f"by position only, {c.get('ids_only', 0)} by IDs only")


def _with_progress(run):
    """Run ``run(progress)`` under a rich progress bar on stderr (none with -q)."""
    if _quiet():
        return run(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=_stderr(), transient=False) as progress:
        def update(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
            progress.update(bars[stage], completed=done)

        return run(update)


@app.command()
def info(
    catalog: Annotated[Path, typer.Argument(help="A catalog written by astroembed (HATS layout).")],
    tiles: Annotated[bool, typer.Option("--tiles", help="Print one ORDER/PIXEL per line (for job arrays).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """What a catalog holds: tiles, rows, columns, provenance, whether it is complete.

    Example:  astroembed info demo/matched --tiles
    """
    from .io.catalog import read_catalog_info

    with _user_errors():
        cat = read_catalog_info(catalog)
    if tiles:
        for order, pixel in cat.tiles:
            typer.echo(f"{order}/{pixel}")
        return
    if as_json:
        typer.echo(json.dumps({
            "path": str(cat.path), "complete": cat.complete, "total_rows": cat.total_rows,
            "tiles": [{"order": o, "pixel": p, "rows": cat.rows.get((o, p), 0)} for o, p in cat.tiles],
            "columns": [{"name": f.name, "type": str(f.type)} for f in cat.schema],
            "properties": cat.properties, "provenance": cat.provenance}, indent=2, default=str))
        return
    state = "complete" if cat.complete else "INCOMPLETE (a run is under way or was interrupted)"
    typer.echo(f"{cat.path}: {cat.total_rows} rows in {len(cat.tiles)} tiles, {state}")
    orders = Counter(o for o, _ in cat.tiles)
    typer.echo("tiles per order: " + ", ".join(f"{o}: {n}" for o, n in sorted(orders.items())))
    typer.echo(f"columns ({len(cat.schema)}): " + ", ".join(f.name for f in cat.schema))
    prov = cat.provenance or {}
    if prov.get("config"):
        c = prov["config"]
        typer.echo(f"made by: astroembed {prov.get('command', '?')} radius {c.get('radius')}\" "
                   f"mode {c.get('mode')} how {c.get('how')} from {len(prov.get('inputs', []))} input files")


# ---- embed (issue 5): owned by the embed work; edit only between these markers ----
# ---- end embed ----

# ---- probe, predict, search (issue 6): edit only between these markers ----
# ---- end probe ----

# ---- train, export (issue 4): edit only between these markers ----
# ---- end train ----


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
