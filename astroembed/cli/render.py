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
