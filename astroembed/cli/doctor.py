"""``astroembed doctor``: check the installation's onnxruntime, devices and models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag, split_choices
from astroembed.cli.render import show

AsJson = json_flag("Print the full report as JSON.")


@app.command()
def doctor(
    model: Annotated[Optional[Path], typer.Option("--model", help="Also check this ONNX model directory or .onnx file (e.g. one from export or import-model).")] = None,
    device: Annotated[Optional[list[str]], typer.Option("--device", help="Device that must work: auto | cpu | cuda; repeat or comma-separate for several. Default: auto.")] = None,
    rows: Annotated[int, typer.Option("--rows", help="Rows per encoder for the throughput check.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per model call in the throughput check.")] = 64,
    as_json: AsJson = False,
) -> None:
    """Verify an install: onnxruntime version and build, providers, what each device gets.

    Reports the onnxruntime package (cpu or gpu build) and the providers it lists, what a
    session really gets for --device cpu, auto and cuda (a GPU build without a usable GPU
    falls back to CPU), and for the default model and --model each encoder's parity on the
    device against onnxruntime on CPU (max abs difference after L2 normalisation) and its
    rows/s. Exits 1 if a requested device does not work or an encoder disagrees with CPU.

    Example:  astroembed doctor --device cpu,auto
    """
    import astroembed

    with user_errors():
        report = astroembed.doctor(model, devices=split_choices(device) or ("auto",),
                                   rows=rows, batch_size=batch_size)
    show(report, as_json, render)
    for problem in report["problems"]:
        typer.echo(f"error: {problem}", err=True)
    if not report["ok"]:
        raise typer.Exit(1)


def render(report: dict) -> None:
    """The build, a line per device, a line per encoder and checked device."""
    ort = report["onnxruntime"]
    packages = ", ".join(f"{k} {v}" for k, v in ort["packages"].items()) or "no package metadata"
    typer.echo(f"onnxruntime {ort['version']} ({ort['build']} build; {packages}); providers: "
               f"{', '.join(ort['providers_available'])}")
    for device, s in report["sessions"].items():
        mark = "requested" if s["requested"] else "not requested"
        got = ", ".join(s["got"]) if s["ok"] else f"does not work: {s['error']}"
        typer.echo(f"--device {device} ({mark}): {got}")
        if s.get("fallback"):
            typer.echo(f"  note: {s['fallback']}")
    for m in report["models"]:
        if m.get("error"):
            typer.echo(f"model {m['model']}: {m['error']}")
        for modality, e in m["encoders"].items():
            for device, c in e["checks"].items():
                if not c["ok"] and "error" in c:
                    typer.echo(f"model {m['model']} {modality} on {device}: {c['error']}")
                    continue
                typer.echo(f"model {m['model']} {modality} ({e.get('precision', '?')}) on "
                           f"{device} [{c['providers'][0]}]: parity {c['parity_max_abs_diff_l2']:.1e}"
                           f" (<= {c['parity_tolerance']:g}: {'ok' if c['parity_ok'] else 'FAILED'}),"
                           f" {c['rows_per_second']:,.0f} rows/s at batch {c['batch_size']}")
    typer.echo("ok" if report["ok"] else f"{len(report['problems'])} problem(s)")
