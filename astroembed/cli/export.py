"""``astroembed export``: a trained pair to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag
from astroembed.cli.render import show

AsJson = json_flag("Print what was written as JSON on stdout.")


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="Directory written by `astroembed train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for image.onnx, spectrum.onnx, model.json.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
    as_json: AsJson = False,
) -> None:
    """Export a trained pair to ONNX (one file per encoder, contract in the metadata).

    Checks torch-vs-ONNX parity on a real batch (max abs difference <= 1e-4) and writes
    nothing if it fails. `astroembed embed --model OUT` uses the result.

    Example:  astroembed export models/mine --out models/mine-onnx
    """
    import astroembed

    with user_errors():
        result = astroembed.export(model_dir, out, overwrite=overwrite)
        show(result, as_json, render, out)


def render(result: dict, out: Path) -> None:
    """One line per encoder: file, size, parity, hash."""
    for modality, e in result["encoders"].items():
        typer.echo(f"{out}/{e['file']}: {modality} encoder, {e['bytes'] / 1e6:.1f} MB, parity "
                   f"max |onnx - torch| = {e['parity_max_abs_diff']:.1e}, hash "
                   f"{e['model_hash'][:12]}")
