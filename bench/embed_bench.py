#!/usr/bin/env python
"""Embedding benchmark: end-to-end ``embed`` vs the bare ONNX model, and peak memory vs tile size.

Usage (from the repository root):

    python bench/embed_bench.py --sizes 2000,20000 [--model ONNXDIR] [--repeat 3]
        [--batch-size 256] [--threads N] [--work DIR]
        [--out bench/results/embed.json]

For each size N it builds (once, cached in ``--work``) a catalog of ONE tile of N rows with
random 3x64x64 g,r,z cutouts and 7781-pixel spectra (flux, ivar) in the pixel extension,
written through ``astroembed.catalog.writer.CatalogWriter``, then runs, ``--repeat`` times
each, alternating, each in its own process:

- ``embed``: ``astroembed.runtime.orchestrate.embed`` with ``--force`` on that tile (in-process, both
  encoders): open the catalog and model, read every row group, preprocess, run, write the
  new tile, rewrite the catalog metadata. Timed inside the process (imports excluded, for
  both runs).
- ``bare``: the same rows through ``onnxruntime.InferenceSession.run`` alone: the rows are
  read and preprocessed batch by batch untimed, and only ``session.run`` is timed (same
  batch size, same threads, same providers, and the model's best schedule, the one ``embed``
  uses: both encoders side by side, the threads shared, no spinning). Read and
  preprocessing times are reported too.

``overhead = embed seconds / bare seconds - 1`` (docs/architecture.md; target <= 0.30 on CPU).
Peak memory is the child's RSS, sampled by psutil every 10 ms (and its getrusage high-water
mark); the target is the same peak for 2,000 and 20,000 rows.

``--model`` defaults to the default model when it ships, else a tiny random-weight model
(``tests/tiny_models.py``), which costs almost nothing to run: with it the overhead measures
the pipeline's fixed costs (Parquet read and write of ~110 kB a row, preprocessing) against
a model that is nearly free, so it is far above any real model's.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchpaths import portable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CUTOUT = 64
N_WAVE = 7781
ORDER, PIXEL = 3, 100  # the one tile
SEED = 20240605
DATA_VERSION = 3  # bump when the generator changes, so cached catalogs are rebuilt


# =============================================================================================
# Data
# =============================================================================================
def _schema():
    import pyarrow as pa

    grid = {"wave_start": "3600.0", "wave_step": "0.8", "n_wave": str(N_WAVE),
            "wave_unit": "Angstrom"}
    return pa.schema([
        ("_healpix_29", pa.int64()), ("ra", pa.float64()), ("dec", pa.float64()),
        pa.field("image", pa.fixed_shape_tensor(pa.float32(), (3, CUTOUT, CUTOUT))),
        pa.field("flux", pa.list_(pa.float32(), N_WAVE),
                 metadata=grid | {"unit": "1e-17 erg / (s cm2 Angstrom)"}),
        pa.field("ivar", pa.list_(pa.float32(), N_WAVE), metadata=grid)])


def _chunk(rng, h29, schema):
    """One row group of random rows (positions from the HEALPix index)."""
    import healpy as hp
    import numpy as np
    import pyarrow as pa

    n = len(h29)
    ra, dec = hp.pix2ang(2**29, h29, nest=True, lonlat=True)
    images = rng.normal(0.0, 0.05, (n, 3, CUTOUT, CUTOUT)).astype(np.float32)
    images += rng.uniform(0.0, 2.0, (n, 3, 1, 1)).astype(np.float32) * np.exp(
        -((np.arange(CUTOUT) - CUTOUT / 2) ** 2)[None, None, :, None] / 50.0).astype(np.float32)
    flux = rng.normal(1.0, 0.5, (n, N_WAVE)).astype(np.float32)
    ivar = rng.uniform(0.5, 4.0, (n, N_WAVE)).astype(np.float32)
    ivar[rng.random((n, N_WAVE)) < 0.01] = 0.0

    def fsl(a, fld):
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), type=fld.type)

    image_type = schema.field("image").type
    image = pa.ExtensionArray.from_storage(
        image_type, pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)),
                                                      3 * CUTOUT * CUTOUT))
    return pa.table([pa.array(h29, pa.int64()), pa.array(ra), pa.array(dec), image,
                     fsl(flux, schema.field("flux")), fsl(ivar, schema.field("ivar"))],
                    schema=schema)


def ensure_catalog(work: Path, n: int) -> Path:
    """A one-tile catalog of ``n`` random rows, built once (streamed, ~64 MB row groups): the
    main tile (positions, ROW_ID) and the pixel extension's tile, as ``crossmatch`` lays a
    catalog out."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from astroembed.catalog.atomic import atomic_path
    from astroembed.catalog.layout import pixel_tile_path, row_ids, tile_path
    from astroembed.catalog.reader import read_catalog_info
    from astroembed.catalog.tiles import parquet_options, split_pixels
    from astroembed.catalog.writer import CatalogWriter

    path = work / f"n{n}-v{DATA_VERSION}"
    if (path / "collection.properties").is_file():
        try:
            if read_catalog_info(path).total_rows == n:
                return path
        except Exception:
            pass
    print(f"building a {n}-row catalog in {path} ...", file=sys.stderr, flush=True)
    rng = np.random.default_rng(SEED + n)
    shift = 2 * (29 - ORDER)
    h29 = np.sort(rng.integers(PIXEL << shift, (PIXEL + 1) << shift, n))
    ids = row_ids(ORDER, PIXEL, n)
    schema = _schema()
    full = schema.insert(1, pa.field("ROW_ID", pa.int64()))
    main_schema, pixel_schema = (t.schema for t in split_pixels(full.empty_table(), "ra", "dec"))
    per_group = max(1, (64 << 20) // (4 * (3 * CUTOUT * CUTOUT + 2 * N_WAVE)))
    writer = CatalogWriter(path, ra_column="ra", dec_column="dec", overwrite=True)
    with writer:
        # Streamed instead of writer.write_tile(table): a 20,000-row tile is 2.2 GB in memory.
        with atomic_path(tile_path(writer.write_path, ORDER, PIXEL)) as main_tmp, \
                atomic_path(pixel_tile_path(writer.write_path, ORDER, PIXEL)) as pixel_tmp:
            with pq.ParquetWriter(main_tmp, main_schema, **parquet_options(main_schema)) as main, \
                    pq.ParquetWriter(pixel_tmp, pixel_schema,
                                     **parquet_options(pixel_schema)) as pixels:
                for start in range(0, n, per_group):
                    chunk = _chunk(rng, h29[start:start + per_group], schema)
                    chunk = chunk.add_column(1, "ROW_ID", pa.array(ids[start:start + per_group]))
                    main_part, pixel_part = split_pixels(chunk, "ra", "dec")
                    main.write_table(main_part)
                    pixels.write_table(pixel_part)
        writer.finish({"command": "embed_bench", "rows": n, "seed": SEED + n}, schema=schema)
    return path


def default_model(work: Path) -> Path:
    """The shipped default model, else the tiny test model (built in ``work``)."""
    from astroembed.runtime.modelfile import DEFAULT_MODEL_DIR

    if DEFAULT_MODEL_DIR.is_dir() and any(DEFAULT_MODEL_DIR.glob("*.onnx")):
        return DEFAULT_MODEL_DIR
    sys.path.insert(0, str(REPO / "tests"))
    import tiny_models

    return tiny_models.model_dir(work / "tiny-model", crop=32, dim=128, seed=0)


# =============================================================================================
# Children (each timed run is its own process)
# =============================================================================================
def child_embed(args) -> dict:
    import astroembed.runtime.embedding  # noqa: F401 - imported untimed, as the bare run's modules are
    from astroembed.config import EmbedConfig
    from astroembed.runtime.orchestrate import embed

    cfg = EmbedConfig(catalog=args.catalog, model=args.model, batch_size=args.batch_size,
                      threads=args.threads, device=args.device, force=True)
    from astroembed.catalog.layout import pixel_tile_path, tile_path

    cpu0, start = _cpu_seconds(), time.perf_counter()
    summary = embed(cfg)
    seconds = time.perf_counter() - start
    main_bytes = tile_path(args.catalog, ORDER, PIXEL).stat().st_size
    pixel_bytes = pixel_tile_path(args.catalog, ORDER, PIXEL).stat().st_size
    rows = summary["rows_embedded"]
    # embed writes the main tile (and the small metadata files); pixel files are only read
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu0,
            "rows": rows, "providers": summary["providers"],
            "written_bytes_per_row": round(main_bytes / rows, 1),
            "main_bytes_per_row": round(main_bytes / rows, 1),
            "pixel_bytes_per_row": round(pixel_bytes / rows, 1)}


def _cpu_seconds() -> float:
    """User + system CPU of this process so far, all threads (ONNX Runtime's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_bare(args) -> dict:
    import numpy as np
    import onnxruntime as ort
    import pyarrow.parquet as pq

    from astroembed.catalog.layout import pixel_tile_path
    from astroembed.catalog.reader import image_array
    from astroembed.runtime.modelfile import find_encoders, open_encoder
    from astroembed.runtime.preprocess import image_inputs, spectrum_inputs

    from concurrent.futures import ThreadPoolExecutor

    from astroembed.runtime.embedding import threads_per_encoder

    paths = find_encoders(args.model)
    sessions, preps, providers = {}, {}, {}
    # The model's best schedule on these cores, as `embed` runs it: the encoders side by side,
    # the threads shared among them, idle threads not spinning.
    threads = threads_per_encoder(args.threads, len(paths))
    models = ThreadPoolExecutor(max_workers=len(paths))
    for modality, path in paths.items():
        info = open_encoder(path, device="cpu", threads=1).info  # only to read the contract
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        avail = ort.get_available_providers()
        wanted = (["CUDAExecutionProvider"] if args.device != "cpu" and
                  "CUDAExecutionProvider" in avail else []) + ["CPUExecutionProvider"]
        sessions[modality] = (ort.InferenceSession(str(path), opts, providers=wanted), info.output)
        preps[modality] = info.preprocessing
        providers[modality] = sessions[modality][0].get_providers()
    timings = {"read": 0.0, "preprocess": 0.0, "model": 0.0, "model_cpu": 0.0}
    rows = 0
    source = pq.ParquetFile(pixel_tile_path(args.catalog, ORDER, PIXEL))
    for group in range(source.num_row_groups):
        t = time.perf_counter()
        for batch in source.iter_batches(batch_size=args.batch_size, row_groups=[group]):
            n = batch.num_rows
            images = image_array(batch.column("image"))
            flux = batch.column("flux").values.to_numpy().reshape(n, N_WAVE)
            ivar = batch.column("ivar").values.to_numpy().reshape(n, N_WAVE)
            timings["read"] += time.perf_counter() - t
            t = time.perf_counter()
            feeds = {}
            if "image" in sessions:
                x, ok = image_inputs(images, preps["image"])
                feeds["image"] = {k: v[ok] for k, v in x.items()}
            if "spectrum" in sessions:
                x, ok = spectrum_inputs(flux, ivar, preps["spectrum"])
                feeds["spectrum"] = {k: v[ok] for k, v in x.items()}
            timings["preprocess"] += time.perf_counter() - t
            t, cpu0 = time.perf_counter(), _cpu_seconds()
            runs = [models.submit(sessions[m][0].run, [sessions[m][1]], feed)
                    for m, feed in feeds.items()]
            for run in runs:
                np.asarray(run.result()[0])
            timings["model"] += time.perf_counter() - t
            timings["model_cpu"] += _cpu_seconds() - cpu0
            rows += n
            t = time.perf_counter()
    return {"seconds": timings["model"], "cpu_seconds": timings["model_cpu"], "rows": rows,
            "read_seconds": timings["read"],
            "preprocess_seconds": timings["preprocess"], "providers": providers}


def run_child(kind: str, catalog: Path, model: Path, opts) -> dict:
    """Run one child under psutil sampling; its JSON result plus peak memory and CPU use."""
    import psutil

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_file = Path(fh.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", kind, "--catalog",
           str(catalog), "--model", str(model), "--batch-size", str(opts.batch_size),
           "--threads", str(opts.threads), "--device", opts.device, "--result",
           str(result_file)]
    busy0 = _busy_cpu()
    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=REPO)
    peak, cpu = 0, 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
            times = proc.cpu_times()
            cpu = times.user + times.system
        except psutil.Error:
            pass
        time.sleep(0.01)
    wall = time.perf_counter() - start
    other = max(0.0, (_busy_cpu() - busy0 - cpu) / wall)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed (exit {proc.returncode}): {' '.join(cmd)}")
    result = json.loads(result_file.read_text())
    result_file.unlink()
    result.update(peak_rss_mb=round(peak / 2**20, 1), process_wall_seconds=round(wall, 2),
                  other_cpu=round(other, 2))
    return result


def _busy_cpu() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + \
        getattr(t, "softirq", 0.0)


# =============================================================================================
# Harness
# =============================================================================================
def summarise(n: int, runs: dict[str, list[dict]]) -> dict:
    """The median run of each kind, and the overheads of every embed/bare pair with their
    median and range: ``overhead`` = embed s / bare model s - 1; ``floor`` = what any
    pipeline must spend (the bare run's read + preprocess + model), and ``over_floor`` =
    embed s / floor s - 1, what the pipeline adds beyond that."""
    import statistics

    def median_run(items: list[dict]) -> dict:
        return sorted(items, key=lambda r: r["seconds"])[len(items) // 2]

    over = [e["seconds"] / b["seconds"] - 1 for e, b in zip(runs["embed"], runs["bare"])]
    floor = [b["floor_seconds"] / b["seconds"] - 1 for b in runs["bare"]]
    over_floor = [e["seconds"] / b["floor_seconds"] - 1
                  for e, b in zip(runs["embed"], runs["bare"])]
    return {"rows": n, "repeats": len(over), "embed": median_run(runs["embed"]),
            "bare": median_run(runs["bare"]), "runs": runs,
            "overhead": statistics.median(over), "overhead_range": [min(over), max(over)],
            "floor_overhead": statistics.median(floor),
            "over_floor": statistics.median(over_floor)}


def model_id(model: Path) -> dict:
    from astroembed.runtime.modelfile import encoder_info, find_encoders

    infos = {m: encoder_info(p) for m, p in find_encoders(model).items()}
    first = next(iter(infos.values()))
    return {"path": str(model), "name": first.name, "version": first.version,
            "dim": first.dim, "hashes": {m: i.hash[:12] for m, i in infos.items()},
            "preprocessing": {m: i.preprocessing for m, i in infos.items()}}


def markdown(report: dict) -> str:
    m = report["model"]
    lines = [
        "# Embedding benchmark", "",
        f"Run {report['date']} on {report['machine']}. Model `{m['name']}` {m['version']} "
        f"(d = {m['dim']}, {m['path']}), batch {report['batch_size']}, "
        f"{report['threads']} onnxruntime threads, providers "
        f"{', '.join(sorted({p[0] for r in report['results'] for p in r['embed']['providers'].values()}))}. "
        "One tile of N rows (random 3x64x64 cutouts, 7781-pixel flux and ivar, ~110 kB a row). "
        "`embed` = `astroembed.runtime.orchestrate.embed(..., force=True)`, timed in its process (read, "
        "preprocess, both encoders, write the tile, rewrite the catalog metadata). `bare` = "
        "`session.run` alone on the same rows, already preprocessed, scheduled as `embed` runs "
        "the encoders (side by side, threads shared). `overhead` = embed s / "
        "bare s - 1 (target <= 0.30 on CPU). `read`/`prep` = time the bare run spent reading "
        "and preprocessing (untimed in `bare`), for where the overhead goes. Peak RSS sampled "
        "by psutil (getrusage high-water mark in brackets). `other CPU` = cores' worth used "
        "by other processes during the run (> 0.2: timing disturbed). `CPU s` = CPU seconds "
        "(user + system, all threads) of `embed` and of the bare `session.run` calls; "
        "`idle` = the share of the cores' time `embed` left unused (1 - CPU s / (wall s x "
        "cores)): CPU s above the bare run's is extra work, idle is waiting.", "",
        *([report["note"], ""] if report.get("note") else []),
        "Each row: the median of the runs (`runs`), embed and bare alternated; `overhead` is "
        "the median over the embed/bare pairs with its range; `floor` = read + preprocess + "
        "bare model (what any pipeline spends) and `floor ovh` its excess over the bare model; "
        "`written B/row` = bytes of the main tile `embed` rewrites, per row (the pixel tile, "
        "`pixel B/row`, is only read).", "",
        "| rows | runs | embed s | embed rows/s | bare s | bare rows/s | overhead (range) "
        "| floor s | floor ovh | read s | prep s | written B/row | pixel B/row "
        "| embed CPU s | bare CPU s | embed idle | embed peak MB | bare peak MB | other CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        "---:|---:|---:|"]
    for r in report["results"]:
        e, b = r["embed"], r["bare"]
        lo, hi = r.get("overhead_range", [r["overhead"]] * 2)
        lines.append(
            f"| {r['rows']:,} | {r.get('repeats', 1)} | {e['seconds']:.2f} | "
            f"{e['rows_per_second']:,.0f} | "
            f"{b['seconds']:.2f} | {b['rows_per_second']:,.0f} | {r['overhead']:.2f} "
            f"({lo:.2f}-{hi:.2f}) | {b['floor_seconds']:.2f} | {r['floor_overhead']:.2f} | "
            f"{b['read_seconds']:.2f} | {b['preprocess_seconds']:.2f} | "
            f"{e['written_bytes_per_row']:,.0f} | {e['pixel_bytes_per_row']:,.0f} | "
            f"{e['cpu_seconds']:.2f} | {b['cpu_seconds']:.2f} | "
            f"{1 - e['cpu_seconds'] / (e['seconds'] * report['cores']):.2f} | "
            f"{e['peak_rss_mb']:.0f} ({e['maxrss_mb']:.0f}) | "
            f"{b['peak_rss_mb']:.0f} ({b['maxrss_mb']:.0f}) | "
            f"{max(e['other_cpu'], b['other_cpu']):.2f} |")
    if len(report["results"]) > 1:
        first, last = report["results"][0], report["results"][-1]
        growth = last["embed"]["peak_rss_mb"] / first["embed"]["peak_rss_mb"]
        lines += ["", f"Peak memory of `embed` at {last['rows']:,} rows is {growth:.2f}x that "
                  f"at {first['rows']:,} rows ({last['rows'] / first['rows']:.0f}x the rows)."]
    return "\n".join(lines) + "\n"


def harness(opts) -> None:
    import psutil

    work = Path(opts.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(opts.model) if opts.model else default_model(work)
    sizes = [int(float(s)) for s in opts.sizes.split(",")]
    results = []
    for n in sizes:
        catalog = ensure_catalog(work, n)
        runs: dict[str, list[dict]] = {"embed": [], "bare": []}
        for rep in range(opts.repeat):
            for kind in ("embed", "bare"):  # alternated, so drifts hit both alike
                print(f"{n} rows: {kind} {rep + 1}/{opts.repeat} ...", file=sys.stderr,
                      flush=True)
                r = run_child(kind, catalog, model, opts)
                r["rows_per_second"] = r["rows"] / r["seconds"] if r["seconds"] > 0 else None
                r["floor_seconds"] = (r["seconds"] + r.get("read_seconds", 0.0)
                                      + r.get("preprocess_seconds", 0.0))
                runs[kind].append(r)
        results.append(summarise(n, runs))
        print(json.dumps(results[-1]["overhead"]), file=sys.stderr, flush=True)
    cpu = platform.processor() or platform.machine()
    report = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GB",
        "python": platform.python_version(), "model": model_id(model),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "batch_size": opts.batch_size, "threads": opts.threads, "device": opts.device,
        "note": opts.note, "results": results}
    report = portable(report, work)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        p = argparse.ArgumentParser()
        p.add_argument("child")
        p.add_argument("kind", choices=["embed", "bare"])
        p.add_argument("--catalog", required=True)
        p.add_argument("--model", required=True)
        p.add_argument("--batch-size", type=int, required=True)
        p.add_argument("--threads", type=int, required=True)
        p.add_argument("--device", default="cpu")
        p.add_argument("--result", required=True)
        args = p.parse_args()
        result = (child_embed if args.kind == "embed" else child_bare)(args)
        result["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        Path(args.result).write_text(json.dumps(result))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="2000,20000", help="rows in the tile, comma-separated")
    p.add_argument("--model", default=None, help="ONNX model dir (default: the default "
                   "model if it ships, else the tiny test model)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3, help="runs of each kind per size")
    p.add_argument("--threads", type=int, default=cores, help="onnxruntime threads (both runs)")
    p.add_argument("--device", default="cpu", choices=["cpu", "auto", "cuda"])
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "astroembed-embed-bench"))
    p.add_argument("--out", default=str(HERE / "results" / "embed.json"))
    p.add_argument("--note", default="", help="a sentence for the report (e.g. how the model "
                   "was made, what else ran on the machine)")
    harness(p.parse_args())


if __name__ == "__main__":
    main()
