"""Reading a foreign model checkpoint without running it.

A published checkpoint (a Lightning ``.ckpt``, or any ``torch.save`` zip archive) is a
pickle, and a pickle names classes and functions that loading it imports and calls: a
user's file could run anything. ``torch.load(weights_only=True)`` refuses such files
outright, but AstroCLIP's checkpoints pickle whole ``nn.Module`` objects as hyper-parameters
(their attributes carry settings the tensors do not give, such as the number of heads).

:func:`read_checkpoint` reads them with a restricted unpickler: tensors, storages, dtypes and
plain containers are rebuilt; every other class or function the pickle names becomes an
:class:`Inert` stand-in that records its name, its arguments and its state, and no module
named in the pickle is imported or called. The tensors come back as they were saved.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

from astroembed.errors import InputError

__all__ = ["Inert", "read_checkpoint"]


class Inert:
    """A class or function named in a checkpoint's pickle, not imported: calling it, making
    an instance or setting its state only records what the pickle said."""

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # the pickle's call, recorded above
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # dict subclasses set items
        if not isinstance(self.state, dict):
            self.state = {}
        self.state[key] = value

    def append(self, value: Any) -> None:  # list subclasses append
        self.args = (*self.args, value)

    def extend(self, values: Any) -> None:
        self.args = (*self.args, *values)

    def attributes(self) -> dict:
        """The instance's attributes as its state recorded them (``{}`` when none)."""
        state = self.state
        if isinstance(state, tuple) and state and isinstance(state[0], dict):
            state = state[0]  # (dict, slots) from classes with __slots__
        return dict(state) if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"<inert {self.qualified_name}>"


_STAND_INS: dict[tuple[str, str], type] = {}


def _stand_in(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (Inert,), {"qualified_name": f"{module}.{name}",
                                                "__module__": "astroembed.inert"})
    return _STAND_INS[key]


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copyreg._reconstructor`` for the classes allowed here and the stand-ins."""
    if isinstance(cls, type) and issubclass(cls, Inert):
        return cls.__new__(cls)
    if base is object:
        return object.__new__(cls)
    return base.__new__(cls, state)


#: What a checkpoint may really rebuild: tensors, their storages and plain containers.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "bytearray"): bytearray,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("copyreg", "_reconstructor"): _reconstructor,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _stand_in(module, name)


#: The ``pickle_module`` torch.load uses: our unpickler instead of pickle's.
_PICKLE = types.SimpleNamespace(Unpickler=_Unpickler, load=pickle.load,
                                __name__="astroembed.training.checkpoint")


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object a ``torch.save`` zip checkpoint holds, tensors on the CPU, without importing
    or calling anything its pickle names (see the module docstring). InputError for a file
    that is missing, not a torch zip archive, truncated or otherwise unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file.")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from err
    if head[:2] != b"PK":
        raise InputError(f"{path}: not a PyTorch checkpoint (a torch.save zip archive, such as "
                         "a Lightning .ckpt).")
    if not zipfile.is_zipfile(path):  # a zip archive's directory is at its end
        raise InputError(f"{path}: truncated: it begins as a zip archive but its end is "
                         "missing; download it again.")
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("data.pkl") for n in archive.namelist()):
                raise InputError(f"{path}: a zip archive without data.pkl; not a PyTorch "
                                 "checkpoint.")
            bad = archive.testzip()
        if bad is not None:
            raise InputError(f"{path}: damaged ({bad} fails its checksum); download it again.")
        with open(path, "rb") as fh:
            data = io.BytesIO(fh.read())
        return torch.load(data, map_location="cpu", weights_only=False, pickle_module=_PICKLE)
    except InputError:
        raise
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, RuntimeError, ValueError,
            KeyError, OSError) as err:
        raise InputError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err}); it may "
                         "be truncated: download it again.") from err
