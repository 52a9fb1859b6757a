"""Progress on stderr for long commands, for a person at a terminal: nothing with -q, with
--json (a program reads the output) or when stderr is not a terminal (a log file, a pipe), and
nothing until the first update, so an error found while checking the arguments stays one
line."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from astroembed.cli.render import quiet, stderr

Update = Callable[..., None]


@contextlib.contextmanager
def progress_bars(as_json: bool) -> Iterator[Update | None]:
    """Yield the ``progress(stage, done, total, metrics=None)`` callback the API functions
    take (None with -q, with ``as_json``, or when stderr is not a terminal): one bar per
    stage, rows/s on a stage named ``rows`` and the running loss when ``metrics`` carry
    one."""
    if quiet() or as_json or not stderr().is_terminal:
        yield None
        return
    bars: dict[str, int] = {}
    holder: list = []

    def update(stage: str, done: int, total: int, metrics: dict | None = None) -> None:
        if not holder:
            holder.append(_progress())
            holder[0].start()
        progress = holder[0]
        if stage not in bars:
            bars[stage] = progress.add_task(stage, total=total, rate=stage == "rows", loss=None)
        fields = {"loss": metrics["loss"]} if metrics and "loss" in metrics else {}
        progress.update(bars[stage], completed=done, **fields)

    try:
        yield update
    finally:
        if holder:
            holder[0].stop()


def _progress():
    """The rich Progress every command uses: stage, bar, done/total, rate or loss, time."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                               TextColumn, TimeElapsedColumn)
    from rich.text import Text

    class RateOrLoss(ProgressColumn):
        def render(self, task) -> Text:
            if task.fields.get("loss") is not None:
                return Text(f"loss {task.fields['loss']:.4f}")
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rows/s" if task.fields.get("rate") and speed else "")

    return Progress(TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
                    RateOrLoss(), TimeElapsedColumn(), console=stderr())
