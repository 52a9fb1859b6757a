"""`astroembed import-model astroclip`: a tiny random-weight AstroCLIP pair built with the
published code (a DINOv2 ViT with chunked blocks and LayerScale behind AstroCLIP's image head,
SpecFormer behind its spectrum head), saved as ``astroclip.ckpt`` is laid out (the encoder
modules pickled in the hyper-parameters), becomes a model directory whose ONNX encoders
(onnxruntime called directly) and whose `embed` columns equal the published forward passes on
random, real and catalog inputs; the image preprocessing equals the reference's NumPy bit for
bit; every bad checkpoint or too-small cutout is one clear error with nothing written."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402
import pyarrow as pa  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from reference_astroclip import (build_astroclip, reference, reference_embed,  # noqa: E402
                                 reference_to_rgb, save_published, torchvision_center_crop)

import astroembed  # noqa: E402
from oracles import tile_with_pixels  # noqa: E402
from astroembed.cli import app  # noqa: E402
from astroembed.catalog.reader import read_catalog_info  # noqa: E402
from astroembed.errors import InputError, ModelError  # noqa: E402
from astroembed.runtime.modelfile import find_encoders, open_encoder  # noqa: E402
from astroembed.runtime.preprocess import astroclip_image_preprocessing, rgb_inputs  # noqa: E402

runner = CliRunner()
VIT = {"img_size": 144, "patch_size": 12, "embed_dim": 64, "depth": 2, "num_heads": 4,
       "init_values": 1e-5, "block_chunks": 2}
SPEC = {"input_dim": 22, "embed_dim": 32, "num_layers": 2, "num_heads": 4, "max_len": 800,
        "mask_num_chunks": 6, "mask_chunk_width": 50, "slice_section_length": 20,
        "slice_overlap": 10, "dropout": 0.1, "norm_first": False}
DIM = 32
TOL = 1e-4
CUTOUT = "legacysurvey/cutout_ra357.9087_dec-54.8817_grz.fits"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    model = build_astroclip(VIT, SPEC, embed_dim=DIM, n_head=4, seed=5)
    return model, save_published(tmp_path_factory.mktemp("ckpt") / "astroclip.ckpt", model)


@pytest.fixture(scope="module")
def imported(published, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("imported") / "astroclip"
    return out, astroembed.import_model("astroclip", published[1], out)


def reference_pixels(cutouts: np.ndarray) -> np.ndarray:
    """AstroCLIP's image input from 152-pixel g, r, z cutouts: the reference ToRGB per image
    (NumPy), then its data loader's ``permute(0, 3, 2, 1)`` and ``CenterCrop(144)``."""
    to_rgb = reference_to_rgb()()
    rgb = torch.concatenate([torch.tensor(to_rgb(img)[None]) for img in cutouts])
    return torchvision_center_crop(rgb.permute(0, 3, 2, 1), 144).numpy()


def centre(images: np.ndarray, size: int) -> np.ndarray:
    top = (images.shape[-1] - size) // 2
    return images[..., top:top + size, top:top + size]


def random_cutouts(n: int = 4, size: int = 152) -> np.ndarray:
    rng = np.random.default_rng(11)
    x = rng.normal(0, 0.02, (n, 3, size, size)) + rng.lognormal(-3, 1.5, (n, 3, size, size))
    x[0, :, :20, :20] = -1.0  # every band below -m / scale: intensity 0 there
    x[1] *= 100.0  # saturated
    return x.astype(np.float32)


def real_cutout(real_fixtures) -> np.ndarray:
    from astropy.io import fits

    with fits.open(real_fixtures / CUTOUT) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float32)


def run_onnx(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: np.asarray(x, np.float32)})[0]


def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-3)


def random_spectra(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(4)
    flux = rng.uniform(0.5, 20, (n, 1)) * np.linspace(1.5, 0.7, 7781)
    flux = flux + rng.normal(0, rng.uniform(0.1, 3, (n, 1)), (n, 7781))
    flux[0] *= 0.01  # its spread is clipped at 0.2
    return flux.astype(np.float32)


# ----------------------------------------------------------------------------- preprocessing

@pytest.mark.parametrize("size", [152, 256])
def test_image_preprocessing_equals_the_reference_bit_for_bit(size):
    cutouts = random_cutouts(size=size)
    got, ok = rgb_inputs(cutouts, astroclip_image_preprocessing())
    want = reference_pixels(centre(cutouts, 152))
    assert ok.all() and got["image"].dtype == np.float32 and got["image"].shape == want.shape
    assert np.array_equal(got["image"], want)


def test_image_preprocessing_of_the_real_cutout_is_bit_equal(real_fixtures):
    cutout = real_cutout(real_fixtures)
    assert cutout.shape == (3, 256, 256)
    got, ok = rgb_inputs(cutout[None], astroclip_image_preprocessing())
    want = reference_pixels(centre(cutout[None], 152))
    assert ok.all() and np.array_equal(got["image"], want)
    assert not np.array_equal(want, want.transpose(0, 1, 3, 2))  # the swap is visible


def test_too_small_cutouts_are_refused():
    with pytest.raises(ValueError, match="cutouts are 64x151 pixels; the model needs 152x152"):
        rgb_inputs(np.zeros((2, 3, 64, 151), np.float32), astroclip_image_preprocessing())


# ----------------------------------------------------------------------------- the model

def test_onnx_equals_the_published_forward_on_random_inputs(published, imported):
    model, _ = published
    out, _ = imported
    pixels = np.random.default_rng(2).uniform(0, 1, (3, 3, 144, 144)).astype(np.float32)
    np.testing.assert_allclose(normalised(run_onnx(out / "image.onnx", "image", pixels)),
                               reference_embed(model, "image", pixels), atol=TOL, rtol=0)
    flux = random_spectra()
    np.testing.assert_allclose(normalised(run_onnx(out / "spectrum.onnx", "flux",
                                                   flux[..., None])),
                               reference_embed(model, "spectrum", flux[..., None]),
                               atol=TOL, rtol=0)


def test_onnx_equals_the_published_forward_on_real_inputs(published, imported, real_fixtures):
    from astroembed.readers.desi import read_spectra

    model, _ = published
    out, _ = imported
    cutout = real_cutout(real_fixtures)
    cutouts = np.stack([cutout, cutout[:, ::-1, :]])  # two rows: the reference needs them
    pixels = reference_pixels(centre(cutouts, 152))
    inputs, ok = rgb_inputs(cutouts, astroclip_image_preprocessing())
    assert ok.all()
    got = run_onnx(out / "image.onnx", "image", inputs["image"])
    np.testing.assert_allclose(normalised(got), reference_embed(model, "image", pixels),
                               atol=TOL, rtol=0)
    fluxes = []
    for name in ("coadd-sv3-dark-26065.fits", "coadd-4-80613-thru20210324.fits"):
        table = read_spectra(real_fixtures / "desi" / name)
        fluxes += [np.asarray(f, np.float32) for f in table.column("flux").to_pylist()
                   if f is not None]
    flux = np.stack([f for f in fluxes if np.isfinite(f).all() and (f != 0).any()])
    assert len(flux) >= 2
    np.testing.assert_allclose(normalised(run_onnx(out / "spectrum.onnx", "flux",
                                                   flux[..., None])),
                               reference_embed(model, "spectrum", flux[..., None]),
                               atol=TOL, rtol=0)


def test_the_model_directory(published, imported):
    import hashlib

    _, ckpt = published
    out, result = imported
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "image.onnx",
                                                     "model.json", "spectrum.onnx"]
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert result["source"]["sha256"] == sha and result["licence"] == "MIT"
    assert set(find_encoders(out)) == {"image", "spectrum"}
    image, spectrum = (open_encoder(out / f"{m}.onnx").info for m in ("image", "spectrum"))
    assert image.dim == spectrum.dim == DIM
    assert image.preprocessing["kind"] == "astroclip_rgb" and image.preprocessing["stamp"] == 152
    assert image.inputs == (("image", ("batch", 3, 144, 144)),)
    assert spectrum.preprocessing["kind"] == "desi_flux"
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["architecture"]["image"]["depth"] == 2
    assert manifest["architecture"]["image"]["heads"] == 4
    assert manifest["architecture"]["spectrum"]["layers"] == 2
    card = (out / "MODEL_CARD.md").read_text()
    for modality in ("image", "spectrum"):
        e = result["encoders"][modality]
        assert 0 <= e["parity_max_abs_diff"] <= TOL and e["cpu_rows_per_second"] > 0
        assert f"{e['cpu_rows_per_second']:.3g}" in card
    for fragment in ("astroclip.ckpt", sha, "MIT", "astroclip_rgb", "stamp=152", "crop=144",
                     "`image` (batch, 3, 144, 144) float32", "`flux` (batch, 7781, 1) float32",
                     "swaps height and width"):
        assert fragment in card, fragment


@pytest.fixture(scope="module")
def stamps152(tmp_path_factory) -> Path:
    """A simulated survey with 152-pixel cutouts, cross-matched into a small catalog."""
    root = tmp_path_factory.mktemp("s152")
    astroembed.simulate(root / "survey", n_galaxies=30, seed=3, cutout_size=152)
    out = root / "matched"
    astroembed.crossmatch(root / "survey" / "legacysurvey", root / "survey" / "desi", out,
                          max_rows=40)
    return out


def test_embed_fills_both_columns_as_the_published_model(published, imported, stamps152,
                                                         tmp_path):
    model, _ = published
    out, _ = imported
    catalog = tmp_path / "cat"
    shutil.copytree(stamps152, catalog)
    summary = astroembed.embed(catalog, model=out, batch_size=8)
    assert summary["tiles_failed"] == 0
    info = read_catalog_info(catalog)
    table = pa.concat_tables([tile_with_pixels(catalog, *t) for t in info.tiles])
    assert len(table) >= 2
    images = np.stack([np.asarray(v, np.float32).reshape(3, 152, 152)
                       for v in table.column("image").to_pylist()])
    flux = np.stack(table.column("flux").to_numpy(zero_copy_only=False)).astype(np.float32)
    got_image = np.array(table.column("embedding_image").to_pylist(), np.float32)
    got_spectrum = np.array(table.column("embedding_spectrum").to_pylist(), np.float32)
    np.testing.assert_allclose(normalised(got_image),
                               reference_embed(model, "image", reference_pixels(images)),
                               atol=TOL, rtol=0)
    np.testing.assert_allclose(normalised(got_spectrum),
                               reference_embed(model, "spectrum", flux[..., None]),
                               atol=TOL, rtol=0)
    meta = table.schema.field("embedding_image").metadata
    assert meta[b"model_name"] == b"astroclip" and meta[b"embedding_dim"] == str(DIM).encode()


def test_embed_refuses_cutouts_smaller_than_152(imported, tiled_catalog, tmp_path):
    out, _ = imported
    catalog = tmp_path / "cat"
    shutil.copytree(tiled_catalog, catalog)
    before = {p: p.read_bytes() for p in sorted(catalog.rglob("*")) if p.is_file()}
    with pytest.raises(ModelError, match=r"at least 152x152 pixels; .* has 32x32\. .*"
                                         r"`astroembed simulate --cutout-size 152`"):
        astroembed.embed(catalog, model=out)
    result = runner.invoke(app, ["embed", "--catalog", str(catalog), "--model", str(out)])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and "152x152" in lines[0], result.stderr
    assert {p: p.read_bytes() for p in sorted(catalog.rglob("*")) if p.is_file()} == before


def test_the_command_line(published, tmp_path):
    _, ckpt = published
    out = tmp_path / "m"
    result = runner.invoke(app, ["import-model", "astroclip", str(ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "image encoder" in result.stdout and "spectrum encoder" in result.stdout
    assert (out / "image.onnx").is_file() and (out / "spectrum.onnx").is_file()


# ----------------------------------------------------------------------------- bad inputs

def _without(ckpt: dict, drop: str) -> dict:
    return dict(ckpt, state_dict={k: v for k, v in ckpt["state_dict"].items() if k != drop})


def _bad_checkpoints(root: Path, model, good: Path) -> dict[str, tuple[Path, str]]:
    root.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    base = {"state_dict": state, "hyper_parameters": model.hparams}
    data = good.read_bytes()
    cases = {}

    def save(name: str, payload) -> Path:
        torch.save(payload, root / name)
        return root / name

    truncated = root / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 3])
    cases["truncated"] = (truncated, "truncated")
    cases["missing tensor"] = (save("missing.ckpt", _without(
        base, "image_encoder.backbone.blocks.1.1.attn.qkv.weight")),
        "no tensor image_encoder.backbone.blocks.1.1.attn.qkv.weight")
    bent = dict(state)
    bent["spectrum_encoder.mlp.encoder.weight"] = torch.zeros(7, DIM)
    cases["wrong shape"] = (save("bent.ckpt", dict(base, state_dict=bent)),
                            "spectrum_encoder.mlp.encoder.weight is (7, 32)")
    for name, shape, fragment in (
            ("four bands", (64, 4, 12, 12), "a square patch convolution of the 3 colour planes"),
            ("patch 7", (64, 3, 7, 7), "patches of 7 pixels do not tile AstroCLIP's 144-pixel")):
        changed = dict(state, **{"image_encoder.backbone.patch_embed.proj.weight":
                                 torch.zeros(shape)})
        cases[name] = (save(f"{name}.ckpt", dict(base, state_dict=changed)), fragment)
    cases["no heads recorded"] = (save("plain_hyper.ckpt", dict(base, hyper_parameters={
        "lr": 1e-4})), "do not record the image backbone's number of heads")
    specformer = reference().SpecFormer(**SPEC)
    cases["a specformer checkpoint"] = (save("specformer.ckpt", {
        "state_dict": specformer.state_dict(), "hyper_parameters": dict(SPEC)}),
        "not an AstroCLIP checkpoint (a SpecFormer one imports as kind specformer)")
    cases["no state_dict"] = (save("tensor.ckpt", torch.zeros(3)), "no state_dict")
    return cases


@pytest.fixture(scope="module")
def bad(published, tmp_path_factory):
    model, good = published
    return _bad_checkpoints(tmp_path_factory.mktemp("bad"), model, good)


@pytest.mark.parametrize("case", ["truncated", "missing tensor", "wrong shape", "four bands",
                                  "patch 7", "no heads recorded", "a specformer checkpoint",
                                  "no state_dict"])
def test_a_bad_checkpoint_is_one_line_and_nothing_is_written(bad, case, tmp_path):
    path, fragment = bad[case]
    out = tmp_path / "parent" / "model"
    with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        astroembed.import_model("astroclip", path, out)
    result = runner.invoke(app, ["import-model", "astroclip", str(path), "--out", str(out)])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert not out.exists()
    assert not (tmp_path / "parent").exists() or not any((tmp_path / "parent").iterdir())


def test_a_checkpoint_naming_a_module_that_acts_on_import_stays_inert(published, tmp_path,
                                                                      monkeypatch):
    """The pickle names a class of a module whose import writes a file: the import reads the
    tensors and settings without importing it, and the model equals the reference."""
    model, _ = published
    marker = tmp_path / "imported.txt"
    (tmp_path / "authors_callbacks.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("imported")

        class EarlyStopping:
            def __init__(self, patience):
                self.patience = patience
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import authors_callbacks

    path = save_published(tmp_path / "astroclip.ckpt", model,
                          callbacks={"EarlyStopping": authors_callbacks.EarlyStopping(5)})
    marker.unlink()
    sys.modules.pop("authors_callbacks", None)
    out = tmp_path / "model"
    astroembed.import_model("astroclip", path, out)
    assert not marker.exists() and "authors_callbacks" not in sys.modules
    pixels = np.random.default_rng(8).uniform(0, 1, (2, 3, 144, 144)).astype(np.float32)
    np.testing.assert_allclose(normalised(run_onnx(out / "image.onnx", "image", pixels)),
                               reference_embed(model, "image", pixels), atol=TOL, rtol=0)
