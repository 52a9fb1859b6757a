#!/usr/bin/env python
"""Cross-match benchmark: astroembed vs LSDB vs astropy vs STILTS vs a bare cKDTree.

Usage (from the repository root):

    python bench/crossmatch_bench.py --sizes 1e5,1e6 \
        [--peers astroembed,lsdb,lsdb-hats,astropy,stilts,ckdtree] \
        [--work DIR] [--out bench/results/crossmatch.json]

Every peer runs in its own process under ``/usr/bin/time -f "%e %M"`` on the same
generated data, one after the other, in the same run.  See ``bench/README.md``.

The file has two roles: the harness (default) and the Python peers
(``crossmatch_bench.py peer NAME ...``), which the harness starts as subprocesses.
Peers import only what they need, so the timed process pays for its own imports.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchpaths import portable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# ---------------------------------------------------------------------------------------------
# Benchmark parameters (the issue's definition).
# ---------------------------------------------------------------------------------------------
RA_MIN, RA_MAX = 150.0, 160.0  # deg; ~100 deg^2 with the Dec range below
DEC_MIN, DEC_MAX = 0.0, 10.0
MATCHED_FRACTION = 0.8  # right = 80% of left (offset) + 20% unrelated
MAX_OFFSET_ARCSEC = 1.5
RADIUS_ARCSEC = 1.0
N_PAYLOAD = 5
SEED = 20240601
CHUNK_ROWS = 1_000_000
DATA_VERSION = 1  # bump when the generator changes, so cached data is rebuilt

ALL_PEERS = ["astroembed", "lsdb", "lsdb-hats", "astropy", "stilts", "ckdtree"]
# Peers as reported (ckdtree has two variants, lsdb-hats has a separate import step).
ARCSEC = math.pi / (180.0 * 3600.0)


def chord(radius_arcsec: float) -> float:
    return 2.0 * math.sin(radius_arcsec * ARCSEC / 2.0)


# =============================================================================================
# Data generation
# =============================================================================================
def _uniform_box(rng, n):
    """n points uniform on the sphere inside the RA/Dec box."""
    import numpy as np

    ra = rng.uniform(RA_MIN, RA_MAX, n)
    s0, s1 = math.sin(math.radians(DEC_MIN)), math.sin(math.radians(DEC_MAX))
    dec = np.degrees(np.arcsin(rng.uniform(s0, s1, n)))
    return ra, dec


def _offset(ra, dec, pa, sep_arcsec):
    """Move (ra, dec) by sep along position angle pa (radians, east of north); exact on the sphere."""
    import numpy as np

    d = np.radians(dec)
    s = sep_arcsec * ARCSEC
    sin_d2 = np.sin(d) * np.cos(s) + np.cos(d) * np.sin(s) * np.cos(pa)
    d2 = np.arcsin(np.clip(sin_d2, -1.0, 1.0))
    dra = np.arctan2(np.sin(pa) * np.sin(s) * np.cos(d), np.cos(s) - np.sin(d) * sin_d2)
    ra2 = np.mod(ra + np.degrees(dra), 360.0)
    return ra2, np.degrees(d2)


def _table(ids, ra, dec, payload):
    import pyarrow as pa

    cols = {"id": pa.array(ids), "ra": pa.array(ra), "dec": pa.array(dec)}
    for j in range(N_PAYLOAD):
        cols[f"p{j}"] = pa.array(payload[:, j])
    return pa.table(cols)


def generate(n: int, d: Path, fits: bool) -> dict:
    """Write left.parquet / right.parquet (and FITS copies) for size n into d; cached."""
    import numpy as np
    import pyarrow.parquet as pq

    d.mkdir(parents=True, exist_ok=True)
    meta_path = d / "meta.json"
    meta = {
        "n": n,
        "seed": SEED,
        "version": DATA_VERSION,
        "box": [RA_MIN, RA_MAX, DEC_MIN, DEC_MAX],
        "matched_fraction": MATCHED_FRACTION,
        "max_offset_arcsec": MAX_OFFSET_ARCSEC,
    }
    lp, rp = d / "left.parquet", d / "right.parquet"
    cached = meta_path.exists() and json.loads(meta_path.read_text()).get("params") == meta
    if not (cached and lp.exists() and rp.exists()):
        t0 = time.time()
        for p in (lp, rp, d / "left.fits", d / "right.fits"):
            p.unlink(missing_ok=True)
        lw = rw = None
        n_right_total = 0
        n_chunks = max(1, math.ceil(n / CHUNK_ROWS))
        # Right ids are a global random permutation of 0..n_right-1 so that neither row order nor
        # id says which left row a right row came from.
        n_matched = [0] * n_chunks
        sizes = []
        for c in range(n_chunks):
            m = min(CHUNK_ROWS, n - c * CHUNK_ROWS)
            n_m = int(round(MATCHED_FRACTION * m))
            sizes.append((m, n_m, m - n_m))
            n_matched[c] = n_m
        n_right_total = sum(s[1] + s[2] for s in sizes)
        perm = np.random.default_rng([SEED, n, 999]).permutation(n_right_total).astype(np.int64)
        r_off = 0
        for c, (m, n_m, n_u) in enumerate(sizes):
            rng = np.random.default_rng([SEED, n, c])
            ids = np.arange(c * CHUNK_ROWS, c * CHUNK_ROWS + m, dtype=np.int64)
            ra, dec = _uniform_box(rng, m)
            left = _table(ids, ra, dec, rng.standard_normal((m, N_PAYLOAD)))
            sel = np.sort(rng.choice(m, size=n_m, replace=False))
            pa_ = rng.uniform(0.0, 2.0 * math.pi, n_m)
            sep = rng.uniform(0.0, MAX_OFFSET_ARCSEC, n_m)
            ra2, dec2 = _offset(ra[sel], dec[sel], pa_, sep)
            ra3, dec3 = _uniform_box(rng, n_u)
            rra = np.concatenate([ra2, ra3])
            rdec = np.concatenate([dec2, dec3])
            shuffle = rng.permutation(n_m + n_u)
            rids = perm[r_off : r_off + n_m + n_u]
            r_off += n_m + n_u
            right = _table(
                rids, rra[shuffle], rdec[shuffle], rng.standard_normal((n_m + n_u, N_PAYLOAD))
            )
            if lw is None:
                lw = pq.ParquetWriter(lp.with_suffix(".tmp"), left.schema)
                rw = pq.ParquetWriter(rp.with_suffix(".tmp"), right.schema)
            lw.write_table(left, row_group_size=256_000)
            rw.write_table(right, row_group_size=256_000)
        lw.close()
        rw.close()
        lp.with_suffix(".tmp").rename(lp)
        rp.with_suffix(".tmp").rename(rp)
        meta_path.write_text(
            json.dumps({"params": meta, "n_right": n_right_total, "gen_s": time.time() - t0})
        )
    if fits:
        for name in ("left", "right"):
            fp = d / f"{name}.fits"
            if not fp.exists():
                from astropy.table import Table

                pt = pq.read_table(d / f"{name}.parquet")
                t = Table({c: pt[c].to_numpy() for c in pt.column_names})
                del pt
                tmp = d / f"{name}.tmp.fits"
                t.write(tmp, format="fits", overwrite=True)
                tmp.rename(fp)
                del t
    info = json.loads(meta_path.read_text())
    return {"n_left": n, "n_right": info["n_right"], **meta}


# =============================================================================================
# Python peers (run as subprocesses: `crossmatch_bench.py peer NAME ...`)
# =============================================================================================
def _emit(**kw):
    print(json.dumps(kw), flush=True)


def _write_pairs(left, right, li, ri, dist_arcsec, out: Path):
    """Join left rows li with right rows ri (pyarrow tables) and write one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lt = left.take(pa.array(li))
    rt = right.take(pa.array(ri))
    cols, names = [], []
    for nm in lt.column_names:
        cols.append(lt[nm])
        names.append(f"{nm}_left")
    for nm in rt.column_names:
        cols.append(rt[nm])
        names.append(f"{nm}_right")
    cols.append(pa.array(dist_arcsec))
    names.append("_dist_arcsec")
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols, names=names), out / "pairs.parquet")


def _unit(ra_deg, dec_deg):
    import numpy as np

    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    cd = np.cos(dec)
    return np.column_stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)])


def peer_ckdtree(a, sort: bool):
    import numpy as np
    import pyarrow.parquet as pq
    from scipy.spatial import cKDTree

    left = pq.read_table(a.left)
    right = pq.read_table(a.right)
    lra, ldec = left["ra"].to_numpy(), left["dec"].to_numpy()
    order = None
    if sort:
        # Queries in HEALPix (nested, order 12) order: neighbouring queries touch the same
        # tree nodes, which is kinder to the caches.
        import healpy as hp

        pix = hp.ang2pix(2**12, lra, ldec, nest=True, lonlat=True)
        order = np.argsort(pix, kind="stable")
        lra, ldec = lra[order], ldec[order]
    tree = cKDTree(_unit(right["ra"].to_numpy(), right["dec"].to_numpy()))
    dist, idx = tree.query(
        _unit(lra, ldec), k=1, distance_upper_bound=chord(a.radius), workers=a.threads
    )
    ok = np.isfinite(dist)
    li = np.nonzero(ok)[0]
    if order is not None:
        li = order[li]
    ri = idx[ok]
    sep = np.degrees(2.0 * np.arcsin(dist[ok] / 2.0)) * 3600.0
    _write_pairs(left, right, li, ri, sep, Path(a.out))
    _emit(pairs=int(ok.sum()))


def peer_astropy(a):
    import astropy.units as u
    import numpy as np
    import pyarrow.parquet as pq
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    left = pq.read_table(a.left)
    right = pq.read_table(a.right)
    lc = SkyCoord(left["ra"].to_numpy() * u.deg, left["dec"].to_numpy() * u.deg)
    rc = SkyCoord(right["ra"].to_numpy() * u.deg, right["dec"].to_numpy() * u.deg)
    idx, sep2d, _ = match_coordinates_sky(lc, rc, nthneighbor=1)
    sep = sep2d.to_value(u.arcsec)
    ok = sep <= a.radius
    li = np.nonzero(ok)[0]
    _write_pairs(left, right, li, idx[ok], sep[ok], Path(a.out))
    _emit(pairs=int(ok.sum()))


def _lsdb_scheduler(a):
    """Threads (dask's default for dataframes) unless --processes; returns a closer."""
    if a.scheduler == "threads":
        import dask

        dask.config.set(scheduler="threads", num_workers=a.threads)
        return lambda: None
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=a.threads, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)

    def close():
        client.close()
        cluster.close()

    return close


def _hats_rows(path: Path) -> int:
    """Total rows of a written HATS catalog, from its properties (cheap)."""
    for p in sorted(path.rglob("hats.properties")):
        if "margin" in str(p.relative_to(path)):
            continue
        for line in p.read_text().splitlines():
            if line.startswith("hats_nrows"):
                return int(line.split("=", 1)[1].strip())
    return -1


def peer_lsdb(a):
    import lsdb
    import pandas as pd

    close = _lsdb_scheduler(a)
    try:
        ldf = pd.read_parquet(a.left)
        rdf = pd.read_parquet(a.right)
        lcat = lsdb.from_dataframe(ldf, ra_column="ra", dec_column="dec", margin_threshold=None)
        rcat = lsdb.from_dataframe(
            rdf, ra_column="ra", dec_column="dec", margin_threshold=a.margin_arcsec
        )
        del ldf, rdf
        _lsdb_match_and_write(lcat, rcat, a)
    finally:
        close()
    _emit(pairs=_hats_rows(Path(a.out)))


def _lsdb_match_and_write(lcat, rcat, a) -> None:
    """The timed part both LSDB peers share: nearest neighbour within the radius, then write."""
    xm = lcat.crossmatch(rcat, radius_arcsec=a.radius, n_neighbors=1, suffixes=("_left", "_right"))
    xm.to_hats(Path(a.out), catalog_name="xmatch", progress_bar=False, overwrite=True)


def peer_lsdb_import(a):
    """hats-import: left and right Parquet -> HATS catalogs, plus a margin for the right."""
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
    from hats_import.pipeline import pipeline_with_client
    from dask.distributed import Client, LocalCluster

    hats_dir = Path(a.out)
    tmp = hats_dir / "_tmp"
    cluster = LocalCluster(
        n_workers=a.threads, threads_per_worker=1, processes=True, dashboard_address=None,
        local_directory=str(tmp / "dask"),
    )
    client = Client(cluster)
    try:
        for name, path in (("left", a.left), ("right", a.right)):
            args = ImportArguments(
                output_artifact_name=name,
                input_file_list=[path],
                file_reader="parquet",
                ra_column="ra",
                dec_column="dec",
                output_path=str(hats_dir),
                tmp_dir=str(tmp),
                progress_bar=False,
                resume=False,
            )
            pipeline_with_client(args, client)
        margin = MarginCacheArguments(
            input_catalog_path=str(hats_dir / "right"),
            output_path=str(hats_dir),
            output_artifact_name="right_margin",
            margin_threshold=a.margin_arcsec,
            tmp_dir=str(tmp),
            progress_bar=False,
            resume=False,
        )
        pipeline_with_client(margin, client)
    finally:
        client.close()
        cluster.close()
    shutil.rmtree(tmp, ignore_errors=True)
    _emit(pairs=None)


def peer_lsdb_hats(a):
    import lsdb

    hats_dir = Path(a.hats)
    close = _lsdb_scheduler(a)
    try:
        lcat = lsdb.open_catalog(hats_dir / "left")
        rcat = lsdb.open_catalog(hats_dir / "right", margin_cache=hats_dir / "right_margin")
        _lsdb_match_and_write(lcat, rcat, a)
    finally:
        close()
    _emit(pairs=_hats_rows(Path(a.out)))


def run_peer(argv):
    p = argparse.ArgumentParser(prog="crossmatch_bench.py peer")
    p.add_argument("name")
    p.add_argument("--left", required=True)
    p.add_argument("--right", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--hats", default=None)
    p.add_argument("--radius", type=float, default=RADIUS_ARCSEC)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--margin-arcsec", type=float, default=5.0)
    p.add_argument("--scheduler", choices=["threads", "processes"], default="threads")
    a = p.parse_args(argv)
    fn = {
        "ckdtree": lambda: peer_ckdtree(a, sort=False),
        "ckdtree-sorted": lambda: peer_ckdtree(a, sort=True),
        "astropy": lambda: peer_astropy(a),
        "lsdb": lambda: peer_lsdb(a),
        "lsdb-import": lambda: peer_lsdb_import(a),
        "lsdb-hats": lambda: peer_lsdb_hats(a),
    }[a.name]
    fn()


# =============================================================================================
# Harness
# =============================================================================================
class TreeRSS(threading.Thread):
    """Samples the summed RSS of a process and all its descendants (Dask workers, JVM...)."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._halt = threading.Event()

    def run(self):
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._halt.is_set():
            total = 0
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            for pr in procs:
                try:
                    total += pr.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(timeout=2)


def _busy_cpu_s():
    """Machine-wide busy CPU seconds (all cores) from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        vals = [int(x) for x in fields]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        # guest time is already counted in user/nice
        total = sum(vals[:8]) if len(vals) >= 8 else sum(vals)
        return (total - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def timed(cmd: list[str], timeout: float, log: Path) -> dict:
    """Run cmd under /usr/bin/time; return wall, max RSS, stdout, status."""
    full = ["/usr/bin/time", "-f", "__TIME__ %e %M %U %S"] + cmd
    busy0 = _busy_cpu_s()
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as err:
        proc = subprocess.Popen(
            full, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        sampler = TreeRSS(proc.pid)
        sampler.start()
        try:
            out, _ = proc.communicate(timeout=timeout)
            status = "ok" if proc.returncode == 0 else "error"
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            status = "timeout"
        sampler.stop()
    elapsed = time.time() - t0
    busy1 = _busy_cpu_s()
    stderr = log.read_text(errors="replace")
    wall = rss_kb = cpu_s = None
    for line in stderr.splitlines()[::-1]:
        if line.startswith("__TIME__"):
            _, w, m, us, ss = line.split()
            wall, rss_kb, cpu_s = float(w), int(m), float(us) + float(ss)
            break
    res = {
        "status": status,
        "returncode": proc.returncode,
        "wall_s": wall if wall is not None else round(elapsed, 2),
        "peak_rss_mb": round(rss_kb / 1024, 1) if rss_kb else None,
        "tree_peak_rss_mb": round(sampler.peak / 2**20, 1) if sampler.peak else None,
        "cpu_s": round(cpu_s, 2) if cpu_s is not None else None,
        "command": shlex.join(cmd),
        "stdout": out,
    }
    if busy0 is not None and busy1 is not None and cpu_s is not None and elapsed > 0:
        # Cores' worth of CPU used by other processes on the machine while this peer ran
        # (system busy time minus the peer's own user+sys); > ~0.2 means the timing was disturbed.
        res["other_cpu_cores"] = round(max(0.0, (busy1 - busy0) - cpu_s) / elapsed, 2)
    if status != "ok":
        tail = [ln for ln in stderr.splitlines()
                if ln.strip() and not ln.startswith(("__TIME__", "Command exited with non-zero",
                                                     "Command terminated by signal"))]
        res["error"] = "\n".join(tail[-25:])[-4000:]
    return res


def _last_json(stdout: str):
    """The last JSON object printed on stdout (one line, or indented over several)."""
    lines = stdout.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].lstrip().startswith("{"):
            for end in (i + 1, len(lines)):
                try:
                    obj = json.loads("\n".join(lines[i:end]))
                    if isinstance(obj, dict):
                        return obj
                except json.JSONDecodeError:
                    pass
    return None


# --- reading the pairs each peer wrote (untimed, for the agreement check) ----------------------
def _pairs_parquet_files(root: Path):
    """Data files of a HATS catalog (.../dataset/Norder=k/Dir=d/Npix=n[.parquet]) or pairs.parquet."""
    if (root / "pairs.parquet").exists():
        return [root / "pairs.parquet"]
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if not p.is_file() or any("margin" in x or x.startswith(("_tmp", ".")) for x in rel):
            continue
        if any(x.startswith("Npix=") for x in rel) and "dataset" in rel:
            files.append(p)
    return files


def read_pairs(out: Path, kind: str, n_right: int):
    """Encoded (left_id * n_right + right_id) sorted array of the pairs a peer wrote."""
    import numpy as np

    if kind == "fits":
        from astropy.io import fits

        with fits.open(out, memmap=True) as h:
            d = h[1].data
            names = [c.lower() for c in d.columns.names]
            li = np.asarray(d.field(names.index("id_1")), dtype=np.int64)
            ri = np.asarray(d.field(names.index("id_2")), dtype=np.int64)
    else:
        import pyarrow.parquet as pq

        lis, ris = [], []
        files = _pairs_parquet_files(out)
        if not files:
            raise RuntimeError(f"no Parquet files under {out}")
        for f in files:
            sch = pq.read_schema(f)
            names = sch.names
            lc = next((c for c in ("id_left", "left_id", "id_1", "id") if c in names), None)
            rc = next((c for c in ("id_right", "right_id", "id_2") if c in names), None)
            if lc is None or rc is None:
                raise RuntimeError(f"{f}: no id_left/id_right columns in {names[:20]}")
            t = pq.read_table(f, columns=[lc, rc])
            lis.append(t[lc].to_numpy())
            ris.append(t[rc].to_numpy())
        li = np.concatenate(lis).astype(np.int64)
        ri = np.concatenate(ris).astype(np.int64)
    return np.sort(li * n_right + ri)


def compare_pairs(ref, got) -> dict:
    """Both arrays sorted; ref unique. Counts pairs missing from got, extra in got, duplicates."""
    import numpy as np

    def present(sorted_hay, needles):
        if sorted_hay.size == 0:
            return np.zeros(needles.size, dtype=bool)
        i = np.searchsorted(sorted_hay, needles).clip(max=sorted_hay.size - 1)
        return sorted_hay[i] == needles

    dup = int(np.count_nonzero(got[1:] == got[:-1])) if got.size else 0
    missing = int(np.count_nonzero(~present(got, ref)))
    extra = int(np.count_nonzero(~present(ref, got)))
    return {"missing_vs_ref": missing, "extra_vs_ref": extra, "duplicates": dup}


# --- peer command lines ------------------------------------------------------------------------
def py_peer(name, d: Path, out: Path, a, **extra) -> list[str]:
    cmd = [
        a.python, str(HERE / "crossmatch_bench.py"), "peer", name,
        "--left", str(d / "left.parquet"), "--right", str(d / "right.parquet"),
        "--out", str(out), "--radius", str(RADIUS_ARCSEC), "--threads", str(a.threads),
        "--margin-arcsec", str(a.lsdb_margin), "--scheduler", a.lsdb_scheduler,
    ]
    for k, v in extra.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def runs_for(peer: str, d: Path, outdir: Path, a):
    """(reported name, command, output path, output kind) for each process of a peer."""
    if peer == "astroembed":
        out = outdir / "astroembed"
        cmd = [
            a.astroembed, "-q", "crossmatch", str(d / "left.parquet"), str(d / "right.parquet"),
            "--out", str(out), "--radius", str(RADIUS_ARCSEC), "--mode", "best", "--json",
            "--workers", str(a.threads),
        ] + shlex.split(a.astroembed_args)
        return [("astroembed", cmd, out, "parquet")]
    if peer == "ckdtree":
        return [
            ("ckdtree", py_peer("ckdtree", d, outdir / "ckdtree", a), outdir / "ckdtree", "parquet"),
            ("ckdtree-sorted", py_peer("ckdtree-sorted", d, outdir / "ckdtree-sorted", a),
             outdir / "ckdtree-sorted", "parquet"),
        ]
    if peer == "astropy":
        return [("astropy", py_peer("astropy", d, outdir / "astropy", a), outdir / "astropy", "parquet")]
    if peer == "lsdb":
        return [("lsdb", py_peer("lsdb", d, outdir / "lsdb", a), outdir / "lsdb", "parquet")]
    if peer == "lsdb-hats":
        hats = outdir / "lsdb-hats-inputs"
        return [
            ("lsdb-import", py_peer("lsdb-import", d, hats, a), None, None),
            ("lsdb-hats", py_peer("lsdb-hats", d, outdir / "lsdb-hats", a, hats=hats),
             outdir / "lsdb-hats", "parquet"),
        ]
    if peer == "stilts":
        out = outdir / "stilts.fits"
        cmd = [
            a.stilts, f"-Xmx{a.stilts_heap}", "tmatch2",
            f"in1={d / 'left.fits'}", "ifmt1=fits", f"in2={d / 'right.fits'}", "ifmt2=fits",
            "matcher=sky", "values1=ra dec", "values2=ra dec", f"params={RADIUS_ARCSEC:g}",
            "find=best1", "join=1and2", "fixcols=dups", "suffix1=_1", "suffix2=_2",
            "progress=none", f"out={out}", "ofmt=fits",
        ]
        return [("stilts", cmd, out, "fits")]
    raise SystemExit(f"unknown peer {peer!r}; known: {', '.join(ALL_PEERS)}")


def _warm(d: Path):
    """Read the inputs once so every peer starts with them in the page cache."""
    for p in d.glob("*"):
        if p.suffix in (".parquet", ".fits"):
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


def _clean(path: Path | None):
    if path is None:
        return
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _bench(n: int, a, peers: list[str]) -> dict:
    d = Path(a.work) / f"n{n}"
    t0 = time.time()
    data = generate(n, d, fits="stilts" in peers)
    print(f"[n={n:.0e}] data ready in {d} ({time.time() - t0:.1f}s)", flush=True)
    outdir = d / "out"
    results: dict[str, dict] = {}
    arrays = {}
    for peer in peers:
        queue = list(runs_for(peer, d, outdir, a))
        while queue:
            name, cmd, out, kind = queue.pop(0)
            _clean(out)
            if name == "lsdb-import":
                _clean(outdir / "lsdb-hats-inputs")
            if name == "stilts" and not (shutil.which(a.stilts) or Path(a.stilts).is_file()):
                results[name] = {"status": "skipped", "error": f"{a.stilts} not found "
                                 "(apt-get install stilts)", "command": shlex.join(cmd),
                                 "wall_s": None, "pairs": None}
                print(f"[n={n:.0e}] stilts: skipped, {a.stilts} not found", flush=True)
                continue
            if name == "lsdb-hats" and results.get("lsdb-import", {}).get("status") != "ok":
                results[name] = {"status": "skipped", "error": "lsdb-import failed",
                                 "command": shlex.join(cmd), "wall_s": None, "pairs": None}
                continue
            _warm(d)
            print(f"[n={n:.0e}] {name}: {shlex.join(cmd)}", flush=True)
            r = timed(cmd, a.timeout, outdir / "logs" / f"{name}.log")
            summary = _last_json(r.pop("stdout") or "")
            pairs = None
            if summary is not None:
                pairs = summary.get("matched", summary.get("pairs"))
                if name == "astroembed":
                    r["summary"] = summary
            if r["status"] == "ok" and out is not None:
                try:
                    arr = read_pairs(out, kind, data["n_right"])
                    arrays[name] = arr
                    if pairs is not None and pairs != arr.size:
                        r["pairs_reported"] = pairs
                    pairs = int(arr.size)
                except Exception as exc:  # noqa: BLE001 - reported, not fatal
                    r["pairs_read_error"] = f"{type(exc).__name__}: {exc}"
            r["pairs"] = pairs
            if r["status"] == "ok" and r["wall_s"]:
                r["rows_per_s"] = round(n / r["wall_s"], 1)
            results[name] = r
            err = r.get("error", "").strip().splitlines()[-1:] if r["status"] != "ok" else []
            print(
                f"[n={n:.0e}] {name}: {r['status']} wall={r['wall_s']}s "
                f"rss={r.get('peak_rss_mb')}MB tree={r.get('tree_peak_rss_mb')}MB "
                f"pairs={pairs} {' '.join(err)}",
                flush=True,
            )
            if not a.keep_outputs and name != "lsdb-import":
                _clean(out)
            if name == "astroembed" and r["status"] != "ok" and a.astroembed_fallback:
                # Still measure astroembed: run it again with the workaround arguments.
                fb_out = outdir / "astroembed-fallback"
                fb_cmd = cmd[:cmd.index("--out") + 1] + [str(fb_out)] + cmd[cmd.index("--out") + 2:]
                fb_cmd += shlex.split(a.astroembed_fallback)
                queue.insert(0, ("astroembed-fallback", fb_cmd, fb_out, "parquet"))
    if not a.keep_outputs:
        _clean(outdir / "lsdb-hats-inputs")
    li, lh = results.get("lsdb-import"), results.get("lsdb-hats")
    if li and lh and li.get("status") == "ok" and lh.get("status") == "ok":
        lh["import_wall_s"] = li["wall_s"]
        lh["wall_s_with_import"] = round(li["wall_s"] + lh["wall_s"], 2)
    ref_name = next(
        (k for k in ("ckdtree", "ckdtree-sorted", "astropy", "stilts", "astroembed", "lsdb",
                     "lsdb-hats") if k in arrays),
        None,
    )
    disagreements = []
    counts = {k: r.get("pairs") for k, r in results.items() if r.get("pairs") is not None}
    for name, r in results.items():
        if name == "lsdb-import":
            continue
        if name not in arrays or ref_name is None:
            r["agrees"] = None
            if r.get("status") == "ok" and name != "lsdb-import":
                disagreements.append(f"{name}: pairs could not be checked "
                                     f"({r.get('pairs_read_error', 'no output')})")
            continue
        cmp = compare_pairs(arrays[ref_name], arrays[name])
        r.update(cmp)
        r["agrees"] = cmp["missing_vs_ref"] == 0 and cmp["extra_vs_ref"] == 0 and cmp["duplicates"] == 0
        if not r["agrees"]:
            disagreements.append(
                f"{name} vs {ref_name}: {r['pairs']} vs {arrays[ref_name].size} pairs, "
                f"{cmp['missing_vs_ref']} missing, {cmp['extra_vs_ref']} extra, "
                f"{cmp['duplicates']} duplicates"
            )
    if len(set(counts.values())) > 1:
        disagreements.insert(0, "pair counts differ: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    base_name = next((k for k in ("astroembed", "astroembed-fallback")
                      if results.get(k, {}).get("status") == "ok"), None)
    base = results[base_name]["wall_s"] if base_name else None
    for name, r in results.items():
        r["ratio_vs_astroembed"] = (
            round(r["wall_s"] / base, 3) if base and r.get("wall_s") and r.get("status") == "ok" else None
        )
        if name == "lsdb-hats" and base and r.get("wall_s_with_import"):
            r["ratio_with_import_vs_astroembed"] = round(r["wall_s_with_import"] / base, 3)
    busy = [k for k, r in results.items() if (r.get("other_cpu_cores") or 0) > 0.2]
    if busy:
        print(f"[n={n:.0e}] warning: other processes used CPU during {', '.join(busy)}", flush=True)
    for msg in disagreements:
        print(f"[n={n:.0e}] !!! DISAGREEMENT: {msg}", flush=True)
    return {"n": n, "data": data, "reference": ref_name, "ratio_base": base_name,
            "results": results,
            "disagreements": disagreements}


# --- report ------------------------------------------------------------------------------------
def _fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        if v >= 1e5:
            return f"{v:.3g}"
        return f"{v:.{nd}f}"
    return str(v)


def markdown(report: dict) -> str:
    lines = [
        "# Cross-match benchmark",
        "",
        f"Run {report['started']} on {report['machine']['summary']}. "
        f"Radius {RADIUS_ARCSEC:g}\", best match per left row; "
        f"~{report['params']['area_deg2']:.0f} deg^2; right = 80% of left offset by <= "
        f"{MAX_OFFSET_ARCSEC}\" + 20% unrelated. Wall time includes process start, imports, "
        "reading the inputs and writing the output. `ratio` = peer wall / astroembed wall "
        "(> 1: astroembed is faster). `RSS` = peak RSS of the largest process (GNU time); "
        "`tree RSS` = sampled peak of the summed RSS of the process and its children; "
        "`CPU s` = user+sys of the peer (GNU time); `other CPU` = cores' worth of CPU that "
        "other processes used meanwhile (> 0.2: that timing was disturbed).",
        "",
    ]
    for s in report["sizes"]:
        n = s["n"]
        lines += [
            f"## {n:.0e} rows per side (left {s['data']['n_left']:,}, right {s['data']['n_right']:,})",
            "",
            f"ratio base: `{s.get('ratio_base')}`; pair reference: `{s.get('reference')}`",
            "",
            "| peer | status | wall s | rows/s | ratio | RSS MB | tree RSS MB | CPU s | other CPU | pairs | agrees |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, r in s["results"].items():
            agrees = r.get("agrees")
            ag = "ref" if (agrees and name == s["reference"]) else (
                "yes" if agrees else ("**NO**" if agrees is False else "-"))
            status = r.get("status")
            if status != "ok":
                status = f"**{status}**"
            wall = _fmt(r.get("wall_s"))
            if name == "lsdb-hats" and r.get("wall_s_with_import"):
                wall += f" (+import {_fmt(r['import_wall_s'])} = {_fmt(r['wall_s_with_import'])})"
            lines.append(
                f"| {name} | {status} | {wall} | {_fmt(r.get('rows_per_s'), 0)} | "
                f"{_fmt(r.get('ratio_vs_astroembed'))} | {_fmt(r.get('peak_rss_mb'), 0)} | "
                f"{_fmt(r.get('tree_peak_rss_mb'), 0)} | {_fmt(r.get('cpu_s'), 1)} | "
                f"{_fmt(r.get('other_cpu_cores'))} | {_fmt(r.get('pairs'))} | {ag} |"
            )
        if s["disagreements"]:
            lines += ["", "**DISAGREEMENTS:**", ""] + [f"- {m}" for m in s["disagreements"]]
        errs = [(k, r["error"]) for k, r in s["results"].items() if r.get("error")]
        for k, e in errs:
            last = [ln for ln in e.strip().splitlines() if ln.strip()][-1:] or [""]
            lines += ["", f"- `{k}` failed: `{last[0][:300]}`"]
        lines.append("")
    lines += ["## Command lines", "", "```"]
    lines.append(report["harness_command"])
    seen = set()
    for s in report["sizes"]:
        for name, r in s["results"].items():
            if name not in seen and r.get("command"):
                seen.add(name)
                lines.append(f"# {name} (n={s['n']:.0e})")
                lines.append(r["command"])
    lines += ["```", ""]
    for note in report["notes"]:
        lines.append(f"- {note}")
    lines.append("")
    return "\n".join(lines)


def machine_info(a) -> dict:
    info = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for mod in ("astroembed", "lsdb", "hats", "hats_import", "astropy", "scipy", "numpy",
                "pyarrow", "pandas", "dask"):
        try:
            r = subprocess.run([a.python, "-c", f"import {mod}; print({mod}.__version__)"],
                               capture_output=True, text=True, timeout=120)
            versions[mod] = r.stdout.strip() or None
        except Exception:  # noqa: BLE001
            versions[mod] = None
    try:
        r = subprocess.run([a.stilts, "-version"], capture_output=True, text=True, timeout=120)
        ver = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if "version" in ln.lower()]
        versions["stilts"] = "; ".join(ver) or None
    except Exception:  # noqa: BLE001
        versions["stilts"] = None
    info["versions"] = versions
    info["summary"] = f"{info.get('cpu', '?')}, {info['cpus']} CPUs, {info.get('mem_gb', '?')} GB"
    return info


def parse_size(s: str) -> int:
    return int(float(s))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "peer":
        return run_peer(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1e5,1e6", help="rows per side, comma separated (1e5,1e6,1e7)")
    p.add_argument("--peers", default=",".join(ALL_PEERS), help=f"subset of {','.join(ALL_PEERS)}")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "astroembed-bench"), help="data and outputs (cached data)")
    p.add_argument("--out", default=str(HERE / "results" / "crossmatch.json"))
    p.add_argument("--md", default=None, help="Markdown table (default: --out with .md)")
    p.add_argument("--threads", type=int, default=2, help="workers/threads given to each peer")
    p.add_argument("--timeout", type=float, default=1800, help="per-process limit, seconds")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--astroembed", default=str(Path(sys.executable).parent / "astroembed"))
    p.add_argument("--astroembed-args", default="", help="extra arguments for astroembed crossmatch")
    p.add_argument("--astroembed-fallback", default="--suffixes ,_right",
                   help="if astroembed fails, run it again with these extra arguments "
                        "(reported as astroembed-fallback; '' disables)")
    p.add_argument("--stilts", default=shutil.which("stilts") or "stilts")
    p.add_argument("--stilts-heap", default="12g", help="JVM -Xmx for STILTS")
    p.add_argument("--lsdb-margin", type=float, default=5.0,
                   help="right margin for the LSDB peers, arcsec (LSDB's default is 5)")
    p.add_argument("--lsdb-scheduler", choices=["threads", "processes"], default="threads",
                   help="Dask scheduler for the LSDB crossmatch: threaded (default) or a LocalCluster")
    p.add_argument("--keep-outputs", action="store_true", help="keep each peer's output catalog")
    a = p.parse_args(argv)

    sizes = [parse_size(s) for s in a.sizes.split(",") if s.strip()]
    peers = [x.strip() for x in a.peers.split(",") if x.strip()]
    for x in peers:
        if x not in ALL_PEERS:
            raise SystemExit(f"unknown peer {x!r}; known: {', '.join(ALL_PEERS)}")
    if not Path("/usr/bin/time").exists():
        raise SystemExit("/usr/bin/time (GNU time) is required: apt-get install time")
    area = (RA_MAX - RA_MIN) * (math.sin(math.radians(DEC_MAX)) - math.sin(math.radians(DEC_MIN))) * 180 / math.pi
    report = {
        "benchmark": "crossmatch",
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "harness_command": shlex.join([sys.executable, *sys.argv]),
        "params": {
            "radius_arcsec": RADIUS_ARCSEC, "mode": "best (nearest right row within radius for each left row)",
            "box_deg": [RA_MIN, RA_MAX, DEC_MIN, DEC_MAX], "area_deg2": area,
            "matched_fraction": MATCHED_FRACTION, "max_offset_arcsec": MAX_OFFSET_ARCSEC,
            "payload_columns": N_PAYLOAD, "seed": SEED, "threads": a.threads,
            "lsdb_margin_arcsec": a.lsdb_margin, "lsdb_scheduler": a.lsdb_scheduler,
            "stilts_heap": a.stilts_heap,
        },
        "machine": machine_info(a),
        "notes": [
            "Each peer runs in its own process, one after the other, on the same cached inputs "
            "(read once beforehand, so they are in the page cache).",
            "Wall time counts everything the process does: interpreter/JVM start, imports, "
            "reading the inputs, matching and writing the output.",
            "astroembed and the LSDB peers write a HATS catalog; astropy and ckdtree write one "
            "Parquet file of joined pairs (both sides' columns + _dist_arcsec); STILTS reads "
            "FITS (converted from the Parquet inputs beforehand, untimed) and writes FITS.",
            f"lsdb: pandas read + lsdb.from_dataframe (right margin {a.lsdb_margin:g}\") + "
            "crossmatch(n_neighbors=1) + to_hats; Dask scheduler: "
            + ("threaded, default scheduler" if a.lsdb_scheduler == "threads" else "LocalCluster")
            + f" with {a.threads} workers.",
            "lsdb-import: hats-import of both inputs + a margin cache for the right side, on a "
            f"LocalCluster of {a.threads} worker processes x 1 thread. lsdb-hats: open_catalog "
            "both + crossmatch + to_hats (same scheduler as lsdb).",
            "astropy match_coordinates_sky is single-threaded; ckdtree uses "
            f"workers={a.threads} in cKDTree.query; ckdtree-sorted sorts the queries by "
            "HEALPix order-12 nested index first (sort is timed).",
            "RSS: GNU time's max RSS is that of the largest single process (for Dask worker "
            "processes it is not a sum); tree RSS sums the process tree, sampled every 0.2 s.",
            "Agreement: each peer's (left id, right id) pairs are read back from its output "
            "(untimed) and compared with the reference peer's pair set.",
        ],
        "sizes": [],
    }
    out = Path(a.out)
    md = Path(a.md) if a.md else out.with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        report["sizes"].append(_bench(n, a, peers))
        report["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        recorded = portable(report, a.work)
        out.write_text(json.dumps(recorded, indent=2) + "\n")
        md.write_text(markdown(recorded))
    print()
    print(markdown(report))
    print(f"wrote {out} and {md}")
    bad = any(s["disagreements"] for s in report["sizes"]) or any(
        r.get("status") not in ("ok", "skipped") for s in report["sizes"] for r in s["results"].values()
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
