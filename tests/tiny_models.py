"""Tiny random-weight ONNX encoders that honour the astroembed contract, built with onnx.helper.

Used by the embed tests and by ``bench/embed_bench.py`` when no trained model is given: they
exercise the whole runtime (metadata, preprocessing, sessions, output columns) in
milliseconds and without torch. Each can be made to break the contract in one chosen way.

- image: ``image`` [batch, 3, crop, crop] -> Flatten -> MatMul -> Add -> Tanh -> L2 normalise
- spectrum: ``spectrum`` [batch, 2, L], ``stats`` [batch, 2] -> Flatten(spectrum) @ W1 +
  stats @ W2 + b -> Tanh -> L2 normalise
- raw-flux spectrum (``desi_flux``): ``flux`` [batch, n_wave, 1] -> Flatten -> MatMul -> Add
  -> Tanh -> L2 normalise
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from astroembed.runtime.preprocess import (default_image_preprocessing, default_spectrum_preprocessing,
                                   flux_preprocessing, spectrum_length)

OPSET = 17
OUTPUT = "embedding"


def _hash(*weights: np.ndarray) -> str:
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _metadata(modality: str, name: str, weights_hash: str, dim: int, inputs: list,
              prep: dict) -> dict[str, str]:
    return {"astroembed_contract": "1", "modality": modality, "model_name": name,
            "model_version": "0.0.1", "model_hash": weights_hash, "embedding_dim": str(dim),
            "inputs": json.dumps(inputs), "output": OUTPUT, "preprocessing": json.dumps(prep),
            "training_data": "none (random weights, for tests)", "training_data_hash": "unknown"}


def _save(graph: onnx.GraphProto, meta: dict[str, str], path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="astroembed-tests")
    model.ir_version = 8
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def image_encoder(path: Path, *, crop: int = 16, dim: int = 8, seed: int = 0,
                  name: str = "tiny", prep: dict | None = None,
                  graph_crop: int | None = None) -> Path:
    """Write an image encoder. ``prep`` overrides the declared preprocessing (e.g. other
    bands); ``graph_crop`` makes the graph disagree with the declared crop."""
    prep = prep if prep is not None else default_image_preprocessing(crop=crop)
    crop = int(prep["crop"])
    gcrop = graph_crop or crop
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1 / np.sqrt(3 * gcrop * gcrop), (3 * gcrop * gcrop, dim)).astype(np.float32)
    b = rng.normal(0, 0.1, dim).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "B"], ["lin"]),
             helper.make_node("Tanh", ["lin"], ["act"]),
             helper.make_node("LpNormalization", ["act"], [OUTPUT], axis=1, p=2)]
    graph = helper.make_graph(
        nodes, "tiny_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, gcrop, gcrop])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", dim])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    inputs = [{"name": "image", "shape": ["batch", 3, crop, crop]}]
    return _save(graph, _metadata("image", name, _hash(w, b), dim, inputs, prep), path)


def spectrum_encoder(path: Path, *, dim: int = 8, seed: int = 1, name: str = "tiny",
                     prep: dict | None = None, graph_length: int | None = None) -> Path:
    """Write a spectrum encoder. ``prep`` overrides the declared preprocessing (e.g. another
    wavelength grid); ``graph_length`` makes the graph disagree with the declared length."""
    prep = prep if prep is not None else default_spectrum_preprocessing()
    length = spectrum_length(prep)
    glength = graph_length or length
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / np.sqrt(2 * glength), (2 * glength, dim)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (2, dim)).astype(np.float32)
    b = rng.normal(0, 0.1, dim).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["spectrum"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W1"], ["a"]),
             helper.make_node("MatMul", ["stats", "W2"], ["s"]),
             helper.make_node("Add", ["a", "s"], ["as"]),
             helper.make_node("Add", ["as", "B"], ["lin"]),
             helper.make_node("Tanh", ["lin"], ["act"]),
             helper.make_node("LpNormalization", ["act"], [OUTPUT], axis=1, p=2)]
    graph = helper.make_graph(
        nodes, "tiny_spectrum",
        [helper.make_tensor_value_info("spectrum", TensorProto.FLOAT, ["batch", 2, glength]),
         helper.make_tensor_value_info("stats", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", dim])],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2"),
                     numpy_helper.from_array(b, "B")])
    inputs = [{"name": "spectrum", "shape": ["batch", 2, length]},
              {"name": "stats", "shape": ["batch", 2]}]
    return _save(graph, _metadata("spectrum", name, _hash(w1, w2, b), dim, inputs, prep), path)


def flux_encoder(path: Path, *, dim: int = 8, seed: int = 2, name: str = "tiny-flux",
                 prep: dict | None = None, graph_length: int | None = None) -> Path:
    """Write a spectrum encoder that takes the raw flux (``desi_flux``). ``graph_length``
    makes the graph disagree with the declared grid."""
    prep = prep if prep is not None else flux_preprocessing()
    n_wave = int(prep["n_wave"])
    glength = graph_length or n_wave
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1 / np.sqrt(glength), (glength, dim)).astype(np.float32)
    b = rng.normal(0, 0.1, dim).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["flux"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "B"], ["lin"]),
             helper.make_node("Tanh", ["lin"], ["act"]),
             helper.make_node("LpNormalization", ["act"], [OUTPUT], axis=1, p=2)]
    graph = helper.make_graph(
        nodes, "tiny_flux",
        [helper.make_tensor_value_info("flux", TensorProto.FLOAT, ["batch", glength, 1])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", dim])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    inputs = [{"name": "flux", "shape": ["batch", n_wave, 1]}]
    return _save(graph, _metadata("spectrum", name, _hash(w, b), dim, inputs, prep), path)


def model_dir(path: Path, *, crop: int = 16, dim: int = 8, seed: int = 0,
              name: str = "tiny") -> Path:
    """A model directory with ``image.onnx`` and ``spectrum.onnx`` (a matching pair)."""
    image_encoder(path / "image.onnx", crop=crop, dim=dim, seed=seed, name=name)
    spectrum_encoder(path / "spectrum.onnx", dim=dim, seed=seed + 1, name=name)
    return path


def truncated_copy(source: Path, path: Path) -> Path:
    """The first half of a valid ONNX file: what an interrupted copy leaves."""
    data = Path(source).read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path
