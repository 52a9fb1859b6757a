"""``astroembed embed``: embedding columns, tile by tile, with ONNX encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag
from astroembed.cli.progress import progress_bars
from astroembed.cli.render import show
from astroembed.errors import AstroembedError

AsJson = json_flag("Print the summary as JSON on stdout.")


@app.command()
def embed(
    catalog: Annotated[Path, typer.Option("--catalog", "-c", help="Catalog to add embedding columns to (HATS, e.g. from crossmatch).")],
    tile: Annotated[Optional[list[str]], typer.Option("--tile", help="Only this tile, ORDER/PIXEL; repeat for more (`astroembed info --catalog CAT --tiles` lists them). Default: every tile.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="ONNX model directory (image.onnx, spectrum.onnx) or one .onnx file. Default: the model shipped with astroembed.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Column suffix: embedding_<modality>_NAME, so several models can coexist.")] = None,
    modality: Annotated[str, typer.Option(help="image | spectrum | both.")] = "both",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per model call.")] = 256,
    device: Annotated[str, typer.Option(help="auto (GPU when usable, else CPU) | cpu | cuda (an error without a usable GPU).")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="onnxruntime threads per task (default: the cores shared among local workers; 1 with --scheduler).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address, e.g. tcp://host:8786 (one task per tile).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Local Dask workers (default: run in this process).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-embed tiles already embedded with the same model.")] = False,
    as_json: AsJson = False,
) -> None:
    """Add embedding columns to a catalog, tile by tile, with ONNX encoders.

    Writes embedding_image / embedding_spectrum (d float32 values a row; null where the
    input is missing or unusable), the model's name, version, hash and dimension in each
    column's metadata. Each tile is rewritten atomically; tiles already embedded with the
    same model are skipped (--force redoes them), so a killed run just runs again.

    Example:  astroembed embed --catalog demo-output/matched --device cpu
    """
    import astroembed

    with user_errors():
        try:
            with progress_bars(as_json) as progress:
                summary = astroembed.embed(
                    catalog, progress=progress, tiles=tuple(tile or ()),
                    model=str(model) if model is not None else None, name=name,
                    modality=modality, batch_size=batch_size, device=device, threads=threads,
                    scheduler=scheduler, workers=workers, force=force)
        except AstroembedError as err:
            if getattr(err, "summary", None):  # the tiles that were done, before the error line
                show(err.summary, as_json, render)
            raise
    show(summary, as_json, render)


def render(s: dict) -> None:
    """Rows embedded, skipped and failed, per column, and the state when not complete."""
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
