#!/usr/bin/env python
"""Brick stamp benchmark: stamps cut from brick coadds against decompressing their rows alone.

Usage (from the repository root):

    python bench/brick_bench.py [--objects 10000] [--bricks 6] [--size 64] [--repeat 3]
        [--work DIR] [--out bench/results/bricks.json]

Data (built once, cached in ``--work``): ``--bricks`` simulated brick coadds of the real size
(3600 x 3600, 0.262"/pixel) written by ``astroembed.simulation.bricks.write_brick`` (RICE
row tiles, as the data centre compresses them; images, inverse variances and mask bits),
holding galaxies drawn from the simulator's population. The bricks are two brick columns
apart on the Dec = 0 row, so no object lies on two of them.

Objects: ``--objects`` positions, uniform on each brick (the simulator places galaxies
uniformly on the sky) at the demo's surface density, ``DENSITY`` galaxies per deg^2 (the
demo's 6,000 galaxies over its footprint): about 55 objects on a brick. They come in groups
of that size, one group per brick in turn; a *visit* is one group on each brick, one
catalog as the cross-match hands one HEALPix tile's rows to the brick reader.

Two ways, alternated, each repeat in its own process:

- ``path``: every visit through ``astroembed.readers.bricks.attach_brick_stamps`` (what
  ``crossmatch`` calls for a tile's rows: brick lookup, WCS, row reads, stamps, Arrow
  columns), timed in the process (imports excluded).
- ``floor``: for each brick of each visit, open its files with ``astropy.io.fits`` and read
  the rows of pixels those stamps need (the union of their rows, as few contiguous ranges as
  possible) through the compressed HDU's ``section``, nothing else. The row ranges are
  computed before the clock starts. The files are the ones the path reads (the g, r, z
  images, and the inverse variances and mask bits where the path reads those too).

``ratio = path seconds / floor seconds`` (medians over the repeats; target <= 1.5).
Memory: each process's peak resident set (``VmHWM`` in /proc/self/status, the high-water
mark ``ru_maxrss`` gives but without the forking parent's), and the same right after its
imports, so the part the work added shows.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchpaths import cpu_name, portable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
SEED = 20240611
DATA_VERSION = 1  # bump when the generator changes, so cached bricks are rebuilt


def _brick_names(n: int) -> list[tuple[str, float, float]]:
    """(name, RA centre, Dec centre) of ``n`` bricks on the Dec = 0 row, two columns apart."""
    from astroembed.simulation.survey import brick_grid

    import numpy as np

    ra = 0.125 + 0.5 * np.arange(n) + 10.0
    _, names, ra_c, dec_c = brick_grid(ra, np.zeros(n))
    return [(str(a), float(b), float(c)) for a, b, c in zip(names, ra_c, dec_c)]


def ensure_bricks(work: Path, n_bricks: int, per_brick: int) -> Path:
    """``n_bricks`` full-size simulated bricks under ``work``, written once."""
    import numpy as np

    from astroembed.readers.bricks import brick_path, find_bricks
    from astroembed.simulation.bricks import write_brick
    from astroembed.simulation.population import sample_galaxies
    from astroembed.simulation.survey import BRICK_PIXELS

    root = work / f"bricks-v{DATA_VERSION}"
    names = _brick_names(n_bricks)
    have = find_bricks(root) if root.is_dir() else {}
    for k, (brick, ra_c, dec_c) in enumerate(names):
        if len(have.get(brick, {})) == 3 and brick_path(root, brick, "", "maskbits").is_file():
            continue
        print(f"writing brick {brick} ({k + 1}/{n_bricks}) in {root} ...", file=sys.stderr,
              flush=True)
        brng = np.random.default_rng([SEED, k])
        gal = sample_galaxies(brng, per_brick)
        ra, dec = _uniform_on_brick(brng, ra_c, dec_c, len(gal.z))
        fluxes = {b: 10 ** (-0.4 * (gal.mags[f"decam2014-{b}"] - 22.5)) for b in "grz"}
        write_brick(root, brick, ra_c, dec_c, ra, dec, fluxes, gal.r_eff, gal.sersic_n,
                    gal.axis_ratio, gal.pos_angle, np.zeros(len(ra), bool), brng,
                    width=BRICK_PIXELS)
    return root


def _uniform_on_brick(rng, ra_c, dec_c, n):
    """``n`` positions uniform over the brick's pixels (0-based x, y in [-0.5, W - 0.5))."""
    import numpy as np
    from astropy.wcs import WCS

    from astroembed.simulation.bricks import brick_header
    from astroembed.simulation.survey import BRICK_PIXELS

    wcs = WCS(brick_header(ra_c, dec_c, BRICK_PIXELS))
    # a hair inside the edges, so float rounding never puts one off the brick
    x = rng.uniform(-0.49, BRICK_PIXELS - 0.51, n)
    y = rng.uniform(-0.49, BRICK_PIXELS - 0.51, n)
    ra, dec = wcs.pixel_to_world_values(x, y)
    return np.mod(np.asarray(ra, np.float64), 360.0), np.asarray(dec, np.float64)


def objects_per_brick() -> int:
    """Objects on one 3600 x 3600 brick at the demo's galaxy density."""
    from astroembed.simulation import images as img
    from astroembed.simulation.survey import BRICK_PIXELS, DENSITY

    side_deg = BRICK_PIXELS * img.PIXSCALE / 3600.0
    return int(round(DENSITY * side_deg**2))


def make_plan(work: Path, root: Path, n_objects: int, n_bricks: int, per_brick: int,
              size: int) -> Path:
    """Visits (lists of (brick, ra, dec) groups) and the floor's row ranges, as JSON."""
    import numpy as np
    from astropy.wcs import WCS

    from astroembed.simulation.bricks import brick_header
    from astroembed.simulation.survey import BRICK_PIXELS

    rng = np.random.default_rng(SEED + n_objects)
    names = _brick_names(n_bricks)
    groups, left = [], n_objects
    while left > 0:
        brick, ra_c, dec_c = names[len(groups) % n_bricks]
        m = min(per_brick, left)
        ra, dec = _uniform_on_brick(rng, ra_c, dec_c, m)
        # the floor's rows: Cutout2D's first stamp row ceil(y - N/2), from the same WCS
        _, y = WCS(brick_header(ra_c, dec_c, BRICK_PIXELS)).world_to_pixel_values(ra, dec)
        y0 = np.ceil(np.asarray(y) - size / 2.0).astype(int)
        spans = sorted((max(0, int(a)), min(BRICK_PIXELS, int(a) + size)) for a in y0)
        rows: list[list[int]] = []
        for a, b in spans:
            if rows and a <= rows[-1][1]:
                rows[-1][1] = max(rows[-1][1], b)
            else:
                rows.append([a, b])
        groups.append({"brick": brick, "ra": ra.tolist(), "dec": dec.tolist(), "rows": rows})
        left -= m
    visits = [groups[i:i + n_bricks] for i in range(0, len(groups), n_bricks)]
    plan = work / f"plan-{n_objects}-{n_bricks}-{size}.json"
    plan.write_text(json.dumps({"root": str(root), "size": size, "visits": visits}))
    return plan


def _rss_mb() -> float:
    """This process's peak resident memory, MB: VmHWM, which starts afresh at exec (Linux's
    ru_maxrss keeps the forking parent's mark, here the harness's after writing bricks)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(kind: str, plan_path: Path) -> dict:
    import warnings

    import numpy as np
    import pyarrow as pa
    from astropy.io import fits

    from astroembed.readers.bricks import attach_brick_stamps, brick_path

    plan = json.loads(plan_path.read_text())
    root, size = Path(plan["root"]), plan["size"]
    after_imports = _rss_mb()
    n = 0
    if kind == "path":
        start = time.perf_counter()
        for visit in plan["visits"]:
            table = pa.table({"RA": np.concatenate([g["ra"] for g in visit]),
                              "DEC": np.concatenate([g["dec"] for g in visit])})
            out = attach_brick_stamps(table, root, size)
            n += out.num_rows - out.column("stamp_brick").null_count
        seconds = time.perf_counter() - start
        products = _products_read(out)
    else:
        products = os.environ.get("BRICK_BENCH_PRODUCTS", "image").split(",")
        start = time.perf_counter()
        for visit in plan["visits"]:
            for g in visit:
                paths = [brick_path(root, g["brick"], b, p) for p in products
                         for b in (("",) if p == "maskbits" else "grz")]
                for path in paths:
                    with fits.open(path) as hdul, warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        for a, b in g["rows"]:
                            hdul[1].section[a:b, :]
                n += len(g["ra"])
        seconds = time.perf_counter() - start
    return {"kind": kind, "stamps": n, "seconds": seconds, "products": products,
            "peak_rss_mb": round(_rss_mb(), 1), "rss_after_imports_mb": round(after_imports, 1)}


def _products_read(table) -> list[str]:
    """The brick files the path read: the images, plus invvar and maskbits when it reported
    masked pixels from them."""
    col = "stamp_masked_fraction"
    if col in table.column_names and table.column(col).null_count < table.num_rows:
        return ["image", "invvar", "maskbits"]
    return ["image"]


def run_child(kind: str, plan: Path, products: list[str]) -> dict:
    env = dict(os.environ, BRICK_BENCH_PRODUCTS=",".join(products),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", kind,
                           "--plan", str(plan)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kind} run failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def harness(opts) -> dict:
    work = Path(opts.work)
    work.mkdir(parents=True, exist_ok=True)
    per_brick = objects_per_brick()
    root = ensure_bricks(work, opts.bricks, per_brick)
    plan = make_plan(work, root, opts.objects, opts.bricks, per_brick, opts.size)
    runs: dict[str, list[dict]] = {"path": [], "floor": []}
    products = ["image"]
    for rep in range(opts.repeat):
        for kind in ("path", "floor"):  # alternated, so drifts hit both alike
            print(f"{kind} {rep + 1}/{opts.repeat} ...", file=sys.stderr, flush=True)
            load = os.getloadavg()[0]
            r = run_child(kind, plan, products)
            # 1-minute load average before and after: above the cores, others shared them
            r["load_before"], r["load_after"] = round(load, 2), round(os.getloadavg()[0], 2)
            if kind == "path":
                products = r["products"]  # the floor reads the files the path read
            r["stamps_per_second"] = round(r["stamps"] / r["seconds"], 1)
            r["seconds"] = round(r["seconds"], 3)
            runs[kind].append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    ratios = [p["seconds"] / f["seconds"] for p, f in zip(runs["path"], runs["floor"])]
    n_visits = len(json.loads(plan.read_text())["visits"])
    report = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "command": "python " + " ".join(sys.argv),
        "objects": opts.objects, "bricks": opts.bricks, "brick_pixels": 3600,
        "objects_per_brick": per_brick, "visits": n_visits, "stamp_size": opts.size,
        "repeats": opts.repeat, "files_read": products,
        "path_seconds": round(med["path"], 3), "floor_seconds": round(med["floor"], 3),
        "path_stamps_per_second": round(opts.objects / med["path"], 1),
        "floor_stamps_per_second": round(opts.objects / med["floor"], 1),
        "ratio": round(med["path"] / med["floor"], 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "path_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs["path"]),
        "floor_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs["floor"]),
        "path_rss_after_imports_mb": statistics.median(
            r["rss_after_imports_mb"] for r in runs["path"]),
        "floor_rss_after_imports_mb": statistics.median(
            r["rss_after_imports_mb"] for r in runs["floor"]),
        "memory": "peak RSS (VmHWM) of each child process, median over the repeats; "
                  "rss_after_imports is the same mark right after the imports",
        "runs": runs, "note": opts.note,
    }
    return portable(report, work)



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=["path", "floor"], help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--objects", type=int, default=10000)
    p.add_argument("--bricks", type=int, default=6, help="distinct brick coadds written")
    p.add_argument("--size", type=int, default=64, help="stamp width in pixels")
    p.add_argument("--repeat", type=int, default=3, help="runs of each kind")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "astroembed-brick-bench"))
    p.add_argument("--out", default=str(HERE / "results" / "bricks.json"))
    p.add_argument("--note", default="", help="a sentence for the report (what else ran)")
    opts = p.parse_args()
    if opts.child:
        print(json.dumps(child(opts.child, Path(opts.plan))))
        return
    report = harness(opts)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
