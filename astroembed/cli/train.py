"""``astroembed train``: an image + spectrum encoder pair on a cross-matched catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag
from astroembed.cli.progress import progress_bars
from astroembed.cli.render import show

AsJson = json_flag("Print the training summary as JSON on stdout.")


@app.command()
def train(
    catalog: Annotated[Path, typer.Option("--catalog", "-c", help="Cross-matched catalog with images and spectra.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory (checkpoints, model.pt, training.json).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with training settings (keys of TrainConfig).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")] = False,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed, same model).")] = None,
    pretrain_epochs: Annotated[Optional[int], typer.Option("--pretrain-epochs", help="Spectrum masked-reconstruction epochs.")] = None,
    align_epochs: Annotated[Optional[int], typer.Option("--align-epochs", help="Contrastive alignment epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Rows per step.")] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", help="Use at most this many rows (0 = all).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch threads (0 = all cores).")] = None,
    as_json: AsJson = False,
) -> None:
    """Train an AstroCLIP-style image + spectrum encoder pair on a cross-matched catalog.

    Stage 1 pretrains the spectrum encoder by masked reconstruction; stage 2 aligns images
    and spectra with a symmetric InfoNCE loss. Checkpoints every epoch; --resume continues.

    Example:  astroembed train --catalog demo-output/matched --out demo-output/model
    """
    import astroembed

    with user_errors():
        with progress_bars(as_json) as progress:
            summary = astroembed.train(
                catalog, out, config=config, resume=resume, progress=progress, seed=seed,
                pretrain_epochs=pretrain_epochs, align_epochs=align_epochs, batch_size=batch_size,
                max_rows=max_rows, threads=threads)
        show(summary, as_json, render, out)


def render(summary: dict, out: Path) -> None:
    """Rows used, time, the last validation retrieval score, where the model is."""
    last = summary["history"][-1]
    typer.echo(f"trained on {summary['train_rows']} rows ({summary['val_rows']} validation) "
               f"in {summary['seconds']} s; validation image->spectrum top-1%: "
               f"{last.get('val_top1pct_image_to_spectrum', float('nan')):.3f}; model in {out}")
