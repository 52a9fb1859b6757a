"""SpecFormer from a ``specformer.ckpt``: astroembed's module, built from the checkpoint's
tensors, gives the published model's output (the reference code's forward on the same
random-weight model, saved as the published file is laid out)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reference_astroclip import reference  # noqa: E402

from astroembed.errors import InputError  # noqa: E402
from astroembed.training.checkpoint import read_checkpoint  # noqa: E402
from astroembed.training.specformer import SpecFormerConfig, specformer_from_checkpoint  # noqa: E402

HYPER = {"input_dim": 22, "embed_dim": 32, "num_layers": 2, "num_heads": 4, "max_len": 800,
         "mask_num_chunks": 6, "mask_chunk_width": 50, "slice_section_length": 20,
         "slice_overlap": 10, "dropout": 0.1, "norm_first": False}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A tiny random-weight SpecFormer of the reference code, saved as specformer.ckpt is."""
    torch.manual_seed(0)
    model = reference().SpecFormer(**HYPER).eval()
    path = tmp_path_factory.mktemp("ckpt") / "specformer.ckpt"
    torch.save({"hyper_parameters": dict(HYPER), "state_dict": model.state_dict(),
                "epoch": 10, "global_step": 1000}, path)
    return model, path


def _spectra(n: int = 3, length: int = 7781) -> torch.Tensor:
    rng = np.random.default_rng(1)
    continuum = rng.uniform(0.5, 20, (n, 1)) * np.linspace(1.5, 0.7, length)
    flux = continuum + rng.normal(0, rng.uniform(0.1, 3, (n, 1)), (n, length))
    flux[0] *= 0.01  # a faint one: its std is clipped at 0.2
    return torch.tensor(flux, dtype=torch.float32)


def test_imported_specformer_equals_the_published_forward(published):
    reference_model, path = published
    ours = specformer_from_checkpoint(read_checkpoint(path), str(path))
    flux = _spectra()
    with torch.no_grad():
        want = reference_model(flux[..., None])["embedding"]
        got = ours(flux)
    assert got.shape == want.shape == (3, 778, 32)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    with torch.no_grad():  # the zero-shot embedding, L2-normalised as the paper compares them
        a = torch.nn.functional.normalize(ours.embed(flux), dim=1, eps=1e-3)
        b = torch.nn.functional.normalize(want.mean(dim=1), dim=1, eps=1e-3)
    assert float((a - b).abs().max()) <= 1e-4


def test_tokens_equal_the_published_preprocessing(published):
    reference_model, path = published
    ours = specformer_from_checkpoint(read_checkpoint(path))
    flux = _spectra()
    torch.testing.assert_close(ours.tokens(flux), reference_model.preprocess(flux[..., None]),
                               atol=1e-6, rtol=1e-6)


def test_windows_of_the_desi_grid():
    cfg = SpecFormerConfig()
    assert cfg.windows(7781) == 777  # 778 tokens with the statistics token, within max_len 800
    cfg.check(7781)
    with pytest.raises(ValueError, match="at most 800"):
        cfg.check(9000)


def test_checkpoints_that_do_not_fit_are_named(published, tmp_path):
    _, path = published
    ckpt = read_checkpoint(path)
    with pytest.raises(InputError, match="lack embed_dim"):
        specformer_from_checkpoint({"state_dict": ckpt["state_dict"],
                                    "hyper_parameters": {"input_dim": 22}}, "x.ckpt")
    wrong = dict(ckpt, hyper_parameters=dict(HYPER, embed_dim=64))
    with pytest.raises(InputError, match="data_embed.weight is \\(32, 22\\), expected \\(64, 22\\)"):
        specformer_from_checkpoint(wrong, "x.ckpt")
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("blocks.1.")}
    with pytest.raises(InputError, match="no tensor blocks.1"):
        specformer_from_checkpoint(dict(ckpt, state_dict=state), "x.ckpt")


def test_real_desi_spectra(published):
    """Real coadded spectra (read by astroembed's DESI reader) through both."""
    from pathlib import Path

    from astroembed.readers.desi import read_spectra

    reference_model, path = published
    coadd = (Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "real" / "desi"
             / "coadd-sv3-dark-26065.fits")
    if not coadd.is_file():
        pytest.skip(f"the real DESI fixture is not at {coadd}")
    table = read_spectra(coadd)
    flux = np.stack(table.column("flux").to_numpy(zero_copy_only=False)[:4]).astype(np.float32)
    flux = torch.tensor(flux)
    ours = specformer_from_checkpoint(read_checkpoint(path))
    with torch.no_grad():
        want = reference_model(flux[..., None])["embedding"]
        got = ours(flux)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
