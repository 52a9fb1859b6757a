"""Export a trained encoder pair to ONNX with its contract in the metadata (torch needed).

One single-file ``.onnx`` per encoder, dynamic batch axis, the metadata keys of
:mod:`astroembed.runtime.modelfile`, and a parity check: onnxruntime on a real batch (validation rows
stored in ``model.pt``) must agree with torch to ``PARITY_TOLERANCE``, else nothing is
written. The directory appears complete or not at all.

With ``precision="fp16"`` the checked fp32 graph is converted to fp16
(:mod:`astroembed.training.precision`) and compared with it on the same batch after L2
normalisation; the difference goes in the summary and ``model.json``, and above
``FP16_TOLERANCE`` nothing is written. Where this onnxruntime cannot run the fp16 graph (a
CPU build without an fp16 kernel it uses) the comparison is recorded as not run, with why,
for ``astroembed doctor`` to make on the GPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from astroembed.errors import ConfigError, ModelError
from astroembed.catalog.atomic import atomic_directory
from astroembed.catalog.outputs import MODEL, claim_directory, may_replace
from astroembed.runtime.modelfile import CONTRACT_VERSION, PRECISIONS, open_encoder
from astroembed.stamps import utc_now

log = logging.getLogger("astroembed")
PARITY_TOLERANCE = 1e-4
#: Largest |fp16 - fp32| allowed between L2-normalised embeddings: fp16 keeps about three
#: significant digits, so a few 1e-3 is rounding, beyond 1e-2 the graph overflowed somewhere.
FP16_TOLERANCE = 1e-2
OUTPUT_NAME = "embedding"


def weights_hash(module) -> str:
    """sha256 of a module's parameters and buffers (names and float32 bytes, sorted)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _stdout_to_stderr():
    """torch.onnx.export prints progress on stdout; keep stdout clean for data output."""
    saved = os.dup(1)
    sys.stdout.flush()
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _export_one(module, example: tuple, names: list[str], path: Path, metadata: dict) -> None:
    """Trace ``module`` to a single ONNX file with a dynamic batch axis and ``metadata``."""
    import onnx
    import torch

    from astroembed.training.export_form import ONNX_OPSET, translation_table

    batch = torch.export.Dim("batch", min=1)
    shapes = {name: {0: batch} for name in names}
    module.eval()
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)  # its notes are not the user's to act on
    with _stdout_to_stderr(), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch's own deprecations
        program = torch.onnx.export(module, example, dynamo=True, input_names=names,
                                    output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                                    external_data=False, verbose=False,
                                    opset_version=ONNX_OPSET,
                                    custom_translation_table=translation_table())
    model = program.model_proto
    without_build_traces(model)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save_model(model, str(path))


def without_build_traces(model) -> None:
    """Drop what the torch exporter records on each node (its Python stack trace, naming files
    on the machine that exported, the module classes and FX names): nothing runs on it, and a
    model file that travels should not carry the paths of the machine that built it."""
    for graph in (model.graph, *model.functions):
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    model.graph.doc_string = ""


def training_data_text(summary: dict) -> str:
    """The ``training_data`` metadata: the training catalog by name; ``training_data_hash``
    (the rows' digest) goes beside it, so the pair identifies the data without a path."""
    return (f"{summary.get('rows', '?')} cross-matched rows of catalog "
            f"'{summary.get('catalog', '?')}' (simulated survey unless stated)")


def _metadata(modality: str, cfg, weights: str, inputs: list, prep: dict, summary: dict) -> dict:
    return {
        "astroembed_contract": CONTRACT_VERSION, "modality": modality,
        "model_name": cfg.model_name, "model_version": cfg.model_version,
        "model_hash": weights, "embedding_dim": cfg.embed_dim,
        "inputs": json.dumps(inputs), "output": OUTPUT_NAME,
        "preprocessing": json.dumps(prep),
        "training_data": training_data_text(summary),
        "training_data_hash": summary.get("data_digest", "unknown"),
        "created": utc_now(),
    }


def _check_parity(path: Path, module, example: tuple, names: list[str]) -> float:
    """Max |onnx - torch| on ``example``; ModelError above the tolerance."""
    import torch

    with torch.no_grad():
        expected = module(*example).numpy()
    encoder = open_encoder(path, device="cpu")
    got = encoder.run({n: t.numpy() for n, t in zip(names, example)})
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= PARITY_TOLERANCE:
        raise ModelError(f"{path.name}: ONNX output differs from torch by {diff:.2e} (more "
                         f"than {PARITY_TOLERANCE:g}) on the parity batch; not exported.")
    return diff


def fp16_hash(fp32_hash: str) -> str:
    """The ``model_hash`` of the fp16 copy of an encoder: another hash than the fp32 one, so
    ``embed`` never skips tiles embedded at the other precision as done."""
    return hashlib.sha256(f"{fp32_hash}:fp16".encode()).hexdigest()


def write_fp16(src: Path, dst: Path) -> None:
    """``dst``: the fp16 copy of the encoder file ``src``, its metadata saying so."""
    import onnx

    from astroembed.training.precision import convert_to_fp16

    model = convert_to_fp16(onnx.load(str(src)), where=src.name)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(precision="fp16", model_hash=fp16_hash(meta["model_hash"]),
                fp32_model_hash=meta["model_hash"])
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(dst))


def compare_fp16(fp32: Path, fp16: Path, feeds: dict[str, np.ndarray]) -> dict:
    """``{"max_abs_diff_l2": d, "not_run": None}`` between the two encoders on ``feeds``, both
    on CPU, after L2 normalisation; ``d`` None and ``not_run`` saying why where this
    onnxruntime cannot run the fp16 graph. ModelError above :data:`FP16_TOLERANCE`."""
    from astroembed.training.precision import l2_normalised

    try:
        half = open_encoder(fp16, device="cpu")
    except ModelError as err:
        if "does not know an operator" not in str(err):  # a broken file, not a missing kernel
            raise
        return {"max_abs_diff_l2": None,
                "not_run": f"this onnxruntime cannot run the fp16 graph on CPU ({err}); "
                           "compare it on the GPU with `astroembed doctor --model DIR "
                           "--device cuda`"}
    want = l2_normalised(open_encoder(fp32, device="cpu").run(feeds))
    got = l2_normalised(half.run(feeds))
    diff = float(np.max(np.abs(got - want)))
    if not diff <= FP16_TOLERANCE:
        raise ModelError(f"{fp16.name}: the fp16 encoder differs from fp32 by {diff:.2e} after "
                         f"L2 normalisation (more than {FP16_TOLERANCE:g}) on the parity batch; "
                         "not exported. Export it as fp32.")
    return {"max_abs_diff_l2": diff, "not_run": None}


def export_model(model_dir: str | os.PathLike, out: str | os.PathLike,
                 overwrite: bool = False, precision: str = "fp32") -> dict:
    """Write ``image.onnx`` and ``spectrum.onnx`` (+ ``model.json``) for the model trained in
    ``model_dir``, at ``precision`` (fp32, or fp16 compared with fp32); returns what was
    written and the parity differences."""
    import torch

    from astroembed.training.export_form import export_form
    from astroembed.training.trainer import (FINAL, build_models, config_from_checkpoint,
                                             load_checkpoint, portable_summary)

    model_dir, out = Path(model_dir), Path(out)
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: expected {' or '.join(PRECISIONS)}.")
    if not model_dir.is_dir():
        what = "is a file" if model_dir.exists() else "does not exist"
        raise ModelError(f"{model_dir}: {what}; MODEL_DIR is the directory `astroembed train "
                         f"--out` wrote (with {FINAL}).")
    if not (model_dir / FINAL).is_file():
        hint = (" Training has not finished (only a checkpoint); continue it with "
                "`astroembed train --resume`." if (model_dir / "checkpoint.pt").is_file() else "")
        if any(model_dir.glob("*.onnx")):
            hint = (" It holds ONNX encoders already: use it as `astroembed embed --model "
                    f"{model_dir}`.")
        raise ModelError(f"{model_dir}: no {FINAL} (a model trained by `astroembed train`).{hint}")
    claim_directory(out, MODEL, overwrite=overwrite, option="--out")
    payload = load_checkpoint(model_dir / FINAL)
    cfg = config_from_checkpoint(payload)
    summary = portable_summary(json.loads(payload.get("summary", "{}")))
    image_model, spectrum_model = build_models(cfg)
    image_model.load_state_dict(payload["image"])
    spectrum_model.load_state_dict(payload["spectrum"])
    image_model.eval()
    spectrum_model.eval()
    img_prep, spec_prep = cfg.preprocessing()
    parity = {"image": (payload["parity_image"],),
              "spectrum": (payload["parity_spectrum"], payload["parity_stats"])}
    specs = {
        "image": (image_model, ["image"], img_prep,
                  [{"name": "image", "shape": ["batch", 3, cfg.crop, cfg.crop]}]),
        "spectrum": (spectrum_model, ["spectrum", "stats"], spec_prep,
                     [{"name": "spectrum", "shape": ["batch", 2, spectrum_model.cfg.length]},
                      {"name": "stats", "shape": ["batch", 2]}]),
    }
    result = {"out": str(out), "precision": precision, "encoders": {}}
    with atomic_directory(out, lambda p: may_replace(p, MODEL, "--out")) as tmp:
        tmp = Path(tmp)
        for modality, (module, names, prep, inputs) in specs.items():
            file = tmp / f"{modality}.onnx"
            weights = weights_hash(module)
            meta = _metadata(modality, cfg, weights, inputs, prep, summary)
            example = tuple(t.float() for t in parity[modality])
            fp32 = tmp / f".{modality}.fp32.onnx" if precision == "fp16" else file
            with torch.no_grad():
                _export_one(export_form(module), example, names, fp32, meta)
            diff = _check_parity(fp32, module, example, names)  # against the trained form
            entry = {"file": file.name, "model_hash": weights, "precision": precision,
                     "parity_max_abs_diff": diff}
            if precision == "fp16":
                write_fp16(fp32, file)
                compared = compare_fp16(fp32, file, {n: t.numpy() for n, t in zip(names, example)})
                fp32.unlink()
                entry.update(model_hash=fp16_hash(weights), fp32_model_hash=weights,
                             fp16_max_abs_diff_l2=compared["max_abs_diff_l2"],
                             fp16_not_compared=compared["not_run"])
                if compared["not_run"]:
                    log.warning("%s encoder: fp16 not compared with fp32: %s", modality,
                                compared["not_run"])
            entry["bytes"] = file.stat().st_size
            result["encoders"][modality] = entry
            log.info("%s encoder: parity %.2e, %d bytes", modality, diff, file.stat().st_size)
        manifest = {"model_name": cfg.model_name, "model_version": cfg.model_version,
                    "embedding_dim": cfg.embed_dim, "precision": precision,
                    "training": summary, "encoders": result["encoders"]}
        (tmp / "model.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return result
