"""The simulated mini-survey (``astroembed simulate``): galaxy populations (``population``),
spectral energy distributions (``sed``), DESI-like spectra (``spectra``), Legacy Survey-like
cutouts (``images``), the files in the surveys' own formats (``survey``), and how to
recognise a simulated survey's files (here).

May import: NumPy, astropy, speclite, h5py, pyarrow, :mod:`astroembed.catalog` (atomic writes,
output rules), :mod:`astroembed.config` and :mod:`astroembed.errors`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Written at the top of every simulated survey (seed, sizes, software versions).
SIMULATION_FILE = "simulation.json"
#: The answer key (every object's true properties), named in ``simulation.json``.
ANSWER_KEY = "truth.parquet"


def read_simulation(directory: str | os.PathLike) -> dict | None:
    """The ``simulation.json`` that ``astroembed simulate`` wrote in ``directory`` (a JSON
    object with its seed and config), None for any other file of that name or none."""
    try:
        data = json.loads((Path(directory) / SIMULATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "seed" in data and "config" in data else None


def _is_simulation(directory: Path) -> bool:
    return read_simulation(directory) is not None


def simulated_inputs(paths: list[str | os.PathLike]) -> list[bool]:
    """For each input file, whether it lies in a survey written by ``astroembed simulate``;
    decided once, where the files are read, so the catalog can record it (each directory
    is looked at once however many inputs it holds)."""
    known: dict[Path, bool] = {}

    def simulated(directory: Path) -> bool:
        if directory not in known:
            known[directory] = (directory / SIMULATION_FILE).is_file() and _is_simulation(directory)
        return known[directory]

    return [any(simulated(d) for d in Path(os.path.abspath(p)).parents) for p in paths]


def is_answer_key(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the answer key of a survey written by ``astroembed simulate``: the
    file its ``simulation.json`` names as ``answer_key`` (surveys written before that key
    existed: ``truth.parquet`` beside it). Kept out of a cross-match's inputs; a file of the
    same name anywhere else is an input like any other."""
    path = Path(os.path.abspath(path))
    data = read_simulation(path.parent)
    return data is not None and path.name == data.get("answer_key", ANSWER_KEY)
