"""Every measured number the documents quote comes from a committed results file.

The documents (README.md, bench/README.md and the model card) quote results; the results
files (``bench/results/*``, written by the benchmark scripts, and the default model's
``model.json``, written by ``astroembed train``/``export``) hold them. A quoted number passes
when some value in a results file, rounded to the quoted digits, gives it, directly or in the
units the documents use (percent, MB, kB, ms). Commands and code (fenced blocks, inline code)
are not quotes. The few numbers that are settings rather than results are listed below with
what they are.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCUMENTS = ["README.md", "bench/README.md", "docs/MODEL_CARD.md",
             "astroembed/data/models/default/MODEL_CARD.md"]
SOURCES = [*sorted(RESULTS.glob("*.json")), *sorted(RESULTS.glob("*.md")),
           ROOT / "astroembed" / "data" / "models" / "default" / "model.json"]

#: Settings, limits and published figures quoted beside the results, not measured here.
SETTINGS = {
    "17.77": "the SDSS main sample's magnitude limit",
    "19.5": "the simulator's magnitude limit (BGS-like, r < 19.5)",
    "0.262": "the Legacy Survey pixel scale in arcsec",
    "0.15": "the redshift outlier threshold |dz|/(1+z) > 0.15",
    "1.4826": "the Gaussian MAD scale of sigma_NMAD",
    "0.99": "AstroCLIP's published spectrum R^2 (Parker et al. 2024)",
    "0.79": "AstroCLIP's published image R^2 (Parker et al. 2024)",
    "20,000": "the simulated surveys' size (--n-galaxies 20000)",
    "10,000": "the SDSS reference sample's size",
    "5.5": "the size in GB of the CUDA build of torch",
    "3.11": "the Python version",
    "1.23": "the lowest onnxruntime version the cpu extra accepts",
    "1.25": "the lowest onnxruntime-gpu version the gpu extra accepts",
}

#: Decimals (3.14, -0.5) and numbers with thousands separators (20,000); not versions (1.4.0).
NUMBER = re.compile(r"(?<![\w.,])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w.]\d)")
QUOTED = re.compile(r"^[-+−]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)$")
SCALES = (1, 100, 1e-3, 1e-6, 1e3, 1 / 1024, 1 / 1024 ** 2)


def _numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, str):
        return [_parse(m) for m in NUMBER.findall(value)]
    return []


def _parse(text: str) -> float:
    return float(text.replace(",", "").replace("−", "-").lstrip("+"))


@pytest.fixture(scope="module")
def measured() -> set[str]:
    """Every results value, written at every precision and unit the documents use."""
    values: list[float] = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        values += _numbers(json.loads(text)) if path.suffix == ".json" else _numbers(text)
    out = set()
    for v in values:
        for scale in SCALES:
            x = abs(v * scale)
            for digits in range(5):
                out.add(f"{x:.{digits}f}")  # halves to even, as Python formats
                out.add(f"{math.floor(x * 10 ** digits + 0.5) / 10 ** digits:.{digits}f}")  # up
    return out


def quoted_numbers(text: str) -> list[str]:
    """The numbers a document quotes as results: not in code, not in links."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return [m for m in NUMBER.findall(text) if QUOTED.match(m)]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_quoted_number_is_in_a_results_file(name: str, measured: set[str]) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    missing = [q for q in quoted_numbers(text)
               if q not in SETTINGS and f"{abs(_parse(q)):.{_decimals(q)}f}" not in measured]
    assert not missing, (f"{name} quotes numbers no file in bench/results (or the default "
                         f"model's model.json) holds: {', '.join(dict.fromkeys(missing))}")


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def test_the_check_finds_a_number_nobody_measured(measured: set[str]) -> None:
    assert quoted_numbers("R² 0.9731 and 12,345 rows; `make 1.5` (see [v](a/1.0.html)) v1.4.0") \
        == ["0.9731", "12,345"]
    assert "123456.7891" not in measured
