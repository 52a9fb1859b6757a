"""The encoder's run path (onnxruntime IO binding with buffers kept per batch shape and per
thread) against onnxruntime's plain ``session.run``, and what provider selection reports.

The oracle is onnxruntime called directly: a session of its own, run with ``session.run``.
GPU fallback is tested on the CPU build by making ``get_available_providers`` list CUDA, as a
GPU build on a machine without a usable GPU does; no test needs a GPU.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import tiny_models
from astroembed.errors import ModelError
from astroembed.runtime import modelfile
from astroembed.runtime.modelfile import open_encoder
from astroembed.runtime.preprocess import default_spectrum_preprocessing, spectrum_length

DIM = 8
CROP = 16

#: The CPU build warns when asked for a provider it lacks, which the mocked GPU build does.
pytestmark = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_models.model_dir(tmp_path_factory.mktemp("models") / "tiny", crop=CROP,
                                 dim=DIM, seed=3)


def _inputs(modality: str, rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if modality == "image":
        return {"image": rng.normal(size=(rows, 3, CROP, CROP)).astype(np.float32)}
    length = spectrum_length(default_spectrum_preprocessing())
    return {"spectrum": rng.normal(size=(rows, 2, length)).astype(np.float32),
            "stats": rng.normal(size=(rows, 2)).astype(np.float32)}


def _oracle(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("modality", ["image", "spectrum"])
def test_io_binding_equals_plain_run_bit_for_bit(model, modality):
    """Full batches, a partial last batch (another shape), and back: each result is the
    plain run's, bit for bit, and a result is not overwritten by the next batch."""
    encoder = open_encoder(model / f"{modality}.onnx", threads=1)
    batches = [_inputs(modality, n, seed) for seed, n in enumerate((16, 16, 5, 16, 1, 5))]
    results = [encoder.run(b) for b in batches]
    for feeds, got in zip(batches, results):
        want = _oracle(model / f"{modality}.onnx", feeds)
        assert got.dtype == np.float32 and got.shape == (len(next(iter(feeds.values()))), DIM)
        assert np.array_equal(got, want)


def test_buffers_are_kept_per_shape_and_bounded(model):
    encoder = open_encoder(model / "image.onnx", threads=1)
    for n in (4, 4, 3, 2, 1, 5, 4):
        encoder.run(_inputs("image", n, n))
    kept = encoder._local.buffers.by_shape
    assert len(kept) == modelfile.BUFFER_SHAPES
    assert list(kept)[-1] == (("image", (4, 3, CROP, CROP)),)  # the most recent last


def test_threads_do_not_share_buffers(model):
    """One encoder run from several threads at once, each with its own inputs of the same
    shape: every thread gets its own answer."""
    encoder = open_encoder(model / "image.onnx", threads=1)
    feeds = [_inputs("image", 8, seed) for seed in range(4)]
    want = [_oracle(model / "image.onnx", f) for f in feeds]
    got: dict[int, list[np.ndarray]] = {i: [] for i in range(4)}
    start = threading.Barrier(4)

    def work(i: int) -> None:
        start.wait()
        for _ in range(20):
            got[i].append(encoder.run(feeds[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert len(got[i]) == 20
        assert all(np.array_equal(g, want[i]) for g in got[i])


def test_a_model_that_fails_on_a_batch_is_a_model_error(model):
    encoder = open_encoder(model / "image.onnx", threads=1)
    with pytest.raises(ModelError, match="failed on a batch of 2 rows"):
        encoder.run({"image": np.zeros((2, 3, CROP + 1, CROP), np.float32)})


# ----------------------------------------------------------------------------- providers

@pytest.fixture
def gpu_build_without_gpu(monkeypatch):
    """A build that lists CUDA among its providers, on a machine where it cannot start:
    the session falls back to CPU (the real CPU build does exactly that when asked)."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a real CUDA provider")
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_auto_on_a_gpu_build_without_gpu_reports_the_fallback(model, gpu_build_without_gpu):
    encoder = open_encoder(model / "image.onnx", device="auto", threads=1)
    assert encoder.requested == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert encoder.providers == encoder.session.get_providers() == ["CPUExecutionProvider"]
    assert encoder.fell_back and not encoder.on_gpu
    message = modelfile.fallback_message(encoder)
    assert "CUDAExecutionProvider" in message and "got CPUExecutionProvider" in message


def test_cuda_on_a_gpu_build_without_gpu_is_an_error_naming_both(model, gpu_build_without_gpu):
    with pytest.raises(ModelError, match=r"asked for CUDAExecutionProvider, "
                                         r"CPUExecutionProvider, got CPUExecutionProvider"):
        open_encoder(model / "image.onnx", device="cuda", threads=1)


def test_cpu_asked_is_not_a_fallback(model, gpu_build_without_gpu):
    encoder = open_encoder(model / "image.onnx", device="cpu", threads=1)
    assert encoder.requested == encoder.providers == ["CPUExecutionProvider"]
    assert modelfile.fallback_message(encoder) is None


@pytest.fixture
def small_catalog(tiled_catalog, tmp_path) -> Path:
    shutil.copytree(tiled_catalog, tmp_path / "cat")
    return tmp_path / "cat"


def test_embed_warns_and_reports_what_the_session_got(model, gpu_build_without_gpu,
                                                      small_catalog, caplog):
    import astroembed

    with caplog.at_level(logging.WARNING, logger="astroembed"):
        summary = astroembed.embed(small_catalog, model=str(model), device="auto",
                                   batch_size=16, modality="image", name="fallback")
    assert summary["providers"] == {"image": ["CPUExecutionProvider"]}
    warned = [r.getMessage() for r in caplog.records if "asked onnxruntime" in r.getMessage()]
    assert warned and "CUDAExecutionProvider" in warned[0]


@pytest.mark.gpu
def test_device_buffers_on_cuda_agree_with_cpu(model):
    """Runs where onnxruntime can use a GPU: the device-side buffers (inputs copied into kept
    OrtValues, the output copied out) give what CPU gives, batch after batch."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA provider in this onnxruntime")
    try:
        encoder = open_encoder(model / "image.onnx", device="cuda", threads=1)
    except ModelError as err:
        pytest.skip(f"no usable CUDA GPU: {err}")
    batches = [_inputs("image", n, seed) for seed, n in enumerate((16, 16, 5, 16))]
    results = [encoder.run(b) for b in batches]
    for feeds, got in zip(batches, results):
        np.testing.assert_allclose(got, _oracle(model / "image.onnx", feeds), atol=1e-4, rtol=0)
