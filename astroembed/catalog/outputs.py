"""Which existing directories astroembed may replace: only its own, and only whole.

One rule for every command that writes a directory. A target that does not exist, or is an
empty directory, is simply written. An existing target is replaced only when astroembed made
it, recognised by its own marker (:data:`CATALOG`: a ``collection.properties`` written by
astroembed; :data:`SURVEY`: ``simulation.json``; :data:`SAVED_PROBE` and
:data:`PROBE_REPORT`: ``probe.json``; :data:`MODEL`: ``model.json``), only with the
command's ``--overwrite``, and only when every file in it is one astroembed writes there: a
file the user added (notes, a thesis) makes the command refuse and name it. Anything else is
refused with one line naming what was found. Commands that write into a directory without
replacing it (``probe --out``) use :func:`check_write_into`: a file they would overwrite
must be one they wrote before.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from astroembed.errors import OutputError
from astroembed.catalog.paths import check_output_dir, check_writable_parent

SHOWN = 3  # foreign files named in a refusal


def _json(file: Path) -> dict | None:
    """A JSON object from ``file``, None when it is absent or not one."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _files(root: Path) -> list[str]:
    """Every file (and symlink, and empty directory) under ``root``, relative, POSIX form."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if not dirnames and not filenames and rel != Path("."):
            found.append(rel.as_posix() + "/")
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            found.append((rel / name).as_posix())
    return sorted(found)


@dataclass(frozen=True)
class Product:
    """A kind of directory astroembed writes: how to recognise it, and the files it holds."""

    name: str  # "catalog", "simulated survey", ...
    marker: str  # the file that says astroembed made it
    made_by_astroembed: Callable[[Path], bool]
    owned: Callable[[Path, str], bool]  # (root, relative path) -> astroembed writes it there

    def foreign(self, root: Path) -> list[str]:
        """Files under ``root`` that astroembed did not write as part of this product."""
        return [f for f in _files(root) if not self.owned(root, f)]


# ---------------------------------------------------------------------------- the products

# atomic_path and atomic_directory temporaries left by a killed writer
_TMP = re.compile(r"(^|/)\.[^/]+\.tmp(/|$)")


def _is_astroembed_catalog(root: Path) -> bool:
    """A collection astroembed wrote, or one it began (a run killed before the collection's
    file was written leaves only ``main/hats.properties``), or a catalog in the single-table
    layout of earlier versions (``hats.properties`` at the top), which a rebuild replaces."""
    for marker in ("collection.properties", "main/hats.properties", "hats.properties"):
        try:
            text = (root / marker).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if re.search(r"^(astroembed_version\s*=|hats_builder\s*=\s*astroembed)", text,
                     re.MULTILINE):
            return True
    return False


_CATALOG_FILES = re.compile(
    r"^(collection\.properties|pixels\.properties|astroembed_state\.json|\.astroembed\.lock"
    r"|(main|pixels|margin)/(hats\.properties|partition_info\.csv|astroembed_provenance\.json)"
    r"|(main|pixels|margin)/dataset/(_metadata|_common_metadata"
    r"|Norder=\d+/Dir=\d+/Npix=\d+\.parquet)"
    r"|(main|pixels|margin)/(dataset/(Norder=\d+/(Dir=\d+/)?)?)?"  # emptied by a re-tiling
    r"|astroembed_index/[^/]+\.(faiss|rows\.npy|json)|astroembed_index/"
    # the single-table layout of earlier versions, so a rebuild can replace it
    r"|hats\.properties|partition_info\.csv|astroembed_provenance\.json"
    r"|dataset/(_metadata|_common_metadata|Norder=\d+/Dir=\d+/Npix=\d+\.parquet)"
    r"|dataset/(Norder=\d+/(Dir=\d+/)?)?)$")


def _catalog_owns(root: Path, rel: str) -> bool:
    return bool(_CATALOG_FILES.match(rel) or _TMP.search(rel))


def _survey_owns(root: Path, rel: str) -> bool:
    listed = (_json(root / "simulation.json") or {}).get("files", [])
    return rel in ("simulation.json", "truth.parquet") or rel in listed or bool(_TMP.search(rel))


def _is_saved_probe(root: Path) -> bool:
    return (_json(root / "probe.json") or {}).get("format") == "astroembed-probe"


def _saved_probe_owns(root: Path, rel: str) -> bool:
    return rel in ("probe.json", "arrays.npz") or bool(_TMP.search(rel))


def _is_probe_report(root: Path) -> bool:
    doc = _json(root / "probe.json") or {}
    return doc.get("format") == "astroembed-probe-report" or {"results", "outputs"} <= set(doc)


def _probe_report_owns(root: Path, rel: str) -> bool:
    return (rel in ("probe.json", "predictions.parquet", "summary.png") or bool(re.match(r"^probe_[^/]+\.png$", rel))
            or bool(_TMP.search(rel)))


def _is_model(root: Path) -> bool:
    doc = _json(root / "model.json") or {}
    return "encoders" in doc and "model_name" in doc


def _model_owns(root: Path, rel: str) -> bool:
    return rel in ("model.json", "image.onnx", "spectrum.onnx", "MODEL_CARD.md") or bool(
        _TMP.search(rel))


CATALOG = Product("catalog", "collection.properties", _is_astroembed_catalog, _catalog_owns)
SURVEY = Product("simulated survey", "simulation.json",
                 lambda root: _json(root / "simulation.json") is not None, _survey_owns)
SAVED_PROBE = Product("saved probe", "probe.json", _is_saved_probe, _saved_probe_owns)
PROBE_REPORT = Product("probe report", "probe.json", _is_probe_report, _probe_report_owns)
MODEL = Product("exported model", "model.json", _is_model, _model_owns)
PRODUCTS = (CATALOG, SURVEY, SAVED_PROBE, PROBE_REPORT, MODEL)


def recognise(path: Path) -> Product | None:
    """The astroembed product at ``path``, None when it is none of them."""
    return next((p for p in PRODUCTS if p.made_by_astroembed(path)), None)


# ---------------------------------------------------------------------------- the rule

def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def may_replace(path: str | os.PathLike, product: Product, option: str) -> None:
    """Raise OutputError unless ``path`` is a ``product`` astroembed made holding only files
    astroembed wrote there (so replacing it loses nothing of the user's)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        raise OutputError(f"{option} {path}: is a file, not a directory; choose another path.")
    found = recognise(path)
    if found is None:
        entries = sorted(p.name for p in path.iterdir())
        raise OutputError(f"{option} {path}: holds files astroembed did not make "
                          f"({_listing(entries)}); refusing to replace it. Choose a new or "
                          "empty directory.")
    if found is not product:
        raise OutputError(f"{option} {path}: holds an astroembed {found.name}, not a "
                          f"{product.name}; refusing to replace it. Choose another path.")
    foreign = product.foreign(path)
    if foreign:
        raise OutputError(f"{option} {path}: the {product.name} there also holds files "
                          f"astroembed did not write ({_listing(foreign)}); refusing to "
                          "replace it. Move them out, or choose another path.")


def claim_directory(path: str | os.PathLike, product: Product, *, overwrite: bool,
                    option: str, flag: str | None = "--overwrite") -> bool:
    """Check, before any work, that ``path`` may receive a new ``product``.

    Returns True when an existing ``product`` will be replaced (``overwrite`` given and
    :func:`may_replace` agrees), False when ``path`` is new or an empty directory. Raises
    OutputError naming what was found otherwise. ``flag`` is the command's overwrite flag
    (None where the command has none).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        check_writable_parent(path, option)
        return False
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        check_writable_parent(path, option)  # it is replaced by a rename in its parent
        return False
    may_replace(path, product, option)  # refuses anything that is not ours
    if not overwrite:
        how = f"pass {flag} to replace it, or " if flag else ""
        raise OutputError(f"{option} {path}: an astroembed {product.name} is already there; "
                          f"{how}choose another path.")
    check_writable_parent(path, option)
    return True


def check_write_into(path: str | os.PathLike, product: Product, names: list[str],
                     option: str) -> None:
    """Check, before any work, that ``names`` may be written into the directory ``path``
    (created when absent): each one already there must be one astroembed wrote as part of
    ``product``, recognised by its marker. Other files in ``path`` are left alone."""
    path = Path(path)
    check_output_dir(path, option)
    if not path.exists():
        return
    check_writable_parent(path / names[0], option)
    present = [n for n in names if (path / n).exists() or (path / n).is_symlink()]
    if present and not product.made_by_astroembed(path):
        raise OutputError(f"{option} {path}: already holds {_listing(present)}, not written "
                          f"by astroembed; refusing to overwrite. Choose another directory.")


# ---------------------------------------------------------------------------- what was kept

def disk_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path`` (or of the file ``path``)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):  # gone (a writer still finishing) or unreadable
                total += (Path(dirpath) / name).lstat().st_size
    return total


def human_bytes(n: int) -> str:
    """``605 MB``, ``12 kB``: decimal units, as ``du --si`` and file managers show them."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n} TB"  # pragma: no cover


def describe_sizes(paths: list[Path]) -> str:
    """``A (605 MB) and B (1.2 kB)`` for a message."""
    parts = [f"{p} ({human_bytes(disk_bytes(p))})" for p in paths]
    return " and ".join(parts) if len(parts) < 3 else ", ".join(parts[:-1]) + " and " + parts[-1]
