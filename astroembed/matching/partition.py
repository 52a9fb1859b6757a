"""Partition cross-match inputs by HEALPix tile, the way hats-import does (map, plan, split).

1. ``stage_input`` (one task per input file): read the file with its reader, apply the
   fibre-level quality cuts, compute ``_healpix_29`` and a catalog-wide row key, and write a
   copy sorted by ``_healpix_29`` (Arrow IPC work files); return a histogram of positions.
2. ``make_plan`` (on the client): adaptive tiles from the histograms, margins for the mode.
3. ``split_input`` (one task per staged file): cut it into one fragment per tile it touches,
   holding the tile's own rows and, flagged ``_margin``, rows within the margin of the tile.

Tile tasks then read only their own fragments, so no data travels inside the task graph and
each step writes its files atomically: a killed run restarts where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from astroembed.errors import InputError, OutputError
from astroembed.catalog.atomic import atomic_path

HIST_ORDER = 10  # histogram resolution (~3.4' pixels); also the deepest tile order
IMAGE_JOIN_ARCSEC = 0.5  # single FITS cutouts join the nearest catalog row within this
CHUNK_ROWS = 500_000  # rows of a Parquet input staged at a time (bounds memory)
SPLIT_ROWS = 200_000  # rows whose tile and margin membership is computed at a time


@dataclass(frozen=True)
class InputFile:
    """One input file, what it holds and which side of the match it feeds."""

    path: str
    side: str  # "left" (Legacy Survey) or "right" (DESI)
    role: str  # catalog | images | bricks | spectra | redshifts | table
    kind: str  # astroembed.readers kind
    size: int
    mtime: float
    index: int  # position in the sorted input list; high bits of the row keys

    @property
    def key(self) -> str:
        return f"{self.side}-{self.role}-{self.index:05d}"


@dataclass
class StageResult:
    key: str
    rows: int
    bytes_per_row: float
    hist_pixels: np.ndarray  # order HIST_ORDER pixels that hold rows
    hist_counts: np.ndarray
    dropped: Counter = field(default_factory=Counter)

    def to_json(self) -> str:
        return json.dumps({"key": self.key, "rows": self.rows, "bytes_per_row": self.bytes_per_row,
                           "hist_pixels": self.hist_pixels.tolist(),
                           "hist_counts": self.hist_counts.tolist(), "dropped": dict(self.dropped)})

    @classmethod
    def from_json(cls, text: str) -> "StageResult":
        d = json.loads(text)
        return cls(d["key"], d["rows"], d["bytes_per_row"], np.array(d["hist_pixels"], np.int64),
                   np.array(d["hist_counts"], np.int64), Counter(d["dropped"]))


_ROLE_OF_KIND = {
    "left": {"ls_catalog": "catalog", "table": "catalog", "ls_cutout_stack": "images",
             "ls_cutout_fits": "images", "ls_bricks": "bricks"},
    "right": {"desi_spectra": "spectra", "desi_redshifts": "redshifts", "table": "table"},
}


def classify_inputs(images: list, spectra: list) -> list[InputFile]:
    """Find every input file under IMAGES and SPECTRA and decide its role.

    Fails before any work starts when a file is unreadable as any known kind, sits on the
    wrong side, or a side has nothing to match. When zcatalogs (with ZCAT_PRIMARY) and
    per-healpix redrock files are both given, the zcatalogs win and redrock files are left
    out, so no redshift is counted twice.
    """
    from astroembed.readers.inventory import input_files
    from astroembed.readers import detect_kind
    from astroembed.simulation import is_answer_key

    found: list[InputFile] = []
    for side, paths, label in (("left", images, "IMAGES"), ("right", spectra, "SPECTRA")):
        for path in input_files(paths):
            if is_answer_key(path):
                continue  # the simulator's answer key is not an input
            kind = detect_kind(path)
            role = _ROLE_OF_KIND[side].get(kind)
            if role is None:
                other = "SPECTRA" if side == "left" else "IMAGES"
                raise InputError(f"{path}: a {kind} file given as {label}; it belongs with "
                                 f"{other} (the Legacy Survey side comes first).")
            stat = path.stat()
            found.append(InputFile(str(path), side, role, kind, stat.st_size, stat.st_mtime, 0))
    zcats = [f for f in found if f.role == "redshifts" and _is_zcatalog(f.path)]
    if zcats:
        found = [f for f in found if f.role != "redshifts" or f in zcats]
    if not any(f.role == "catalog" for f in found):
        raise InputError(f"{', '.join(map(str, images))}: no Legacy Survey catalog or table with "
                         "RA/Dec found on the IMAGES side.")
    if not any(f.side == "right" for f in found):
        raise InputError(f"{', '.join(map(str, spectra))}: no DESI spectra, redshift catalog or "
                         "table with RA/Dec found on the SPECTRA side.")
    return [InputFile(f.path, f.side, f.role, f.kind, f.size, f.mtime, i)
            for i, f in enumerate(sorted(found, key=lambda f: (f.side, f.role, f.path)))]


def _is_zcatalog(path: str) -> bool:
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        return any(h.name == "ZCATALOG" for h in hdul)


def read_input(f: InputFile) -> pa.Table:
    """The file's rows through its reader."""
    from astroembed import readers as io
    return io._READERS[f.kind](f.path)


def radec_names(table: pa.Table | pa.Schema, path: str | None = None) -> tuple[str, str]:
    """Position columns: TARGET_RA/DEC for DESI tables, RA/DEC or ra/dec otherwise."""
    from astroembed.readers import radec_columns

    names = table.names if isinstance(table, pa.Schema) else table.column_names
    if "TARGET_RA" in names and "TARGET_DEC" in names:
        return "TARGET_RA", "TARGET_DEC"
    return radec_columns(names, path)


def _chunks(f: InputFile):
    """``(first_row, table)`` pieces of an input: Parquet tables in bounded chunks, the rest whole."""
    from astroembed.readers import is_parquet
    from astroembed.readers.tables import iter_table_chunks

    if f.kind == "table" and Path(f.path).is_file() and is_parquet(f.path):
        yield from iter_table_chunks(f.path, CHUNK_ROWS)
    else:
        yield 0, read_input(f)


def stage_input(f: InputFile, staging: str, keep_all: bool = False) -> list[StageResult]:
    """Read, cut and stage one input file, in chunks, each sorted by ``_healpix_29``.

    ``keep_all`` turns the fibre-level quality cuts off (``--keep-all-spectra``). Chunks
    already staged by an interrupted run are not redone.
    """
    if f.role == "bricks":  # stamps are cut per tile, for the catalog rows it holds
        return []
    done = Path(staging) / "inputs" / f"{f.key}.json"
    if done.exists():
        return [StageResult.from_json(line) for line in done.read_text().splitlines()]
    results = []
    for n, (first, table) in enumerate(_chunks(f)):
        results.append(_stage_chunk(f, n, first, table, staging, keep_all))
        del table  # the allocator reuses it for the next chunk (releasing it each time: +50%)
    pa.default_memory_pool().release_unused()
    with atomic_path(done) as tmp:
        tmp.write_text("\n".join(r.to_json() for r in results) + "\n")
    return results


def _stage_chunk(f: InputFile, n: int, first_row: int, table: pa.Table, staging: str,
                 keep_all: bool) -> StageResult:
    from astroembed.matching.quality import fibre_cuts
    from astroembed.matching.sky import healpix29

    key = f"{f.key}-{n:04d}"
    dropped: Counter = Counter()
    if f.role == "spectra" and not keep_all:
        keep, dropped = fibre_cuts(table)
        table = table.filter(pa.array(keep))
    ra_col, dec_col = radec_names(table)
    ra = table.column(ra_col).to_numpy(zero_copy_only=False).astype(float)
    dec = table.column(dec_col).to_numpy(zero_copy_only=False).astype(float)
    if f.role == "redshifts" and (np.isnan(ra).any() or np.isnan(dec).any()):
        raise InputError(f"{f.path}: redshift rows without TARGET_RA/TARGET_DEC (a redrock file "
                         "without its FIBERMAP?); pass the zcatalog or complete redrock files.")
    h29 = healpix29(ra, dec)
    # Catalog-wide row keys: input index in the high bits, row number in the file below.
    keys = (np.int64(f.index) << np.int64(40)) + first_row + np.arange(table.num_rows, dtype=np.int64)
    table = _strip_metadata(table).append_column("_healpix_29", pa.array(h29, pa.int64()))
    table = table.append_column("_key", pa.array(keys, pa.int64()))
    table = table.take(pa.array(np.argsort(h29)))  # deterministic; ties are exact duplicates
    bytes_per_row = table.nbytes / max(table.num_rows, 1)
    _write_work_file(Path(staging) / "inputs" / f"{key}{WORK_SUFFIX}", table)
    pixels, counts = np.unique(h29 >> np.int64(2 * (29 - HIST_ORDER)), return_counts=True)
    return StageResult(key, table.num_rows, bytes_per_row, pixels, counts, dropped)


def _strip_metadata(table: pa.Table) -> pa.Table:
    """Drop per-file schema metadata (source names) so tables from many files concatenate."""
    return table.replace_schema_metadata(None)


WORK_SUFFIX = ".arrow"
WORK_FORMAT = 2  # bump when the work files change: an interrupted run of another format restarts


def _write_work_file(path: Path, table: pa.Table) -> None:
    """Staged inputs and tile fragments are read once, soon, from local disk: Arrow IPC,
    uncompressed, writes and reads them several times faster than even plain Parquet."""
    try:
        with atomic_path(path) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
                out.write_table(table)
    except OSError as err:  # pyarrow's message names no file: say which, and where
        reason = err.strerror or str(err).split(". Detail")[0]
        raise OutputError(f"{path.parent}: cannot write the run's work files ({reason}); they "
                          f"need about the inputs' size free beside the catalog. Free space "
                          f"there and run again.") from None


def read_work_file(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A work file, memory-mapped (no copy until a column is touched)."""
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    return table.select(columns) if columns is not None else table


def work_file_schema(path: Path) -> pa.Schema:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).schema


@dataclass
class Plan:
    """The tile layout and margins of one cross-match run (stored as staging/plan.json)."""

    tiles: list[tuple[int, int]]
    left_margin: float
    right_margin: float
    image_margin: float
    inputs: list[dict]
    config_hash: str
    write_path: str  # where the catalog is being written (beside it when replacing one)

    def save(self, staging: Path) -> None:
        with atomic_path(staging / "plan.json") as tmp:
            tmp.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, staging: Path) -> "Plan":
        data = json.loads((staging / "plan.json").read_text())
        data["tiles"] = [tuple(t) for t in data["tiles"]]
        return cls(**data)


def make_tiles(results: list[StageResult], max_rows: int, max_bytes: float) -> list[tuple[int, int]]:
    """Adaptive tiles over both sides' rows, sized by the rows and bytes they will write."""
    from astroembed.matching.sky import adaptive_tiles

    if not any(r.rows for r in results):
        return []
    # One histogram for all inputs first: tiling then works on occupied pixels, not chunks.
    pixels = np.concatenate([r.hist_pixels for r in results])
    counts = np.concatenate([r.hist_counts for r in results]).astype(np.float64)
    nbytes = np.concatenate([r.hist_counts * r.bytes_per_row for r in results])
    pixels, inv = np.unique(pixels, return_inverse=True)
    counts = np.bincount(inv.ravel(), weights=counts)
    row_bytes = np.bincount(inv.ravel(), weights=nbytes) / counts
    shift = np.int64(2 * (29 - HIST_ORDER))
    tiles = adaptive_tiles(pixels << shift, row_bytes, max_rows, max_bytes, max_order=HIST_ORDER,
                           counts=counts)
    return [tuple(map(int, t)) for t in tiles]


def margin_for(plan: Plan, role: str) -> float:
    if role == "images":
        return plan.image_margin
    return plan.left_margin if role == "catalog" else plan.right_margin


def tile_dir(staging: str | Path, tile: tuple[int, int]) -> Path:
    return Path(staging) / "tiles" / f"{tile[0]}-{tile[1]}"


def split_input(key: str, role: str, staging: str, plan: Plan) -> int:
    """Write one fragment per tile that the staged file ``key`` touches (own + margin rows).

    Staged files are sorted by ``_healpix_29`` and a tile is one range of it, so a tile's own
    rows are a zero-copy slice; only margin rows (few, along tile edges) are gathered.
    """
    from astroembed.matching.sky import tile_ranges

    staged = Path(staging) / "inputs" / f"{key}{WORK_SUFFIX}"
    done = Path(staging) / "split" / f"{key}.done"
    if done.exists():
        return 0
    table = read_work_file(staged)
    h29 = table.column("_healpix_29").to_numpy()
    if np.any(h29[1:] < h29[:-1]):  # _stage_chunk writes them sorted; cheap to make sure
        order = np.argsort(h29, kind="stable")
        table, h29 = table.take(pa.array(order)), h29[order]
    lo, hi = tile_ranges(plan.tiles)
    own_start, own_stop = np.searchsorted(h29, lo), np.searchsorted(h29, hi)
    m_rows, m_tiles = _margin_rows(h29, plan.tiles, margin_for(plan, role))
    if m_rows.size:
        table = table.combine_chunks()  # else every take below concatenates the chunks again
    m_bounds = np.searchsorted(m_tiles, np.arange(len(plan.tiles) + 1))
    written = 0
    for t, tile in enumerate(plan.tiles):
        n_own = int(own_stop[t] - own_start[t])
        margin_rows = m_rows[m_bounds[t]:m_bounds[t + 1]]
        if n_own == 0 and margin_rows.size == 0:
            continue
        parts = [table.slice(int(own_start[t]), n_own)]
        if margin_rows.size:
            parts.append(table.take(pa.array(margin_rows)))
        flags = np.r_[np.zeros(n_own, bool), np.ones(margin_rows.size, bool)]
        frag = pa.concat_tables(parts).append_column("_margin", pa.array(flags))
        _write_work_file(tile_dir(staging, tile) / f"{key}{WORK_SUFFIX}", frag)
        written += frag.num_rows
    done.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(done) as tmp:
        tmp.write_text("ok\n")
    return written


def _margin_rows(h29: np.ndarray, tiles, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(row, tile index) of every margin row, sorted by tile then row; computed in slices
    because the search's temporaries grow with rows x neighbours."""
    from astroembed.matching.sky import margin_members

    rows, tile_idx = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    if margin > 0:
        for start in range(0, len(h29), SPLIT_ROWS):
            r, t = margin_members(h29[start:start + SPLIT_ROWS], tiles, margin)
            rows.append(start + r)
            tile_idx.append(t)
    rows_all, tiles_all = np.concatenate(rows), np.concatenate(tile_idx)
    order = np.lexsort((rows_all, tiles_all))
    return rows_all[order], tiles_all[order]


def rows_outside(key: str, staging: str, tiles: list[tuple[int, int]]) -> int:
    """Rows of the staged file ``key`` that no tile of ``tiles`` holds."""
    from astroembed.matching.sky import assign_tiles

    h29 = read_work_file(Path(staging) / "inputs" / f"{key}{WORK_SUFFIX}",
                         ["_healpix_29"]).column(0).to_numpy()
    return int(np.count_nonzero(assign_tiles(h29, tiles) < 0))


def config_hash(config: dict, inputs: list[InputFile]) -> str:
    """Identifies a run: the same config and the same input files (path, size, mtime)."""
    blob = json.dumps({"config": config, "work_format": WORK_FORMAT,
                       "inputs": [(f.path, f.size, f.mtime) for f in inputs]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_fragments(staging: str | Path, tile: tuple[int, int], prefix: str) -> pa.Table | None:
    """All fragments of a tile whose input key starts with ``prefix`` (e.g. 'left-catalog')."""
    files = sorted(tile_dir(staging, tile).glob(f"{prefix}-*{WORK_SUFFIX}"))
    if not files:
        return None
    tables = [read_work_file(f) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


