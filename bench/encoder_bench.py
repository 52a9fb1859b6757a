"""ONNX Runtime vs torch eager for both encoders on CPU.

    python bench/encoder_bench.py [--batch 256] [--repeats 20] [--threads 2] [--config TOML]

Builds the default architecture (TrainConfig defaults, or a training recipe's with --config;
timing does not depend on the weight values), exports it with astroembed's exporter, then
times ``session.run`` (a session set up as ``embed`` sets it up) against ``torch.no_grad()``
forward passes on the same random batch, with the same thread count, in blocks taken in
turn. Torch eager's time moves from run to run (its allocator's state); run it a few times.
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


def _time_pair(first, second, repeats: int, block: int = 5) -> tuple[float, float]:
    """Median seconds of ``first()`` and of ``second()`` over ``repeats`` runs each, taken in
    blocks of ``block`` runs in turn (first, second, first, ...) so that a change in the
    machine's speed during the run falls on both alike. Each block starts with two untimed
    runs: the other runtime's idle threads may still be spinning on the cores."""
    times: tuple[list[float], list[float]] = ([], [])
    while len(times[1]) < repeats:
        for fn, out in zip((first, second), times):
            fn(), fn()
            for _ in range(min(block, repeats - len(out))):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


def main() -> int:
    import onnxruntime as ort
    import torch

    from astroembed.config import from_mapping, load_toml
    from astroembed.training.export import _export_one
    from astroembed.runtime.modelfile import onnx_session
    from astroembed.training.export_form import export_form
    from astroembed.training.trainer import TrainConfig, build_models

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
            with torch.no_grad():
                t_torch, t_onnx = _time_pair(lambda: module(*example),
                                             lambda: session.run(None, inputs[modality]),
                                             args.repeats)
            with torch.no_grad():
                diff = float(np.abs(session.run(None, inputs[modality])[0]
                                    - module(*example).numpy()).max())
            rows.append({"encoder": modality, "batch": args.batch, "threads": args.threads,
                         "torch_s": round(t_torch, 4), "onnx_s": round(t_onnx, 4),
                         "torch_rows_per_s": round(args.batch / t_torch),
                         "onnx_rows_per_s": round(args.batch / t_onnx),
                         "onnx_speedup": round(t_torch / t_onnx, 2), "max_abs_diff": diff})
    result = {"benchmark": "encoders", "command": " ".join(sys.argv),
              "machine": f"{platform.machine()}, {args.threads} threads",
              "torch": torch.__version__, "onnxruntime": ort.__version__, "rows": rows}
    result = portable(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "encoders.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| encoder | batch | torch eager rows/s | ONNX Runtime rows/s | ONNX / torch |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['encoder']} | {r['batch']} | {r['torch_rows_per_s']} | {r['onnx_rows_per_s']} "
              f"| {r['onnx_speedup']}x |" for r in rows]
    (RESULTS / "encoders.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
