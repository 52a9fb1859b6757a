"""The simulated mini-survey (``astroembed simulate``) and how to recognise its files."""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Written at the top of every simulated survey (seed, sizes, software versions).
SIMULATION_FILE = "simulation.json"


def _is_simulation(directory: Path) -> bool:
    """``directory`` holds the ``simulation.json`` that ``astroembed simulate`` writes (a JSON
    object with its seed and config), not just any file of that name."""
    try:
        data = json.loads((directory / SIMULATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "seed" in data and "config" in data


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
