"""`embed` with a spectrum encoder that takes the raw flux (preprocessing kind ``desi_flux``):
the model gets each row's flux as the catalog stores it, rows without a usable flux get a
null, and a model that does not fit is refused before any tile changes.

The reference runs the ONNX file with onnxruntime, one catalog row at a time, on the flux
read with pyarrow; the usable-row rule (every pixel finite, at least one non-zero) is
written here from the docstring of :mod:`astroembed.runtime.preprocess`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
from onnx import load_model, save_model

import astroembed
import tiny_models
from oracles import tile_with_pixels
from astroembed.catalog.reader import read_catalog_info
from astroembed.catalog.tiles import write_tile
from astroembed.catalog.writer import refresh_catalog, refresh_pixels
from astroembed.errors import ModelError
from astroembed.runtime.modelfile import encoder_info
from astroembed.runtime.preprocess import flux_inputs, flux_preprocessing

DIM = 8


@pytest.fixture(scope="module")
def flux_model(tmp_path_factory) -> Path:
    """A model directory holding only a raw-flux spectrum encoder."""
    root = tmp_path_factory.mktemp("flux") / "model"
    tiny_models.flux_encoder(root / "spectrum.onnx", dim=DIM)
    return root


def _replace_flux(table: pa.Table, flux: np.ndarray, null: np.ndarray) -> pa.Table:
    i = table.schema.get_field_index("flux")
    fld = table.schema.field(i)
    values = pa.array(flux.reshape(-1).astype(np.float32))
    return table.set_column(i, fld, pa.FixedSizeListArray.from_arrays(
        values, type=fld.type, mask=pa.array(null)))


@pytest.fixture(scope="module")
def base_catalog(small_survey, tmp_path_factory) -> Path:
    """A left join (rows without spectra) whose largest tile has a spectrum with a NaN
    pixel, one of zeros, one null flux with its ivar kept, and one with ivar all zero (the
    raw-flux model ignores ivar: that row is embedded)."""
    out = tmp_path_factory.mktemp("fluxcat") / "matched"
    astroembed.crossmatch(small_survey / "legacysurvey", small_survey / "desi", out,
                          how="left", max_rows=40)
    info = read_catalog_info(out)
    big = max(info.tiles, key=lambda t: info.rows[t])
    table = tile_with_pixels(out, *big)
    null = ~table.column("flux").is_valid().to_numpy(zero_copy_only=False)
    flux = np.stack([np.zeros(7781, np.float32) if v is None else np.asarray(v, np.float32)
                     for v in table.column("flux").to_pylist()])
    has = np.flatnonzero(~null)
    assert has.size >= 5
    flux[has[0], 100] = np.nan
    flux[has[1]] = 0.0
    null[has[2]] = True
    table = _replace_flux(table, flux, null)
    i = table.schema.get_field_index("ivar")
    ivar = table.column("ivar").combine_chunks()
    values = ivar.values.to_numpy(zero_copy_only=False).reshape(len(ivar), -1).copy()
    values[has[3]] = 0.0
    table = table.set_column(i, table.schema.field(i), pa.FixedSizeListArray.from_arrays(
        pa.array(values.reshape(-1)), type=ivar.type, mask=ivar.is_null()))
    write_tile(out, *big, table)
    refresh_pixels(out)
    refresh_catalog(out)
    return out


@pytest.fixture
def catalog(base_catalog, tmp_path) -> Path:
    path = tmp_path / "cat"
    shutil.copytree(base_catalog, path)
    return path


def _reference(table: pa.Table, model: Path) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = np.full((table.num_rows, DIM), np.nan, np.float32)
    for i, value in enumerate(table.column("flux").to_pylist()):
        if value is None:
            continue
        f = np.asarray(value, np.float32)
        if not np.isfinite(f).all() or not np.any(f != 0):
            continue
        out[i] = session.run(None, {"flux": f[None, :, None]})[0][0]
    return out


def test_raw_flux_model_embeds_the_catalog_flux(catalog, flux_model):
    summary = astroembed.embed(catalog, model=flux_model, modality="spectrum", batch_size=16)
    info = read_catalog_info(catalog)
    table = pa.concat_tables([tile_with_pixels(catalog, *t) for t in info.tiles])
    want = _reference(table, flux_model / "spectrum.onnx")
    column = table.column("embedding_spectrum")
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    assert np.array_equal(valid, np.isfinite(want).all(axis=1))
    got = np.array([v for v in column.to_pylist() if v is not None], np.float32)
    np.testing.assert_allclose(got, want[valid], atol=2e-5, rtol=0)
    counts = summary["columns"]["embedding_spectrum"]
    assert counts["null_unusable_input"] == 2  # the NaN pixel and the zeros
    missing = int((~table.column("flux").is_valid().to_numpy(zero_copy_only=False)).sum())
    assert counts["null_missing_input"] == missing and missing >= 1
    assert counts["embedded"] == int(valid.sum())
    assert "embedding_image" not in table.column_names


def test_a_spectrum_only_model_needs_modality_spectrum(catalog, flux_model):
    with pytest.raises(ModelError, match="no image encoder.*--modality spectrum"):
        astroembed.embed(catalog, model=flux_model)


def test_flux_inputs_shape_and_unusable_rows():
    prep = flux_preprocessing()
    flux = np.random.default_rng(0).normal(5, 1, (4, 7781)).astype(np.float32)
    flux[1, 7780] = np.inf
    flux[2] = 0.0
    inputs, ok = flux_inputs(flux, prep)
    assert list(inputs) == ["flux"] and inputs["flux"].shape == (4, 7781, 1)
    assert inputs["flux"].dtype == np.float32
    assert ok.tolist() == [True, False, False, True]
    np.testing.assert_array_equal(inputs["flux"][[0, 3], :, 0], flux[[0, 3]])
    assert not inputs["flux"][[1, 2]].any()
    with pytest.raises(ValueError, match=r"\(N, 7781\)"):
        flux_inputs(flux[:, :100], prep)


def test_the_contract_of_a_raw_flux_encoder(tmp_path):
    info = encoder_info(tiny_models.flux_encoder(tmp_path / "ok.onnx"))
    assert info.preprocessing["kind"] == "desi_flux" and info.inputs == (
        ("flux", ("batch", 7781, 1)),)
    wrong = tiny_models.flux_encoder(tmp_path / "wrong.onnx", graph_length=7000)
    with pytest.raises(ModelError, match=r"graph input 'flux' has shape \['batch', 7000, 1\]"):
        encoder_info(wrong)
    unknown = tiny_models.flux_encoder(tmp_path / "unknown.onnx",
                                       prep=dict(flux_preprocessing(), kind="desi_raw"))
    with pytest.raises(ModelError, match="'desi_raw' is not one.*'desi_zscore' or 'desi_flux'"):
        encoder_info(unknown)
    prep = {k: v for k, v in flux_preprocessing().items() if k != "n_wave"}
    no_grid = tiny_models.flux_encoder(tmp_path / "no_grid.onnx", prep=dict(prep, n_wave=7781))
    model = load_model(str(no_grid))  # the same graph, its preprocessing without n_wave
    for entry in model.metadata_props:
        if entry.key == "preprocessing":
            entry.value = json.dumps(prep)
    save_model(model, str(no_grid))
    with pytest.raises(ModelError, match="'desi_flux' lacks or misstates 'n_wave'"):
        encoder_info(no_grid)


def test_a_model_on_another_grid_is_refused_before_any_tile(catalog, tmp_path):
    model = tiny_models.flux_encoder(tmp_path / "m" / "spectrum.onnx",
                                     prep=dict(flux_preprocessing(), n_wave=7000))
    before = {p: p.stat().st_mtime_ns for p in catalog.rglob("*") if p.is_file()}
    with pytest.raises(ModelError, match="n_wave=7000.*column flux"):
        astroembed.embed(catalog, model=model.parent, modality="spectrum")
    assert {p: p.stat().st_mtime_ns for p in catalog.rglob("*") if p.is_file()} == before
