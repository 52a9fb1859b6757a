"""Embedding one tile at a time: stream its rows through the ONNX encoders and rewrite it.

Why this shape: a tile can hold more rows than fit in memory (images ~49 kB and spectra
~62 kB a row), so a tile is read one row group and ``batch_size`` rows at a time,
preprocessed in NumPy exactly as the encoder's metadata declares
(:mod:`astroembed.runtime.preprocess`), run, and written to a temporary file that replaces the tile
only when it is complete. Reading + preprocessing the next batches and writing the previous
ones overlap with the model (a reader thread up to two batches ahead, a writer thread up to
three behind), which keeps a GPU busy and hides the Parquet work on CPU. Peak memory depends
on the batch and row-group size, never on the number of rows. Rows whose input is missing
(a null image or spectrum) or unusable (the preprocessing says so, or the model gives
non-finite values) get a null embedding.

Everything here works on one tile given by its path, so the same code runs in-process or in
a Dask task (:func:`astroembed.runtime.orchestrate.embed` does the orchestration; no dask here, and no
torch: the runtime needs only onnxruntime, NumPy and pyarrow).

Each embedding column is ``fixed_size_list<float32>[dim]`` named ``embedding_<modality>``
(``embedding_<modality>_<name>`` with ``--name``) and carries, in its Parquet field metadata,
the model that made it (:data:`FIELD_KEYS`). That metadata is also how a later run knows a
tile is done: same column, same model hash -> skipped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astroembed.errors import AstroembedError, InputError, ModelError, OutputError, where
from astroembed.catalog.atomic import atomic_path, publish_mode
from astroembed.catalog.describe import tile_embeddings, tile_footers
from astroembed.catalog.layout import (COMMON_METADATA_FILE, DATASET_DIR, parse_tile,
                                       pixel_tile_path, tile_path)
from astroembed.catalog.reader import CatalogInfo, find_tile, image_shape, read_catalog_info
from astroembed.catalog.tiles import parquet_options
from astroembed.catalog.writer import schema_problem
from astroembed.catalog.rewrite import (RowGroupWriter, assemble, joined_batches, open_tile,
                                        read_batches, with_column)
from astroembed.runtime.modelfile import (MODALITIES, Encoder, fallback_message, find_encoders,
                                         open_encoder)
from astroembed.runtime.preprocess import (ASTROCLIP_IMAGE_KIND, FLUX_KIND, flux_inputs,
                                           image_inputs, minimum_cutout, rgb_inputs,
                                           spectrum_inputs)
from astroembed.simulation import simulated_inputs
from astroembed.stamps import utc_now

__all__ = ["CATALOG_BANDS", "EncoderSpec", "EmbedPlan", "FIELD_KEYS", "TileJob", "TileResult",
           "catalog_embeddings", "embed_tile", "embedding_column", "plan_embed"]

log = logging.getLogger("astroembed")

IMAGE_COLUMN = "image"
FLUX_COLUMN = "flux"
IVAR_COLUMN = "ivar"
INPUT_COLUMNS = {"image": (IMAGE_COLUMN,), "spectrum": (FLUX_COLUMN, IVAR_COLUMN)}
#: Models whose graph takes the raw flux (it does its own preprocessing) read no ivar.
FLUX_ONLY = (FLUX_COLUMN,)
#: Bands of the catalog's image column when its field metadata does not say (docs/architecture.md).
CATALOG_BANDS = "grz"
#: Field metadata of an embedding column (bytes keys in the Parquet schema).
FIELD_KEYS = ("astroembed_embedding", "modality", "model_name", "model_version", "model_hash",
              "embedding_dim", "created")


def input_columns(modality: str, preprocessing: dict) -> tuple[str, ...]:
    """The catalog columns an encoder of ``modality`` with this preprocessing reads."""
    if modality == "spectrum" and preprocessing.get("kind") == FLUX_KIND:
        return FLUX_ONLY
    return INPUT_COLUMNS[modality]


def embedding_column(modality: str, name: str | None = None) -> str:
    """``embedding_image`` or ``embedding_image_<name>``: several models can coexist."""
    return f"embedding_{modality}" + (f"_{name}" if name else "")


# ----------------------------------------------------------------------------- what runs

@dataclass(frozen=True)
class EncoderSpec:
    """One encoder to run, described by value so it travels to a Dask worker."""

    modality: str
    path: str
    column: str
    name: str
    version: str
    hash: str
    dim: int
    preprocessing: dict = field(compare=False)
    image_shape: tuple[int, int, int] | None = None  # for images stored as a plain list

    @classmethod
    def from_encoder(cls, encoder: Encoder, column: str) -> EncoderSpec:
        i = encoder.info
        return cls(modality=i.modality, path=str(i.path), column=column, name=i.name,
                   version=i.version, hash=i.hash, dim=i.dim, preprocessing=dict(i.preprocessing))

    def arrow_field(self, created: str) -> pa.Field:
        """The output column's Arrow field, with the model in its metadata."""
        meta = {"astroembed_embedding": "1", "modality": self.modality,
                "model_name": self.name, "model_version": self.version,
                "model_hash": self.hash, "embedding_dim": str(self.dim), "created": created}
        return pa.field(self.column, pa.list_(pa.float32(), self.dim), nullable=True,
                        metadata=meta)


@dataclass(frozen=True)
class TileJob:
    """Everything one task needs: paths and settings, never data."""

    catalog: str
    order: int
    pixel: int
    encoders: tuple[EncoderSpec, ...]
    batch_size: int
    device: str
    threads: int | None

    @property
    def tile(self) -> str:
        return f"{self.order}/{self.pixel}"


@dataclass
class TileResult:
    """What one tile's run did; ``error`` (with its kind) when a user-fixable problem stopped it."""

    order: int
    pixel: int
    rows: int = 0
    embedded: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    unusable: dict[str, int] = field(default_factory=dict)
    providers: dict[str, list[str]] = field(default_factory=dict)  # what really ran, per modality
    fallbacks: list[str] = field(default_factory=list)  # GPU asked for, CPU obtained (messages)
    error: str | None = None
    error_kind: str | None = None


# ----------------------------------------------------------------------------- sessions

_local = threading.local()
_CACHE_SIZE = 8


def get_encoder(spec: EncoderSpec, device: str, threads: int | None) -> Encoder:
    """An open session for ``spec``, reused across tiles by the same thread.

    Per thread, because one session's thread pool shared by concurrent tasks (Dask thread
    workers) would make them fight over the same cores. ModelError if the file on disk is no
    longer the model the run was planned with.
    """
    encoder = _cache().get((spec.path, spec.hash, device, threads))
    if encoder is None:
        encoder = open_encoder(spec.path, device=device, threads=threads)
        if encoder.info.hash != spec.hash:
            raise ModelError(f"{spec.path}: the model file changed during the run (hash "
                             f"{encoder.info.hash[:12]}, planned {spec.hash[:12]}); run again.")
        _remember(encoder, device, threads)
    return encoder


def _cache() -> dict:
    if not hasattr(_local, "encoders"):
        _local.encoders = {}
    return _local.encoders


def _remember(encoder: Encoder, device: str, threads: int | None) -> None:
    """Keep ``encoder`` for this thread (the oldest go beyond a few models)."""
    cache = _cache()
    cache[(str(encoder.info.path), encoder.info.hash, device, threads)] = encoder
    while len(cache) > _CACHE_SIZE:
        cache.pop(next(iter(cache)))


# ----------------------------------------------------------------------------- columns -> arrays

def _list_values(array: pa.Array, width: int) -> np.ndarray:
    """``(N, width)`` values of a fixed-size-list (or tensor) array, null slots included
    (their values are arbitrary; callers mask them)."""
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    flat = array.values.slice(array.offset * width, len(array) * width)
    return flat.to_numpy(zero_copy_only=False).reshape(len(array), width)


def _present(array: pa.Array) -> np.ndarray:
    """Boolean mask of non-null rows."""
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return array.is_valid().to_numpy(zero_copy_only=False)


def _read_inputs(batch: pa.RecordBatch, spec: EncoderSpec
                 ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The encoder's raw inputs for the batch (cutouts ``(N, 3, H, W)``, or flux and ivar
    ``(N, n_wave)``, or the flux alone for a model that takes raw flux) and the mask of rows
    that have them (not null)."""
    if spec.modality == "image":
        column = batch.column(IMAGE_COLUMN)
        shape = spec.image_shape or tuple(column.type.shape)
        images = _list_values(column, int(np.prod(shape))).reshape(len(column), *shape)
        return (images,), _present(column)
    n_wave = int(spec.preprocessing["n_wave"])
    columns = [batch.column(c) for c in input_columns(spec.modality, spec.preprocessing)]
    present = np.logical_and.reduce([_present(c) for c in columns])
    return tuple(_list_values(c, n_wave) for c in columns), present


def _preprocess(spec: EncoderSpec, arrays: tuple[np.ndarray, ...], rows: np.ndarray
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Encoder inputs for ``rows`` and which of them are usable (:mod:`astroembed.runtime.preprocess`)."""
    if rows.size < len(arrays[0]):
        arrays = tuple(a[rows] for a in arrays)
    if spec.modality == "image":
        if spec.preprocessing.get("kind") == ASTROCLIP_IMAGE_KIND:
            return rgb_inputs(arrays[0], spec.preprocessing)
        return image_inputs(arrays[0], spec.preprocessing)
    if spec.preprocessing.get("kind") == FLUX_KIND:
        return flux_inputs(arrays[0], spec.preprocessing)
    return spectrum_inputs(arrays[0], arrays[1], spec.preprocessing)


@dataclass
class _Prepared:
    """One batch and, per encoder, the rows that have input and their model inputs."""

    batch: pa.RecordBatch
    inputs: dict[str, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]]


def prepare_batch(batch: pa.RecordBatch, specs: tuple[EncoderSpec, ...]) -> _Prepared:
    """The CPU half of a batch (decode the columns, preprocess); runs ahead of the model."""
    inputs = {}
    for spec in specs:
        arrays, present = _read_inputs(batch, spec)
        rows = np.flatnonzero(present)
        model_inputs, ok = _preprocess(spec, arrays, rows) if rows.size else ({}, rows > 0)
        inputs[spec.column] = (rows, model_inputs, ok)
    return _Prepared(batch, inputs)


def embed_prepared(prepared: _Prepared, spec: EncoderSpec, encoder: Encoder,
                   counts: dict[str, dict[str, int]]) -> pa.FixedSizeListArray:
    """The embedding column for one batch: nulls where the input is missing or unusable.

    ``counts`` (embedded / missing / unusable per column) is updated in place.
    """
    n = prepared.batch.num_rows
    rows, inputs, ok = prepared.inputs[spec.column]
    out = np.zeros((n, spec.dim), dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    if ok.any():
        emb = encoder.run({k: v[ok] for k, v in inputs.items()})
        if emb.shape != (int(ok.sum()), spec.dim):
            raise ModelError(f"{spec.path}: gave output of shape {emb.shape} for "
                             f"{int(ok.sum())} rows; expected (rows, {spec.dim}).")
        finite = np.isfinite(emb).all(axis=1)
        target = rows[ok][finite]
        out[target] = emb[finite]
        valid[target] = True
    counts["embedded"][spec.column] += int(valid.sum())
    counts["missing"][spec.column] += int(n - rows.size)
    counts["unusable"][spec.column] += int(rows.size - valid.sum())
    return pa.FixedSizeListArray.from_arrays(pa.array(out.reshape(-1), pa.float32()),
                                             type=pa.list_(pa.float32(), spec.dim),
                                             mask=pa.array(~valid))


# ----------------------------------------------------------------------------- one tile

def _output_schema(schema: pa.Schema, specs: tuple[EncoderSpec, ...], created: str) -> pa.Schema:
    """The tile's schema with each embedding column replaced in place, or appended."""
    for spec in specs:
        schema = with_column(schema, spec.arrow_field(created))
    return schema


#: Batches read and preprocessed ahead of the model. One is not enough: the first batch of a
#: row group waits for the whole group to be decoded, which can take longer than a batch of
#: the model.
READ_AHEAD = 2


def _pipelined(source: pq.ParquetFile, file: Path, job: TileJob,
               reader: ThreadPoolExecutor) -> Iterator[_Prepared]:
    """Prepared batches, read and preprocessed by ``reader`` (one thread, so in order) up to
    :data:`READ_AHEAD` batches ahead of the caller, which runs the model (memory stays
    bounded)."""
    pixel_file = pixel_tile_path(job.catalog, job.order, job.pixel)
    needed = sorted({c for s in job.encoders for c in input_columns(s.modality, s.preprocessing)})
    main_names = set(source.schema_arrow.names)
    if pixel_file.is_file() and not set(needed) <= main_names:
        batches = joined_batches(source, file, pixel_file, needed, job.batch_size)
    else:
        batches = read_batches(source, file, job.batch_size)

    def next_prepared() -> _Prepared | None:
        batch = next(batches, None)
        return None if batch is None else prepare_batch(batch, job.encoders)

    pending = deque(reader.submit(next_prepared) for _ in range(READ_AHEAD))
    try:
        while (prepared := pending.popleft().result()) is not None:
            pending.append(reader.submit(next_prepared))
            yield prepared
    finally:  # on an error downstream, reads not yet started are dropped, not waited for
        for future in pending:
            future.cancel()


def threads_per_encoder(threads: int | None, encoders: int) -> int:
    """The task's onnxruntime threads shared among its encoders, which run side by side:
    small batches leave the extra threads of one session idle, so sessions that split the
    threads and run at once keep more cores busy than sessions that take turns with all."""
    total = threads or os.cpu_count() or 1
    return max(1, total // max(1, encoders))


def _run_encoders(prepared: _Prepared, specs: tuple[EncoderSpec, ...],
                  encoders: dict[str, Encoder], counts: dict,
                  models: ThreadPoolExecutor) -> dict[str, pa.Array]:
    """Every encoder on the batch, at the same time (see :func:`threads_per_encoder`)."""
    if len(specs) == 1:
        spec = specs[0]
        return {spec.column: embed_prepared(prepared, spec, encoders[spec.column], counts)}
    futures = {s.column: models.submit(embed_prepared, prepared, s, encoders[s.column], counts)
               for s in specs}
    return {column: future.result() for column, future in futures.items()}


#: Output batches that may wait for the writer thread: a row-group flush (~64 MB) can take
#: longer than one batch of the model, and the model should not wait for it.
MAX_PENDING_WRITES = 3


class _OrderedWriter:
    """Writes output batches in order on one thread of its own, at most
    :data:`MAX_PENDING_WRITES` queued (memory stays bounded); a write error is raised by the
    next :meth:`submit` or by :meth:`finish`."""

    def __init__(self, groups: RowGroupWriter) -> None:
        self.groups = groups
        self.thread = ThreadPoolExecutor(max_workers=1)
        self.pending: deque = deque()
        self.failed = False

    def _add(self, batch: pa.RecordBatch) -> None:
        if self.failed:  # the batches queued behind a failed write never reach the file
            return
        try:
            self.groups.add(batch)
        except BaseException:
            self.failed = True
            raise

    def submit(self, batch: pa.RecordBatch) -> None:
        while self.pending and (self.pending[0].done()
                                or len(self.pending) >= MAX_PENDING_WRITES):
            self.pending.popleft().result()
        self.pending.append(self.thread.submit(self._add, batch))

    def finish(self) -> None:
        while self.pending:
            self.pending.popleft().result()
        self.groups.flush()

    def close(self) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)


def embed_tile(job: TileJob, on_rows: Callable[[int], None] | None = None) -> TileResult:
    """Embed one tile and replace it atomically; the old file stays until the new is complete.

    Three stages overlap: read + preprocess (a thread, a batch or two ahead), the model (this
    thread; the encoders side by side), write (a thread, up to :data:`MAX_PENDING_WRITES`
    batches behind); the batches and their order are the same as run one by one.
    ``on_rows(n)`` is called after each batch (for a progress bar in-process).
    """
    file = tile_path(job.catalog, job.order, job.pixel)
    threads = threads_per_encoder(job.threads, len(job.encoders))
    encoders = {s.column: get_encoder(s, job.device, threads) for s in job.encoders}
    counts: dict[str, dict[str, int]] = {k: {s.column: 0 for s in job.encoders}
                                         for k in ("embedded", "missing", "unusable")}
    rows = 0
    with open_tile(file) as source:
        schema = _output_schema(source.schema_arrow, job.encoders, utc_now())
        try:
            with atomic_path(file) as tmp:
                with pq.ParquetWriter(tmp, schema, **parquet_options(schema)) as writer:
                    output = _OrderedWriter(RowGroupWriter(writer, schema))
                    try:
                        with ThreadPoolExecutor(max_workers=1) as reader, \
                                ThreadPoolExecutor(max_workers=len(job.encoders)) as models:
                            for prepared in _pipelined(source, file, job, reader):
                                new = _run_encoders(prepared, job.encoders, encoders, counts,
                                                    models)
                                out = assemble(prepared.batch, schema, new)
                                output.submit(out)
                                rows += out.num_rows
                                if on_rows:
                                    on_rows(out.num_rows)
                        output.finish()
                    finally:
                        output.close()
                publish_mode(tmp)
        except OSError as err:  # reading errors are InputError by now: this is the write
            raise OutputError(f"{file}: cannot write the embedded tile: "
                              f"{err.strerror or err}") from err
    return TileResult(order=job.order, pixel=job.pixel, rows=rows, embedded=counts["embedded"],
                      missing=counts["missing"], unusable=counts["unusable"],
                      providers={s.modality: list(encoders[s.column].providers)
                                 for s in job.encoders},
                      fallbacks=[m for m in map(fallback_message, encoders.values()) if m])


def tile_done(job: TileJob) -> bool:
    """Whether the tile on disk holds every column of ``job`` with this model's hash (what an
    interrupted run kept: a tile is published by a rename, whoever was counting)."""
    file = tile_path(job.catalog, job.order, job.pixel)
    try:
        schema = pq.read_schema(file)
    except (OSError, pa.ArrowException):
        return False
    for spec in job.encoders:
        meta = _field_meta(schema.field(spec.column)) if spec.column in schema.names else {}
        if meta.get("model_hash") != spec.hash:
            return False
    return True


def run_tile(job: TileJob, on_rows: Callable[[int], None] | None = None) -> TileResult:
    """:func:`embed_tile`, with a user-fixable failure returned instead of raised, so one bad
    tile does not stop the others (bugs still raise)."""
    try:
        return embed_tile(job, on_rows)
    except AstroembedError as err:
        return TileResult(order=job.order, pixel=job.pixel, error=str(err),
                          error_kind=type(err).__name__)


# ----------------------------------------------------------------------------- planning

@dataclass
class EmbedPlan:
    """What a run will do, decided before any tile is touched."""

    info: CatalogInfo
    encoders: tuple[EncoderSpec, ...]
    jobs: list[TileJob]
    skipped: list[tuple[int, int]]
    providers: dict[str, list[str]]

    @property
    def catalog(self) -> Path:
        return self.info.path


def _select_tiles(info: CatalogInfo, requested: tuple[str, ...]) -> list[tuple[int, int]]:
    """The catalog's tiles, or those named by ``--tile`` (each must be a tile of the catalog)."""
    if not requested:
        return list(info.tiles)
    tiles: list[tuple[int, int]] = []
    for text in requested:
        tile = find_tile(info, *parse_tile(text))
        if tile not in tiles:
            tiles.append(tile)
    return tiles


def _select_encoders(model: str | None, modality: str) -> dict[str, Path]:
    """``{modality: file}`` of the encoders to run; ModelError when the model lacks one."""
    paths = find_encoders(model)
    wanted = MODALITIES if modality == "both" else (modality,)
    where_ = model if model is not None else "the default model"
    for m in wanted:
        if m not in paths:
            other = next(iter(paths))
            hint = (f" Pass --modality {other} to embed {other}s only." if modality == "both"
                    else "")
            raise ModelError(f"{where_}: has no {m} encoder (it has {', '.join(paths)}).{hint}")
    return {m: paths[m] for m in wanted}


def _field_meta(fld: pa.Field) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (fld.metadata or {}).items()}


def _missing_column(catalog: Path, schema: pa.Schema, names: tuple[str, ...],
                    modality: str, requested: str) -> None:
    missing = [n for n in names if n not in schema.names]
    if missing:
        other = "spectrum" if modality == "image" else "image"
        hint = (f" Pass --modality {other} to embed only {other}s." if requested == "both"
                else " Embed a catalog written by `astroembed crossmatch`.")
        raise InputError(f"{catalog}: no {', '.join(missing)} column for the {modality} "
                         f"encoder (the catalog has {len(schema)} columns: "
                         f"{', '.join(schema.names[:12])}{', ...' if len(schema) > 12 else ''})."
                         + hint)


def _check_image(spec: EncoderSpec, schema: pa.Schema, catalog: Path) -> EncoderSpec:
    """The image column can feed this encoder: g, r, z bands, cutouts at least the crop."""
    fld = schema.field(IMAGE_COLUMN)
    shape = image_shape(fld, where(catalog, column=fld.name))
    prep, meta = spec.preprocessing, _field_meta(fld)
    bands = str(meta.get("bands", CATALOG_BANDS))
    if str(prep.get("bands", CATALOG_BANDS)) != bands:
        raise ModelError(f"{spec.path}: the image encoder expects bands "
                         f"{prep.get('bands')!r}; {where(catalog, column=IMAGE_COLUMN)} holds "
                         f"{bands!r}. Use a model trained on {bands} cutouts.")
    unit = meta.get("unit")
    if unit and prep.get("unit") and unit != prep["unit"]:
        raise ModelError(f"{spec.path}: the image encoder expects {prep['unit']}; "
                         f"{where(catalog, column=IMAGE_COLUMN)} is in {unit}.")
    size = minimum_cutout(prep)
    if shape[1] < size or shape[2] < size:
        raise ModelError(f"{spec.path}: the image encoder needs cutouts of at least "
                         f"{size}x{size} pixels; {where(catalog, column=IMAGE_COLUMN)} has "
                         f"{shape[1]}x{shape[2]}. Cross-match cutouts of {size} pixels or "
                         f"more (`astroembed simulate --cutout-size {size}`, or real cutouts "
                         "of that size).")
    plain = not isinstance(fld.type, pa.FixedShapeTensorType)
    return replace(spec, image_shape=shape) if plain else spec


def _check_spectrum(spec: EncoderSpec, schema: pa.Schema, catalog: Path) -> EncoderSpec:
    """flux/ivar lie on the wavelength grid the spectrum encoder declares."""
    prep = spec.preprocessing
    n_wave = int(prep["n_wave"])
    for name in input_columns(spec.modality, prep):
        fld = schema.field(name)
        if not pa.types.is_fixed_size_list(fld.type):
            raise InputError(f"{where(catalog, column=name)}: type {fld.type}; expected "
                             f"fixed_size_list<float32>[{n_wave}] on the DESI grid.")
        meta = _field_meta(fld)
        # Field metadata states the grid (crossmatch writes it); without it only the length
        # can be checked, and the DESI grid is assumed.
        grid = {"n_wave": float(fld.type.list_size),
                "wave_start": float(meta.get("wave_start", prep["wave_start"])),
                "wave_step": float(meta.get("wave_step", prep["wave_step"]))}
        wanted = {k: float(prep[k]) for k in grid}
        if any(abs(grid[k] - wanted[k]) > 1e-6 * max(1.0, abs(wanted[k])) for k in grid):
            have = ", ".join(f"{k}={grid[k]:g}" for k in grid)
            need = ", ".join(f"{k}={wanted[k]:g}" for k in wanted)
            raise ModelError(f"{spec.path}: the spectrum encoder expects spectra on the grid "
                             f"{need}; {where(catalog, column=name)} is on {have}. Use a "
                             "model trained on this grid (or resample the spectra).")
    unit = _field_meta(schema.field(FLUX_COLUMN)).get("unit")
    if unit and prep.get("flux_unit") and unit != prep["flux_unit"]:
        raise ModelError(f"{spec.path}: the spectrum encoder expects flux in "
                         f"{prep['flux_unit']}; {where(catalog, column=FLUX_COLUMN)} is in {unit}.")
    return spec


def _check_existing(schema: pa.Schema, spec: EncoderSpec, file: Path) -> str | None:
    """The model hash already in ``spec.column`` (None if absent); InputError if a column of
    that name was not written by ``embed`` (it would be overwritten)."""
    i = schema.get_field_index(spec.column)
    if i < 0:
        return None
    meta = _field_meta(schema.field(i))
    if "model_hash" not in meta:
        raise InputError(f"{where(file, column=spec.column)}: exists and was not written by "
                         "`astroembed embed`; pass --name NAME to write "
                         f"{spec.column}_NAME instead.")
    return meta["model_hash"]


def _tile_schema(file: Path) -> pa.Schema:
    try:
        return pq.read_schema(file)
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{file}: unreadable tile ({err}); rebuild the catalog with "
                         "`astroembed crossmatch --overwrite`.") from err


def catalog_is_simulated(info: CatalogInfo) -> bool | None:
    """Whether the catalog was cross-matched from ``astroembed simulate`` output, as its
    provenance records it (each input's ``simulated``, decided at cross-match time), so the
    answer does not depend on the current directory or on where the catalog was copied.

    Catalogs from before that record: an input given by an absolute path is looked up on
    disk (a ``simulation.json`` above it); a relative one was relative to a directory no
    longer known, so the answer is None (unknown).
    """
    inputs = [i for i in info.provenance.get("inputs", []) if isinstance(i, dict) and "path" in i]
    if not inputs:
        return None
    if all(isinstance(i.get("simulated"), bool) for i in inputs):
        return all(i["simulated"] for i in inputs)
    if not all(Path(i["path"]).is_absolute() for i in inputs):
        return None
    return all(simulated_inputs([i["path"] for i in inputs]))


def _warn_default_model(info: CatalogInfo) -> None:
    """The default model has only seen simulations: say so for a catalog made from other
    data, or whose provenance cannot tell (an older catalog with relative input paths)."""
    simulated = catalog_is_simulated(info)
    if simulated:
        return
    origin = ("comes from other data, so its embeddings" if simulated is False else
              "does not record whether its inputs came from `astroembed simulate` (it was made "
              "by an older astroembed); if they did not, its embeddings")
    log.warning("the default model was trained only on simulated galaxies (astroembed "
                "simulate); %s %s may not mean what they do on simulations. Train a model on "
                "your own catalog for real survey data (`astroembed train`, `astroembed "
                "export`).", info.path, origin)


def plan_embed(catalog: str | os.PathLike, *, tiles: tuple[str, ...] = (),
               model: str | None = None, name: str | None = None, modality: str = "both",
               batch_size: int = 256, device: str = "auto", threads: int | None = None,
               force: bool = False, check_device: str | None = None) -> EmbedPlan:
    """Check everything and decide per tile what to run; reads metadata only, writes nothing.

    Raises (InputError, ModelError) for unknown tiles, a model that cannot run here
    (``--device cuda`` without a GPU) or does not fit the catalog's columns (bands, cutout
    size, wavelength grid), before any tile is touched. The encoders are opened here on
    ``check_device`` (default ``device``): a client whose tiles run on remote Dask workers
    checks on ``cpu`` and leaves the GPU to the workers.
    """
    check_device = check_device or device
    info = read_catalog_info(catalog)
    path = info.path
    if not info.complete and not (info.main / DATASET_DIR / COMMON_METADATA_FILE).is_file():
        raise InputError(f"{path}: incomplete: `astroembed crossmatch` is writing it or was "
                         "interrupted. Finish that run (run it again) before embedding.")
    selected = _select_tiles(info, tiles)
    specs, providers = [], {}
    for m, file in _select_encoders(model, modality).items():
        encoder = open_encoder(file, device=check_device, threads=threads)
        _missing_column(path, info.schema, input_columns(m, encoder.info.preprocessing), m,
                        modality)
        _remember(encoder, check_device, threads)  # an in-process run reuses the session
        spec = EncoderSpec.from_encoder(encoder, embedding_column(m, name))
        check = _check_image if m == "image" else _check_spectrum
        specs.append(check(spec, info.schema, path))
        providers[m] = list(encoder.providers)
        log.info("%s encoder %s (%s %s, hash %s) runs on %s", m, file, spec.name, spec.version,
                 spec.hash[:12], ", ".join(encoder.providers))
        fallback = fallback_message(encoder)
        if fallback:
            log.warning("%s", fallback)
    for spec in specs:
        _check_existing(info.schema, spec, path)
    if model is None:
        _warn_default_model(info)
    jobs, skipped = [], []
    for order, pixel in selected:
        file = tile_path(path, order, pixel)
        schema = _tile_schema(file)
        todo = tuple(s for s in specs if force or _check_existing(schema, s, file) != s.hash)
        if todo:
            jobs.append(TileJob(str(path), order, pixel, todo, batch_size, device, threads))
        else:
            skipped.append((order, pixel))
    return EmbedPlan(info=info, encoders=tuple(specs), jobs=jobs, skipped=skipped,
                     providers=providers)


# ----------------------------------------------------------------------------- the whole catalog

def catalog_embeddings(catalog: str | os.PathLike) -> tuple[dict[str, dict], str | None]:
    """Per embedding column, what the catalog's tiles hold (from their footers alone, see
    :func:`astroembed.catalog.describe.tile_embeddings`), and why its metadata cannot be
    finished (None when it can).

    Tiles may lack embedding columns others have (``embed --tile``): the catalog is then
    finished as partly embedded. They cannot differ in any other column, nor hold one
    embedding column with two types.
    """
    info = read_catalog_info(catalog)
    try:
        footers = tile_footers(info)
    except InputError as err:
        return {}, str(err)
    columns = tile_embeddings(footers)
    problem = schema_problem({t: f.schema.to_arrow_schema() for t, f in footers.items()})
    return columns, problem
