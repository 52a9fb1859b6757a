"""Reading foreign checkpoints: tensors come back as saved; nothing the pickle names is
imported or called; damaged or foreign files give one clear error."""

from __future__ import annotations

import os
import sys
import textwrap
import zipfile

import pytest

torch = pytest.importorskip("torch")

from astroembed.errors import InputError  # noqa: E402
from astroembed.training.checkpoint import Inert, read_checkpoint  # noqa: E402


@pytest.fixture
def foreign_module(tmp_path, monkeypatch):
    """A module of the checkpoint's author: importing it writes a marker file."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "authors_model.py").write_text(textwrap.dedent(f"""
        import torch
        open({str(marker)!r}, "w").write("imported")

        class Head(torch.nn.Module):
            def __init__(self, width, heads):
                super().__init__()
                self.heads = heads
                self.proj = torch.nn.Linear(width, width)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import authors_model

    yield authors_model, marker
    sys.modules.pop("authors_model", None)


def _lightning_like(module) -> dict:
    head = module.Head(8, heads=4)
    return {"state_dict": {f"image_encoder.{k}": v for k, v in head.state_dict().items()},
            "hyper_parameters": {"image_encoder": head, "lr": 1e-4},
            "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.2.0",
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4}]}]}


def test_tensors_come_back_and_classes_stay_inert(foreign_module, tmp_path):
    module, marker = foreign_module
    ckpt = _lightning_like(module)
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    marker.unlink()
    sys.modules.pop("authors_model", None)  # a fresh process would not have it
    got = read_checkpoint(path)
    assert not marker.exists() and "authors_model" not in sys.modules
    assert got["state_dict"].keys() == ckpt["state_dict"].keys()
    for key, value in ckpt["state_dict"].items():
        assert got["state_dict"][key].dtype == torch.float32
        assert torch.equal(got["state_dict"][key], value)
    head = got["hyper_parameters"]["image_encoder"]
    assert isinstance(head, Inert) and head.qualified_name == "authors_model.Head"
    assert head.attributes()["heads"] == 4
    assert (got["epoch"], got["global_step"]) == (3, 120)


def test_a_pickled_call_is_not_made(tmp_path):
    """A pickle that would call os.system on load only records the call."""
    marker = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "x": Payload()}, path)
    got = read_checkpoint(path)
    assert not marker.exists()
    assert isinstance(got["x"], Inert) and got["x"].qualified_name in ("os.system",
                                                                        "posix.system")
    assert got["x"].args == (f"touch {marker}",)


def test_bad_files_give_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.ckpt")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(InputError, match="not a PyTorch checkpoint"):
        read_checkpoint(text)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(10000, dtype=torch.float32)}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated: it begins as a zip archive"):
        read_checkpoint(truncated)
    other_zip = tmp_path / "other.ckpt"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(InputError, match="without data.pkl"):
        read_checkpoint(other_zip)
