"""The published AstroCLIP code in ``../shared/reference/astroclip``, importable as a test
oracle: ``lightning`` is replaced by a stand-in whose ``save_hyperparameters`` records the
caller's arguments (all the reference modules use it for)."""

from __future__ import annotations

import inspect
import sys
import types
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "astroclip"


def reference():
    """``astroclip.models.specformer`` from the reference code, or a skip saying why."""
    if not (REFERENCE / "astroclip" / "models" / "specformer.py").is_file():
        pytest.skip(f"the AstroCLIP reference code is not at {REFERENCE}")
    torch = pytest.importorskip("torch")
    if "lightning" not in sys.modules:
        stand_in = types.ModuleType("lightning")

        class LightningModule(torch.nn.Module):
            def save_hyperparameters(self):
                caller = inspect.currentframe().f_back
                args = {k: v for k, v in caller.f_locals.items()
                        if k not in ("self", "__class__")}
                self.hparams = types.SimpleNamespace(**args)

        stand_in.LightningModule = LightningModule
        sys.modules["lightning"] = stand_in
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    from astroclip.models import specformer

    return specformer
