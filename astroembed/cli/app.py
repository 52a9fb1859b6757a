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

from astroembed import __version__
from astroembed.errors import AstroembedError, ConfigError, InterruptedRun

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
    """Turn every failure into one line on stderr (at most one hint line) and an exit code:
    AstroembedError its own, an interruption 130, anything unforeseen 1."""
    import click

    try:
        yield
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise  # typer.Exit and usage errors: Click already prints and exits as they say
    except InterruptedRun as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except AstroembedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        # Commands whose outputs are written atomically keep nothing of an interrupted run.
        name = getattr(exc, "signal_name", "SIGINT")
        typer.echo(f"interrupted ({name}) before any output was complete; nothing was kept.",
                   err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug, or a system failure no check foresaw
        log.debug("unexpected error", exc_info=True)
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        typer.echo("hint: run again with -vv for the traceback; if it looks like a bug in "
                   "astroembed, please report it with that output.", err=True)
        raise typer.Exit(1) from None


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
    with _user_errors():
        from astroembed import simulate_survey as run_simulation
        from astroembed.config import SimulationConfig
        from astroembed.catalog.paths import check_output_dir

        SimulationConfig(n_galaxies=n_galaxies, seed=seed, cutout_size=cutout_size).validate()
        check_output_dir(out, "OUT")
        if _quiet():
            summary = run_simulation(out, n_galaxies=n_galaxies, seed=seed,
                                     cutout_size=cutout_size, overwrite=overwrite)
        else:
            with _stderr().status("simulating...") as status:
                summary = run_simulation(
                    out, n_galaxies=n_galaxies, seed=seed, cutout_size=cutout_size,
                    overwrite=overwrite, progress=lambda m: status.update(f"simulating {m}..."))
        _print_simulation(summary, out, as_json)


def _print_simulation(summary: dict, out: Path, as_json: bool) -> None:
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
    with _user_errors():
        from astroembed.readers.inventory import describe

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
    with _user_errors():
        from astroembed.config import CrossmatchConfig
        from astroembed.catalog.paths import check_output_dir
        from astroembed.matching.orchestrate import crossmatch as run_crossmatch

        parts = tuple(s.strip() for s in suffixes.split(","))
        cfg = CrossmatchConfig(
            images=[str(images)], spectra=[str(spectra)], out=str(out), radius=radius, mode=mode,
            how=how, margin=margin, match_on=match_on, compare_ids=compare_ids,
            keep_all_spectra=keep_all_spectra, suffixes=parts, id_column=id_column,
            max_bytes=max_bytes, max_rows=max_rows, scheduler=scheduler, workers=workers,
            processes=processes, overwrite=overwrite)
        cfg.validate()
        check_output_dir(out, "--out")
        summary = _with_progress(lambda p: run_crossmatch(cfg, progress=p))
        _print_crossmatch(summary, out, as_json)


def _print_crossmatch(summary: dict, out: Path, as_json: bool) -> None:
    for internal in ("input_tiles", "layout"):  # for `astroembed run`'s state, not people
        summary.pop(internal, None)
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
    """Run ``run(progress)`` under rich progress bars on stderr (none with -q). The bars appear
    at the first update, so an error raised before any work (a bad argument) stays one line."""
    if _quiet():
        return run(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        holder: list = []

        def update(stage: str, done: int, total: int) -> None:
            if not holder:
                holder.append(stack.enter_context(Progress(
                    TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=_stderr(), transient=False)))
            if stage not in bars:
                bars[stage] = holder[0].add_task(stage, total=total)
            holder[0].update(bars[stage], completed=done)

        return run(update)


@app.command()
def info(
    catalog: Annotated[Path, typer.Argument(help="A catalog written by astroembed (HATS layout).")],
    tiles: Annotated[bool, typer.Option("--tiles", help="Print one ORDER/PIXEL per line (for job arrays).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """What a catalog holds: tiles, rows, columns, embeddings, provenance, and its state:
    complete, partly embedded (after `embed --tile`) or incomplete (a run under way or
    interrupted); work files left beside it, with their sizes.

    Example:  astroembed info demo/matched --tiles
    """
    with _user_errors():
        from astroembed.catalog.hats import describe_catalog, read_catalog_info

        if tiles:
            for order, pixel in read_catalog_info(catalog).tiles:
                typer.echo(f"{order}/{pixel}")
            return
        facts = describe_catalog(catalog)
        if as_json:
            typer.echo(json.dumps(facts, indent=2, default=str))
            return
        _print_info(facts)


def _print_info(facts: dict) -> None:
    """``astroembed info`` as text, from :func:`astroembed.catalog.hats.describe_catalog`."""
    from astroembed.catalog.outputs import human_bytes

    state = facts["state"] + (f": {facts['state_detail']}" if facts["state_detail"] else "")
    tiles = [(t["order"], t["pixel"]) for t in facts["tiles"]]
    typer.echo(f"{facts['path']}: {facts['total_rows']} rows in {len(tiles)} tiles, {state}")
    orders = Counter(o for o, _ in tiles)
    typer.echo("tiles per order: " + ", ".join(f"{o}: {n}" for o, n in sorted(orders.items())))
    columns = facts["columns"]
    typer.echo(f"columns ({len(columns)}): " + ", ".join(c["name"] for c in columns))
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


# ---- embed (issue 5): owned by the embed work; edit only between these markers ----
def _embed_progress(run):
    """Run ``run(progress)`` under rich bars for tiles and rows (with rows/s); none with -q."""
    if _quiet():
        return run(None)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                               TextColumn, TimeElapsedColumn)
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rows/s" if task.fields.get("rate") and speed else "")

    bars: dict[str, int] = {}
    progress = Progress(TextColumn("{task.description:>6}"), BarColumn(), MofNCompleteColumn(),
                        RowsPerSecond(), TimeElapsedColumn(), console=_stderr())

    def update(stage: str, done: int, total: int) -> None:
        if not bars:
            progress.start()  # only once the checks passed: an early error stays one line
        if stage not in bars:
            bars[stage] = progress.add_task(stage, total=total, rate=stage == "rows")
        progress.update(bars[stage], completed=done)

    try:
        return run(update)
    finally:
        if bars:
            progress.stop()


def _print_embed_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    s = summary
    cols = "; ".join(f"{name}: {c['embedded']} embedded, {c['null_missing_input']} null (no "
                     f"input), {c['null_unusable_input']} null (unusable input)"
                     for name, c in s["columns"].items())
    devices = ", ".join(sorted({p[0] for p in s["providers"].values()})) or "-"
    rate = f", {s['rows_per_second']:,.0f} rows/s" if s["rows_embedded"] else ""
    typer.echo(f"{s['rows_embedded']} rows embedded in {s['tiles_embedded']} tiles, "
               f"{s['rows_skipped']} rows skipped ({s['tiles_skipped']} tiles already done), "
               f"{s['rows_failed']} rows failed ({s['tiles_failed']} tiles) in {s['seconds']} s"
               f"{rate} on {devices}")
    if cols:
        typer.echo(cols)
    if not s["complete"]:
        typer.echo(f"{s['catalog']} is {s.get('state', 'incomplete')}: {s['incomplete_reason']}",
                   err=True)


@app.command()
def embed(
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog to add embedding columns to (HATS, e.g. from crossmatch).")],
    tile: Annotated[Optional[list[str]], typer.Option("--tile", help="Only this tile, ORDER/PIXEL; repeat for more (`astroembed info CAT --tiles` lists them). Default: every tile.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="ONNX model directory (image.onnx, spectrum.onnx) or one .onnx file. Default: the model shipped with astroembed.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Column suffix: embedding_<modality>_NAME, so several models can coexist.")] = None,
    modality: Annotated[str, typer.Option(help="image | spectrum | both.")] = "both",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per model call.")] = 256,
    device: Annotated[str, typer.Option(help="auto (GPU when usable, else CPU) | cpu | cuda (an error without a usable GPU).")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="onnxruntime threads per task (default: the cores shared among local workers; 1 with --scheduler).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address, e.g. tcp://host:8786 (one task per tile).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Local Dask workers (default: run in this process).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-embed tiles already embedded with the same model.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Add embedding columns to a catalog, tile by tile, with ONNX encoders.

    Writes embedding_image / embedding_spectrum (d float32 values a row; null where the
    input is missing or unusable), the model's name, version, hash and dimension in each
    column's metadata. Each tile is rewritten atomically; tiles already embedded with the
    same model are skipped (--force redoes them), so a killed run just runs again.

    Example:  astroembed embed --catalog demo/matched --model models/mine-onnx
    """
    with _user_errors():
        from astroembed.config import EmbedConfig
        from astroembed.runtime.orchestrate import embed as run_embed

        cfg = EmbedConfig(catalog=str(catalog), tiles=tuple(tile or ()),
                          model=str(model) if model is not None else None, name=name,
                          modality=modality, batch_size=batch_size, device=device,
                          threads=threads, scheduler=scheduler, workers=workers, force=force)
        try:
            summary = _embed_progress(lambda p: run_embed(cfg, progress=p))
        except AstroembedError as err:
            if getattr(err, "summary", None):
                _print_embed_summary(err.summary, as_json)
            raise
        _print_embed_summary(summary, as_json)
# ---- end embed ----

# ---- probe, predict, search (issue 6): edit only between these markers ----
def _probe_choices(values: Optional[list[str]], everything: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``--x a,b --x c`` -> ("a", "b", "c"); "all" -> ``everything``."""
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            part = part.strip()
            if part == "all" and everything:
                out.extend(everything)
            elif part:
                out.append(part)
    return tuple(dict.fromkeys(out))


def _probe_json(doc) -> str:
    """Strict JSON (non-finite floats become null, so every parser accepts it)."""
    import math

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            return clean(value.item())
        return value

    return json.dumps(clean(doc), indent=2, allow_nan=False, default=str)


def _probe_fmt(value, spec: str = ".4f", std=None) -> str:
    if value is None:
        return "-"
    text = format(value, spec)
    return f"{text}±{format(std, spec)}" if std is not None else text


@app.command()
def probe(
    catalog: Annotated[Path, typer.Option("--catalog", "-c", help="Catalog with embedding columns.")],
    target: Annotated[str, typer.Option(help="Numeric column to predict; 'redshift' means DESI's Z.")] = "redshift",
    embedding: Annotated[Optional[list[str]], typer.Option("--embedding", "-e", help="image | spectrum | both (comma list or repeated; default: every one present, and both).")] = None,
    method: Annotated[list[str], typer.Option("--method", "-m", help="knn | linear | mlp | all (comma list or repeated).")] = ["knn"],  # noqa: B006
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    k: Annotated[int, typer.Option("--k", help="Neighbours of the k-NN probe (AstroCLIP: 64).")] = 64,
    metric: Annotated[str, typer.Option(help="k-NN distance on standardised embeddings: cosine | euclidean (the baselines always use euclidean).")] = "cosine",
    seed: Annotated[int, typer.Option(help="Seed of the folds and the MLP.")] = 0,
    index: Annotated[str, typer.Option(help="k-NN neighbours: exact | faiss | auto (faiss above 2e5 rows).")] = "auto",
    name: Annotated[Optional[str], typer.Option(help="Model name: use embedding_<modality>_NAME columns.")] = None,
    id_column: Annotated[Optional[str], typer.Option("--id-column", help="Object key (default: the catalog's, TARGETID).")] = None,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Also probe photometry and a PCA of the raw spectra.")] = True,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory for predictions.parquet, PNG plots and probe.json.")] = None,
    save: Annotated[Optional[Path], typer.Option("--save", help="Save the best embedding probe (refitted on all rows) to this directory.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --save directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON document on stdout.")] = False,
) -> None:
    """Cross-validated probes: how well the embeddings predict a catalog quantity.

    Distance-weighted k-NN (zero-shot), ridge (penalty by inner CV) and a small early-stopped
    MLP on standardised embeddings (fitted on the training folds only), against baselines run
    through the same k-NN: g, r, z magnitudes and colours, and a PCA of the raw spectra. Rows
    with ZWARN != 0 (redshift), a NaN target or a null embedding are left out and counted.
    Metrics per fold (mean ± fold-to-fold std): R^2, and for redshift sigma_NMAD, outlier
    fraction (|dz|/(1+z) > 0.15) and bias.

    Example:  astroembed probe --catalog demo/matched --target redshift --method all --out demo/probe
    """
    with _user_errors():
        from astroembed.config import PROBE_METHODS, ProbeConfig
        from astroembed.probes.probe import prepare_probe, run_probe

        cfg = ProbeConfig(
            catalog=str(catalog), target=target, embedding=_probe_choices(embedding),
            method=_probe_choices(method, PROBE_METHODS), folds=folds, k=k, metric=metric,
            seed=seed, index=index, name=name, id_column=id_column, baselines=baselines,
            out=str(out) if out else None, save=str(save) if save else None, overwrite=overwrite)
        plan = prepare_probe(cfg)
        doc = _with_progress(lambda p: run_probe(cfg, progress=p, prepared=plan))
        if as_json:
            for r in doc["results"]:
                r.pop("folds", None)
            typer.echo(_probe_json(doc))
        else:
            _print_probe(doc)


def _print_probe(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from rich import box

    console = Console(highlight=False)
    table = Table(title=f"probe of {doc['target']}: {doc['n_rows']} rows, {doc['folds']}-fold CV, "
                        f"mean±std over folds; k-NN k={doc['k']}, {doc['metric']} (baselines "
                        f"euclidean), {doc['index']}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    cols = ["features", "method", "R²"]
    cols += ["σ_NMAD", "outliers", "bias"] if doc["redshift"] else ["RMSE"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("features", "method") else "right", no_wrap=True)
    for r in doc["results"]:
        row = [r["features"], r["method"], _probe_fmt(r["r2"], std=r["r2_std"])]
        if doc["redshift"]:
            row += [_probe_fmt(r["sigma_nmad"], std=r["sigma_nmad_std"]),
                    _probe_fmt(r["outlier_fraction"], ".3f"), _probe_fmt(r["bias"], "+.4f")]
        else:
            row.append(_probe_fmt(r["rmse"], ".4g", std=r["rmse_std"]))
        table.add_row(*row)
    console.print(table)
    sys.stdout.flush()  # the table before the notes below on a shared terminal
    if _quiet():
        return
    ex = ", ".join(f"{k} {v}" for k, v in doc["excluded"].items() if v) or "none"
    err = _stderr()
    err.print(f"excluded rows: {ex}; columns: "
              + ", ".join(f"{m}={c}" for m, c in doc["columns"].items()), highlight=False)
    for note in doc["notes"]:
        err.print(f"note: {note}", highlight=False)
    if doc["outputs"]:
        err.print(f"wrote {doc['outputs']['predictions']} and {len(doc['outputs']['plots'])} plots",
                  highlight=False)
    if doc["saved"]:
        s = doc["saved"]
        err.print(f"saved the {s['features']} {s['method']} probe (R^2 {s['r2']:.4f}) to {s['path']}",
                  highlight=False)


@app.command()
def predict(
    catalog: Annotated[Path, typer.Option("--catalog", "-c", help="Catalog to add the prediction column to (in place).")],
    probe_path: Annotated[Path, typer.Option("--probe", help="A probe saved by `astroembed probe --save`.")],
    column: Annotated[Optional[str], typer.Option(help="Name of the new column (default pred_<target>).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing column of that name.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Append a saved probe's predictions as a column to every tile of a catalog.

    Each tile is rewritten atomically; the catalog reads as incomplete until every tile is done.
    Rows without the embeddings the probe needs get null. A k-NN probe predicts the rows it
    was trained on (same ID) leave-one-out, so its column is not the training targets copied.

    Example:  astroembed predict --catalog demo/matched --probe demo/z_probe
    """
    with _user_errors():
        from astroembed.probes.probe import predict_catalog

        summary = _with_progress(lambda p: predict_catalog(catalog, probe_path, column=column,
                                                           overwrite=overwrite, progress=p))
        _print_prediction(summary, as_json)


def _print_prediction(summary: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(_probe_json(summary))
        return
    typer.echo(f"added {summary['column']} ({summary['features']} {summary['method']} probe of "
               f"{summary['target']}) to {summary['rows']} rows in {summary['tiles']} tiles of "
               f"{summary['catalog']} ({summary['null']} null: no embedding)")


@app.command()
def search(
    catalog: Annotated[Path, typer.Option("--catalog", "-c", help="Catalog with embedding columns.")],
    like: Annotated[Optional[str], typer.Option("--like", help="ID of the query object (the catalog's ID column).")] = None,
    from_modality: Annotated[str, typer.Option("--from", help="Query embedding: image | spectrum.")] = "image",
    to_modality: Annotated[Optional[str], typer.Option("--to", help="Searched embedding: image | spectrum (default: as --from).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbours to show.")] = 10,
    index: Annotated[str, typer.Option(help="exact | faiss | auto (faiss above 1e6 rows; the index is stored in CAT/astroembed_index/).")] = "auto",
    name: Annotated[Optional[str], typer.Option(help="Model name: use embedding_<modality>_NAME columns.")] = None,
    id_column: Annotated[Optional[str], typer.Option("--id-column", help="Object key (default: the catalog's, TARGETID).")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG of the query and its neighbours (cutouts, spectra).")] = None,
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Retrieval report instead: top-1/10/1% accuracy of finding each object's partner across modalities.")] = False,
    queries: Annotated[int, typer.Option(help="--evaluate: objects queried per direction (a seeded sample; all are searched).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the --evaluate sample and the faiss index.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Nearest neighbours by cosine similarity of embeddings, in or across modalities.

    --from image --to spectrum finds the spectra most like an object's image (its own
    spectrum is flagged as the partner). --evaluate reports how often each object's own
    partner is found across modalities (top-1, top-10, top-1%): a model-quality metric.

    Example:  astroembed search --catalog demo/matched --like 39627652591521042 --from image --to spectrum
    """
    with _user_errors():
        from astroembed.config import SearchConfig
        from astroembed.catalog.paths import check_output_file
        from astroembed.similarity import (SearchCatalog, evaluate_catalog, neighbours, plot_neighbours,
                             search_modalities)

        cfg = SearchConfig(catalog=str(catalog), like=like, from_modality=from_modality,
                           to_modality=to_modality, k=k, index=index, name=name,
                           id_column=id_column, plot=str(plot) if plot else None,
                           evaluate=evaluate, queries=queries, seed=seed)
        cfg.validate()
        if plot:
            check_output_file(plot, "--plot", example="neighbours.png")
        cat = SearchCatalog.open(catalog, search_modalities(from_modality, to_modality, evaluate),
                                 name=name, id_column=id_column)
        if evaluate:
            report = evaluate_catalog(cat, queries=queries, seed=seed)
        else:
            report = neighbours(cat, like, from_modality, to_modality, k=k, index=index, seed=seed)
            if plot:
                report["plot"] = str(plot_neighbours(cat, report, plot))
        if as_json:
            typer.echo(_probe_json(report))
        elif evaluate:
            _print_retrieval(report)
        else:
            _print_neighbours(report)


def _print_neighbours(report: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    q = report["query"]
    table = Table(title=f"{report['columns']['from']} of {report['id_column']} {q['id']}"
                        + (f" (z {q['Z']:.4f})" if q.get("Z") is not None else "")
                        + f" -> {report['columns']['to']}: {report['index']} cosine search "
                        f"over {report['n_searched']} rows", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for c in ("rank", report["id_column"], "similarity", "Z", "partner"):
        table.add_column(c, justify="right" if c != "partner" else "center")
    for n in report["neighbours"]:
        table.add_row(str(n["rank"]), str(n["id"]), f"{n['similarity']:.4f}",
                      _probe_fmt(n.get("Z")), "*" if n["partner"] else "")
    Console(highlight=False).print(table)
    if report.get("plot") and not _quiet():
        _stderr().print(f"wrote {report['plot']}", highlight=False)


def _print_retrieval(report: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"retrieval of each object's partner: {report['n_objects']} objects "
                        f"with both embeddings", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for c in ("from", "to", "queries", "top-1", "top-10", f"top-1% (k={report['top1pct_k']})",
              "median rank"):
        table.add_column(c, justify="right" if c not in ("from", "to") else "left")
    for d in report["directions"]:
        table.add_row(d["from"], d["to"], str(d["n_queries"]), f"{d['top1']:.3f}",
                      f"{d['top10']:.3f}", f"{d['top1pct']:.3f}", f"{d['median_rank']:.0f}")
    ch = report["chance"]
    table.add_row("chance", "", "", f"{ch['top1']:.3g}", f"{ch['top10']:.3g}",
                  f"{ch['top1pct']:.3g}", "")
    Console(highlight=False).print(table)


# ---- end probe ----

# ---- train, export (issue 4): edit only between these markers ----
def _training_progress():
    """A rich bar per training stage with the running loss (None with -q). The bars appear at
    the first step, so an error found while loading the catalog stays one line."""
    if _quiet():
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def bars():
        tasks: dict[str, int] = {}
        with contextlib.ExitStack() as stack:
            holder: list = []

            def update(stage: str, step: int, total: int, metrics: dict) -> None:
                if not holder:
                    holder.append(stack.enter_context(Progress(
                        TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                        console=_stderr())))
                progress = holder[0]
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total, loss=float("nan"))
                progress.update(tasks[stage], completed=step, loss=metrics.get("loss", float("nan")))

            yield update

    return bars()


@app.command()
def train(
    catalog: Annotated[Path, typer.Option("--catalog", help="Cross-matched catalog with images and spectra.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory (checkpoints, model.pt, training.json).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with training settings (keys of TrainConfig).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")] = False,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed, same model).")] = None,
    pretrain_epochs: Annotated[Optional[int], typer.Option("--pretrain-epochs", help="Spectrum masked-reconstruction epochs.")] = None,
    align_epochs: Annotated[Optional[int], typer.Option("--align-epochs", help="Contrastive alignment epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Rows per step.")] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", help="Use at most this many rows (0 = all).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch threads (0 = all cores).")] = None,
) -> None:
    """Train an AstroCLIP-style image + spectrum encoder pair on a cross-matched catalog.

    Stage 1 pretrains the spectrum encoder by masked reconstruction; stage 2 aligns images
    and spectra with a symmetric InfoNCE loss. Checkpoints every epoch; --resume continues.

    Example:  astroembed train --catalog demo/matched --out models/mine
    """
    with _user_errors():
        from astroembed.config import from_mapping, load_toml
        from astroembed.catalog.paths import check_output_dir
        from astroembed.training.trainer import TrainConfig, train as run_train

        values = load_toml(config) if config else {}
        file_keys = set(values)
        flags = {"seed": seed, "pretrain_epochs": pretrain_epochs, "align_epochs": align_epochs,
                 "batch_size": batch_size, "max_rows": max_rows, "threads": threads}
        flags = {k: v for k, v in flags.items() if v is not None}
        values.update(flags)
        values.update(catalog=str(catalog), out=str(out))
        cfg = from_mapping(TrainConfig, values, source=str(config or "train"),
                           file_keys=file_keys - set(flags))
        check_output_dir(out, "--out")
        with _training_progress() as progress:
            summary = run_train(cfg, resume=resume, progress=progress)
        last = summary["history"][-1]
        typer.echo(f"trained on {summary['train_rows']} rows ({summary['val_rows']} validation) "
                   f"in {summary['seconds']} s; validation image->spectrum top-1%: "
                   f"{last.get('val_top1pct_image_to_spectrum', float('nan')):.3f}; model in {out}")


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="Directory written by `astroembed train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for image.onnx, spectrum.onnx, model.json.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    """Export a trained pair to ONNX (one file per encoder, contract in the metadata).

    Checks torch-vs-ONNX parity on a real batch (max abs difference <= 1e-4) and writes
    nothing if it fails. `astroembed embed --model OUT` uses the result.

    Example:  astroembed export models/mine --out models/mine-onnx
    """
    with _user_errors():
        from astroembed.training.export import export_model
        from astroembed.catalog.paths import check_output_dir

        check_output_dir(out, "--out")
        result = export_model(model_dir, out, overwrite=overwrite)
        for modality, e in result["encoders"].items():
            typer.echo(f"{out}/{e['file']}: {modality} encoder, {e['bytes'] / 1e6:.1f} MB, parity "
                       f"max |onnx - torch| = {e['parity_max_abs_diff']:.1e}, hash "
                       f"{e['model_hash'][:12]}")
# ---- end train ----


class _JsonLines(logging.Formatter):
    """One JSON object per record: time, level, event, message, and the event's fields
    (stage, tile, file, counts, error, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(),
               "event": getattr(record, "event", "log"),
               "message": record.getMessage()}
        doc.update(getattr(record, "fields", {}) or {})
        return json.dumps(doc, default=str)


def _run_logging(log_format: str) -> None:
    """``run`` talks to log files: INFO by default (unless -q), timestamps, text or JSON."""
    import time as _time

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        formatter = _JsonLines()
        formatter.converter = _time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handler.setFormatter(formatter)
    logging.getLogger().handlers[:] = [handler]  # every logger, Dask's included
    for name in ("astroembed", "py.warnings"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    if log.getEffectiveLevel() > logging.INFO and not _quiet():
        log.setLevel(logging.INFO)


@app.command("run")
def run_pipeline(
    config: Annotated[Path, typer.Argument(help="Pipeline TOML file (see pipelines/demo.toml).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List new, changed and removed inputs and the tiles they touch; change nothing.")] = False,
    log_format: Annotated[str, typer.Option("--log-format", help="text | json (one object per line on stderr: time, level, event, message, stage, tile, file, counts, error).")] = "text",
    on_error: Annotated[str, typer.Option("--on-error", help="fail: stop at an unreadable input file, catalog untouched. skip: leave it out, finish the rest, exit 4.")] = "fail",
    as_json: Annotated[bool, typer.Option("--json", help="Print the run report as JSON on stdout.")] = False,
) -> None:
    """Run a pipeline (crossmatch -> embed -> probe/predict) from a TOML file, incrementally.

    Only tiles reached by new or changed input files are redone; a run with nothing new does
    nothing and says so. One run per catalog at a time. Exit codes: 0 done, 1 failed, 2 usage
    or config error, 3 another run holds the catalog, 4 done without some unreadable inputs.

    Example:  astroembed run pipelines/demo.toml --log-format json --on-error skip
    """
    with _user_errors():
        from astroembed.config import LOG_FORMATS, ON_ERROR
        from astroembed.pipeline.run import PartialSuccess, run

        for option, value, allowed in (("log-format", log_format, LOG_FORMATS),
                                       ("on-error", on_error, ON_ERROR)):
            if value not in allowed:
                raise ConfigError(f"--{option} must be one of {', '.join(allowed)} (got '{value}').")
        _run_logging(log_format)
        try:
            report = run(config, dry_run=dry_run, on_error=on_error)
        except PartialSuccess as err:
            _print_run_report(err.report, as_json)
            raise
        _print_run_report(report, as_json)


def _print_run_report(report: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    xm = report["stages"].get("crossmatch", {})
    tiles = xm.get("tiles")
    done = "all tiles" if xm.get("mode") == "full" else f"{len(tiles or [])} tiles"
    lines = [f"{report['catalog']}: {report.get('outcome')}",
             f"  inputs: {report['inputs']['files']} files, {len(report['inputs']['new'])} new, "
             f"{len(report['inputs']['changed'])} changed, {len(report['inputs']['removed'])} removed"
             + (f", {len(report['skipped_inputs'])} skipped" if report["skipped_inputs"] else ""),
             f"  crossmatch: {xm.get('mode')}" + ("" if xm.get("mode") == "none" else f", {done}")]
    if "embed" in report["stages"]:
        e = report["stages"]["embed"]
        lines.append(f"  embed: {e['tiles_embedded']} tiles embedded, {e['tiles_skipped']} already done")
    for p in report["stages"].get("probe") or []:
        best = max(p["results"], key=lambda r: r["r2"] if r["r2"] is not None else -1e9)
        lines.append(f"  probe {p['target']}: {p['n_rows']} rows, best R^2 {best['r2']:.4f} "
                     f"({best['features']} {best['method']})" + (f" -> {p['out']}" if p["out"] else ""))
    typer.echo("\n".join(lines))


def _reflow_help(typer_app: typer.Typer) -> None:
    """Join the wrapped lines of each command's docstring paragraphs: Typer's rich help keeps
    single line breaks, which would otherwise break every line twice in an 80-column terminal."""
    import inspect

    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if doc:
            paragraphs = inspect.cleandoc(doc).split("\n\n")
            info.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)


_reflow_help(app)


def _terminate_like_interrupt() -> None:
    """SIGTERM (a batch system's cancel, ``kill``) unwinds like Ctrl-C, so the same cleanup
    runs and the same message says what was kept."""
    import signal

    from astroembed.errors import Interrupted

    def handler(signum, frame):
        raise Interrupted("SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    """Console-script entry point."""
    _terminate_like_interrupt()
    try:
        app()
    except KeyboardInterrupt as exc:  # between commands' own handling, e.g. at start-up
        typer.echo(f"interrupted ({getattr(exc, 'signal_name', 'SIGINT')}).", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
