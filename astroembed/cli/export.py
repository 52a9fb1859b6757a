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
    precision: Annotated[str, typer.Option(help="fp32 | fp16 (for GPUs: half the size, slower than fp32 on CPU; inputs and outputs stay float32).")] = "fp32",
    as_json: AsJson = False,
) -> None:
    """Export a trained pair to ONNX (one file per encoder, contract in the metadata).

    Checks torch-vs-ONNX parity on a real batch (max abs difference <= 1e-4) and writes
    nothing if it fails. With --precision fp16 the encoders are converted to fp16 and
    compared with fp32 on the same batch after L2 normalisation (max abs difference <=
    1e-2, reported and kept in model.json). `astroembed embed --model OUT` uses the result.

    Example:  astroembed export demo-output/model --out demo-output/model-onnx --precision fp16
    """
    import astroembed

    with user_errors():
        result = astroembed.export(model_dir, out, overwrite=overwrite, precision=precision)
        show(result, as_json, render, out)


def render(result: dict, out: Path) -> None:
    """One line per encoder: file, size, parity, hash (and fp16 vs fp32)."""
    for modality, e in result["encoders"].items():
        line = (f"{out}/{e['file']}: {modality} encoder, {e['bytes'] / 1e6:.1f} MB, parity "
                f"max |onnx - torch| = {e['parity_max_abs_diff']:.1e}, hash "
                f"{e['model_hash'][:12]}")
        if e.get("precision") == "fp16":
            diff = e.get("fp16_max_abs_diff_l2")
            line += (f", fp16: max |fp16 - fp32| after L2 normalisation = {diff:.1e}"
                     if diff is not None else f", fp16 not compared: {e['fp16_not_compared']}")
        typer.echo(line)
