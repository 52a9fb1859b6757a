"""What ``probe --out`` writes: ``predictions.parquet`` (out-of-fold predictions), two PNGs
per result (predicted vs true, and the PIT histogram), ``summary.png`` (every result
compared) and ``probe.json`` (the report); checked before any fitting, each file written
atomically. Files an earlier run wrote there and this one does not (another method, another
target) are removed, and nothing else: see :func:`stale_outputs`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from astroembed.config import ProbeConfig
from astroembed.errors import OutputError
from astroembed.probes.features import ProbeData
from astroembed.probes.metrics import level_label
from astroembed.probes.uncertainty import OutOfFold

REPORT_FORMAT = "astroembed-probe-report"  # probe.json of `probe --out`
SUMMARY_PLOT = "summary.png"
#: The names ``--out`` files take: only files so named are ever removed from it.
OUTPUT_NAME = re.compile(r"^(predictions\.parquet|summary\.png|probe_[^/\\]+\.png)$")


def output_names(target: str, runs: list[tuple[str, str]]) -> list[str]:
    """The files ``--out`` receives: predictions, two plots per result, the summary plot,
    the report."""
    return ["predictions.parquet", "probe.json", SUMMARY_PLOT,
            *(f"probe_{target}_{features}_{method}.png" for features, method in runs),
            *(f"probe_{target}_{features}_{method}_pit.png" for features, method in runs)]


def check_outputs(cfg: ProbeConfig, target: str, runs: list[tuple[str, str]]) -> None:
    """``--out`` and ``--save`` checked before any fitting: writable, and nothing there that
    astroembed did not write would be overwritten or replaced."""
    from astroembed.catalog.outputs import (PROBE_REPORT, SAVED_PROBE, check_write_into,
                                            claim_directory)

    if cfg.out and cfg.save and Path(cfg.out).absolute() == Path(cfg.save).absolute():
        raise OutputError(f"--out and --save are both {cfg.out}: the report and the saved "
                          "probe each need a directory of their own.")
    if cfg.out:
        check_write_into(cfg.out, PROBE_REPORT, output_names(target, runs), "--out")
    if cfg.save:
        claim_directory(cfg.save, SAVED_PROBE, overwrite=cfg.overwrite, option="--save")


def previous_outputs(out: Path) -> set[str]:
    """Names of the files the report in ``out`` says an earlier run wrote there: empty unless
    ``out/probe.json`` is one (its ``format``), and only names :data:`OUTPUT_NAME` allows."""
    try:
        doc = json.loads((out / "probe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return set()
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        return set()
    files = doc.get("outputs") or {}
    listed = [files.get("predictions"), files.get("summary_plot"), *(files.get("plots") or [])]
    names = {Path(f).name for f in listed if isinstance(f, str)}
    return {n for n in names if OUTPUT_NAME.match(n)}


def stale_outputs(out: Path, previous: set[str], written: set[str]) -> list[Path]:
    """Files of an earlier run (``previous``, see :func:`previous_outputs`) that this run did
    not rewrite: left in place they would read as results of this run."""
    return [out / n for n in sorted(previous - written)
            if (out / n).is_file() and not (out / n).is_symlink()]


def distribution_columns(name: str, oof: OutOfFold) -> dict:
    """``<name>_quantiles`` (float32 list at the levels of
    :data:`astroembed.probes.uncertainty.QUANTILE_LEVELS`), ``<name>_lower_<L>`` /
    ``_upper_<L>`` and ``<name>_pit``, null where the row has no out-of-fold prediction:
    the columns ``predict`` writes, plus the randomized PIT."""
    import pyarrow as pa

    q = np.asarray(oof.quantiles, np.float32)
    missing = ~np.isfinite(q).all(axis=1)
    out = {f"{name}_quantiles": pa.FixedSizeListArray.from_arrays(
        pa.array(np.nan_to_num(q).ravel(), pa.float32()), q.shape[1],
        mask=pa.array(missing))}
    for level in oof.lower:
        label = level_label(level)
        out[f"{name}_lower_{label}"] = pa.array(oof.lower[level], mask=missing)
        out[f"{name}_upper_{label}"] = pa.array(oof.upper[level], mask=missing)
    out[f"{name}_pit"] = pa.array(oof.pit, mask=~np.isfinite(oof.pit))
    return out


def write_outputs(out: Path, data: ProbeData, fold: np.ndarray,
                  predictions: dict[tuple[str, str], np.ndarray], doc: dict,
                  dists: dict[tuple[str, str], OutOfFold] | None = None) -> dict:
    """``OUT/predictions.parquet`` (ID, fold, true value, per feature set and method the
    out-of-fold prediction and, given its cross-calibrated distribution in ``dists``, its
    quantiles, intervals and PIT), per result a predicted-vs-true PNG and a PIT histogram,
    ``OUT/summary.png`` and ``OUT/probe.json``; each file written atomically. Then the files
    of an earlier run that this one did not rewrite are removed (:func:`stale_outputs`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from astroembed.catalog.atomic import atomic_path
    from astroembed.plots import pit_plot, probe_plot, summary_plot

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output directory: "
                          f"{err.strerror or err}") from err
    if not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory; choose another --out.")
    previous = previous_outputs(out)
    columns = {data.id_column: data.ids, "fold": fold.astype(np.int16), data.target: data.y}
    dists = dists or {}
    for (features, method), pred in predictions.items():
        name = f"pred_{features}_{method}"
        columns[name] = pred
        if (features, method) in dists:
            columns |= distribution_columns(name, dists[(features, method)])
    table = pa.table(columns).replace_schema_metadata(
        {b"astroembed_probe": json.dumps({k: v for k, v in doc.items() if k != "results"},
                                         default=str).encode()})
    files = {"predictions": str(out / "predictions.parquet"), "plots": []}
    with atomic_path(out / "predictions.parquet") as tmp:
        pq.write_table(table, tmp)
    for (features, method), pred in predictions.items():
        file = out / f"probe_{data.target}_{features}_{method}.png"
        result = next(r for r in doc["results"]
                      if (r["features"], r["method"]) == (features, method))
        probe_plot(data.y, pred, file, title=f"{data.target}: {features} {method}",
                   redshift=data.redshift, metrics=result)
        files["plots"].append(str(file))
        if (features, method) in dists:
            file = out / f"probe_{data.target}_{features}_{method}_pit.png"
            shown = {k: result[k] for k in ("crps", "pit_ks") if result.get(k) is not None}
            pit_plot(dists[(features, method)].pit, file,
                     title=f"{data.target}: {features} {method} PIT", metrics=shown)
            files["plots"].append(str(file))
    summary_plot(doc["results"], out / SUMMARY_PLOT, redshift=data.redshift,
                 title=f"probe of {data.target}: {len(data.y)} rows")
    files["summary_plot"] = str(out / SUMMARY_PLOT)
    with atomic_path(out / "probe.json") as tmp:
        report = {"format": REPORT_FORMAT} | doc | {"outputs": files}
        tmp.write_text(json.dumps(report, indent=2, default=str))
    files["summary"] = str(out / "probe.json")
    written = {Path(f).name for f in [files["predictions"], files["summary_plot"],
                                      *files["plots"]]}
    for stale in stale_outputs(out, previous, written):
        stale.unlink(missing_ok=True)
    return files


__all__ = ["check_outputs", "distribution_columns", "output_names", "previous_outputs",
           "stale_outputs", "write_outputs"]
