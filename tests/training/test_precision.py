"""fp16 copies of encoders (``export --precision fp16``) on the tiny hand-built encoders:
float32 at the boundary, fp16 inside, close to fp32 after L2 normalisation, refused when
they cannot be.

The oracle is onnxruntime called directly on both files and NumPy's L2 normalisation. Where
this onnxruntime has no CPU kernel for an fp16 operator, the comparison skips and says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

onnx = pytest.importorskip("onnx")

import astroembed  # noqa: E402
import tiny_models  # noqa: E402
from astroembed.errors import ModelError  # noqa: E402
from astroembed.runtime.modelfile import open_encoder  # noqa: E402
from astroembed.catalog.layout import tile_path  # noqa: E402
from astroembed.catalog.reader import read_catalog_info  # noqa: E402
from astroembed.training.export import FP16_TOLERANCE, compare_fp16, fp16_hash, write_fp16  # noqa: E402

CROP, DIM = 16, 8
BUILDERS = {"image": tiny_models.image_encoder, "spectrum": tiny_models.spectrum_encoder,
            "flux": tiny_models.flux_encoder}


def feeds_for(path: Path, rows: int = 9, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs of the shapes the graph declares."""
    rng = np.random.default_rng(seed)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {i.name: rng.normal(size=[rows if isinstance(d, str) else d for d in i.shape])
            .astype(np.float32) for i in session.get_inputs()}


def cpu_session(path: Path) -> ort.InferenceSession:
    """A plain CPU session, or a skip naming what this onnxruntime lacks for fp16."""
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types
        pytest.skip(f"onnxruntime {ort.__version__} cannot run this fp16 graph on CPU "
                    f"({str(err).splitlines()[0]}); the GPU comparison is `astroembed doctor "
                    "--device cuda`")


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fp32")
    return {k: build(root / f"{k}.onnx", dim=DIM) for k, build in BUILDERS.items()}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_fp16_copy_is_fp16_inside_float32_outside_and_close(fp32, tmp_path, kind):
    src, dst = fp32[kind], tmp_path / f"{kind}.onnx"
    write_fp16(src, dst)
    model = onnx.load(str(dst))
    FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {FLOAT}
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {FLOAT}
    weights = [i for i in model.graph.initializer if i.data_type in (FLOAT, HALF)]
    assert weights and all(i.data_type == HALF for i in weights)
    meta = {p.key: p.value for p in model.metadata_props}
    source = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
    assert meta["precision"] == "fp16" and meta["fp32_model_hash"] == source["model_hash"]
    assert meta["model_hash"] == fp16_hash(source["model_hash"]) != source["model_hash"]

    feeds = feeds_for(src)
    half = cpu_session(dst).run(None, feeds)[0]
    full = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert half.dtype == np.float32
    diff = np.abs(unit(half) - unit(full)).max()
    assert 0 < diff <= FP16_TOLERANCE  # rounded, as fp16 does, and no further

    encoder = open_encoder(dst)  # the contract holds: embed feeds it as the fp32 one
    assert encoder.info.precision == "fp16" and open_encoder(src).info.precision == "fp32"
    assert np.array_equal(encoder.run(feeds), half)
    assert compare_fp16(src, dst, feeds) == {"max_abs_diff_l2": diff, "not_run": None}


def test_a_copy_that_is_not_close_is_refused(fp32, tmp_path):
    other = tiny_models.image_encoder(tmp_path / "other32.onnx", dim=DIM, seed=5)
    write_fp16(other, tmp_path / "other16.onnx")
    cpu_session(tmp_path / "other16.onnx")
    with pytest.raises(ModelError, match="differs from fp32 by .* after L2 normalisation"):
        compare_fp16(fp32["image"], tmp_path / "other16.onnx", feeds_for(fp32["image"]))


def test_weights_beyond_fp16_range_are_refused(fp32, tmp_path):
    model = onnx.load(str(fp32["image"]))
    w = next(i for i in model.graph.initializer if i.name == "W")
    values = onnx.numpy_helper.to_array(w).copy()
    values[0, 0] = 1e6
    w.CopyFrom(onnx.numpy_helper.from_array(values, "W"))
    onnx.save_model(model, str(tmp_path / "big.onnx"))
    with pytest.raises(ModelError, match=r"W holds values up to 1e\+06, beyond fp16"):
        write_fp16(tmp_path / "big.onnx", tmp_path / "big16.onnx")
    assert not (tmp_path / "big16.onnx").exists()


def test_embed_runs_an_fp16_pair_as_it_runs_fp32(tiled_catalog, tmp_path):
    """The same catalog embedded with a pair and its fp16 copy: same rows embedded, each
    embedding within fp16's rounding, the column recording the fp16 model's hash."""
    pair = tiny_models.model_dir(tmp_path / "fp32", crop=CROP, dim=DIM, seed=4)
    half = tmp_path / "fp16"
    half.mkdir()
    for modality in ("image", "spectrum"):
        write_fp16(pair / f"{modality}.onnx", half / f"{modality}.onnx")
    cpu_session(half / "image.onnx"), cpu_session(half / "spectrum.onnx")
    tables = {}
    for name, model in (("fp32", pair), ("fp16", half)):
        catalog = tmp_path / f"cat-{name}"
        shutil.copytree(tiled_catalog, catalog)
        summary = astroembed.embed(catalog, model=str(model), batch_size=16, device="cpu")
        assert summary["tiles_failed"] == 0
        tables[name] = read_embeddings(catalog)
    for column in ("embedding_image", "embedding_spectrum"):
        (a, hash_a), (b, hash_b) = tables["fp32"][column], tables["fp16"][column]
        assert np.array_equal(np.isnan(a).all(axis=1), np.isnan(b).all(axis=1))
        ok = ~np.isnan(a).all(axis=1)
        assert ok.sum() > 0 and np.abs(a[ok] - b[ok]).max() <= FP16_TOLERANCE
        assert hash_b == fp16_hash(hash_a)


def read_embeddings(catalog: Path) -> dict[str, tuple[np.ndarray, str]]:
    """Per embedding column: its values over every tile (NaN rows for nulls), and the model
    hash in its field metadata (pyarrow only)."""
    info = read_catalog_info(catalog)
    out = {}
    for column in ("embedding_image", "embedding_spectrum"):
        parts, hashes = [], set()
        for tile in info.tiles:
            table = pq.read_table(tile_path(catalog, *tile), columns=[column])
            hashes.add(table.schema.field(column).metadata[b"model_hash"].decode())
            for value in table.column(column).to_pylist():
                parts.append(np.full(DIM, np.nan) if value is None else np.asarray(value))
        (model_hash,) = hashes
        out[column] = (np.stack(parts), model_hash)
    return out


def test_an_fp16_graph_this_onnxruntime_cannot_run_is_recorded_as_not_compared(fp32, tmp_path):
    """onnxruntime's CPU build casts around the fp16 operators it has no kernel for, so the
    missing operator here is one no build has: the comparison is left to the GPU, saying why."""
    write_fp16(fp32["image"], tmp_path / "image16.onnx")
    model = onnx.load(str(tmp_path / "image16.onnx"))
    last = model.graph.node[-1]
    model.graph.node.insert(len(model.graph.node) - 1, onnx.helper.make_node(
        "Unheard", [last.input[0]], ["unheard"], domain="org.example.none"))
    model.opset_import.append(onnx.helper.make_opsetid("org.example.none", 1))
    onnx.save_model(model, str(tmp_path / "image16.onnx"))
    result = compare_fp16(fp32["image"], tmp_path / "image16.onnx", feeds_for(fp32["image"]))
    assert result["max_abs_diff_l2"] is None
    assert "cannot run the fp16 graph on CPU" in result["not_run"]
    assert "astroembed doctor --model DIR --device cuda" in result["not_run"]


def test_a_broken_fp16_file_is_an_error_not_a_skipped_comparison(fp32, tmp_path):
    (tmp_path / "image16.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        compare_fp16(fp32["image"], tmp_path / "image16.onnx", feeds_for(fp32["image"]))
