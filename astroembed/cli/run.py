"""``astroembed run``: a pipeline from a TOML file, incrementally, with log-file output."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import json_flag
from astroembed.cli.render import quiet, show
from astroembed.errors import ConfigError

AsJson = json_flag("Print the run report as JSON on stdout.")
log = logging.getLogger("astroembed")


class _JsonLines(logging.Formatter):
    """One JSON object per record: time, level, event, message, and the event's fields
    (stage, tile, file, counts, error, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(),
               "event": getattr(record, "event", "log"),
               "message": record.getMessage()}
        doc.update(getattr(record, "fields", {}) or {})
        return json.dumps(doc, default=str)


def _run_logging(log_format: str) -> None:
    """``run`` talks to log files: INFO by default (unless -q), timestamps, text or JSON."""
    import time as _time

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        formatter = _JsonLines()
        formatter.converter = _time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handler.setFormatter(formatter)
    logging.getLogger().handlers[:] = [handler]  # every logger, Dask's included
    for name in ("astroembed", "py.warnings"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    if log.getEffectiveLevel() > logging.INFO and not quiet():
        log.setLevel(logging.INFO)


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="Pipeline TOML file (see pipelines/demo.toml).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List new, changed and removed inputs and the tiles they touch; change nothing.")] = False,
    log_format: Annotated[str, typer.Option("--log-format", help="text | json (one object per line on stderr: time, level, event, message, stage, tile, file, counts, error).")] = "text",
    on_error: Annotated[str, typer.Option("--on-error", help="fail: stop at an unreadable input file, catalog untouched. skip: leave it out (a bad brick coadd file: only its objects lose their brick stamps), finish the rest, exit 4.")] = "fail",
    as_json: AsJson = False,
) -> None:
    """Run a pipeline (crossmatch -> embed -> probe/predict) from a TOML file, incrementally.

    Only tiles reached by new or changed input files are redone; a run with nothing new does
    nothing and says so. One run per catalog at a time. Exit codes: 0 done, 1 failed, 2 usage
    or config error, 3 another run holds the catalog, 4 done without some unreadable inputs.

    Example:  astroembed run pipelines/demo.toml --log-format json --on-error skip
    """
    import astroembed
    from astroembed.config import LOG_FORMATS
    from astroembed.pipeline.run import PartialSuccess

    with user_errors():
        if log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)} "
                              f"(got '{log_format}').")
        _run_logging(log_format)
        try:
            report = astroembed.run(config, dry_run=dry_run, on_error=on_error)
        except PartialSuccess as err:  # done without some inputs: the report, then exit 4
            show(err.report, as_json, render)
            raise
        show(report, as_json, render)


def render(report: dict) -> None:
    """The outcome, the inputs seen and what each stage did."""
    xm = report["stages"].get("crossmatch", {})
    tiles = xm.get("tiles")
    done = "all tiles" if xm.get("mode") == "full" else f"{len(tiles or [])} tiles"
    lines = [f"{report['catalog']}: {report.get('outcome')}",
             f"  inputs: {report['inputs']['files']} files, {len(report['inputs']['new'])} new, "
             f"{len(report['inputs']['changed'])} changed, {len(report['inputs']['removed'])} removed"
             + (f", {len(report['skipped_inputs'])} skipped" if report["skipped_inputs"] else ""),
             f"  crossmatch: {xm.get('mode')}" + ("" if xm.get("mode") == "none" else f", {done}")]
    if "embed" in report["stages"]:
        e = report["stages"]["embed"]
        lines.append(f"  embed: {e['tiles_embedded']} tiles embedded, {e['tiles_skipped']} already done")
    for p in report["stages"].get("probe") or []:
        best = max(p["results"], key=lambda r: r["r2"] if r["r2"] is not None else -1e9)
        lines.append(f"  probe {p['target']}: {p['n_rows']} rows, best R^2 {best['r2']:.4f} "
                     f"({best['features']} {best['method']})" + (f" -> {p['out']}" if p["out"] else ""))
    typer.echo("\n".join(lines))
