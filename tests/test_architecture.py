"""The import rules of the package layout (docs/architecture.md): nothing imports the CLI;
Dask only in the compute module; torch only in the training package; ``import astroembed``
and ``astroembed --help`` load neither. Checked on the source (every import statement,
at module level or inside functions), so a rule broken on a path no test runs still fails.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "astroembed"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))

ALLOWED = {  # top-level library -> where it may be imported (paths relative to astroembed/)
    "dask": ("compute.py",),
    "distributed": ("compute.py",),
    "torch": ("training/",),
    "onnx": ("training/",),
    "onnxscript": ("training/",),
}


def imports(path: Path) -> list[tuple[str, int]]:
    """Every module an import statement in ``path`` names, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@pytest.mark.parametrize("library", sorted(ALLOWED))
def test_heavy_libraries_only_where_they_belong(library):
    where = ALLOWED[library]
    offenders = [f"{name(p)}:{line}" for p in MODULES for mod, line in imports(p)
                 if mod.split(".")[0] == library and not name(p).startswith(where)]
    assert not offenders, f"{library} imported outside {', '.join(where)}: {offenders}"


def test_nothing_imports_the_cli():
    offenders = [f"{name(p)}:{line}" for p in MODULES if not name(p).startswith("cli/")
                 for mod, line in imports(p) if mod.startswith("astroembed.cli")]
    assert not offenders


def test_every_package_says_what_it_owns_and_may_import():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc.split()) >= 15, f"{name(init)}: a one-paragraph docstring is missing"
        if init.parent != PACKAGE and init.parent.name != "cli":
            assert "import" in doc, f"{name(init)}: say what the package may import"


@pytest.mark.parametrize("code", ["import astroembed", "import astroembed.cli.app"])
def test_importing_the_package_or_the_cli_loads_no_heavy_library(code):
    probe = (f"{code}; import sys; print(sorted(m for m in ('dask', 'distributed', 'torch', "
             "'onnxruntime', 'pyarrow', 'numpy', 'hats', 'lsdb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
