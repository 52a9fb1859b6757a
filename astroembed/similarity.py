"""Similarity search over embedding columns and the cross-modal retrieval report.

Similarity is cosine (docs/architecture.md): every vector is L2-normalised here (``embed``
writes them normalised already; doing it again is cheap and makes hand-made columns safe) and
compared by inner product. Two back ends:

- exact: the whole column in memory, one matrix product per block of queries. Right for
  catalogs whose embeddings fit in memory (1e6 x 128 float32 is 0.5 GB).
- faiss: an inverted-file index (``IndexIVFFlat``, about sqrt(N) lists, a few percent of them
  probed), approximate but far faster per query for large catalogs. Built once and stored
  in the catalog directory (``CAT/astroembed_index/``) with a fingerprint of the tiles it was
  built from; any change to those tiles (re-embedding, new rows) makes it rebuild.

The same IVF helpers serve the k-NN probe on large catalogs (:mod:`astroembed.probes.estimators`).
``faiss`` is imported only when used, with a clear error when it is not installed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astroembed.config import SearchConfig
from astroembed.errors import AstroembedError, ConfigError, InputError, where
from astroembed.catalog.columns import (
    MODALITIES,
    read_arrays,
    resolve_embeddings,
    resolve_id_column,
    scalars,
    vectors,
)
from astroembed.catalog.atomic import atomic_path
from astroembed.catalog.lock import CatalogLock
from astroembed.catalog.layout import tile_path
from astroembed.catalog.reader import CatalogInfo, read_catalog_info

#: Above this many rows ``--index auto`` uses faiss (exact search holds every vector in memory).
EXACT_MAX_ROWS = 1_000_000
INDEX_DIR = "astroembed_index"
#: Query-block size for exact search: keeps the block x N similarity matrix near 256 MB.
BLOCK_ELEMENTS = 1 << 26


# ----------------------------------------------------------------------------- vectors

def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32, C-contiguous); all-zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norm > 0, norm, 1.0), dtype=np.float32)


def import_faiss():
    """``faiss``, or ConfigError saying how to install it or to use the exact index."""
    try:
        import faiss
    except ImportError:
        raise ConfigError("--index faiss needs the faiss library: pip install faiss-cpu (or "
                          "`pip install astroembed[search]`), or use --index exact.") from None
    return faiss


#: IVF lists probed per query. Search asks for 10 neighbours one query at a time, so it can
#: afford more lists (recall@10 > 0.99 on the benchmark's embeddings); the k-NN probe queries
#: every row and probes fewer (enough candidates for k = 64; see bench/probe.md).
SEARCH_NPROBE = 32
KNN_NPROBE = 8


@contextlib.contextmanager
def faiss_threads(n: int):
    """Run faiss (OpenMP) with ``n`` threads inside the block.

    Training (k-means) is run on one thread: its many small parallel regions run an order of
    magnitude slower with more threads when the cores are busy with other work (spinning
    OpenMP threads wait for each other), and gain little on idle cores.
    """
    faiss = import_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def ivf_nlist(n: int) -> int:
    """Lists of an IVF index over ``n`` vectors: about sqrt(n), at least 39 training points
    each. (faiss' rule of thumb, 4 sqrt(n), makes k-means and list assignment dominate the
    5-fold k-NN probe at 1e6 rows on 2 cores.)"""
    return max(1, min(int(math.sqrt(n)), n // 39))


def build_ivf(x: np.ndarray, metric: str = "ip", seed: int = 0, nprobe: int = SEARCH_NPROBE,
              nlist: int | None = None):
    """An IVF-flat faiss index over ``x`` (float32); ``metric`` "ip" (inner product) or "l2".

    k-means (10 iterations) is trained on a seeded sample of at most 64 points per list,
    enough for stable centroids, so training time does not grow with ``n``.
    """
    faiss = import_faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    nlist = nlist or ivf_nlist(n)
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    quantizer = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, fmetric)
    _train_and_add(index, index, x, nlist, seed)
    index.nprobe = int(min(nprobe, nlist))
    return index


def _train_and_add(index, ivf, x: np.ndarray, nlist: int, seed: int) -> None:
    """Seeded k-means (10 iterations) on at most 64 points per list, then add every vector."""
    ivf.cp.seed = int(seed)
    ivf.cp.niter = 10
    ivf.cp.max_points_per_centroid = 64
    n = len(x)
    rng = np.random.default_rng(seed)
    sample = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist, replace=False))]
    with faiss_threads(1):
        index.train(sample)
    index.add(x)


#: Above this many vectors the k-NN probe's index scans 4-bit PQ codes (fast-scan) and re-ranks
#: the best 2k candidates exactly: ~5x faster than IVF-flat at 2e5 x 128 with R^2 within 0.003.
FAST_SCAN_MIN_ROWS = 20_000


def build_ivf_fast_scan(x: np.ndarray, metric: str = "ip", seed: int = 0,
                        nprobe: int = KNN_NPROBE, refine: int = 2):
    """An IVF index scanning 4-bit product-quantised codes (``PQ{d/4}x4fs``) with an exact
    re-ranking of the best ``refine * k`` candidates (``RFlat``): the distances returned are
    exact, only the candidate set is approximate. For the k-NN probe on large catalogs,
    where every row is a query and scanning full vectors dominates. Falls back to
    :func:`build_ivf` when d is not a multiple of 4.
    """
    faiss = import_faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if d % 4:
        return build_ivf(x, metric, seed, nprobe)
    nlist = ivf_nlist(n)
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    index = faiss.index_factory(d, f"IVF{nlist},PQ{d // 4}x4fs,RFlat", fmetric)
    ivf = faiss.extract_index_ivf(index)
    _train_and_add(index, ivf, x, nlist, seed)
    ivf.nprobe = int(min(nprobe, nlist))
    index.k_factor = float(refine)
    return index


def exact_top_k(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest inner products of each query with the database, best first.

    Blocked so the similarity matrix never exceeds :data:`BLOCK_ELEMENTS`; returns
    ``(similarities, positions)`` of shape ``(nq, min(k, N))``.
    """
    n = database.shape[0]
    k = min(k, n)
    block = max(1, BLOCK_ELEMENTS // max(n, 1))
    sims = np.empty((len(queries), k), np.float32)
    idx = np.empty((len(queries), k), np.int64)
    # A few queries are a memory-bound matrix-vector product: one BLAS thread, since more
    # threads only add synchronisation, which costs far more than the product on busy cores.
    small = len(queries) * n * database.shape[1] < (1 << 28)
    if small:
        with _blas().limit(limits=1, user_api="blas"):
            _top_k_blocks(queries, database, k, block, sims, idx)
    else:
        _top_k_blocks(queries, database, k, block, sims, idx)
    return sims, idx


@functools.lru_cache(maxsize=1)
def _blas():
    """One threadpoolctl controller for the process (building one scans the loaded libraries,
    too slow to do per query)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _top_k_blocks(queries, database, k, block, sims, idx) -> None:
    n = database.shape[0]
    for start in range(0, len(queries), block):
        s = queries[start:start + block] @ database.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < n else \
            np.broadcast_to(np.arange(n), s.shape).copy()
        top = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        idx[start:start + block] = np.take_along_axis(part, order, axis=1)
        sims[start:start + block] = np.take_along_axis(top, order, axis=1)


class ExactIndex:
    """Cosine search by matrix product over the normalised vectors held in memory."""

    kind = "exact"

    def __init__(self, x: np.ndarray):
        self.x = normalise(x)

    @property
    def ntotal(self) -> int:
        return self.x.shape[0]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return exact_top_k(normalise(queries), self.x, k)


class FaissIndex:
    """Cosine search through a faiss IVF inner-product index (positions -1 = not found)."""

    kind = "faiss"

    def __init__(self, index):
        self.index = index

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, idx = self.index.search(normalise(queries), min(k, self.ntotal))
        return sims, idx.astype(np.int64)


# ----------------------------------------------------------------------------- the catalog

@dataclass
class SearchCatalog:
    """The per-row metadata search reports (IDs, redshift, position) for every row of a
    catalog, in tile order, and access to its embedding columns by modality.

    Loading IDs/Z/RA/Dec is cheap; an embedding column is read only when exact search or an
    index build needs it, and a single query vector is read from its own tile.
    """

    info: CatalogInfo
    id_column: str
    columns: dict[str, str]
    ids: np.ndarray
    extra: dict[str, np.ndarray]
    tile_starts: list[tuple[tuple[int, int], int, int]] = field(default_factory=list)
    _matrices: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike, modalities: tuple[str, ...] | list[str],
             name: str | None = None, id_column: str | None = None) -> SearchCatalog:
        info = read_catalog_info(path)
        columns = resolve_embeddings(info, list(dict.fromkeys(modalities)), name)
        idc = resolve_id_column(info, id_column)
        names = info.schema.names
        z = next((c for c in ("Z", "Z_right") if c in names), None)
        shown = {"Z": z, "RA": info.ra_column, "DEC": info.dec_column}
        shown = {k: c for k, c in shown.items() if c and c in names and c != idc}
        wanted = list(dict.fromkeys(shown.values()))

        def convert(table):
            out = {"ids": table.column(idc).to_numpy(zero_copy_only=False)}
            for key, c in shown.items():
                out[key] = scalars(table.column(c))
            return out

        arrays = read_arrays(info, [idc, *wanted], convert)
        starts, offset = [], 0
        for tile in info.tiles:
            rows = info.rows.get(tile, 0)
            if rows:
                starts.append((tile, offset, rows))
                offset += rows
        ids = arrays.pop("ids")
        return cls(info=info, id_column=idc, columns=columns, ids=ids, extra=arrays,
                   tile_starts=starts)

    @property
    def n(self) -> int:
        return len(self.ids)

    def row_of(self, like: str | int) -> int:
        """The row whose ID is ``like``; InputError when no row has it."""
        key = _parse_id(like, self.ids)
        hits = np.flatnonzero(self.ids == key)
        if hits.size == 0:
            raise InputError(f"{self.info.path}: no object with {self.id_column} = {like} "
                             f"among its {self.n} rows; `astroembed info --catalog {self.info.path}` "
                             "shows the columns, and --id-column picks another key.")
        return int(hits[0])

    def matrix(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """The embedding column of ``modality`` for every row: ``(X, valid)``."""
        if modality not in self._matrices:
            column = self.columns[modality]
            arrays = read_arrays(self.info, [column], lambda t: dict(zip(
                ("x", "valid"), vectors(t.column(column)))))
            self._matrices[modality] = (arrays["x"], arrays["valid"])
        return self._matrices[modality]

    def vector(self, modality: str, row: int) -> np.ndarray | None:
        """One row's embedding (None if null), reading only the tile that holds it."""
        if modality in self._matrices:
            x, valid = self._matrices[modality]
            return x[row] if valid[row] else None
        from astroembed.catalog.reader import read_tile

        for (order, pixel), start, rows in self.tile_starts:
            if start <= row < start + rows:
                table = read_tile(self.info.path, order, pixel, [self.columns[modality]])
                x, valid = vectors(table.column(0).slice(row - start, 1))
                return x[0] if valid[0] else None
        raise IndexError(row)

    def index(self, modality: str, kind: str = "auto", seed: int = 0):
        """``(index, rows)``: a searcher over the valid rows of ``modality`` and the catalog
        row of each of its positions. ``kind`` "exact", "faiss" or "auto" (faiss above
        :data:`EXACT_MAX_ROWS` rows)."""
        if kind == "auto":
            kind = "faiss" if self.n > EXACT_MAX_ROWS else "exact"
        if kind == "faiss":
            return load_or_build_faiss(self, modality, seed)
        x, valid = self.matrix(modality)
        rows = np.flatnonzero(valid)
        return ExactIndex(x[rows]), rows


def _parse_id(like: str | int, ids: np.ndarray):
    """``--like`` as the ID column's type (an integer for TARGETID)."""
    if ids.dtype.kind in "iu":
        try:
            return int(str(like).strip())
        except ValueError:
            raise InputError(f"--like {like!r}: the ID column holds integers; give an "
                             "integer ID.") from None
    if ids.dtype.kind == "f":
        return float(like)
    return str(like)


# ----------------------------------------------------------------------------- stored faiss index

def _fingerprint(cat: SearchCatalog, modality: str) -> dict:
    """What a stored index was built from: column, model metadata and every tile's file."""
    from astroembed.catalog.columns import field_metadata

    tiles = []
    for (order, pixel), _, rows in cat.tile_starts:
        st = tile_path(cat.info.path, order, pixel).stat()
        tiles.append([order, pixel, rows, st.st_size, st.st_mtime_ns])
    column = cat.columns[modality]
    return {"column": column, "metadata": field_metadata(cat.info, column), "tiles": tiles}


def index_files(catalog: Path, column: str) -> tuple[Path, Path, Path]:
    """``CAT/astroembed_index/<column>.{faiss,rows.npy,json}``."""
    base = Path(catalog) / INDEX_DIR
    return base / f"{column}.faiss", base / f"{column}.rows.npy", base / f"{column}.json"


def load_or_build_faiss(cat: SearchCatalog, modality: str, seed: int = 0):
    """The stored faiss index of ``modality`` if it matches the catalog, else a new one
    (built, then stored atomically beside the tiles; a read-only catalog only logs why)."""
    import logging

    faiss = import_faiss()
    column = cat.columns[modality]
    f_index, f_rows, f_meta = index_files(cat.info.path, column)
    want = _fingerprint(cat, modality)
    if f_index.is_file() and f_rows.is_file() and f_meta.is_file():
        try:
            meta = json.loads(f_meta.read_text())
            if meta.get("fingerprint") == json.loads(json.dumps(want)):
                rows = np.load(f_rows, allow_pickle=False)
                return FaissIndex(faiss.read_index(str(f_index))), rows
        except (OSError, ValueError, RuntimeError):
            pass  # unreadable or stale: rebuild below
    x, valid = cat.matrix(modality)
    rows = np.flatnonzero(valid)
    index = build_ivf(normalise(x[rows]), "ip", seed=seed)
    # Stored under the shared catalog lock, like a tile an embed run writes; a catalog an
    # exclusive writer is changing gets no stored index (this search still runs).
    try:
        with CatalogLock(cat.info.path, "search").shared():
            with atomic_path(f_index) as tmp:
                faiss.write_index(index, str(tmp))
            with atomic_path(f_rows) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, rows)
            with atomic_path(f_meta) as tmp:
                tmp.write_text(json.dumps({"fingerprint": want, "nlist": index.nlist,
                                           "nprobe": index.nprobe, "ntotal": index.ntotal}))
    except (OSError, AstroembedError) as err:
        logging.getLogger("astroembed").warning(
            "could not store the faiss index in %s (%s); it will be rebuilt next time.",
            f_index.parent, getattr(err, "strerror", None) or err)
    return FaissIndex(index), rows


# ----------------------------------------------------------------------------- neighbours

def neighbours(cat: SearchCatalog, like: str | int, from_modality: str = "image",
               to_modality: str | None = None, k: int = 10, index: str = "auto",
               seed: int = 0) -> dict:
    """The ``k`` nearest neighbours of object ``like``: its ``from_modality`` embedding
    against every row's ``to_modality`` embedding (cosine).

    In-modality the object itself is left out; across modalities its own partner stays in
    (it is what a good model ranks first) and is flagged ``partner``.
    """
    to_modality = to_modality or from_modality
    row = cat.row_of(like)
    query = cat.vector(from_modality, row)
    if query is None:
        raise InputError(f"{cat.info.path}: object {cat.id_column} = {like} has no "
                         f"{cat.columns[from_modality]} (null: it could not be embedded); "
                         "pick another object or --from modality.")
    searcher, rows = cat.index(to_modality, index, seed)
    same = from_modality == to_modality
    if searcher.ntotal - int(same) < 1:
        raise InputError(f"{cat.info.path}: no other row has {cat.columns[to_modality]}.")
    sims, pos = searcher.search(query[None, :], k + int(same))
    found = []
    for sim, p in zip(sims[0], pos[0]):
        if p < 0:
            continue
        r = int(rows[p])
        if same and r == row:
            continue
        found.append(_describe_row(cat, r) | {"similarity": float(sim), "partner": r == row})
    found = found[:k]
    for rank, item in enumerate(found, start=1):
        item["rank"] = rank
    return {"catalog": str(cat.info.path), "id_column": cat.id_column,
            "query": _describe_row(cat, row), "from": from_modality, "to": to_modality,
            "columns": {"from": cat.columns[from_modality], "to": cat.columns[to_modality]},
            "index": searcher.kind, "k": k, "n_searched": searcher.ntotal,
            "neighbours": found}


def _describe_row(cat: SearchCatalog, row: int) -> dict:
    """ID, row number, and Z/RA/Dec where present, as JSON-ready Python values."""
    item = {"id": cat.ids[row].item() if hasattr(cat.ids[row], "item") else cat.ids[row],
            "row": int(row)}
    for name, values in cat.extra.items():
        value = float(values[row])
        item[name] = None if math.isnan(value) else value
    return item


# ----------------------------------------------------------------------------- retrieval report

def partner_ranks(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """For query i, how many database vectors beat its own partner (database row i).

    0 means the partner is the top-1 match. Ties count in the query's favour. Computed in
    blocks of exact inner products, so it is exact at any size (O(N_q x N x d)).
    """
    q = normalise(queries)
    n = database.shape[0]
    block = max(1, BLOCK_ELEMENTS // max(n, 1))
    ranks = np.empty(len(q), np.int64)
    for start in range(0, len(q), block):
        s = q[start:start + block] @ database.T
        own = s[np.arange(s.shape[0]), np.arange(start, start + s.shape[0])]
        ranks[start:start + block] = (s > own[:, None]).sum(axis=1)
    return ranks


def top_fraction_rank(n_database: int, fraction: float = 0.01) -> int:
    """How many of ``n_database`` candidates make the top ``fraction`` (at least one)."""
    return max(1, math.ceil(fraction * n_database))


def retrieval_rates(ranks: np.ndarray, n_database: int) -> dict[str, float]:
    """Top-1, top-10 and top-1% rates, median and mean rank (1 = first) of the true partners,
    from ``ranks`` = how many candidates beat each query's partner (0 = found first; see
    :func:`astroembed.similarity.partner_ranks`)."""
    ranks = np.asarray(ranks)
    return {"top1": float(np.mean(ranks < 1)), "top10": float(np.mean(ranks < 10)),
            "top1pct": float(np.mean(ranks < top_fraction_rank(n_database))),
            "median_rank": float(np.median(ranks) + 1), "mean_rank": float(np.mean(ranks) + 1)}


def retrieval_report(image: np.ndarray, spectrum: np.ndarray, queries: int = 10_000,
                     seed: int = 0) -> dict:
    """Top-1, top-10 and top-1% accuracy of finding each object's own partner across
    modalities (image -> spectrum and spectrum -> image), on row-aligned arrays.

    Up to ``queries`` objects (a seeded sample) are queried against all N partners; chance
    levels are given for comparison (1/N, 10/N, 1%).
    """
    n = len(image)
    if n < 2:
        raise InputError(f"the retrieval report needs at least 2 objects with both embeddings "
                         f"(found {n}).")
    rng = np.random.default_rng(seed)
    sample = np.arange(n) if n <= queries else np.sort(rng.choice(n, queries, replace=False))
    one_pct = top_fraction_rank(n)
    directions = []
    for src, dst, a, b in (("image", "spectrum", image, spectrum),
                           ("spectrum", "image", spectrum, image)):
        db = normalise(b)
        # partner_ranks compares query j with database row j: pass the sampled rows' partners
        # first by reordering the database so sampled partners line up with the queries.
        order = np.concatenate([sample, np.setdiff1d(np.arange(n), sample)])
        ranks = partner_ranks(a[sample], db[order])
        directions.append({"from": src, "to": dst, "n_queries": int(len(sample))}
                          | retrieval_rates(ranks, n))
    return {"n_objects": int(n), "top1pct_k": one_pct,
            "chance": {"top1": 1 / n, "top10": min(1.0, 10 / n), "top1pct": one_pct / n},
            "directions": directions}


def evaluate_catalog(cat: SearchCatalog, queries: int = 10_000, seed: int = 0) -> dict:
    """:func:`retrieval_report` over the rows of ``cat`` that have both embeddings."""
    xi, vi = cat.matrix("image")
    xs, vs = cat.matrix("spectrum")
    both = vi & vs
    report = retrieval_report(xi[both], xs[both], queries=queries, seed=seed)
    return {"catalog": str(cat.info.path), "columns": dict(cat.columns),
            "n_rows": cat.n, "excluded": {"no_embedding": int(cat.n - both.sum())}} | report


def search_modalities(from_modality: str, to_modality: str | None, evaluate: bool) -> tuple:
    """The modalities a search needs (both for the retrieval report)."""
    if evaluate:
        return MODALITIES
    return tuple(dict.fromkeys([from_modality, to_modality or from_modality]))


def search(cfg: SearchConfig) -> dict:
    """What ``astroembed search`` reports: the neighbours of ``cfg.like`` (with the PNG of them
    when ``cfg.plot`` is set), or the retrieval report with ``cfg.evaluate``. Arguments and the
    plot's path are checked before the catalog is read."""
    from astroembed.catalog.paths import check_output_file

    cfg.validate()
    if cfg.plot:
        check_output_file(cfg.plot, "--plot", example="neighbours.png")
    cat = SearchCatalog.open(cfg.catalog, search_modalities(cfg.from_modality, cfg.to_modality,
                                                            cfg.evaluate),
                             name=cfg.name, id_column=cfg.id_column)
    if cfg.evaluate:
        return evaluate_catalog(cat, queries=cfg.queries, seed=cfg.seed)
    report = neighbours(cat, cfg.like, cfg.from_modality, cfg.to_modality, k=cfg.k,
                        index=cfg.index, seed=cfg.seed)
    if cfg.plot:
        report["plot"] = str(plot_neighbours(cat, report, cfg.plot))
    return report


def plot_neighbours(cat: SearchCatalog, result: dict, file: str | os.PathLike) -> Path:
    """PNG of the query and its neighbours: cutouts in colour, spectra as curves (whichever
    of the ``image`` / ``flux`` columns the catalog has), reading only the tiles involved."""
    from astroembed.catalog.reader import image_array, image_shape, read_tile
    from astroembed.plots import search_plot

    items = [result["query"], *result["neighbours"]]
    wanted = {item["row"] for item in items}
    names = cat.info.schema.names
    cols = [c for c in ("image", "flux") if c in names]
    images: dict[int, np.ndarray] = {}
    spectra: dict[int, np.ndarray] = {}
    for (order, pixel), start, rows in cat.tile_starts:
        inside = sorted(r for r in wanted if start <= r < start + rows)
        if not inside or not cols:
            continue
        table = read_tile(cat.info.path, order, pixel, cols)
        for r in inside:
            if "image" in cols:
                column = table.column("image").slice(r - start, 1)
                shape = image_shape(cat.info.schema.field("image"),
                                    where(cat.info.path, column="image"))
                images[r] = image_array(column, shape)[0]
            if "flux" in cols:
                flux, ok = vectors(table.column("flux").slice(r - start, 1))
                if ok[0]:
                    spectra[r] = flux[0]
    wave = None
    if "flux" in cols:
        from astroembed.catalog.columns import field_metadata

        meta = field_metadata(cat.info, "flux")
        n = cat.info.schema.field("flux").type.list_size
        start_w, step = float(meta.get("wave_start", 3600.0)), float(meta.get("wave_step", 0.8))
        wave = start_w + step * np.arange(n)
    title = (f"{cat.columns[result['from']]} -> {cat.columns[result['to']]} "
             f"({result['index']}, cosine)")
    return search_plot(file, items, images, spectra, wave, title=title)
