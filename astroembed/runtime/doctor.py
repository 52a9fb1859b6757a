"""``astroembed doctor``: what this installation's onnxruntime can do, checked on real models.

Why a command of its own: a GPU build of onnxruntime lists the CUDA provider whether or not
a GPU, driver and CUDA libraries are there, and falls back to CPU without a word. The report
says which onnxruntime package and build is installed, which providers it lists, what a
session really gets for each ``--device``, and, for the default model and ``--model DIR``,
whether each encoder gives on the device what it gives on CPU (parity, after L2
normalisation, against onnxruntime's plain ``session.run`` on CPU) and how many rows a
second it embeds at a batch size. Only onnxruntime and NumPy; seconds on a CPU.
"""

from __future__ import annotations

import os
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from astroembed.errors import AstroembedError, ConfigError, ModelError
from astroembed.runtime.modelfile import (DEFAULT_MODEL_DIR, Encoder, fallback_message,
                                          find_encoders, onnx_session, open_encoder,
                                          requested_providers)

__all__ = ["DEVICES", "PARITY_TOLERANCE", "diagnose"]

DEVICES = ("cpu", "auto", "cuda")
#: Largest |device - CPU| between L2-normalised embeddings that counts as the same model: a
#: GPU sums in another order (and may round matrix products to TF32), fp16 keeps about three
#: significant digits.
PARITY_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}
PACKAGES = ("onnxruntime", "onnxruntime-gpu")
#: Rows of the parity batch: enough to cover several rows of a batched kernel, few to be quick.
PARITY_ROWS = 8


def onnxruntime_report() -> dict:
    """Version, installed packages (both at once is a broken install), build and providers."""
    import onnxruntime as ort

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"version": ort.__version__, "packages": packages,
            "build": "gpu" if ort.get_device().upper() == "GPU" else "cpu",
            "providers_available": list(ort.get_available_providers())}


def session_report(file: Path, device: str) -> tuple[dict, Encoder | None]:
    """What a session of ``file`` gets for ``device``: providers asked for and obtained, or
    the error; the open encoder when it works."""
    asked: list[str] = []
    try:
        asked = requested_providers(device)
        encoder = open_encoder(file, device=device)
    except AstroembedError as err:
        return {"asked": asked, "got": [], "ok": False, "error": str(err)}, None
    return {"asked": encoder.requested, "got": encoder.providers, "ok": True,
            "fallback": fallback_message(encoder), "error": None}, encoder


def synthetic_inputs(encoder: Encoder, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic float32 inputs of the shapes the encoder's graph takes (normalised
    values, as preprocessing gives)."""
    rng = np.random.default_rng(seed)
    out = {}
    for arg in encoder.session.get_inputs():
        shape = [rows, *(d if isinstance(d, int) else 1 for d in arg.shape[1:])]
        out[arg.name] = rng.normal(size=shape).astype(np.float32)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def parity(encoder: Encoder, feeds: dict[str, np.ndarray]) -> float:
    """Max |device - CPU| after L2 normalisation; the reference is a CPU session of the same
    file run with plain ``session.run`` (not the IO-binding path under test)."""
    reference = onnx_session(encoder.info.path, ["CPUExecutionProvider"], None)
    want = reference.run([encoder.info.output], feeds)[0]
    return float(np.max(np.abs(_unit(encoder.run(feeds)) - _unit(want))))


def throughput(encoder: Encoder, rows: int, batch_size: int) -> float:
    """Rows a second through ``encoder.run`` in batches of ``batch_size`` (after a first
    batch that warms the session up: kernel choice, memory arenas)."""
    feeds = synthetic_inputs(encoder, min(rows, batch_size), seed=1)
    encoder.run(feeds)
    done, start = 0, time.perf_counter()
    while done < rows:
        n = min(batch_size, rows - done)
        encoder.run(feeds if n == batch_size else {k: v[:n] for k, v in feeds.items()})
        done += n
    seconds = time.perf_counter() - start
    return round(rows / seconds, 1) if seconds > 0 else float("inf")


def check_encoder(encoder: Encoder, rows: int, batch_size: int) -> dict:
    """Parity and throughput of one open encoder on its device."""
    tolerance = PARITY_TOLERANCE[encoder.info.precision]
    diff = parity(encoder, synthetic_inputs(encoder, PARITY_ROWS))
    return {"providers": encoder.providers, "parity_max_abs_diff_l2": diff,
            "parity_tolerance": tolerance, "parity_ok": diff <= tolerance,
            "batch_size": batch_size, "rows": rows,
            "rows_per_second": throughput(encoder, rows, batch_size)}


def model_report(model: str | None, devices: tuple[str, ...], rows: int,
                 batch_size: int) -> tuple[dict, list[str]]:
    """Each encoder of ``model`` (None: the default) checked on each of ``devices`` (those
    that work: a device that does not is reported once, by :func:`_sessions`); the problems
    found."""
    label = "default" if model is None else str(model)
    try:
        files = find_encoders(model)
    except ModelError as err:
        return {"model": label, "error": str(err), "encoders": {}}, [str(err)]
    report: dict = {"model": label, "path": str(Path(model) if model else DEFAULT_MODEL_DIR),
                    "encoders": {}}
    problems = []
    for modality, file in files.items():
        entry: dict = {"file": file.name, "checks": {}}
        for device in devices:
            state, encoder = session_report(file, device)
            if encoder is None:
                entry["checks"][device] = {"ok": False, "error": state["error"]}
                problems.append(f"{label} {modality} on {device}: {state['error']}")
                continue
            entry.update(name=encoder.info.name, version=encoder.info.version,
                         precision=encoder.info.precision, hash=encoder.info.hash)
            result = check_encoder(encoder, rows, batch_size)
            result["ok"] = result["parity_ok"]
            entry["checks"][device] = result
            if not result["ok"]:
                problems.append(f"{label} {modality} on {device} ({encoder.providers[0]}): "
                                f"differs from CPU by {result['parity_max_abs_diff_l2']:.2e} "
                                f"after L2 normalisation (tolerance "
                                f"{result['parity_tolerance']:g})")
        report["encoders"][modality] = entry
    return report, problems


def diagnose(model: str | os.PathLike | None = None, devices: tuple[str, ...] = ("auto",),
             rows: int = 256, batch_size: int = 64) -> dict:
    """The doctor's report (see the module docstring); ``ok`` is False when a requested
    device does not work or an encoder disagrees with CPU there."""
    devices = tuple(dict.fromkeys(devices))
    unknown = [d for d in devices if d not in DEVICES]
    if unknown or not devices:
        raise ConfigError(f"--device {', '.join(unknown) or '(none)'}: expected "
                          f"{', '.join(DEVICES)}.")
    if rows < 1 or batch_size < 1:
        raise ConfigError(f"--rows {rows}, --batch-size {batch_size}: both must be at least 1.")
    models = [None] + ([str(model)] if model is not None else [])
    sessions = _sessions(models, devices)
    problems = [state["error"] if state["error"].startswith("--device") else
                f"--device {device}: {state['error']}"
                for device, state in sessions.items() if state["requested"] and not state["ok"]]
    working = tuple(d for d in devices if sessions[d]["ok"])
    reports = []
    for m in models:
        report, found = model_report(m, working, rows, batch_size)
        reports.append(report)
        problems += found
    return {"onnxruntime": onnxruntime_report(), "sessions": sessions, "models": reports,
            "ok": not problems, "problems": list(dict.fromkeys(problems))}


def _sessions(models: list, devices: tuple[str, ...]) -> dict:
    """What a session gets for every device (``requested``: whether it was asked for), on
    the first encoder file that exists."""
    file = None
    for m in models:
        try:
            file = next(iter(find_encoders(m).values()))
            break
        except ModelError:
            continue
    out = {}
    for device in DEVICES:
        state = ({"asked": [], "got": [], "ok": False, "error": "no encoder to open"}
                 if file is None else session_report(file, device)[0])
        out[device] = {"requested": device in devices, **state}
    return out
