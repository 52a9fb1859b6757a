"""`astroembed import-model specformer`: a tiny random-weight SpecFormer of the published code,
saved as ``specformer.ckpt`` is laid out, becomes a model directory whose ONNX encoder
(onnxruntime called directly) and whose `embed` column equal the published forward pass
(the reference code's mean token, L2-normalised) on random, real and catalog spectra; every
bad checkpoint or output is one error line with nothing written."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402
import pyarrow as pa  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from reference_astroclip import reference  # noqa: E402

import astroembed  # noqa: E402
from oracles import tile_with_pixels  # noqa: E402
from astroembed.cli import app  # noqa: E402
from astroembed.catalog.reader import read_catalog_info  # noqa: E402
from astroembed.errors import ConfigError, InputError, OutputError  # noqa: E402
from astroembed.runtime.modelfile import find_encoders, open_encoder  # noqa: E402

runner = CliRunner()
HYPER = {"input_dim": 22, "embed_dim": 32, "num_layers": 2, "num_heads": 4, "max_len": 800,
         "mask_num_chunks": 6, "mask_chunk_width": 50, "slice_section_length": 20,
         "slice_overlap": 10, "dropout": 0.1, "norm_first": False}
TOL = 1e-4


def _save(path: Path, model, hyper: dict = HYPER, **extra) -> Path:
    """``model`` saved as the published specformer.ckpt is: plain hyper-parameters and an
    unprefixed state_dict, beside the training state a Lightning checkpoint keeps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer = {"state": {0: {"step": torch.tensor(300.0), "exp_avg": torch.zeros(4)}},
                 "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.95), "params": [0]}]}
    torch.save({"hyper_parameters": dict(hyper), "state_dict": model.state_dict(),
                "epoch": 3, "global_step": 300, "pytorch-lightning_version": "2.1.0",
                "optimizer_states": [optimizer], "lr_schedulers": [{"last_epoch": 300}],
                **extra}, path)
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    torch.manual_seed(3)
    model = reference().SpecFormer(**HYPER).eval()
    return model, _save(tmp_path_factory.mktemp("ckpt") / "specformer.ckpt", model)


@pytest.fixture(scope="module")
def imported(published, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("imported") / "specformer"
    return out, astroembed.import_model("specformer", published[1], out)


def want(model, flux: np.ndarray) -> np.ndarray:
    """The published forward: mean over the output tokens, L2-normalised (eps 1e-3)."""
    with torch.no_grad():
        x = torch.tensor(np.asarray(flux, np.float32))[..., None]
        emb = model(x)["embedding"].mean(dim=1)
        return torch.nn.functional.normalize(emb, dim=1, eps=1e-3).numpy()


def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-3)


def run_onnx(path: Path, flux: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"flux": np.asarray(flux, np.float32)[:, :, None]})[0]


def random_spectra(n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(4)
    flux = rng.uniform(0.5, 20, (n, 1)) * np.linspace(1.5, 0.7, 7781)
    flux = flux + rng.normal(0, rng.uniform(0.1, 3, (n, 1)), (n, 7781))
    flux[0] *= 0.01  # its spread is clipped at 0.2
    flux[1] -= 40  # negative flux
    return flux.astype(np.float32)


# ----------------------------------------------------------------------------- the model

def test_onnx_equals_the_published_forward_on_random_spectra(published, imported):
    model, _ = published
    out, _ = imported
    flux = random_spectra()
    np.testing.assert_allclose(normalised(run_onnx(out / "spectrum.onnx", flux)),
                               want(model, flux), atol=TOL, rtol=0)
    one = run_onnx(out / "spectrum.onnx", flux[2:3])  # a batch of one runs too
    np.testing.assert_allclose(normalised(one), want(model, flux[2:3]), atol=TOL, rtol=0)


def test_onnx_equals_the_published_forward_on_real_spectra(published, imported,
                                                           real_fixtures):
    from astroembed.readers.desi import read_spectra

    model, _ = published
    out, _ = imported
    table = read_spectra(real_fixtures / "desi" / "coadd-sv3-dark-26065.fits")
    flux = np.stack(table.column("flux").to_numpy(zero_copy_only=False)).astype(np.float32)
    flux = flux[np.isfinite(flux).all(axis=1) & (flux != 0).any(axis=1)]
    assert len(flux) >= 2
    np.testing.assert_allclose(normalised(run_onnx(out / "spectrum.onnx", flux)),
                               want(model, flux), atol=TOL, rtol=0)


def test_the_model_directory(published, imported):
    _, ckpt = published
    out, result = imported
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "model.json",
                                                     "spectrum.onnx"]
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert result["source"] == {"kind": "specformer", "file": "specformer.ckpt",
                                "sha256": sha, "bytes": ckpt.stat().st_size}
    assert json.loads((out / "model.json").read_text())["source"]["sha256"] == sha
    assert set(find_encoders(out)) == {"spectrum"}
    encoder = open_encoder(out / "spectrum.onnx")
    info = encoder.info
    assert info.dim == 32 and info.preprocessing["kind"] == "desi_flux"
    assert info.inputs == (("flux", ("batch", 7781, 1)),)
    assert info.metadata["source_sha256"] == sha and info.metadata["licence"] == "MIT"
    spec = result["encoders"]["spectrum"]
    assert 0 <= spec["parity_max_abs_diff"] <= TOL and spec["cpu_rows_per_second"] > 0
    card = (out / "MODEL_CARD.md").read_text()
    for fragment in ("specformer.ckpt", sha, "MIT", "desi_flux", "n_wave=7781",
                     "`flux` (batch, 7781, 1) float32", f"{spec['cpu_rows_per_second']:.3g}",
                     "--modality spectrum"):
        assert fragment in card, fragment


def test_embed_fills_the_spectrum_column_as_the_published_model(published, imported,
                                                                 tiled_catalog, tmp_path):
    model, _ = published
    out, _ = imported
    catalog = tmp_path / "cat"
    shutil.copytree(tiled_catalog, catalog)
    summary = astroembed.embed(catalog, model=out, modality="spectrum", batch_size=16)
    assert summary["tiles_failed"] == 0
    info = read_catalog_info(catalog)
    table = pa.concat_tables([tile_with_pixels(catalog, *t) for t in info.tiles])
    assert "embedding_image" not in table.column_names
    flux = np.stack(table.column("flux").to_numpy(zero_copy_only=False)).astype(np.float32)
    got = table.column("embedding_spectrum")
    assert got.null_count == 0 and summary["columns"]["embedding_spectrum"]["embedded"] == len(flux)
    got = np.array(got.to_pylist(), np.float32)
    np.testing.assert_allclose(normalised(got), want(model, flux), atol=TOL, rtol=0)
    meta = table.schema.field("embedding_spectrum").metadata
    assert meta[b"model_name"] == b"astroclip-specformer" and meta[b"embedding_dim"] == b"32"


def test_the_command_line(published, tmp_path):
    _, ckpt = published
    out = tmp_path / "m"
    result = runner.invoke(app, ["import-model", "specformer", str(ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "spectrum encoder" in result.stdout and "sha256" in result.stdout
    assert (out / "spectrum.onnx").is_file()
    result = runner.invoke(app, ["import-model", "specformer", str(ckpt), "--out", str(out)])
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["import-model", "specformer", str(ckpt), "--out", str(out),
                                 "--overwrite"])
    assert result.exit_code == 1 and "notes.txt" in result.stderr
    (out / "notes.txt").unlink()
    result = runner.invoke(app, ["import-model", "specformer", str(ckpt), "--out", str(out),
                                 "--overwrite", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["out"] == str(out)


# ----------------------------------------------------------------------------- bad inputs

def _astroclip_layout(path: Path, model) -> Path:
    state = {f"spectrum_encoder.backbone.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": {"lr": 1e-4}, "state_dict": state}, path)
    return path


def _bad_checkpoints(root: Path, model, good: Path) -> dict[str, tuple[Path, str]]:
    """Each bad checkpoint and a fragment of the one line it must give."""
    root.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    truncated = root / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = root / "corrupt.ckpt"
    with zipfile.ZipFile(good) as z:  # flip a byte inside the largest tensor's stored data
        entry = max((i for i in z.infolist() if "/data/" in i.filename),
                    key=lambda i: i.compress_size)
    local = entry.header_offset  # the local header: 30 bytes, the name, its own extra field
    name_len, extra_len = (int.from_bytes(data[local + o:local + o + 2], "little")
                           for o in (26, 28))
    flipped = bytearray(data)
    flipped[local + 30 + name_len + extra_len + entry.compress_size // 2] ^= 0xFF
    corrupt.write_bytes(bytes(flipped))
    text = root / "notes.ckpt"
    text.write_text("not a checkpoint at all")
    foreign = root / "foreign.ckpt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(3, 3)},
                "hyper_parameters": {"input_dim": 22, "embed_dim": 32, "num_layers": 2,
                                     "num_heads": 4, "max_len": 800}}, foreign)
    no_hyper = root / "no_hyper.ckpt"
    torch.save({"state_dict": model.state_dict()}, no_hyper)
    tensor = root / "tensor.ckpt"
    torch.save(torch.zeros(4), tensor)
    short = _save(root / "short.ckpt", reference().SpecFormer(**dict(HYPER, max_len=100)),
                  dict(HYPER, max_len=100))
    odd = root / "odd_heads.ckpt"
    torch.save({"hyper_parameters": dict(HYPER, num_heads=5), "state_dict": model.state_dict()},
               odd)
    return {
        "truncated": (truncated, "truncated"),
        "corrupt": (corrupt, "damaged"),
        "not a checkpoint": (text, "not a PyTorch checkpoint"),
        "foreign": (foreign, "no tensor"),
        "no hyper-parameters": (no_hyper, "lack embed_dim"),
        "not a dict": (tensor, "no state_dict"),
        "astroclip layout": (_astroclip_layout(root / "astroclip.ckpt", model),
                             "an AstroCLIP checkpoint"),
        "unsupported max_len": (short, "unsupported SpecFormer: 778 tokens"),
        "unsupported heads": (odd, "unsupported hyper_parameters"),
        "missing": (root / "missing.ckpt", "no such checkpoint"),
        "directory": (root, "a directory"),
    }


@pytest.fixture(scope="module")
def bad(published, tmp_path_factory):
    model, good = published
    return _bad_checkpoints(tmp_path_factory.mktemp("bad"), model, good)


BAD = ["truncated", "corrupt", "not a checkpoint", "foreign", "no hyper-parameters",
       "not a dict", "astroclip layout", "unsupported max_len", "unsupported heads", "missing",
       "directory"]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_checkpoint_is_one_line_and_nothing_is_written(bad, case, tmp_path):
    path, fragment = bad[case]
    out = tmp_path / "parent" / "model"
    with pytest.raises(InputError, match=fragment):
        astroembed.import_model("specformer", path, out)
    result = runner.invoke(app, ["import-model", "specformer", str(path), "--out", str(out)])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert not out.exists()
    assert not (tmp_path / "parent").exists() or not any((tmp_path / "parent").iterdir())


def test_unknown_kinds_and_outputs_are_refused(published, tmp_path):
    _, ckpt = published
    with pytest.raises(ConfigError, match="imports specformer, astroclip. Did you mean 'specformer'"):
        astroembed.import_model("specfromer", ckpt, tmp_path / "a")
    result = runner.invoke(app, ["import-model", "astrodino", str(ckpt), "--out",
                                 str(tmp_path / "a")])
    assert result.exit_code == 2 and result.stderr.startswith("error: kind 'astrodino'")
    assert not (tmp_path / "a").exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("mine")
    with pytest.raises(OutputError, match="did not make"):
        astroembed.import_model("specformer", ckpt, theirs, overwrite=True)
    assert [p.name for p in theirs.iterdir()] == ["thesis.tex"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        astroembed.import_model("specformer", ckpt, a_file)
    assert a_file.read_text() == "x"


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("fault", ["parity", "interrupt"])
def test_a_failed_import_keeps_the_previous_model_and_leaves_nothing(published, imported,
                                                                     fault, tmp_path,
                                                                     monkeypatch):
    import astroembed.training.export as export
    import astroembed.training.importer as importer
    from astroembed.errors import ModelError

    _, ckpt = published
    out = tmp_path / "model"
    shutil.copytree(imported[0], out)
    before = _listing(tmp_path)
    if fault == "parity":  # no output can be this close: the parity check must refuse it
        monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)
        expected = ModelError
    else:
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(importer, "_rows_per_second", interrupted)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        astroembed.import_model("specformer", ckpt, out, overwrite=True)
    assert _listing(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
