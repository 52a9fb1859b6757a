"""What every command's rendering shares: -q, the stderr console, strict JSON, numbers."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

import typer

log = logging.getLogger("astroembed")


def quiet() -> bool:
    """``-q`` was given: only errors on stderr, no progress, no notes."""
    return log.getEffectiveLevel() >= logging.ERROR


def stderr():
    """A rich console on stderr, for notes and progress (stdout carries the results)."""
    from rich.console import Console

    return Console(stderr=True)


def _strict(value: Any) -> Any:
    """``value`` with non-finite floats as None and numpy scalars as Python numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _strict(value.item())
    return value


def to_json(doc: Any) -> str:
    """Strict JSON (non-finite floats become null, so every parser accepts it); anything
    else JSON has no type for (paths, times) as its string."""
    return json.dumps(_strict(doc), indent=2, allow_nan=False, default=str)


def print_json(doc: Any) -> None:
    """``--json``: exactly what the API returned, on stdout."""
    typer.echo(to_json(doc))


def show(result: Any, as_json: bool, render: Callable[..., None], *args: Any) -> None:
    """What a command prints: ``--json`` the result exactly, else ``render(result, *args)``."""
    if as_json:
        print_json(result)
    else:
        render(result, *args)


def number(value: float | None, spec: str = ".4f", std: float | None = None) -> str:
    """``value`` formatted by ``spec`` ("-" when missing), with ``±std`` when given."""
    if value is None:
        return "-"
    text = format(value, spec)
    return f"{text}±{format(std, spec)}" if std is not None else text


def break_lines(text: str, width: int) -> str:
    """``text`` as lines of at most ``width`` characters, broken after a space, comma, slash,
    underscore, ``<``, ``>`` or a hyphen between letters where it can be, inside a word only
    where one part is longer than ``width``. Rich's own wrapping breaks at spaces only, so
    a type such as ``fixed_size_list<element: float>[7781]`` was folded mid-word."""
    import re

    width = max(width, 1)
    lines: list[str] = []
    line = ""
    for part in re.findall(r".+?(?:[\s,/_<>]+|(?<=[A-Za-z])-(?=[A-Za-z])|$)", text):
        if len((line + part).rstrip()) <= width:
            line += part
            continue
        if line.strip():
            lines.append(line.rstrip())
        part = part.lstrip()
        while len(part.rstrip()) > width:
            lines.append(part[:width])
            part = part[width:]
        line = part
    if line.strip() or not lines:
        lines.append(line.rstrip())
    return "\n".join(lines)


def share_widths(natural: list[int], weights: list[int], least: list[int],
                 available: int) -> list[int]:
    """Widths for columns that may wrap, summing to at most ``available`` where it allows:
    each column its ``natural`` width when that is within its share (``weights``) of what is
    left, the others that share, none less than its ``least``."""
    widths = list(natural)
    left = [i for i in range(len(natural))]
    while left:
        total = sum(weights[i] for i in left)
        within = [i for i in left if natural[i] <= available * weights[i] / total]
        if not within:
            for i in left:
                widths[i] = max(least[i], available * weights[i] // total)
            break
        for i in within:
            available -= natural[i]
            left.remove(i)
    return widths
