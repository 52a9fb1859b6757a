#!/usr/bin/env python
"""Probe and search benchmark: k-NN / ridge probe fit+predict time and search latency per query.

Usage (from the repository root):

    python bench/probe_bench.py --sizes 1e4,1e5 [--work DIR]
    python bench/probe_bench.py --sizes 1e6            # faiss k-NN only at 1e6
    python bench/probe_bench.py --demo demo-output/matched   # + `probe --method all`

Size catalogs are synthetic (timings do not depend on what the embeddings hold): N rows over ~100 deg^2 in a
HATS catalog with Z, ZWARN, TARGETID and two 128-d L2-normalised embedding columns that are
noisy nonlinear functions of Z plus a per-object latent shared by the two modalities (so
both probes and cross-modal retrieval have something to find). Results go to
``bench/results/probe.json`` and ``probe.md``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchpaths import cpu_name, portable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

DIM = 128
DATA_VERSION = 2
SEED = 20240607
N_QUERIES = 200


# ----------------------------------------------------------------------------- synthetic data

def synthetic_embeddings(z: np.ndarray, seed: int, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """Image and spectrum embeddings (unit vectors) of objects with redshifts ``z``.

    Each is ``phi(z) A + object latent B + noise``: phi is 8 smooth functions of z (so the
    relation is nonlinear but learnable), the object latent is shared by the two modalities
    (cross-modal partners), A and B are the same for both (an aligned space, as contrastive
    training makes it), and the image side is noisier, as real image embeddings are.
    """
    rng = np.random.default_rng(seed)
    freqs = np.linspace(0.5, 4.0, 8)
    phases = np.random.default_rng(1).uniform(0, 2 * np.pi, 8)
    mats = np.random.default_rng(2)
    a, b = mats.normal(size=(8, dim)), mats.normal(size=(16, dim))  # one aligned space
    out = []
    for noise in (1.0, 0.4):
        parts = []
        for start in range(0, len(z), 200_000):  # bounded temporaries at 1e6 rows
            zz = z[start:start + 200_000]
            phi = np.sin(2 * np.pi * freqs * zz[:, None] + phases)
            latent = np.random.default_rng(seed + start).normal(size=(len(zz), 16))
            x = phi @ a + 0.5 * latent @ b + noise * np.sqrt(8) * rng.normal(size=(len(zz), dim))
            parts.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
        out.append(np.concatenate(parts))
    return out[0], out[1]


def _embedding_fields():
    import pyarrow as pa

    meta = {b"model_name": b"synthetic", b"model_hash": b"synthetic-v1",
            b"embedding_dim": str(DIM).encode()}
    return {m: pa.field(f"embedding_{m}", pa.list_(pa.float32(), DIM), metadata=meta)
            for m in ("image", "spectrum")}


def _vector_array(x: np.ndarray):
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def make_catalog(path: Path, n: int, seed: int = SEED) -> Path:
    """A synthetic catalog of ``n`` rows (written once; reused while DATA_VERSION holds)."""
    import pyarrow as pa

    from astroembed.catalog.layout import tile_of
    from astroembed.catalog.writer import CatalogWriter
    from astroembed.matching.sky import healpix29

    stamp = path / "bench_version.txt"
    if stamp.is_file() and stamp.read_text() == f"{DATA_VERSION} {n}":
        return path
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(seed)
    ra = rng.uniform(150.0, 160.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(0.0, np.sin(np.radians(10.0)), n)))
    z = rng.uniform(0.01, 0.6, n)
    zwarn = (rng.random(n) < 0.01).astype(np.int64) * 4
    img, spec = synthetic_embeddings(z, seed)
    h29 = healpix29(ra, dec)
    fields = _embedding_fields()
    table = pa.table({
        "RA": ra, "DEC": dec, "_healpix_29": h29,
        "TARGETID": np.arange(n, dtype=np.int64) + 39627000000000000,
        "Z": z, "ZWARN": zwarn,
        "FLUX_G": (10 ** (-0.4 * (19.5 + 2 * z - 22.5)) * (1 + 0.05 * rng.normal(size=n))).astype(np.float32),
        "FLUX_R": (10 ** (-0.4 * (18.8 + z - 22.5)) * (1 + 0.05 * rng.normal(size=n))).astype(np.float32),
        "FLUX_Z": (10 ** (-0.4 * (18.5 + 0.5 * z - 22.5)) * (1 + 0.05 * rng.normal(size=n))).astype(np.float32),
    })
    table = table.append_column(fields["image"], _vector_array(img))
    table = table.append_column(fields["spectrum"], _vector_array(spec))
    order = 5 if n > 2e5 else 3  # ~1.8 deg tiles at 1e6 rows: ~3e4 rows each
    pix = tile_of(h29, order)
    sort = np.argsort(pix, kind="stable")
    table, pix = table.take(sort), pix[sort]
    bounds = np.flatnonzero(np.diff(pix)) + 1
    writer = CatalogWriter(path, ra_column="RA", dec_column="DEC", overwrite=True)
    writer.begin()
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, n]):
        writer.write_tile(order, int(pix[lo]), table.slice(lo, hi - lo))
    writer.finish({"command": "bench/probe_bench.py", "n": n},
                  {"astroembed_id_column": "TARGETID"}, schema=table.schema)
    stamp.write_text(f"{DATA_VERSION} {n}")
    return path


# ----------------------------------------------------------------------------- measurements

def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): with other work competing for
    the cores, CPU s / cores is the wall time the run would take on an idle machine."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_probe(catalog: Path, n: int, exact_max: float, methods: list[str]) -> list[dict]:
    """5-fold CV of the image embedding: k-NN (exact and/or faiss) and ridge."""
    from astroembed.config import ProbeConfig
    from astroembed.probes.crossval import run_probe

    runs = []
    for method in methods:
        indexes = ["exact", "faiss"] if method == "knn" else ["exact"]
        for index in indexes:
            if method == "knn" and index == "exact" and n > exact_max:
                runs.append({"method": method, "index": index, "status": "skipped",
                             "why": f"exact k-NN is O(N^2); skipped above {exact_max:g} rows"})
                continue
            cfg = ProbeConfig(catalog=str(catalog), embedding=("image",), method=(method,),
                              index=index, baselines=False, folds=5, k=64, seed=0)
            t0, c0 = time.perf_counter(), cpu_seconds()
            doc = run_probe(cfg)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            r = doc["results"][0]
            runs.append({"method": method, "index": index if method == "knn" else "-",
                         "status": "ok", "rows": doc["n_rows"], "cv_s": r["seconds"],
                         "total_s": round(wall, 3), "cpu_s": round(cpu, 1),
                         "rows_per_s": round(doc["n_rows"] / r["seconds"]),
                         "r2": r["r2"], "sigma_nmad": r["sigma_nmad"],
                         "peak_rss_mb": round(peak_rss_mb())})
            print(f"  probe {method:6s} {runs[-1]['index']:5s}: CV {r['seconds']:.1f} s, "
                  f"total {wall:.1f} s, CPU {cpu:.1f} s, R^2 {r['r2']:.4f}", flush=True)
    return runs


def bench_search(catalog: Path, n: int, queries: int = N_QUERIES) -> list[dict]:
    """Per-query latency of image -> spectrum search, exact vs faiss, and faiss recall@10."""
    from astroembed.similarity import SearchCatalog, index_files

    cat = SearchCatalog.open(catalog, ("image", "spectrum"))
    t0 = time.perf_counter()
    qx, qvalid = cat.matrix("image")
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    rows = rng.choice(np.flatnonzero(qvalid), min(queries, int(qvalid.sum())), replace=False)
    out, exact_hits = [], None
    for kind in ("exact", "faiss"):
        if kind == "faiss":
            for f in index_files(catalog, cat.columns["spectrum"]):
                f.unlink(missing_ok=True)
        t0 = time.perf_counter()
        searcher, pos_rows = cat.index("spectrum", kind)
        build_s = time.perf_counter() - t0
        reload_s = None
        if kind == "faiss":
            t0 = time.perf_counter()
            cat.index("spectrum", kind)  # the stored index, as a later `search` loads it
            reload_s = round(time.perf_counter() - t0, 3)
        lat, hits = [], []
        for r in rows:
            t0 = time.perf_counter()
            _, pos = searcher.search(qx[r][None, :], 10)
            lat.append(time.perf_counter() - t0)
            hits.append(pos_rows[pos[0][pos[0] >= 0]])
        lat = np.array(lat) * 1e3
        item = {"index": kind, "status": "ok", "n_searched": searcher.ntotal,
                "build_s": round(build_s + (load_s if kind == "exact" else 0), 3),
                "reload_s": reload_s, "latency_ms_median": round(float(np.median(lat)), 3),
                "latency_ms_p90": round(float(np.percentile(lat, 90)), 3),
                "partner_top10": float(np.mean([r in h for r, h in zip(rows, hits)]))}
        if kind == "exact":
            exact_hits = hits
        elif exact_hits is not None:
            item["recall10_vs_exact"] = float(np.mean(
                [len(set(a) & set(b)) / 10 for a, b in zip(hits, exact_hits)]))
        out.append(item)
        print(f"  search {kind:5s}: build {item['build_s']} s, median {item['latency_ms_median']} ms"
              f"/query", flush=True)
    return out


def bench_demo(catalog: Path, work: Path) -> dict:
    """``astroembed probe --target redshift --method all --json`` on ``catalog`` (the
    ``make demo`` catalog), as a user would run it (own process, wall time). A catalog without
    embeddings is copied and embedded with the default model first."""
    import pyarrow.parquet as pq

    exe = Path(sys.executable).with_name("astroembed")
    if "embedding_spectrum" not in pq.read_schema(catalog / "main" / "dataset" / "_common_metadata").names:
        copy = work / "demo"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(catalog, copy)
        subprocess.run([str(exe), "-q", "embed", "--catalog", str(copy)], check=True)
        catalog = copy
    copy = catalog
    cmd = [str(exe), "-q", "probe", "--catalog", str(copy), "--target", "redshift",
           "--method", "all", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"status": "failed", "error": proc.stderr[-2000:], "command": " ".join(cmd)}
    doc = json.loads(proc.stdout)
    print(f"  demo: {doc['n_rows']} rows, {wall:.1f} s", flush=True)
    info = _json_of([str(exe), "info", str(copy), "--json"])
    retrieval = _json_of([str(exe), "search", "--catalog", str(copy), "--evaluate", "--json"])
    return {"status": "ok", "command": " ".join(cmd[1:]), "wall_s": round(wall, 2),
            "models": {c: [f"{m['model_name']} {m['model_version']}" for m in e["models"]]
                       for c, e in info.get("embeddings", {}).items()},
            "n_rows": doc["n_rows"], "excluded": doc["excluded"],
            "results": [{k: r[k] for k in ("features", "method", "r2", "r2_std", "sigma_nmad",
                                           "outlier_fraction", "bias", "seconds")}
                        for r in doc["results"]],
            "catalog_parts": info.get("parts"),
            "retrieval": {"command": "search --catalog CAT --evaluate --json"} | retrieval}


def _json_of(cmd: list[str]) -> dict:
    """The JSON document a command prints (its failure raised with its stderr)."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


# ----------------------------------------------------------------------------- report

def machine() -> dict:
    import faiss
    import sklearn

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "faiss": faiss.__version__, "load_avg_start": os.getloadavg()}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Probe and search benchmark", "",
             f"Run {report['date']} on {m['cpu']}, {m['cores']} cores (load average at start "
             f"{m['load_avg_start'][0]:.1f}); scikit-learn {m['scikit-learn']}, faiss "
             f"{m['faiss']}. Synthetic 128-d embeddings (see bench/README.md). Probe: 5-fold "
             "CV on the image embedding, k = 64, cosine; `CV s` = fit + predict over all folds, "
             "`total s` adds reading the catalog, `CPU s` = its user+sys CPU time (all threads; "
             "/ 2 = the wall time on an idle 2-core machine when both cores are kept busy). Search: image -> spectrum, one query at a "
             f"time, {N_QUERIES} queries.", ""]
    lines += ["Load average (1 min) at the start and end of each size: " + ", ".join(
        f"{s['n']:.0e}: {s['load_avg'][0]} -> {s['load_avg'][1]}" for s in report["sizes"]
        if "load_avg" in s) + " (2 cores: above ~2 other work was competing for them).", ""]
    lines += ["## Probe", "", "| rows | method | index | CV s | total s | CPU s | rows/s | R² | σ_NMAD | peak RSS MB |",
              "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for size in report["sizes"]:
        for r in size["probe"]:
            if r["status"] != "ok":
                lines.append(f"| {size['n']:.0e} | {r['method']} | {r['index']} | {r['status']}: "
                             f"{r.get('why', '')} | | | | | | |")
                continue
            lines.append(f"| {size['n']:.0e} | {r['method']} | {r['index']} | {r['cv_s']:.1f} | "
                         f"{r['total_s']:.1f} | {r.get('cpu_s', '-')} | {r['rows_per_s']} | {r['r2']:.4f} | "
                         f"{r['sigma_nmad']:.4f} | {r['peak_rss_mb']} |")
    lines += ["", "## Search", "", "| rows | index | build s | reload s | median ms/query | p90 ms | recall@10 vs exact | partner in top 10 |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for size in report["sizes"]:
        for s in size["search"]:
            if s["status"] != "ok":
                lines.append(f"| {size['n']:.0e} | {s['index']} | {s['status']} | | | | | |")
                continue
            rec = s.get("recall10_vs_exact")
            lines.append(f"| {size['n']:.0e} | {s['index']} | {s['build_s']} | {s['reload_s'] or '-'} | "
                         f"{s['latency_ms_median']} | {s['latency_ms_p90']} | "
                         f"{'-' if rec is None else f'{rec:.3f}'} | {s['partner_top10']:.3f} |")
    if report.get("demo"):
        d = report["demo"]
        lines += ["", "## Demo catalog: `probe --target redshift --method all --json`", ""]
        if d["status"] != "ok":
            lines.append(f"failed: {d.get('error', '')}")
        else:
            lines += [f"{d['n_rows']} rows (excluded: {d['excluded']}), wall {d['wall_s']} s "
                      "(process start to exit).", "",
                      "| features | method | R² | σ_NMAD | outliers | bias | s |",
                      "|---|---|---:|---:|---:|---:|---:|"]
            for r in d["results"]:
                lines.append(f"| {r['features']} | {r['method']} | {r['r2']:.4f} ± {r['r2_std']:.4f} "
                             f"| {r['sigma_nmad']:.4f} | {r['outlier_fraction']:.3f} | "
                             f"{r['bias']:+.4f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e4,1e5", help="comma list of row counts")
    ap.add_argument("--work", default=Path(tempfile.gettempdir()) / "astroembed-probe-bench",
                    type=Path)
    ap.add_argument("--out", default=str(HERE / "results" / "probe.json"), type=Path)
    ap.add_argument("--exact-max", default=1e5, type=float,
                    help="largest size for exact k-NN in the probe (O(N^2))")
    ap.add_argument("--methods", default="knn,linear")
    ap.add_argument("--demo", type=Path, help="a crossmatched catalog to run `probe --method all` on")
    ap.add_argument("--no-search", action="store_true")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other sizes (and demo) already in --out; replace those measured now")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "command": " ".join(sys.argv), "sizes": []}
    for text in filter(None, args.sizes.split(",")):
        n = int(float(text))
        print(f"{n} rows", flush=True)
        t0 = time.perf_counter()
        catalog = make_catalog(args.work / f"n{n}", n)
        print(f"  catalog ready in {time.perf_counter() - t0:.1f} s", flush=True)
        load0 = os.getloadavg()[0]
        size = {"n": n, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "probe": bench_probe(catalog, n, args.exact_max, args.methods.split(","))}
        size["search"] = [] if args.no_search else bench_search(catalog, n)
        size["load_avg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        report["sizes"].append(size)
    if args.demo:
        report["demo"] = bench_demo(args.demo, args.work)
    report["machine"]["load_avg_end"] = os.getloadavg()
    if args.merge and args.out.is_file():
        old = json.loads(args.out.read_text())
        done = {s["n"] for s in report["sizes"]}
        report["sizes"] = sorted([s for s in old.get("sizes", []) if s["n"] not in done]
                                 + report["sizes"], key=lambda s: s["n"])
        if not args.demo and old.get("demo"):
            report["demo"] = old["demo"]
    report = portable(report, args.work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
