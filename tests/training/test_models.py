"""Encoders, training, export and the ONNX contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import astroembed  # noqa: E402
from astroembed.errors import AstroembedError, InputError, InterruptedRun, ModelError  # noqa: E402
from astroembed.runtime.modelfile import DEFAULT_MODEL_DIR, find_encoders, open_encoder  # noqa: E402
from astroembed.training.encoders import (ImageEncoder, ImageEncoderConfig, SpectrumEncoder,  # noqa: E402
                               SpectrumEncoderConfig, info_nce)
from astroembed.runtime.preprocess import (default_image_preprocessing,  # noqa: E402
                                   default_spectrum_preprocessing, image_inputs,
                                   spectrum_inputs, spectrum_length)
from astroembed.training.trainer import TrainConfig, load_checkpoint, span_mask, train  # noqa: E402

TINY = {"spectrum": {"patch": 40, "width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0,
                     "stem": [[8, 5, 1], [16, 4, 4]]},
        "image": {"widths": [8, 16], "heads": 2}, "embed_dim": 16, "batch_size": 32,
        "pretrain_epochs": 2, "align_epochs": 2, "threads": 1, "crop": 16}


@pytest.fixture(scope="module")
def catalog(small_survey, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cat") / "matched"
    astroembed.crossmatch(small_survey / "legacysurvey", small_survey / "desi", out)
    return out


@pytest.fixture(scope="module")
def trained(catalog, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    out.mkdir()
    (out / "notes.txt").write_text("the user's notes, beside the model")  # train writes into
    train(TrainConfig(catalog=str(catalog), out=str(out), **TINY))
    return out


def test_training_keeps_the_users_files_in_its_output(trained, catalog):
    assert (trained / "notes.txt").read_text() == "the user's notes, beside the model"
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    with pytest.raises(AstroembedError, match="--resume"):  # never replaces a model
        train(TrainConfig(catalog=str(catalog), out=str(trained), **TINY))
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> tuple[Path, dict]:
    from astroembed.training.export import export_model

    out = tmp_path_factory.mktemp("onnx") / "tiny"
    return out, export_model(trained, out)


# ----------------------------------------------------------------------------- modules

def test_encoder_shapes_and_unit_norm():
    torch.manual_seed(0)
    spec = SpectrumEncoder(SpectrumEncoderConfig(length=1945, patch=40, stem=(), width=32,
                                                 depth=1, heads=2, embed_dim=16))
    img = ImageEncoder(ImageEncoderConfig(crop=32, widths=(8, 16, 32), heads=2, embed_dim=16))
    zs = spec(torch.randn(5, 2, 1945), torch.randn(5, 2))
    zi = img(torch.rand(5, 3, 32, 32))
    assert zs.shape == zi.shape == (5, 16)
    np.testing.assert_allclose(zs.norm(dim=1).detach().numpy(), 1, atol=1e-5)
    np.testing.assert_allclose(zi.norm(dim=1).detach().numpy(), 1, atol=1e-5)
    assert spec.cfg.tokens == 1945 // 40


def test_conv_stem_shapes_and_receptive_field():
    """The stem makes one token per patch; a token changes with the pixels of its own patch
    and of the stride-1 layers' reach beyond it (kernel 5: 2 pixels), not with pixels further
    away."""
    torch.manual_seed(0)
    cfg = SpectrumEncoderConfig(length=205, patch=20, width=16, depth=1, heads=2, embed_dim=8,
                                stem=[[4, 5, 1], [8, 4, 4]])
    spec = SpectrumEncoder(cfg).eval()
    x = torch.randn(2, 2, 205)
    with torch.no_grad():
        tokens = spec.embed_patches(x)
        assert tokens.shape == (2, 10, 16)
        assert spec(x, torch.randn(2, 2)).shape == (2, 8)
        y = x.clone()
        y[:, :, 100] += 1.0  # first pixel of patch 5, within reach of patch 4's last pixels
        changed = (spec.embed_patches(y) - tokens).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [False] * 4 + [True, True] + [False] * 4


def test_conv_stem_blanks_hidden_patches():
    """With a mask, what lies under a hidden patch reaches no token (its neighbours' stem
    convolutions would otherwise see its edges), so the reconstruction cannot peek."""
    torch.manual_seed(0)
    spec = SpectrumEncoder(SpectrumEncoderConfig(length=200, patch=20, width=16, depth=1,
                                                 heads=2, stem=[[4, 5, 1], [8, 4, 4]])).eval()
    x, stats = torch.randn(3, 2, 200), torch.randn(3, 2)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, 4] = True
    y = x.clone()
    y[:, :, 80:100] = torch.randn(3, 2, 20)  # patch 4 rewritten
    with torch.no_grad():
        assert torch.equal(spec.tokens(x, stats, mask), spec.tokens(y, stats, mask))
        assert not torch.equal(spec.tokens(x, stats), spec.tokens(y, stats))


@pytest.mark.parametrize("stem,message", [
    ([[8, 4, 1]], "odd kernel"),
    ([[8, 3, 2]], "kernel must equal its stride"),
    ([[8, 3, 3]], "does not divide patch 20"),
    ([[8, 5]], r"expected \[channels, kernel, stride\]"),
])
def test_conv_stem_config_errors(stem, message):
    with pytest.raises(ValueError, match=message):
        SpectrumEncoderConfig(length=200, patch=20, stem=stem)
    from astroembed.config import from_mapping
    from astroembed.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[spectrum\].*" + message):
        from_mapping(TrainConfig, {"catalog": "c", "out": "o",
                                   "spectrum": {"patch": 20, "stem": stem}})


def test_reconstruction_loss_ignores_untrusted_pixels():
    torch.manual_seed(0)
    spec = SpectrumEncoder(SpectrumEncoderConfig(length=400, patch=40, stem=(), width=16,
                                                 depth=1, heads=2))
    x = torch.randn(3, 2, 400)
    x[:, 1] = 0  # no pixel trusted: nothing to reconstruct
    mask = torch.ones(3, 10, dtype=torch.bool)
    with torch.no_grad():
        assert float(spec.reconstruct(x, torch.zeros(3, 2), mask)) == 0.0


def test_info_nce_prefers_aligned_pairs():
    a = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    shuffled = a[torch.roll(torch.arange(8), 1)]
    assert float(info_nce(a, a, 15.5)) < float(info_nce(a, shuffled, 15.5))


def test_span_mask_hides_runs():
    m = span_mask(np.random.default_rng(0), 500, 48, 0.3, 4)
    assert 0.15 < m.mean() < 0.35
    # runs: a hidden token's neighbour is usually hidden too
    assert (m[:, 1:] & m[:, :-1]).sum() > 0.6 * m[:, 1:].sum()


# ----------------------------------------------------------------------------- training

def test_training_is_deterministic_and_resumable(catalog, trained, tmp_path):
    first = load_checkpoint(trained / "model.pt")
    # Interrupt a second run in its last epoch, then resume: same weights bit for bit.
    out = tmp_path / "resumed"
    cfg = TrainConfig(catalog=str(catalog), out=str(out), **TINY)
    calls = {"n": 0}

    def interrupt(stage, step, total, metrics):
        if stage == "align" and step == total:
            raise KeyboardInterrupt

    with pytest.raises(InterruptedRun, match="--resume") as stopped:
        train(cfg, progress=interrupt)
    assert (out / "checkpoint.pt").is_file() and not (out / "model.pt").exists()
    assert str(out / "checkpoint.pt") in str(stopped.value)
    with pytest.raises(AstroembedError, match="--resume"):
        train(cfg)
    summary = train(cfg, resume=True, progress=lambda *a: calls.__setitem__("n", calls["n"] + 1))
    assert calls["n"] > 0
    second = load_checkpoint(out / "model.pt")
    for part in ("image", "spectrum"):
        for key, value in first[part].items():
            assert torch.equal(value, second[part][key]), (part, key)
    assert [h["stage"] for h in summary["history"]] == ["pretrain"] * 2 + ["align"] * 2


def test_resume_refuses_other_settings(catalog, tmp_path):
    out = tmp_path / "m"
    cfg = TrainConfig(catalog=str(catalog), out=str(out), **{**TINY, "align_epochs": 1,
                                                              "pretrain_epochs": 1})
    train(cfg)
    (out / "model.pt").unlink()
    other = TrainConfig(catalog=str(catalog), out=str(out), **{**TINY, "align_epochs": 3,
                                                                "pretrain_epochs": 1})
    with pytest.raises(AstroembedError, match="align_epochs"):
        train(other, resume=True)


def test_training_needs_images_and_spectra(tmp_path, catalog):
    import pyarrow.parquet as pq

    from astroembed.catalog.reader import read_catalog_info, read_tile
    from astroembed.catalog.writer import CatalogWriter

    info = read_catalog_info(catalog)
    out = tmp_path / "noimages"
    with CatalogWriter(out, ra_column="RA", dec_column="DEC") as writer:
        for tile in info.tiles:
            table = read_tile(catalog, *tile,
                              columns=[c for c in info.schema.names if c != "image"])
            writer.write_tile(*tile, table)
        writer.finish({"test": True}, schema=table.schema)
    assert pq.read_schema(next(out.rglob("Npix=*.parquet")))
    with pytest.raises(InputError, match="image"):
        train(TrainConfig(catalog=str(out), out=str(tmp_path / "m"), **TINY))


def test_checkpoint_is_not_unpickled(tmp_path):
    evil = tmp_path / "model.pt"
    torch.save({"config": {}, "obj": Path("x")}, evil)  # an arbitrary class: refused
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(evil)


# ----------------------------------------------------------------------------- export

def test_export_parity_and_metadata_round_trip(exported, trained):
    out, result = exported
    assert sorted(p.name for p in out.iterdir()) == ["image.onnx", "model.json", "spectrum.onnx"]
    for modality in ("image", "spectrum"):
        assert result["encoders"][modality]["parity_max_abs_diff"] <= 1e-4
    files = find_encoders(out)
    image, spectrum = open_encoder(files["image"]), open_encoder(files["spectrum"])
    assert image.info.modality == "image" and spectrum.info.modality == "spectrum"
    assert image.info.dim == spectrum.info.dim == 16
    assert image.info.preprocessing == default_image_preprocessing(16)
    assert spectrum.info.preprocessing == default_spectrum_preprocessing(TrainConfig.spectrum_bin)
    assert image.info.name == "astroembed-sim" and image.info.version == TrainConfig.model_version
    assert len(image.info.hash) == 64 and image.info.hash != spectrum.info.hash
    assert image.info.training_data_hash == load_checkpoint(trained / "model.pt")["data_digest"]
    assert image.providers == ["CPUExecutionProvider"]


def test_export_records_the_training_catalog_by_name_not_path(exported, catalog):
    """A model travels: it names its training catalog and the rows' digest, no local path."""
    out, _ = exported
    manifest = json.loads((out / "model.json").read_text())
    training = manifest["training"]
    assert training["catalog"] == catalog.name and len(training["data_digest"]) == 64
    assert training["config"]["catalog"] == catalog.name
    text = (out / "model.json").read_text()
    assert str(catalog.parent) not in text
    for file in find_encoders(out).values():
        info = open_encoder(file).info
        assert f"'{catalog.name}'" in info.training_data
        assert str(catalog.parent) not in info.training_data
        assert info.training_data_hash == training["data_digest"]


def test_onnx_matches_torch_at_any_batch_size(exported, trained, catalog):
    """Independent of export's own parity check: rows from the catalog, several batch sizes."""
    from astroembed.catalog.reader import image_array, read_catalog_info, read_tile
    from astroembed.training.trainer import build_models, config_from_checkpoint

    out, _ = exported
    payload = load_checkpoint(trained / "model.pt")
    img_model, spec_model = build_models(config_from_checkpoint(payload))
    img_model.load_state_dict(payload["image"])
    spec_model.load_state_dict(payload["spectrum"])
    img_model.eval(), spec_model.eval()
    info = read_catalog_info(catalog)
    table = read_tile(catalog, *info.tiles[0], columns=["image", "flux", "ivar"]).slice(0, 37)
    enc_i = open_encoder(out / "image.onnx")
    enc_s = open_encoder(out / "spectrum.onnx")
    x, _ = image_inputs(image_array(table["image"]), enc_i.info.preprocessing)
    flux = np.stack(table["flux"].to_numpy(zero_copy_only=False))
    ivar = np.stack(table["ivar"].to_numpy(zero_copy_only=False))
    s, _ = spectrum_inputs(flux, ivar, enc_s.info.preprocessing)
    with torch.no_grad():
        want_i = img_model(torch.from_numpy(x["image"])).numpy()
        want_s = spec_model(torch.from_numpy(s["spectrum"]), torch.from_numpy(s["stats"])).numpy()
    for n in (1, 7, 37):
        np.testing.assert_allclose(enc_i.run({"image": x["image"][:n]}), want_i[:n], atol=1e-4)
        np.testing.assert_allclose(enc_s.run({k: v[:n] for k, v in s.items()}), want_s[:n],
                                   atol=1e-4)


def test_export_fp16_is_compared_with_fp32_and_says_so(exported, trained, tmp_path):
    """The fp16 export against the fp32 one, both run by onnxruntime directly on the parity
    batch stored with the model: the difference recorded is the one found here."""
    from astroembed.training.precision import FP16_MAX

    out = tmp_path / "fp16"
    result = astroembed.export(trained, out, precision="fp16")
    assert sorted(p.name for p in out.iterdir()) == ["image.onnx", "model.json", "spectrum.onnx"]
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["precision"] == result["precision"] == "fp16"
    assert manifest["encoders"] == result["encoders"]
    payload = load_checkpoint(trained / "model.pt")
    feeds = {"image": {"image": payload["parity_image"].float().numpy()},
             "spectrum": {"spectrum": payload["parity_spectrum"].float().numpy(),
                          "stats": payload["parity_stats"].float().numpy()}}
    fp32_dir, _ = exported
    for modality, entry in result["encoders"].items():
        assert entry["precision"] == "fp16" and open_encoder(out / entry["file"]).info.precision == "fp16"
        assert entry["bytes"] < (fp32_dir / entry["file"]).stat().st_size
        if entry["fp16_not_compared"]:
            pytest.skip(entry["fp16_not_compared"])
        runs = [ort.InferenceSession(str(d / entry["file"]), providers=["CPUExecutionProvider"])
                .run(None, feeds[modality])[0].astype(np.float64) for d in (fp32_dir, out)]
        full, half = (r / np.linalg.norm(r, axis=1, keepdims=True) for r in runs)
        diff = np.abs(full - half).max()
        assert 0 < entry["fp16_max_abs_diff_l2"] <= 1e-2 and FP16_MAX == 65504
        assert abs(entry["fp16_max_abs_diff_l2"] - diff) <= 1e-6


def test_export_refuses_an_unknown_precision(trained, tmp_path):
    with pytest.raises(astroembed.ConfigError, match="--precision 'int8'"):
        astroembed.export(trained, tmp_path / "o", precision="int8")
    assert not (tmp_path / "o").exists()


def test_export_refuses_unfinished_training(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "checkpoint.pt").write_bytes(b"")
    from astroembed.training.export import export_model

    with pytest.raises(ModelError, match="--resume"):
        export_model(tmp_path / "m", tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- bad ONNX files

def _rewrite(src: Path, dst: Path, edit) -> Path:
    model = onnx.load(str(src))
    edit(model)
    onnx.save_model(model, str(dst))
    return dst


def test_missing_metadata_is_refused(exported, tmp_path):
    out, _ = exported
    bad = _rewrite(out / "image.onnx", tmp_path / "image.onnx",
                   lambda m: m.metadata_props.__delitem__(slice(None)))
    with pytest.raises(ModelError, match="lacks .*preprocessing"):
        open_encoder(bad)


def test_truncated_file_is_refused(exported, tmp_path):
    out, _ = exported
    data = (out / "spectrum.onnx").read_bytes()
    bad = tmp_path / "spectrum.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        open_encoder(bad)


def test_declared_shape_must_match_preprocessing(exported, tmp_path):
    out, _ = exported

    def wrong_bin(model):
        for p in model.metadata_props:
            if p.key == "preprocessing":
                prep = json.loads(p.value)
                prep["bin"] = 2  # declares 3890 pixels; the graph takes 486 (bins of 16)
                p.value = json.dumps(prep)

    bad = _rewrite(out / "spectrum.onnx", tmp_path / "spectrum.onnx", wrong_bin)
    with pytest.raises(ModelError, match="declared as"):
        open_encoder(bad)


def _flatten_encoder(path: Path, side: int, meta: dict, dim: int = 16) -> Path:
    """A valid ONNX graph image (batch, 3, side, side) -> (batch, dim), with ``meta``."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3 * side * side, dim), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["embedding"])],
        "flat", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(path))
    return path


def test_model_newer_than_onnxruntime_says_which_version_it_needs(exported, tmp_path):
    """An operator set this onnxruntime does not know (here one far in the future) is named
    as a version problem, not as a damaged file."""
    import onnxruntime as ort

    out, _ = exported
    model = onnx.load(str(out / "image.onnx"))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 99
    onnx.save_model(model, str(tmp_path / "image.onnx"))
    with pytest.raises(ModelError, match=rf"onnxruntime \({ort.__version__}\).*1\.23 or newer"):
        open_encoder(tmp_path / "image.onnx")


def test_onnxruntime_minimum_matches_the_install_extras():
    """The versions the load error names are the ones ``pip install astroembed[cpu|gpu]``
    asks for."""
    import tomllib

    from astroembed.runtime.modelfile import MIN_ONNXRUNTIME

    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    declared = {req.split(">=")[0]: req.split(">=")[1] for name in ("cpu", "gpu")
                for req in extras[name] if req.startswith("onnxruntime")}
    assert declared == MIN_ONNXRUNTIME


def test_wrong_graph_input_shape_is_refused(exported, tmp_path):
    """A graph taking 20x20 crops that declares the 16-pixel preprocessing."""
    out, _ = exported
    meta = {p.key: p.value for p in onnx.load(str(out / "image.onnx")).metadata_props}
    bad = _flatten_encoder(tmp_path / "image.onnx", 20, meta)
    with pytest.raises(ModelError, match="graph input 'image' has shape"):
        open_encoder(bad)
    good = _flatten_encoder(tmp_path / "ok.onnx", 16, meta)
    assert open_encoder(good).info.modality == "image"


def test_mixed_models_in_one_directory_are_refused(exported, tmp_path):
    out, _ = exported

    def rename(model):
        for p in model.metadata_props:
            if p.key == "model_name":
                p.value = "other"

    (tmp_path / "mix").mkdir()
    _rewrite(out / "image.onnx", tmp_path / "mix" / "image.onnx", rename)
    (tmp_path / "mix" / "spectrum.onnx").write_bytes((out / "spectrum.onnx").read_bytes())
    with pytest.raises(ModelError, match="different models"):
        find_encoders(tmp_path / "mix")


# ----------------------------------------------------------------------------- default model

def test_default_model_ships_and_matches_preprocessing():
    if not DEFAULT_MODEL_DIR.is_dir():
        pytest.fail(f"the default model is missing from {DEFAULT_MODEL_DIR}; run `make model`")
    files = find_encoders()
    assert set(files) == {"image", "spectrum"}
    total = sum(p.stat().st_size for p in files.values())
    assert total < 20e6
    image, spectrum = open_encoder(files["image"]), open_encoder(files["spectrum"])
    # The contract it declares is what this astroembed's preprocessing produces.
    crop = image.info.preprocessing["crop"]
    assert image.info.preprocessing == default_image_preprocessing(crop)
    assert spectrum.info.preprocessing == default_spectrum_preprocessing(
        spectrum.info.preprocessing["bin"])
    rng = np.random.default_rng(0)
    x, ok = image_inputs(rng.normal(0, 0.05, (4, 3, 64, 64)), image.info.preprocessing)
    assert ok.all() and x["image"].shape == (4, 3, crop, crop)
    zi = image.run(x)
    n_wave = spectrum.info.preprocessing["n_wave"]
    s, ok = spectrum_inputs(rng.normal(1, 0.3, (4, n_wave)), np.full((4, n_wave), 4.0),
                            spectrum.info.preprocessing)
    assert s["spectrum"].shape == (4, 2, spectrum_length(spectrum.info.preprocessing))
    zs = spectrum.run(s)
    assert zi.shape == zs.shape == (4, image.info.dim)
    np.testing.assert_allclose(np.linalg.norm(zs, axis=1), 1, atol=1e-5)
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").is_file()


def test_default_model_names_no_path_of_the_machine_that_trained_it():
    manifest = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    texts = [json.dumps(manifest)] + [json.dumps(open_encoder(f).info.metadata)
                                      for f in find_encoders().values()]
    for text in texts:
        assert not re.search(r"(?<![\w.])/(tmp|work|home|root)/", text), text[:200]
    assert manifest["training"]["catalog"] == "train-matched"
    for file in find_encoders().values():
        assert open_encoder(file).info.training_data_hash == manifest["training"]["data_digest"]


def test_default_model_warns_on_data_it_was_not_trained_on(catalog, tmp_path, caplog):
    """The default model has seen only simulations: a catalog made from other files says so."""
    import logging
    import shutil

    from astroembed.runtime.embedding import plan_embed

    if not DEFAULT_MODEL_DIR.is_dir():
        pytest.fail(f"the default model is missing from {DEFAULT_MODEL_DIR}; run `make model`")
    with caplog.at_level(logging.WARNING, logger="astroembed"):
        plan_embed(catalog)
    assert "simulated" not in caplog.text
    real = tmp_path / "real"
    shutil.copytree(catalog, real)
    prov_file = real / "main" / "astroembed_provenance.json"
    prov = json.loads(prov_file.read_text())
    for item in prov["inputs"]:
        item["path"] = "/data/desi/dr1/" + Path(item["path"]).name
        item["simulated"] = False  # as cross-matching real survey files records it
    prov_file.write_text(json.dumps(prov))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="astroembed"):
        plan_embed(real)
    assert "trained only on simulated galaxies" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="astroembed"):
        plan_embed(real, model=str(DEFAULT_MODEL_DIR))  # named explicitly: the user chose it
    assert "simulated" not in caplog.text


@pytest.mark.parametrize("heads,width,depth,length,patch,stem", [
    (1, 16, 1, 200, 40, ()), (2, 32, 2, 1945, 40, ()), (4, 64, 1, 333, 25, ()),
    (2, 32, 2, 486, 20, ((8, 5, 1), (16, 4, 4))), (4, 16, 1, 333, 20, ((4, 3, 1), (8, 5, 1)))])
def test_spectrum_export_form_matches_trained_form(heads, width, depth, length, patch, stem,
                                                   tmp_path):
    """The layout handed to the exporter (folded head, dropped key bias, one Attention node
    per block) computes what the trained module computes (the oracle is the trained module's
    own forward pass), and exports without transposes of the token tensors."""
    from astroembed.training.export import _export_one
    from astroembed.training.export_form import export_form

    torch.manual_seed(heads + depth)
    enc = SpectrumEncoder(SpectrumEncoderConfig(length=length, patch=patch, width=width,
                                                depth=depth, heads=heads, embed_dim=8,
                                                stem=stem)).eval()
    for p in enc.parameters():  # away from the small init, so folding errors would show
        p.data.normal_(0, 0.3)
    spectrum, stats = torch.randn(5, 2, length), torch.randn(5, 2)
    form = export_form(enc)
    with torch.no_grad():
        expected, got = enc(spectrum, stats), form(spectrum, stats)
    assert got.shape == expected.shape == (5, 8)
    assert float((got - expected).abs().max()) < 1e-5
    if heads == 2:
        path = tmp_path / "spectrum.onnx"
        with torch.no_grad():
            _export_one(form, (spectrum, stats), ["spectrum", "stats"], path, {})
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert ops.count("Attention") == depth
        assert ops.count("Transpose") <= 2  # the patch layout and the head's pooling weights
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_out = session.run(None, {"spectrum": spectrum.numpy(), "stats": stats.numpy()})[0]
        assert np.abs(onnx_out - expected.numpy()).max() < 1e-5


@pytest.mark.parametrize("heads,widths,crop", [(1, (8, 16), 16), (4, (8, 16, 32), 32)])
def test_image_export_form_matches_trained_form(heads, widths, crop):
    """The image encoder's folded head computes what the trained head computes."""
    from astroembed.training.export_form import export_form

    torch.manual_seed(len(widths))
    enc = ImageEncoder(ImageEncoderConfig(crop=crop, widths=widths, heads=heads,
                                          embed_dim=8)).eval()
    for p in enc.parameters():
        p.data.normal_(0, 0.3)
    image = torch.randn(4, 3, crop, crop)
    with torch.no_grad():
        expected, got = enc(image), export_form(enc)(image)
    assert float((got - expected).abs().max()) < 1e-5


@pytest.mark.parametrize("where", ["exported", "shipped"])
def test_model_files_carry_no_paths_of_the_machine_that_built_them(exported, where):
    """torch's exporter records a Python stack trace on every node (file paths of the build
    machine); exported and shipped files keep none of it."""
    import onnx

    from astroembed.runtime.modelfile import DEFAULT_MODEL_DIR

    directory = exported[0] if where == "exported" else DEFAULT_MODEL_DIR
    files = sorted(Path(directory).glob("*.onnx"))
    assert len(files) == 2
    for file in files:
        data = file.read_bytes()
        assert b"site-packages" not in data and b'File "/' not in data, file
        model = onnx.load(str(file))
        assert not [n.name for n in model.graph.node if len(n.metadata_props) or n.doc_string]
