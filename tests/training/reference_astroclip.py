"""The published AstroCLIP code in ``../shared/reference/astroclip``, importable as a test
oracle: ``lightning`` is replaced by a stand-in whose ``save_hyperparameters`` records the
caller's arguments in an ``AttributeDict`` (all the reference modules use it for), and
``dinov2.eval.setup`` (absent from the reference; AstroCLIP's ``ImageHead`` builds its backbone
with it) by a module that only says so: the tests build the backbone themselves with
``dinov2.models.vision_transformer``, as the reference README describes."""

from __future__ import annotations

import ast
import inspect
import sys
import types
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "astroclip"


def _stand_ins(torch) -> None:
    if "lightning" not in sys.modules:
        stand_in = types.ModuleType("lightning")
        data = types.ModuleType("lightning.fabric.utilities.data")

        class AttributeDict(dict):
            """Lightning's dict with attribute access (pickled as its own class)."""

            def __getattr__(self, key):
                try:
                    return self[key]
                except KeyError as err:
                    raise AttributeError(key) from err

        AttributeDict.__module__, AttributeDict.__qualname__ = data.__name__, "AttributeDict"
        data.AttributeDict = AttributeDict

        class LightningModule(torch.nn.Module):
            def save_hyperparameters(self):
                caller = inspect.currentframe().f_back
                args = {k: v for k, v in caller.f_locals.items()
                        if k not in ("self", "__class__")}
                self._hparams = AttributeDict(args)

            @property
            def hparams(self):
                return self._hparams

        stand_in.LightningModule = LightningModule
        for name in ("lightning.fabric", "lightning.fabric.utilities"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["lightning"] = stand_in
        sys.modules[data.__name__] = data
    if "dinov2.eval.setup" not in sys.modules:
        setup = types.ModuleType("dinov2.eval.setup")

        def setup_and_build_model(config):
            raise NotImplementedError("not in the reference code; build the backbone directly")

        setup.setup_and_build_model = setup_and_build_model
        sys.modules["dinov2.eval"] = types.ModuleType("dinov2.eval")
        sys.modules["dinov2.eval.setup"] = setup


def _load():
    if not (REFERENCE / "astroclip" / "models" / "specformer.py").is_file():
        pytest.skip(f"the AstroCLIP reference code is not at {REFERENCE}")
    torch = pytest.importorskip("torch")
    _stand_ins(torch)
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))


def reference():
    """``astroclip.models.specformer`` from the reference code, or a skip saying why."""
    _load()
    from astroclip.models import specformer

    return specformer


def reference_astroclip():
    """``(astroclip.models.astroclip, astroclip.modules, dinov2.models.vision_transformer)``."""
    _load()
    from astroclip import modules
    from astroclip.models import astroclip
    from dinov2.models import vision_transformer

    return astroclip, modules, vision_transformer


def reference_to_rgb():
    """The reference ``ToRGB`` class, compiled alone from its file (its module imports
    scikit-image and torchvision for the training augmentations, which ToRGB does not use)."""
    path = REFERENCE / "astroclip" / "astrodino" / "data" / "augmentations.py"
    if not path.is_file():
        pytest.skip(f"the AstroCLIP reference code is not at {REFERENCE}")
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ToRGB")
    namespace = {"np": np}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["ToRGB"]


def torchvision_center_crop(x, size: int):
    """torchvision's ``CenterCrop(size)`` on the last two axes of a larger tensor (its
    documented offsets: ``int(round((H - size) / 2))``)."""
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def build_astroclip(vit: dict, spec_hyper: dict, embed_dim: int = 32, n_head: int = 4,
                    seed: int = 0):
    """A random-weight ``AstroClipModel`` of the reference code, built as AstroCLIP builds
    it: ``ImageHead`` around a ``DinoVisionTransformer(**vit)`` (its own ``__init__`` needs
    ``dinov2.eval.setup``, so the same parts are attached here), ``SpectrumHead`` as written
    (it loads a SpecFormer checkpoint saved to a temporary file)."""
    import tempfile

    import torch

    astroclip, modules, vision_transformer = reference_astroclip()
    specformer = reference()
    torch.manual_seed(seed)
    image = astroclip.ImageHead.__new__(astroclip.ImageHead)
    torch.nn.Module.__init__(image)
    image.backbone = vision_transformer.DinoVisionTransformer(**vit)
    image.freeze_backbone = True
    image.cross_attention = modules.CrossAttentionHead(
        embed_dim=embed_dim, n_head=n_head, model_embed_dim=vit["embed_dim"], dropout=0.1)
    image.mlp = modules.MLP(in_features=embed_dim, hidden_features=4 * embed_dim, dropout=0.1)
    backbone = specformer.SpecFormer(**spec_hyper)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "specformer.ckpt"
        torch.save({"hyper_parameters": dict(spec_hyper), "state_dict": backbone.state_dict()},
                   path)
        spectrum = astroclip.SpectrumHead(str(path), embed_dim=embed_dim, n_head=n_head,
                                          model_embed_dim=spec_hyper["embed_dim"])
    model = astroclip.AstroClipModel(image, spectrum)
    _randomise(model)  # LayerScale's 1e-5 and zero biases would hide wrong wiring
    return model.eval()


def _randomise(module) -> None:
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("gamma", "bias")):
                p.copy_(torch.randn_like(p) * 0.5)


def save_published(path: Path, model, **extra) -> Path:
    """``model`` saved as the published ``astroclip.ckpt`` is: the prefixed state_dict, the
    hyper-parameters holding the encoder modules themselves, and the training state a
    Lightning checkpoint keeps beside them."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer = {"state": {0: {"step": torch.tensor(300.0), "exp_avg": torch.zeros(4)}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": model.hparams,
                "epoch": 99, "global_step": 12000, "pytorch-lightning_version": "2.1.3",
                "optimizer_states": [optimizer], "lr_schedulers": [{"last_epoch": 12000}],
                "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(1.5)}},
                "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 99}}}},
                **extra}, path)
    return path


def reference_embed(model, modality: str, x):
    """The reference forward of one encoder, L2-normalised with eps 1e-3 (batches of two or
    more rows: the reference head indexes row 1 of its attention output)."""
    import torch

    with torch.no_grad():
        encoder = model.image_encoder if modality == "image" else model.spectrum_encoder
        out = encoder(torch.as_tensor(np.asarray(x, np.float32)))
        return torch.nn.functional.normalize(out, dim=-1, eps=1e-3).numpy()
