"""`astroembed embed`: embeddings equal an independent reference, tiles are skipped, resumed
and rewritten atomically, and every bad argument is one clear line before anything changes.

The reference (``ref_image_inputs``, ``ref_spectrum_inputs``) is written here from the
formulas in the docstring of :mod:`astroembed.runtime.preprocess`, one row at a time in float64; it
does not call astroembed's preprocessing. Models are tiny random-weight ONNX files
(``tests/tiny_models.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import astroembed
import tiny_models
from oracles import tile_with_pixels
from astroembed.cli import app
from astroembed.config import EmbedConfig
from astroembed.runtime.embedding import FIELD_KEYS
from astroembed.errors import AstroembedError, ConfigError, InputError, ModelError, OutputError
from astroembed.catalog.layout import tile_path
from astroembed.catalog.reader import image_array, read_catalog_info
from astroembed.catalog.tiles import write_tile
from astroembed.catalog.writer import CatalogWriter, refresh_catalog, refresh_pixels
from astroembed.catalog.lock import CatalogLock
from astroembed.runtime.orchestrate import embed
from astroembed.runtime.preprocess import default_image_preprocessing, default_spectrum_preprocessing

runner = CliRunner()
DIM = 8
CROP = 16


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A matching tiny pair, a second pair (other weights), and broken ones."""
    root = tmp_path_factory.mktemp("models")
    out = {"tiny": tiny_models.model_dir(root / "tiny", crop=CROP, dim=DIM, seed=0),
           "other": tiny_models.model_dir(root / "other", crop=CROP, dim=DIM, seed=10)}
    bands = dict(default_image_preprocessing(CROP), bands="gri")
    out["wrong_bands"] = tiny_models.image_encoder(root / "wrong_bands.onnx", crop=CROP,
                                                   dim=DIM, prep=bands)
    grid = dict(default_spectrum_preprocessing(), n_wave=7000)
    out["wrong_grid"] = tiny_models.spectrum_encoder(root / "wrong_grid.onnx", dim=DIM, prep=grid)
    out["wrong_length"] = tiny_models.spectrum_encoder(root / "wrong_length.onnx", dim=DIM,
                                                       graph_length=1000)
    out["big_crop"] = tiny_models.image_encoder(root / "big_crop.onnx", crop=48, dim=DIM)
    out["truncated"] = tiny_models.truncated_copy(out["tiny"] / "image.onnx",
                                                  root / "truncated" / "image.onnx")
    return out


def _set_rows(table: pa.Table, column: str, values: np.ndarray) -> pa.Table:
    """Replace a fixed-size-list column's values, keeping its nulls and field metadata."""
    i = table.schema.get_field_index(column)
    fld = table.schema.field(i)
    old = table.column(i).combine_chunks()
    mask = pa.array(~old.is_valid().to_numpy(zero_copy_only=False))
    flat = pa.array(values.reshape(-1).astype(np.float32))
    if isinstance(fld.type, pa.FixedShapeTensorType):
        storage = pa.FixedSizeListArray.from_arrays(flat, fld.type.storage_type.list_size,
                                                    mask=mask)
        new = pa.ExtensionArray.from_storage(fld.type, storage)
    else:
        new = pa.FixedSizeListArray.from_arrays(flat, type=fld.type, mask=mask)
    return table.set_column(i, fld, new)


@pytest.fixture(scope="module")
def base_catalog(small_survey, tmp_path_factory) -> Path:
    """A left-join catalog (imaging rows without spectra) in several tiles, with a few rows
    made unusable on purpose: a NaN cutout, an empty cutout, a spectrum with no good pixel."""
    out = tmp_path_factory.mktemp("embed") / "matched"
    astroembed.crossmatch(small_survey / "legacysurvey", small_survey / "desi", out,
                                  how="left", max_rows=40)
    info = read_catalog_info(out)
    big = max(info.tiles, key=lambda t: info.rows[t])
    table = tile_with_pixels(out, *big)
    images = image_array(table.column("image")).copy()
    images[0] = np.nan
    images[1] = 0.0
    table = _set_rows(table, "image", images)
    has_spec = np.flatnonzero(table.column("ivar").is_valid().to_numpy(zero_copy_only=False))
    ivar = np.stack([np.zeros(7781, np.float32) if v is None else np.asarray(v, np.float32)
                     for v in table.column("ivar").to_pylist()])
    ivar[has_spec[0]] = 0.0
    table = _set_rows(table, "ivar", ivar)
    write_tile(out, *big, table)
    refresh_pixels(out)
    refresh_catalog(out)
    return out


@pytest.fixture
def catalog(base_catalog, tmp_path) -> Path:
    path = tmp_path / "cat"
    shutil.copytree(base_catalog, path)
    return path


def cfg(catalog: Path, model: Path | None, **kw) -> EmbedConfig:
    return EmbedConfig(catalog=str(catalog), model=str(model) if model else None, **kw)


def read_all(catalog: Path) -> pa.Table:
    """Every tile's rows, in tile order (pyarrow only)."""
    info = read_catalog_info(catalog)
    return pa.concat_tables([tile_with_pixels(catalog, *t) for t in info.tiles])


def snapshot(path: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``path`` with its mtime and bytes."""
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(path.rglob("*")) if p.is_file()}


def as_array(column: pa.ChunkedArray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(values (N, dim) with NaN for nulls, valid mask)."""
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    out = np.full((len(column), dim), np.nan, np.float32)
    rows = column.to_pylist()
    for i in np.flatnonzero(valid):
        out[i] = rows[i]
    return out, valid


# ----------------------------------------------------------------------------- reference

def ref_image_inputs(cutout: np.ndarray, prep: dict) -> np.ndarray | None:
    """One (3, H, W) cutout -> (3, crop, crop) input, or None if unusable (module docstring of
    astroembed.runtime.preprocess: centre crop, s_b = max(0, x_b scale_b + m), I = mean_b s_b,
    clip(s_b asinh(Q I) / (sqrt(Q) I), 0, 1), I = 1e-6 where 0)."""
    crop = prep["crop"]
    h, w = cutout.shape[1:]
    top, left = (h - crop) // 2, (w - crop) // 2
    x = cutout[:, top:top + crop, left:left + crop].astype(np.float64)
    if not np.isfinite(x).all() or not np.any(x != 0):
        return None
    scale = np.array(prep["scales"], np.float64)[:, None, None]
    s = np.maximum(0.0, x * scale + prep["m"])
    intensity = s.mean(axis=0)
    q = prep["Q"]
    safe = np.where(intensity == 0, 1e-6, intensity)
    return np.clip(s * np.arcsinh(q * intensity) / (np.sqrt(q) * safe), 0.0, 1.0)


def ref_spectrum_inputs(flux: np.ndarray, ivar: np.ndarray, prep: dict):
    """One spectrum -> ((2, L) input, (2,) stats), or None if unusable: inverse-variance
    binning by ``bin`` (trailing pixels dropped), z-score over good binned pixels, trust
    channel clip(sqrt(ivar_binned) std / snr_scale, 0, 1), stats [asinh(mean), log(std)]."""
    nbin, length = prep["bin"], prep["n_wave"] // prep["bin"]
    flux, ivar = flux.astype(np.float64), ivar.astype(np.float64)
    binned, weight = np.zeros(length), np.zeros(length)
    for j in range(length):
        f, v = flux[j * nbin:(j + 1) * nbin], ivar[j * nbin:(j + 1) * nbin]
        good = np.isfinite(f) & np.isfinite(v) & (v > 0)
        weight[j] = v[good].sum()
        if weight[j] > 0:
            binned[j] = (f[good] * v[good]).sum() / weight[j]
    valid = weight > 0
    if valid.sum() < prep["min_valid_fraction"] * length:
        return None
    mean = binned[valid].mean()
    std = np.sqrt(np.mean((binned[valid] - mean) ** 2))
    if not std > 0:
        return None
    z = np.where(valid, (binned - mean) / std, 0.0)
    trust = np.clip(np.sqrt(weight) * std / prep["snr_scale"], 0.0, 1.0)
    return np.stack([z, trust]), np.array([np.arcsinh(mean), np.log(std)])


def reference_embeddings(table: pa.Table, model_dir: Path) -> dict[str, np.ndarray]:
    """What the encoders give on the reference inputs; NaN rows where no embedding is due."""
    out = {}
    for modality in ("image", "spectrum"):
        session = ort.InferenceSession(str(model_dir / f"{modality}.onnx"),
                                       providers=["CPUExecutionProvider"])
        prep = json.loads(session.get_modelmeta().custom_metadata_map["preprocessing"])
        result = np.full((table.num_rows, DIM), np.nan, np.float32)
        for i in range(table.num_rows):
            if modality == "image":
                cutout = table.column("image")[i]
                x = None if not cutout.is_valid else ref_image_inputs(
                    np.asarray(cutout.to_numpy(), np.float32), prep)
                feeds = None if x is None else {"image": x[None].astype(np.float32)}
            else:
                f, v = table.column("flux")[i], table.column("ivar")[i]
                x = None if not (f.is_valid and v.is_valid) else ref_spectrum_inputs(
                    np.asarray(f.as_py(), np.float32), np.asarray(v.as_py(), np.float32), prep)
                feeds = None if x is None else {"spectrum": x[0][None].astype(np.float32),
                                                "stats": x[1][None].astype(np.float32)}
            if feeds is not None:
                result[i] = session.run(None, feeds)[0][0]
        out[modality] = result
    return out


# ----------------------------------------------------------------------------- correctness

def test_embeddings_equal_independent_reference(catalog, models):
    summary = embed(cfg(catalog, models["tiny"], batch_size=16))
    table = read_all(catalog)
    expected = reference_embeddings(table, models["tiny"])
    for modality, ref in expected.items():
        got, valid = as_array(table.column(f"embedding_{modality}"), DIM)
        assert np.array_equal(valid, np.isfinite(ref).all(axis=1)), modality
        np.testing.assert_allclose(got[valid], ref[valid], atol=2e-5, rtol=0)
    image, spectrum = summary["columns"]["embedding_image"], summary["columns"]["embedding_spectrum"]
    assert image["null_unusable_input"] == 2 and image["null_missing_input"] == 0
    assert spectrum["null_unusable_input"] >= 1 and spectrum["null_missing_input"] > 0
    assert summary["rows_embedded"] == table.num_rows and summary["tiles_failed"] == 0
    assert summary["providers"]["image"] == ["CPUExecutionProvider"]


def test_output_schema_metadata_and_readers(catalog, models):
    import lsdb

    embed(cfg(catalog, models["tiny"]))
    info = read_catalog_info(catalog)
    assert info.complete and info.properties["astroembed_status"] == "complete"
    image_hash = ort.InferenceSession(str(models["tiny"] / "image.onnx")).get_modelmeta(
    ).custom_metadata_map["model_hash"]
    common = pq.read_schema(catalog / "main" / "dataset" / "_common_metadata")
    for schema in (common, pq.read_schema(tile_path(catalog, *info.tiles[0]))):
        fld = schema.field("embedding_image")
        assert fld.type == pa.list_(pa.float32(), DIM)
        meta = {k.decode(): v.decode() for k, v in fld.metadata.items()}
        assert meta["model_name"] == "tiny" and meta["model_hash"] == image_hash
        assert meta["embedding_dim"] == str(DIM) and meta["created"]
        assert set(meta) == set(FIELD_KEYS)
        assert schema.field("embedding_spectrum").metadata[b"modality"] == b"spectrum"
    prov = info.provenance["embeddings"]["embedding_image"]
    table = read_all(catalog)
    assert prov["model_hash"] == image_hash and prov["embedding_dim"] == DIM
    assert prov["rows_embedded"] == table.num_rows - 2 and prov["rows_null"] == 2
    assert info.provenance["embeddings"]["embedding_spectrum"]["rows_null"] == \
        table.column("embedding_spectrum").null_count
    assert pq.read_metadata(catalog / "main" / "dataset" / "_metadata").num_rows == table.num_rows
    frame = lsdb.open_catalog(catalog).compute()
    assert len(frame) == table.num_rows
    keys = zip(table.column("RA").to_pylist(), table.column("DEC").to_pylist())
    by_position = dict(zip(keys, table.column("embedding_image").to_pylist()))
    assert len(by_position) == table.num_rows
    for ra, dec, value in zip(frame["RA"], frame["DEC"], frame["embedding_image"]):
        expected = by_position[(ra, dec)]
        if expected is None:
            assert np.ndim(value) == 0 and bool(pd.isna(value))
        else:
            np.testing.assert_array_equal(np.asarray(value, np.float32), expected)


def test_batches_never_exceed_batch_size(catalog, models, monkeypatch):
    from astroembed.runtime.modelfile import Encoder

    sizes = []
    original = Encoder.run

    def spy(self, inputs):
        sizes.append(len(next(iter(inputs.values()))))
        return original(self, inputs)

    monkeypatch.setattr(Encoder, "run", spy)
    embed(cfg(catalog, models["tiny"], batch_size=3))
    assert sizes and max(sizes) <= 3


# ----------------------------------------------------------------------------- tiles, skip, force

def test_tile_selection_embeds_only_those_tiles(catalog, models):
    info = read_catalog_info(catalog)
    chosen = info.tiles[:2]
    before = snapshot(catalog / "main" / "dataset")
    summary = embed(cfg(catalog, models["tiny"], tiles=tuple(f"{o}/{p}" for o, p in chosen)))
    assert summary["tiles"] == 2 and summary["tiles_embedded"] == 2
    after = snapshot(catalog / "main" / "dataset")
    for tile in info.tiles:
        key = str(tile_path(catalog, *tile).relative_to(catalog / "main" / "dataset"))
        assert (after[key] != before[key]) == (tile in chosen), tile
    assert not summary["complete"] and not read_catalog_info(catalog).complete
    chosen_files = {k: after[k] for k in after if any(f"Npix={p}." in k for _, p in chosen)}
    summary = embed(cfg(catalog, models["tiny"]))
    assert summary["tiles_skipped"] == 2 and summary["complete"]
    final = snapshot(catalog / "main" / "dataset")
    assert all(final[k] == v for k, v in chosen_files.items())


def test_tile_that_is_not_a_tile_names_the_real_ones(catalog, models):
    order, pixel = read_catalog_info(catalog).tiles[-1]
    with pytest.raises(InputError, match=f"lies inside tile {order}/{pixel}"):
        embed(cfg(catalog, models["tiny"], tiles=(f"{order + 1}/{pixel * 4}",)))


def test_skip_force_and_another_model(catalog, models):
    embed(cfg(catalog, models["tiny"]))
    first = read_all(catalog)
    before = snapshot(catalog)
    summary = embed(cfg(catalog, models["tiny"]))
    assert summary["tiles_embedded"] == 0 and summary["tiles_skipped"] == summary["tiles"]
    assert snapshot(catalog) == before  # nothing touched, not even hats.properties

    summary = embed(cfg(catalog, models["tiny"], force=True))
    assert summary["tiles_embedded"] == summary["tiles"]
    forced = read_all(catalog)
    after = snapshot(catalog / "main" / "dataset")
    assert all(after[k][0] != before[f"main/dataset/{k}"][0] for k in after if "Npix=" in k)
    for col in ("embedding_image", "embedding_spectrum"):
        assert forced.column(col).equals(first.column(col))

    summary = embed(cfg(catalog, models["other"]))
    assert summary["tiles_embedded"] == summary["tiles"]
    other = read_all(catalog)
    assert not other.column("embedding_image").equals(first.column("embedding_image"))
    assert read_catalog_info(catalog).provenance["embeddings"]["embedding_image"][
        "model_hash"] == summary["columns"]["embedding_image"]["model_hash"]

    embed(cfg(catalog, models["tiny"], name="v1", modality="image"))
    both = read_all(catalog)
    assert both.column("embedding_image_v1").equals(first.column("embedding_image"))
    assert both.column("embedding_image").equals(other.column("embedding_image"))
    assert "embedding_spectrum_v1" not in both.column_names
    assert read_catalog_info(catalog).complete


# ----------------------------------------------------------------------------- crash and resume

def compare_catalogs(a: Path, b: Path) -> None:
    """Same rows and values; embeddings bit for bit (provenance timestamps aside)."""
    ia, ib = read_catalog_info(a), read_catalog_info(b)
    assert ia.complete and ib.complete and ia.rows == ib.rows
    assert ia.schema.equals(ib.schema, check_metadata=False)
    ta, tb = read_all(a), read_all(b)
    assert ta.column_names == tb.column_names
    for name in ta.column_names:
        assert same_values(ta.column(name), tb.column(name)), name


def same_values(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal, with float lists (images, spectra, embeddings) compared bit for bit (NaN too)."""
    a, b = a.combine_chunks(), b.combine_chunks()
    if a.type != b.type:
        return False
    if isinstance(a, pa.ExtensionArray):
        a, b = a.storage, b.storage
    if not pa.types.is_fixed_size_list(a.type):
        return a.equals(b)
    va = np.asarray(a.values.to_numpy(zero_copy_only=False))
    vb = np.asarray(b.values.to_numpy(zero_copy_only=False))
    valid_a = a.is_valid().to_numpy(zero_copy_only=False)
    size = a.type.list_size
    keep = np.repeat(valid_a, size)
    return (np.array_equal(valid_a, b.is_valid().to_numpy(zero_copy_only=False))
            and np.array_equal(va[keep].view(np.uint32), vb[keep].view(np.uint32)))


def test_crash_after_some_tiles_then_resume_is_identical(base_catalog, models, tmp_path,
                                                         monkeypatch):
    import astroembed.runtime.embedding as embedding

    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    shutil.copytree(base_catalog, clean)
    shutil.copytree(base_catalog, crashed)
    embed(cfg(clean, models["tiny"], batch_size=4))

    original, done = embedding.embed_tile, []

    def crash_after_three(job, on_rows=None):
        if len(done) == 3:
            raise RuntimeError("simulated crash")
        done.append(job)
        return original(job, on_rows)

    monkeypatch.setattr(embedding, "embed_tile", crash_after_three)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed(cfg(crashed, models["tiny"], batch_size=4))
    monkeypatch.setattr(embedding, "embed_tile", original)
    assert not read_catalog_info(crashed).complete
    summary = embed(cfg(crashed, models["tiny"], batch_size=4))
    assert summary["tiles_skipped"] == 3 and summary["complete"]
    compare_catalogs(clean, crashed)


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import astroembed.runtime.embedding as embedding
    from astroembed.cli import app
    original = embedding.embed_tile
    def slow(job, on_rows=None):
        result = original(job, on_rows)
        print("TILE", job.tile, flush=True)
        time.sleep(0.5)
        return result
    embedding.embed_tile = slow
    app(sys.argv[1:], prog_name="astroembed")
""")


@pytest.mark.slow
def test_killed_run_restarted_gives_identical_output(base_catalog, models, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    shutil.copytree(base_catalog, clean)
    shutil.copytree(base_catalog, killed)
    args = ["-q", "embed", "--catalog", str(killed), "--model", str(models["tiny"]),
            "--batch-size", "4"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("TILE"), proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    info = read_catalog_info(killed)
    embedded = [t for t in info.tiles
                if "embedding_image" in pq.read_schema(tile_path(killed, *t)).names]
    assert not info.complete and 1 <= len(embedded) < len(info.tiles)
    assert runner.invoke(app, ["-q", "embed", "--catalog", str(clean), "--model",
                               str(models["tiny"]), "--batch-size", "4"]).exit_code == 0
    result = runner.invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    compare_catalogs(clean, killed)
    assert not list(killed.rglob("*.tmp"))


def test_failure_inside_a_tile_leaves_it_untouched(catalog, models, monkeypatch):
    from astroembed.runtime.modelfile import Encoder

    info = read_catalog_info(catalog)
    tile = max(info.tiles, key=lambda t: info.rows[t])
    file = tile_path(catalog, *tile)
    before = (file.stat().st_mtime_ns, file.read_bytes())
    calls = []
    original = Encoder.run

    def fail_second(self, inputs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure in the middle of a tile")
        return original(self, inputs)

    monkeypatch.setattr(Encoder, "run", fail_second)
    with pytest.raises(RuntimeError, match="middle of a tile"):
        embed(cfg(catalog, models["tiny"], tiles=(f"{tile[0]}/{tile[1]}",), batch_size=2))
    assert (file.stat().st_mtime_ns, file.read_bytes()) == before
    assert not [p for p in catalog.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(Encoder, "run", original)
    assert embed(cfg(catalog, models["tiny"]))["complete"]


def test_unwritable_tile_fails_alone_and_is_reported(catalog, models, monkeypatch):
    info = read_catalog_info(catalog)
    bad = info.tiles[1]
    original = pq.ParquetWriter.write_table

    def disk_full(self, table, *a, **kw):
        if f"Npix={bad[1]}." in str(self.where):
            raise OSError(28, "No space left on device")
        return original(self, table, *a, **kw)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_full)
    before = tile_path(catalog, *bad).read_bytes()
    with pytest.raises(OutputError, match=rf"1 of {len(info.tiles)} tiles failed .*{bad[0]}/{bad[1]}.*No space") as err:
        embed(cfg(catalog, models["tiny"]))
    summary = err.value.summary
    assert summary["tiles_failed"] == 1 and summary["tiles_embedded"] == len(info.tiles) - 1
    assert summary["rows_failed"] == info.rows[bad] and not summary["complete"]
    assert tile_path(catalog, *bad).read_bytes() == before
    assert not list(catalog.rglob("*.tmp"))
    monkeypatch.setattr(pq.ParquetWriter, "write_table", original)
    summary = embed(cfg(catalog, models["tiny"]))
    assert summary["tiles_embedded"] == 1 and summary["complete"]


def test_another_run_holding_the_lock_finishes_the_catalog(catalog, models):
    other_run = CatalogLock(catalog)
    with other_run.shared():
        summary = embed(cfg(catalog, models["tiny"]))
        assert not summary["complete"] and "another embed run" in summary["incomplete_reason"]
    summary = embed(cfg(catalog, models["tiny"]))  # nothing left to embed, but it finishes
    assert summary["tiles_embedded"] == 0 and summary["complete"]
    assert read_catalog_info(catalog).complete


def test_dask_workers_give_the_same_embeddings(catalog, models, tmp_path, base_catalog):
    single = tmp_path / "single"
    shutil.copytree(base_catalog, single)
    embed(cfg(single, models["tiny"]))
    summary = embed(cfg(catalog, models["tiny"], workers=2))
    assert summary["complete"] and summary["tiles_embedded"] == summary["tiles"]
    a, b = read_all(single), read_all(catalog)
    for name in ("embedding_image", "embedding_spectrum"):
        va, ma = as_array(a.column(name), DIM)
        vb, mb = as_array(b.column(name), DIM)
        assert np.array_equal(ma, mb)
        np.testing.assert_allclose(va[ma], vb[mb], atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- bad models and arguments

def run_cli(catalog: Path, *args) -> tuple[int, str, str]:
    result = runner.invoke(app, ["embed", "--catalog", str(catalog), *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def assert_one_error_line(code: int, stderr: str, *fragments: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case, modality, fragments", [
    ("wrong_bands", "image", ["bands 'gri'", "column image", "'grz'"]),
    ("wrong_grid", "spectrum", ["n_wave=7000", "column flux", "n_wave=7781"]),
    ("wrong_length", "spectrum", ["wrong_length.onnx", "input 'spectrum'"]),
    ("big_crop", "image", ["48x48", "32x32"]),
    ("truncated", "image", ["not a loadable ONNX model"]),
])
def test_mismatched_model_fails_before_any_tile_is_touched(catalog, models, case, modality,
                                                           fragments):
    before = snapshot(catalog)
    code, _, stderr = run_cli(catalog, "--model", models[case], "--modality", modality)
    assert_one_error_line(code, stderr, *fragments)
    assert snapshot(catalog) == before


@pytest.mark.parametrize("args, code, fragments", [
    (["--tile", "12/5"], 1, ["--tile 12/5 is not a tile", "astroembed info"]),
    (["--tile", "five"], 1, ["expected ORDER/PIXEL"]),
    (["--modality", "images"], 2, ["--modality must be one of", "Did you mean 'image'"]),
    (["--batch-size", "0"], 2, ["--batch-size must be at least 1"]),
    (["--device", "gpu"], 2, ["--device must be one of auto, cpu, cuda"]),
    (["--name", "bad name"], 2, ["--name"]),
    (["--modality", "spectrum", "--name", "x"], None, []),  # control: this one works
])
def test_bad_arguments_are_one_line_and_change_nothing(catalog, models, args, code, fragments):
    before = snapshot(catalog)
    exit_code, stdout, stderr = run_cli(catalog, "--model", models["tiny"], *args)
    if code is None:
        assert exit_code == 0, stderr
        return
    assert exit_code == code
    assert_one_error_line(exit_code, stderr, *fragments)
    assert snapshot(catalog) == before


def cuda_usable(model: Path) -> bool:
    """True when onnxruntime really runs on a GPU here (not just has the provider)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        session = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider",
                                                              "CPUExecutionProvider"])
    except Exception:
        return False
    return session.get_providers()[0] == "CUDAExecutionProvider"


def test_device_cuda_without_gpu_is_an_error(catalog, models):
    if cuda_usable(models["tiny"] / "image.onnx"):
        pytest.skip("a GPU is usable here")
    before = snapshot(catalog)
    code, _, stderr = run_cli(catalog, "--model", models["tiny"], "--device", "cuda")
    assert_one_error_line(code, stderr, "--device cuda")
    assert snapshot(catalog) == before


@pytest.mark.gpu
def test_cuda_embeddings_match_cpu(catalog, models, tmp_path, base_catalog):
    if not cuda_usable(models["tiny"] / "image.onnx"):
        pytest.skip("no usable CUDA GPU for onnxruntime (CUDAExecutionProvider)")
    summary = embed(cfg(catalog, models["tiny"], device="cuda"))
    assert summary["providers"]["image"][0] in ("CUDAExecutionProvider",
                                                 "TensorrtExecutionProvider")
    cpu = tmp_path / "cpu"
    shutil.copytree(base_catalog, cpu)
    embed(cfg(cpu, models["tiny"], device="cpu"))
    for name in ("embedding_image", "embedding_spectrum"):
        va, ma = as_array(read_all(cpu).column(name), DIM)
        vb, mb = as_array(read_all(catalog).column(name), DIM)
        assert np.array_equal(ma, mb)
        np.testing.assert_allclose(va[ma], vb[mb], atol=1e-4, rtol=0)


def test_catalog_without_image_or_flux_columns(tmp_path, models):
    path = tmp_path / "plain"
    table = pa.table({"_healpix_29": pa.array([5 << 40], pa.int64()), "ra": [1.0], "dec": [2.0]})
    with CatalogWriter(path, ra_column="ra", dec_column="dec") as writer:
        writer.write_tile(0, 0, table)
        writer.finish({"command": "test"})
    before = snapshot(path)
    code, _, stderr = run_cli(path, "--model", models["tiny"])
    assert_one_error_line(code, stderr, "no image column", "--modality spectrum")
    code, _, stderr = run_cli(path, "--model", models["tiny"], "--modality", "spectrum")
    assert_one_error_line(code, stderr, "no flux, ivar column")
    assert snapshot(path) == before


def test_existing_foreign_column_is_not_overwritten(catalog, models):
    info = read_catalog_info(catalog)
    for tile in info.tiles:
        table = tile_with_pixels(catalog, *tile)
        write_tile(catalog, *tile, table.append_column("embedding_image",
                                                       pa.array([1.0] * table.num_rows)))
    refresh_catalog(catalog)
    with pytest.raises(InputError, match="not written by `astroembed embed`.*--name"):
        embed(cfg(catalog, models["tiny"]))


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_default_model_missing_is_a_clear_model_error(catalog, tmp_path, monkeypatch, state):
    """An installation whose default model is gone (or its directory emptied): `embed`
    without --model says so in one line and touches nothing."""
    import astroembed.runtime.modelfile as modelfile

    default = tmp_path / "default"
    if state == "empty":
        default.mkdir()
    monkeypatch.setattr(modelfile, "DEFAULT_MODEL_DIR", default)
    before = snapshot(catalog)
    code, _, stderr = run_cli(catalog)
    assert_one_error_line(code, stderr, "default model is missing", str(default), "--model")
    assert snapshot(catalog) == before


def test_model_with_one_encoder_needs_modality(catalog, models, tmp_path):
    only_image = tmp_path / "only_image"
    only_image.mkdir()
    shutil.copy(models["tiny"] / "image.onnx", only_image)
    with pytest.raises(ModelError, match="no spectrum encoder.*--modality image"):
        embed(cfg(catalog, only_image))
    assert embed(cfg(catalog, only_image, modality="image"))["complete"]


def test_config_validation():
    for bad in (dict(batch_size=0), dict(modality="x"), dict(device="tpu"), dict(threads=0),
                dict(workers=0), dict(name="a-b")):
        with pytest.raises(ConfigError):
            EmbedConfig(catalog="c", **bad).validate()
    with pytest.raises(ConfigError, match="--catalog"):
        EmbedConfig().validate()
    assert issubclass(ConfigError, AstroembedError)


def test_cli_prints_summary(catalog, models):
    code, stdout, stderr = run_cli(catalog, "--model", models["tiny"])
    assert code == 0, stderr
    assert "rows embedded" in stdout and "rows skipped" in stdout and "CPUExecutionProvider" in stdout
    code, stdout, _ = run_cli(catalog, "--model", models["tiny"], "--json")
    summary = json.loads(stdout)
    assert summary["tiles_skipped"] == summary["tiles"] and summary["rows_embedded"] == 0


def test_images_stored_as_plain_lists_give_the_same_embeddings(catalog, models, tmp_path,
                                                                base_catalog):
    tensor = tmp_path / "tensor"
    shutil.copytree(base_catalog, tensor)
    embed(cfg(tensor, models["tiny"], modality="image"))
    for tile in read_catalog_info(catalog).tiles:
        table = tile_with_pixels(catalog, *tile)
        i = table.schema.get_field_index("image")
        column = table.column(i).combine_chunks().storage
        fld = pa.field("image", column.type, metadata={"shape": "3,32,32"})
        write_tile(catalog, *tile, table.set_column(i, fld, column))
    refresh_pixels(catalog)
    refresh_catalog(catalog)
    embed(cfg(catalog, models["tiny"], modality="image"))
    assert same_values(read_all(catalog).column("embedding_image"),
                       read_all(tensor).column("embedding_image"))


def test_ordered_writer_keeps_order_bounds_the_queue_and_raises_write_errors():
    """Batches reach the file in the order given, however long each write takes; no more
    than MAX_PENDING_WRITES wait; a failed write stops the tile at the next submit."""
    import random
    import time

    from astroembed.runtime.embedding import MAX_PENDING_WRITES, _OrderedWriter

    class Groups:
        def __init__(self, fail_at=None):
            self.written, self.flushed, self.fail_at = [], False, fail_at

        def add(self, batch):
            time.sleep(random.uniform(0, 0.004))
            if batch == self.fail_at:
                raise OSError(28, "No space left on device")
            self.written.append(batch)

        def flush(self):
            self.flushed = True

    groups = Groups()
    writer = _OrderedWriter(groups)
    for i in range(40):
        writer.submit(i)
        assert len(writer.pending) <= MAX_PENDING_WRITES
    writer.finish()
    writer.close()
    assert groups.written == list(range(40)) and groups.flushed

    groups = Groups(fail_at=3)
    writer = _OrderedWriter(groups)
    submitted = 0
    with pytest.raises(OSError, match="No space"):
        for i in range(40):
            writer.submit(i)
            submitted += 1
    writer.close()
    assert submitted <= 3 + MAX_PENDING_WRITES  # the error stops the producer, not finish()
    assert groups.written == [0, 1, 2] and not groups.flushed


def test_tile_of_many_row_groups_through_reader_and_writer_threads(catalog, models,
                                                                    monkeypatch):
    """Small row groups, batches of 3 and a row group written for every batch (on the writer
    thread): the rows keep their order and get the reference embeddings; a write failing in
    the middle of the tile leaves it as it was."""
    import astroembed.runtime.embedding as embedding_module
    from astroembed.catalog.rewrite import RowGroupWriter

    info = read_catalog_info(catalog)
    tile = max(info.tiles, key=lambda t: info.rows[t])
    file = tile_path(catalog, *tile)
    table = pq.read_table(file)
    pq.write_table(table, file, row_group_size=4)
    pixels = catalog / "pixels" / file.relative_to(catalog / "main")  # other row groups
    pq.write_table(pq.read_table(pixels), pixels, row_group_size=5)
    groups = pq.ParquetFile(file).metadata
    assert table.num_rows >= 12 and groups.num_row_groups >= 3
    monkeypatch.setattr(embedding_module, "RowGroupWriter",
                        lambda writer, schema: RowGroupWriter(writer, schema, target_bytes=1))
    original = pq.ParquetWriter.write_table
    calls = []

    def full_at_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return original(self, *args, **kwargs)

    before = file.read_bytes()
    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_at_third)
    with pytest.raises(OutputError, match="No space"):
        embed(cfg(catalog, models["tiny"], tiles=(f"{tile[0]}/{tile[1]}",), batch_size=3))
    assert file.read_bytes() == before and not list(catalog.rglob("*.tmp"))

    monkeypatch.setattr(pq.ParquetWriter, "write_table", original)
    embed(cfg(catalog, models["tiny"], tiles=(f"{tile[0]}/{tile[1]}",), batch_size=3))
    out = tile_with_pixels(catalog, *tile)
    batches = sum(-(-groups.row_group(i).num_rows // 3) for i in range(groups.num_row_groups))
    assert pq.ParquetFile(file).num_row_groups == batches  # one written for every batch
    assert out.column("_healpix_29").equals(table.column("_healpix_29"))
    expected = reference_embeddings(out, models["tiny"])
    for modality, ref in expected.items():
        got, valid = as_array(out.column(f"embedding_{modality}"), DIM)
        assert np.array_equal(valid, np.isfinite(ref).all(axis=1)), modality
        np.testing.assert_allclose(got[valid], ref[valid], atol=2e-5, rtol=0)
