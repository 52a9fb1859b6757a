"""ONNX Runtime vs torch eager for both encoders on CPU.

    python bench/encoder_bench.py [--batch 256] [--repeats 20] [--threads 2] [--config TOML]

Builds the default architecture (TrainConfig defaults, or a training recipe's with --config;
timing does not depend on the weight values), exports it with astroembed's exporter, then
times ``session.run`` (a session set up as ``embed`` sets it up) against ``torch.no_grad()``
forward passes on the same random batch, with the same thread count, in blocks taken in
turn: of the training module, and of the export form (the rearranged graph the exporter
hands to ONNX, :mod:`astroembed.training.export_form`), so the runtime's own gain (ONNX
against the export form) is told apart from the graph rewrite's. Torch eager's time moves from run to run (its allocator's state); run it a few times.
Writes bench/results/encoders.json and encoders.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchpaths import portable

RESULTS = Path(__file__).parent / "results"


def _time_in_turn(fns: list, repeats: int, block: int = 5) -> list[list[float]]:
    """Seconds of each of ``fns`` over ``repeats`` runs each, taken in blocks of ``block`` runs
    in turn (first, second, ..., first, ...) so that a change in the machine's speed during
    the run falls on all alike. Each block starts with two untimed runs: another runtime's
    idle threads may still be spinning on the cores."""
    times: list[list[float]] = [[] for _ in fns]
    while len(times[-1]) < repeats:
        for fn, out in zip(fns, times):
            fn(), fn()
            for _ in range(min(block, repeats - len(out))):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    return times


def _spread(times: list[float]) -> dict:
    """Median and the 25-75% range of a timing's runs, in seconds."""
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return {"median_s": round(float(med), 4), "q1_s": round(float(q1), 4),
            "q3_s": round(float(q3), 4), "runs": len(times)}


def main() -> int:
    import onnxruntime as ort
    import torch

    from astroembed.config import from_mapping, load_toml
    from astroembed.training.export import _export_one
    from astroembed.runtime.modelfile import onnx_session
    from astroembed.training.export_form import export_form
    from astroembed.training.trainer import TrainConfig, build_models
    from astroembed.stamps import utc_now

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", help="training recipe (TOML) whose architecture to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_toml(args.config) if args.config else {}
    cfg = from_mapping(TrainConfig, {**recipe, "catalog": "-", "out": "-"}, args.config or "encoder_bench")
    image_model, spectrum_model = build_models(cfg)
    image_model.eval(), spectrum_model.eval()
    rng = np.random.default_rng(0)
    length = spectrum_model.cfg.length
    inputs = {
        "image": {"image": rng.random((args.batch, 3, cfg.crop, cfg.crop), dtype=np.float32)},
        "spectrum": {"spectrum": rng.standard_normal((args.batch, 2, length), dtype=np.float32),
                     "stats": rng.standard_normal((args.batch, 2), dtype=np.float32)},
    }
    models = {"image": image_model, "spectrum": spectrum_model}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for modality, module in models.items():
            names = list(inputs[modality])
            example = tuple(torch.from_numpy(inputs[modality][n]) for n in names)
            path = Path(tmp) / f"{modality}.onnx"
            _export_one(export_form(module), example, names, path, {})  # as `export` does
            session = onnx_session(path, ["CPUExecutionProvider"], args.threads)  # as embed runs it
            form = export_form(module).eval()
            with torch.no_grad():
                times = _time_in_turn([lambda: module(*example), lambda: form(*example),
                                       lambda: session.run(None, inputs[modality])],
                                      args.repeats)
                diff = float(np.abs(session.run(None, inputs[modality])[0]
                                    - module(*example).numpy()).max())
            t_torch, t_form, t_onnx = (float(np.median(t)) for t in times)
            rows.append({"encoder": modality, "batch": args.batch, "threads": args.threads,
                         "torch_s": round(t_torch, 4), "torch_export_form_s": round(t_form, 4),
                         "onnx_s": round(t_onnx, 4),
                         "torch_rows_per_s": round(args.batch / t_torch),
                         "torch_export_form_rows_per_s": round(args.batch / t_form),
                         "onnx_rows_per_s": round(args.batch / t_onnx),
                         "onnx_speedup": round(t_torch / t_onnx, 2),
                         "export_form_speedup_in_torch": round(t_torch / t_form, 2),
                         "onnx_speedup_over_export_form": round(t_form / t_onnx, 2),
                         "spread": {"torch": _spread(times[0]),
                                    "torch_export_form": _spread(times[1]),
                                    "onnx": _spread(times[2])},
                         "max_abs_diff": diff})
    result = {"benchmark": "encoders", "date": utc_now(), "command": " ".join(sys.argv),
              "machine": f"{platform.machine()}, {args.threads} threads",
              "torch": torch.__version__, "onnxruntime": ort.__version__, "rows": rows}
    result = portable(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "encoders.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| encoder | batch | torch eager, training module rows/s | torch eager, export form "
             "rows/s | ONNX Runtime rows/s | ONNX / torch (training module) | ONNX / torch "
             "(export form) |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['encoder']} | {r['batch']} | {r['torch_rows_per_s']} | "
              f"{r['torch_export_form_rows_per_s']} | {r['onnx_rows_per_s']} | "
              f"{r['onnx_speedup']}x | {r['onnx_speedup_over_export_form']}x |" for r in rows]
    (RESULTS / "encoders.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
