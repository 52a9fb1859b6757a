#!/usr/bin/env python
"""How to store the pixel arrays: plain against BYTE_STREAM_SPLIT and zstd, on the pixel tile
the embedding benchmark builds (random cutouts and spectra with the noise of real ones).

Usage (from the repository root, after ``bench/embed_bench.py`` built its catalogs):

    python bench/parquet_encoding.py [--rows 2000] [--work DIR] [--repeat 3]
        [--tile PIXEL_TILE.parquet] [--out bench/results/parquet_encoding.json]

``--tile`` measures a given pixel tile instead (e.g. one of the ``make demo`` catalog's,
``demo-output/matched/pixels/dataset/Norder=*/Dir=*/Npix=*.parquet``: simulated galaxies
rather than random arrays).

For each storage it rewrites the pixel tile with pyarrow (the catalog's row groups, the
encoding on the float arrays ``image``, ``flux``, ``ivar``) and reports the file's bytes per
row, the time to write it and the time to read the pixel columns back into Arrow (what
``embed`` does for every batch; median of ``--repeat``, file in the page cache), and checks
the values come back bit for bit.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIXELS = ["image", "flux", "ivar"]
LEAVES = [f"{c}.list.element" for c in PIXELS]  # the Parquet columns of the float arrays


def storages() -> dict[str, dict]:
    """pq.write_table options per storage of the float arrays. Keyed by the Parquet leaf
    (``flux.list.element``): pyarrow ignores a nested column's name in ``compression``."""
    def each(value: str) -> dict[str, str]:
        return {leaf: value for leaf in LEAVES}

    return {
        "plain": {"compression": each("none"), "use_dictionary": False},
        "zstd": {"compression": each("zstd"), "use_dictionary": False},
        "byte_stream_split": {"compression": each("none"), "use_dictionary": False,
                              "column_encoding": each("BYTE_STREAM_SPLIT")},
        "byte_stream_split+zstd": {"compression": each("zstd"), "use_dictionary": False,
                                   "column_encoding": each("BYTE_STREAM_SPLIT")},
    }


def measure(source: Path, work: Path, repeat: int) -> dict:
    import pyarrow.parquet as pq

    meta = pq.read_metadata(source)
    table = pq.read_table(source)
    group_rows = meta.row_group(0).num_rows
    rows = table.num_rows
    out = {}
    for name, options in storages().items():
        file = work / f"{name}.parquet"
        writes, reads = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            pq.write_table(table, file, row_group_size=group_rows, write_statistics=False,
                           **options)
            writes.append(time.perf_counter() - t)
        for _ in range(repeat):
            t = time.perf_counter()
            back = pq.read_table(file, columns=PIXELS)
            reads.append(time.perf_counter() - t)
        same = all(back.column(c).equals(table.column(c)) for c in PIXELS)
        out[name] = {"bytes_per_row": round(file.stat().st_size / rows, 1),
                     "write_seconds": round(statistics.median(writes), 3),
                     "read_seconds": round(statistics.median(reads), 3),
                     "read_range": [round(min(reads), 3), round(max(reads), 3)],
                     "bit_exact": same}
        file.unlink()
    return {"rows": rows, "row_group_rows": group_rows, "storages": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "astroembed-embed-bench"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tile", default=None, help="a pixel tile to measure instead")
    p.add_argument("--out", default=str(HERE / "results" / "parquet_encoding.json"))
    opts = p.parse_args()
    sys.path.insert(0, str(HERE))
    from embed_bench import DATA_VERSION, ORDER, PIXEL, ensure_catalog

    from astroembed.catalog.layout import pixel_tile_path

    if opts.tile:
        source, data = Path(opts.tile), "the given pixel tile"
        command = f"python bench/parquet_encoding.py --tile TILE --repeat {opts.repeat}"
    else:
        catalog = ensure_catalog(Path(opts.work), opts.rows)
        assert catalog.name == f"n{opts.rows}-v{DATA_VERSION}"
        source, data = pixel_tile_path(catalog, ORDER, PIXEL), "random arrays (embed_bench)"
        command = f"python bench/parquet_encoding.py --rows {opts.rows} --repeat {opts.repeat}"
    Path(opts.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=opts.work) as tmp:
        report = measure(source, Path(tmp), opts.repeat)
    report = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": command, "data": data, "repeat": opts.repeat, **report}
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
