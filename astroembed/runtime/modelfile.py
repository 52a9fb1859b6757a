"""ONNX encoders and the contract they declare in their metadata.

Everything that crosses from training to ``embed`` is an ONNX file (never a pickle). Each
encoder file carries, in ``metadata_props`` (string key -> string value):

==========================  ===========================================================
``astroembed_contract``     ``"1"``
``modality``                ``image`` or ``spectrum``
``model_name``              e.g. ``astroembed-sim-v1`` (both encoders of a pair share it)
``model_version``           e.g. ``1.0.0``
``model_hash``              sha256 (hex) of the encoder's weights, set at export
``embedding_dim``           e.g. ``128``; the output is ``(batch, embedding_dim)``, L2-normalised
``inputs``                  JSON list of ``{"name", "shape"}``; ``"batch"`` marks the dynamic axis
``output``                  the output's name
``preprocessing``           JSON dict read by :mod:`astroembed.runtime.preprocess` (``kind`` says which)
``training_data``           free text: what the model was trained on
``training_data_hash``      sha256 of the training catalog's rows used (or ``unknown``)
``precision``               optional: ``fp32`` (default) or ``fp16`` (weights inside; the
                            inputs and output stay float32, see ``export --precision``)
==========================  ===========================================================

A model directory holds ``image.onnx`` and/or ``spectrum.onnx`` (any ``*.onnx`` whose
metadata names its modality) and optionally ``MODEL_CARD.md``. The default model ships in
``astroembed/data/models/default``. Only onnxruntime and NumPy are needed here.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astroembed.errors import ModelError
from astroembed.runtime.preprocess import FLUX_KIND, IMAGE_KINDS, SPECTRUM_KINDS, spectrum_length

__all__ = ["CONTRACT_VERSION", "DEFAULT_MODEL_DIR", "GPU_PROVIDERS", "MODALITIES", "PRECISIONS",
           "Encoder", "EncoderInfo", "check_contract", "encoder_info", "fallback_message", "find_encoders",
           "onnx_session", "open_encoder", "parse_metadata", "requested_providers"]

CONTRACT_VERSION = "1"
MODALITIES = ("image", "spectrum")
#: Precisions of an encoder's weights (metadata ``precision``; absent means fp32).
PRECISIONS = ("fp32", "fp16")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "models" / "default"
#: The first onnxruntime builds with a kernel for the ONNX Attention operator (opset 23), which
#: astroembed's exporter writes: the CPU build's, and the GPU build's CUDA kernel (pyproject's
#: ``cpu`` and ``gpu`` extras ask for these; a test keeps them equal).
MIN_ONNXRUNTIME = {"onnxruntime": "1.23", "onnxruntime-gpu": "1.25"}
REQUIRED_KEYS = ("astroembed_contract", "modality", "model_name", "model_version", "model_hash",
                 "embedding_dim", "inputs", "output", "preprocessing")
_KINDS = {"image": IMAGE_KINDS, "spectrum": SPECTRUM_KINDS}
#: Providers that run on a GPU, in the order they are preferred.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class EncoderInfo:
    """What one ONNX encoder declares (parsed from its metadata)."""

    path: Path
    modality: str
    name: str
    version: str
    hash: str
    dim: int
    inputs: tuple[tuple[str, tuple], ...]
    output: str
    preprocessing: dict
    training_data: str = ""
    training_data_hash: str = ""
    precision: str = "fp32"  # of the weights inside; inputs and outputs are float32 always
    metadata: dict = field(default_factory=dict, compare=False, repr=False)


def _json(path: Path, key: str, text: str):
    try:
        return json.loads(text)
    except ValueError as err:
        raise ModelError(f"{path}: metadata {key!r} is not valid JSON ({err}).") from None


def parse_metadata(path: str | os.PathLike, meta: dict[str, str]) -> EncoderInfo:
    """The :class:`EncoderInfo` an ONNX file's metadata declares, or ModelError naming what is
    missing or wrong."""
    path = Path(path)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelError(
            f"{path}: not an astroembed encoder: metadata lacks {', '.join(missing)}. An ONNX "
            "encoder must declare its input contract (see `astroembed export` and the README "
            "section 'Bring your own encoder').")
    if meta["astroembed_contract"] != CONTRACT_VERSION:
        raise ModelError(f"{path}: contract version {meta['astroembed_contract']!r}; this "
                         f"astroembed reads version {CONTRACT_VERSION}. Re-export the model.")
    modality = meta["modality"]
    if modality not in MODALITIES:
        raise ModelError(f"{path}: modality {modality!r}; expected image or spectrum.")
    try:
        dim = int(meta["embedding_dim"])
    except ValueError:
        raise ModelError(f"{path}: embedding_dim {meta['embedding_dim']!r} is not an integer.") from None
    inputs = _json(path, "inputs", meta["inputs"])
    prep = _json(path, "preprocessing", meta["preprocessing"])
    if not isinstance(inputs, list) or not all(isinstance(i, dict) and "name" in i and "shape" in i
                                               for i in inputs):
        raise ModelError(f"{path}: metadata 'inputs' must be a list of {{name, shape}}.")
    if not isinstance(prep, dict) or prep.get("kind") not in _KINDS[modality]:
        raise ModelError(f"{path}: preprocessing kind {prep.get('kind') if isinstance(prep, dict) else prep!r}"
                         f" is not one this astroembed knows for {modality} "
                         f"(expected {' or '.join(map(repr, _KINDS[modality]))}).")
    precision = meta.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ModelError(f"{path}: precision {precision!r}; expected "
                         f"{' or '.join(PRECISIONS)}.")
    return EncoderInfo(
        path=path, modality=modality, name=meta["model_name"], version=meta["model_version"],
        hash=meta["model_hash"], dim=dim,
        inputs=tuple((str(i["name"]), tuple(i["shape"])) for i in inputs),
        output=meta["output"], preprocessing=prep,
        training_data=meta.get("training_data", ""),
        training_data_hash=meta.get("training_data_hash", ""), precision=precision,
        metadata=dict(meta))


def _expected_shapes(info: EncoderInfo) -> dict[str, tuple]:
    """Input shapes (without batch) implied by the preprocessing the encoder declares."""
    prep = info.preprocessing
    if info.modality == "image":
        c = int(prep["crop"])
        return {"image": (3, c, c)}
    if prep["kind"] == FLUX_KIND:
        return {"flux": (int(prep["n_wave"]), 1)}
    return {"spectrum": (2, spectrum_length(prep)), "stats": (2,)}


def check_contract(info: EncoderInfo, session_inputs: list, session_outputs: list) -> None:
    """ModelError unless the graph's inputs/outputs agree with the declared contract and the
    preprocessing code of this astroembed (names, shapes, embedding dimension)."""
    declared = {name: shape for name, shape in info.inputs}
    try:
        expected = _expected_shapes(info)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{info.path}: preprocessing {info.preprocessing.get('kind')!r} lacks "
                         f"or misstates {err}; the input shapes cannot be known.") from None
    if set(declared) != set(expected):
        raise ModelError(f"{info.path}: declares inputs {sorted(declared)}; {info.modality} "
                         f"preprocessing produces {sorted(expected)}.")
    graph = {i.name: i for i in session_inputs}
    for name, shape in expected.items():
        if tuple(declared[name][1:]) != shape:
            raise ModelError(f"{info.path}: input {name!r} declared as {declared[name]}; the "
                             f"preprocessing it declares gives (batch, {', '.join(map(str, shape))}).")
        if name not in graph:
            raise ModelError(f"{info.path}: the graph has no input {name!r} (it has "
                             f"{', '.join(graph)}).")
        gshape = tuple(graph[name].shape)
        fixed = tuple(d for d in gshape[1:])
        if len(gshape) != len(shape) + 1 or any(isinstance(d, int) and d != s
                                                for d, s in zip(fixed, shape)):
            raise ModelError(f"{info.path}: graph input {name!r} has shape {list(gshape)}; "
                             f"expected [batch, {', '.join(map(str, shape))}].")
        if graph[name].type != "tensor(float)":
            raise ModelError(f"{info.path}: graph input {name!r} is {graph[name].type}; "
                             "expected tensor(float).")
    extra = set(graph) - set(expected)
    if extra:
        raise ModelError(f"{info.path}: the graph has inputs {sorted(extra)} that the "
                         "contract does not declare.")
    outputs = {o.name: o for o in session_outputs}
    if info.output not in outputs:
        raise ModelError(f"{info.path}: declared output {info.output!r} is not in the graph "
                         f"(outputs: {', '.join(outputs)}).")
    oshape = tuple(outputs[info.output].shape)
    if len(oshape) != 2 or (isinstance(oshape[1], int) and oshape[1] != info.dim):
        raise ModelError(f"{info.path}: output {info.output!r} has shape {list(oshape)}; "
                         f"expected [batch, {info.dim}] (embedding_dim).")


def requested_providers(device: str) -> list[str]:
    """onnxruntime providers to ask for; ModelError for ``cuda`` without a CUDA build."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "cuda" and not gpu:
        raise ModelError("--device cuda: this onnxruntime has no CUDA provider (available: "
                         f"{', '.join(available)}). Install the GPU build: "
                         "pip install 'astroembed[gpu]' (not together with the cpu extra).")
    if device not in ("auto", "cuda"):
        raise ModelError(f"--device {device!r}: expected auto, cpu or cuda.")
    return gpu + ["CPUExecutionProvider"]


#: Batch shapes whose buffers an encoder keeps per thread: the full batch, the last partial
#: one of a tile and a few shortened by unusable rows; older shapes are dropped.
BUFFER_SHAPES = 4


class _Buffers:
    """One thread's IO bindings and their pre-allocated buffers, one set per batch shape.

    Why pre-allocated: binding a buffer that outlives the call spares onnxruntime an output
    allocation per batch and, on a GPU, keeps the inputs and outputs in device memory that
    is reused instead of allocated and freed around every batch.
    """

    def __init__(self) -> None:
        self.by_shape: dict[tuple, tuple] = {}

    def get(self, shapes: tuple, make):
        """The buffers for batches of input ``shapes`` (made by ``make()`` the first time)."""
        entry = self.by_shape.pop(shapes, None)
        if entry is None:
            entry = make()
        self.by_shape[shapes] = entry  # most recent last
        while len(self.by_shape) > BUFFER_SHAPES:
            self.by_shape.pop(next(iter(self.by_shape)))
        return entry


class Encoder:
    """An open ONNX encoder: its declared contract and an onnxruntime session.

    ``requested`` are the providers asked for, ``providers`` those the session really uses
    (onnxruntime falls back to CPU silently when a GPU provider cannot start).
    """

    def __init__(self, info: EncoderInfo, session, providers: list[str],
                 requested: list[str] | None = None):
        self.info = info
        self.session = session
        self.providers = providers
        self.requested = list(requested) if requested is not None else list(providers)
        self._local = threading.local()  # IO bindings and buffers never cross threads

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] in GPU_PROVIDERS

    @property
    def fell_back(self) -> bool:
        """A GPU provider was asked for and the session runs without one."""
        return any(p in GPU_PROVIDERS for p in self.requested) and not self.on_gpu

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings ``(N, dim)`` float32 for preprocessed inputs (a new array each call).

        Runs through onnxruntime's IO binding, on CPU as on a GPU, so the path tests take
        is the one a GPU takes: inputs bound (host arrays on CPU, device buffers on a GPU),
        the output written into a buffer kept for this batch size and this thread.
        """
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        rows = len(next(iter(arrays.values())))
        shapes = tuple((k, v.shape) for k, v in sorted(arrays.items()))
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = _Buffers()
        binding, device_inputs, output = buffers.get(shapes, lambda: self._allocate(rows, arrays))
        for name, value in arrays.items():
            if self.on_gpu:
                device_inputs[name].update_inplace(value)  # host -> the kept device buffer
            else:
                binding.bind_cpu_input(name, value)  # no copy: onnxruntime reads the array
        try:
            self.session.run_with_iobinding(binding)
        except Exception as err:  # onnxruntime's own exception types
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ModelError(f"{self.info.path}: onnxruntime failed on a batch of {rows} rows "
                             f"({first}).") from None
        if self.on_gpu:
            return np.asarray(output.numpy(), dtype=np.float32)  # device -> a new host array
        return output.copy()  # the buffer is refilled by the next batch of this shape

    def _allocate(self, rows: int, arrays: dict[str, np.ndarray]) -> tuple:
        """A binding with the output (and on a GPU the inputs) bound to new buffers."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        shape = [rows, self.info.dim]
        if not self.on_gpu:
            output = np.empty(shape, dtype=np.float32)
            binding.bind_output(self.info.output, "cpu", 0, np.float32, shape,
                                output.ctypes.data)
            return binding, {}, output
        device_inputs = {name: ort.OrtValue.ortvalue_from_shape_and_type(
                             list(value.shape), np.float32, "cuda", 0)
                         for name, value in arrays.items()}
        for name, value in device_inputs.items():
            binding.bind_ortvalue_input(name, value)
        output = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
        binding.bind_ortvalue_output(self.info.output, output)
        return binding, device_inputs, output


def _provider_options(providers: list[str]) -> list:
    """TensorRT with an engine cache (building engines takes minutes; reuse them across runs
    and tiles) and full precision (fp16 would change the embeddings); others as they are."""
    cache = os.environ.get("ASTROEMBED_TRT_CACHE",
                           str(Path.home() / ".cache" / "astroembed" / "tensorrt"))
    return [(p, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
                 "trt_fp16_enable": "False"}) if p == "TensorrtExecutionProvider" else p
            for p in providers]


# onnxruntime's CPU kernel for the SkipLayerNormalization it fuses from Add + LayerNormalization
# is slower than the two nodes it replaces at the encoders' token shapes, so the encoders run
# faster without the fusion.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def onnx_session(path: Path, providers: list[str], threads: int | None):
    """An onnxruntime session set up as ``embed`` runs it (also used by the benchmarks)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Idle onnxruntime threads busy-wait by default: that takes the cores from the threads
    # reading, preprocessing and writing tiles beside it (embed overlaps them with the model).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    cpu_only = providers == ["CPUExecutionProvider"]
    try:
        disabled = list(CPU_DISABLED_OPTIMIZERS) if cpu_only else []
        return ort.InferenceSession(str(path), sess_options=opts,
                                    providers=_provider_options(providers),
                                    disabled_optimizers=disabled)
    except Exception as err:  # onnxruntime raises its own exception types for corrupt files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if any(w in first.lower() for w in ("opset", "implementation for", "registered")):
            build = "onnxruntime" if cpu_only else "onnxruntime-gpu"
            hint = (f"This onnxruntime ({ort.__version__}) does not know an operator or opset "
                    f"the file uses; astroembed's encoders need {build} "
                    f"{MIN_ONNXRUNTIME[build]} or newer (pip install -U {build}).")
        else:
            hint = "Re-export it or check that the file was copied completely."
        raise ModelError(f"{path}: not a loadable ONNX model ({first}). {hint}") from None


def open_encoder(path: str | os.PathLike, device: str = "cpu",
                 threads: int | None = None) -> Encoder:
    """Load and check one encoder. ``device``: ``cpu``, ``cuda`` (error without a GPU) or
    ``auto``. The providers actually in use are ``Encoder.providers``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file.")
    providers = requested_providers(device)
    session = onnx_session(path, providers, threads)
    used = session.get_providers()
    if device == "cuda" and used[0] not in GPU_PROVIDERS:
        raise ModelError(f"--device cuda: onnxruntime could not use a GPU for {path}: asked "
                         f"for {', '.join(providers)}, got {', '.join(used)}; check the NVIDIA "
                         "driver and CUDA libraries (`astroembed doctor` shows what each "
                         "device gets).")
    info = parse_metadata(path, dict(session.get_modelmeta().custom_metadata_map))
    check_contract(info, session.get_inputs(), session.get_outputs())
    return Encoder(info, session, used, requested=providers)


def fallback_message(encoder: Encoder) -> str | None:
    """What to tell the user when the session got fewer providers than were asked for (a GPU
    build that found no usable GPU), naming both; None when it got what it asked for."""
    if not encoder.fell_back:
        return None
    return (f"{encoder.info.path.name}: asked onnxruntime for {', '.join(encoder.requested)}; "
            f"the session got {', '.join(encoder.providers)}, so it runs on CPU (no usable "
            "GPU; --device cuda makes this an error, `astroembed doctor` shows why)")


def encoder_info(path: str | os.PathLike) -> EncoderInfo:
    """The contract of one encoder file (loads it on CPU to read and check the metadata)."""
    return open_encoder(path, device="cpu", threads=1).info


def find_encoders(model_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """``{modality: path}`` for the ``*.onnx`` files in ``model_dir`` (default model when None).

    ModelError if the directory is missing, has no encoder, two encoders of one modality, or
    encoders from different models (name or embedding dimension differ).
    """
    root = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    hint = (" The default model is missing from this installation: reinstall astroembed, run "
            "`make model`, or pass --model." if model_dir is None else "")
    if root.is_file() and root.suffix == ".onnx":
        files = [root]
    elif root.is_dir():
        files = sorted(root.glob("*.onnx"))
    else:
        raise ModelError(f"{root}: no such model directory or .onnx file.{hint}")
    if not files:
        raise ModelError(f"{root}: no .onnx encoder files (expected image.onnx and/or "
                         f"spectrum.onnx, as `astroembed export` writes).{hint}")
    found: dict[str, Path] = {}
    infos: dict[str, EncoderInfo] = {}
    for file in files:
        info = encoder_info(file)
        if info.modality in found:
            raise ModelError(f"{root}: two {info.modality} encoders ({found[info.modality].name}, "
                             f"{file.name}); keep one per modality.")
        found[info.modality], infos[info.modality] = file, info
    if len(infos) == 2:
        a, b = infos["image"], infos["spectrum"]
        if (a.name, a.dim) != (b.name, b.dim):
            raise ModelError(f"{root}: image and spectrum encoders come from different models "
                             f"({a.name}, d={a.dim} vs {b.name}, d={b.dim}).")
    return found
