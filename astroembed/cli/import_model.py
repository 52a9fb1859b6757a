"""``astroembed import-model``: a published checkpoint as an ONNX model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag
from astroembed.cli.render import show

AsJson = json_flag("Print what was written as JSON on stdout.")


@app.command("import-model")
def import_model(
    kind: Annotated[str, typer.Argument(help="What the checkpoint is: astroclip (AstroCLIP's image and spectrum model, astroclip.ckpt) or specformer (its spectrum model alone, specformer.ckpt).")],
    checkpoint: Annotated[Path, typer.Argument(help="The published checkpoint file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the ONNX encoder, model.json and MODEL_CARD.md.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it holds a model astroembed wrote.")] = False,
    as_json: AsJson = False,
) -> None:
    """Import a published model checkpoint as an ONNX model for `astroembed embed`.

    The checkpoint is read without running the code its pickle names. Each encoder's output
    is checked against the checkpoint's torch model (max abs difference <= 1e-4) and nothing
    is written if it fails; OUT gets a model card with the checkpoint's SHA-256.

    astroclip writes image.onnx and spectrum.onnx, one shared embedding space. Its image
    encoder takes g, r, z cutouts of 152x152 pixels or more (larger ones are centre-cropped);
    embed maps them to colour, swaps height and width and crops 144 pixels as AstroCLIP did.
    specformer writes spectrum.onnx only: embed with --modality spectrum.

    Example:  astroembed import-model astroclip astroclip.ckpt --out models/astroclip
    """
    import astroembed

    with user_errors():
        result = astroembed.import_model(kind, checkpoint, out, overwrite=overwrite)
        show(result, as_json, render, out)


def render(result: dict, out: Path) -> None:
    """One line per encoder: file, size, parity, speed, hash; then the source."""
    for modality, e in result["encoders"].items():
        typer.echo(f"{out}/{e['file']}: {modality} encoder, {e['bytes'] / 1e6:.1f} MB, "
                   f"{result['embedding_dim']}-d, parity max |onnx - torch| = "
                   f"{e['parity_max_abs_diff']:.1e}, {e['cpu_rows_per_second']:.3g} rows/s on "
                   f"CPU, hash {e['model_hash'][:12]}")
    source = result["source"]
    typer.echo(f"from {source['file']} (sha256 {source['sha256']}), licence {result['licence']}")
