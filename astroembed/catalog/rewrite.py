"""Rewrite a main-catalog tile batch by batch with columns set or added, never holding the
whole tile, and read it joined with its pixels.

Commands that add a column to every row (``embed``, ``predict``) read a tile one row group at
a time in batches, write each output batch as it comes, and publish the new file atomically
over the old one only once it is complete. The pixels (a cutout and a spectrum per row,
~110 kB, so ~11 GB for a tile of 100,000 rows) stay in the pixel extension's file, which is
only read: :func:`joined_batches` streams its rows beside the main tile's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from astroembed.errors import InputError, OutputError
from astroembed.catalog.atomic import atomic_path, publish_mode
from astroembed.catalog.layout import ROW_ID_COLUMN
from astroembed.catalog.tiles import ROW_GROUP_BYTES, parquet_options

__all__ = ["RowGroupWriter", "assemble", "joined_batches", "open_tile", "read_batches",
           "rewrite_tile", "with_column"]


def unreadable(file: Path, err: Exception) -> InputError:
    return InputError(f"{file}: unreadable tile ({err}); rebuild the catalog with "
                      "`astroembed crossmatch --overwrite`.")


def open_tile(file: Path) -> pq.ParquetFile:
    """The tile's Parquet file; InputError naming it when it cannot be opened."""
    try:
        return pq.ParquetFile(file)
    except (OSError, pa.ArrowException) as err:
        raise unreadable(file, err) from err


def read_batches(source: pq.ParquetFile, file: Path, batch_size: int,
                 columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The tile's rows (all columns, or ``columns``) in batches of at most ``batch_size``, one
    row group at a time (so only one row group is buffered); read errors become InputError
    naming the file."""
    for group in range(source.num_row_groups):
        batches = source.iter_batches(batch_size=batch_size, row_groups=[group],
                                      columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (OSError, pa.ArrowException) as err:
                raise unreadable(file, err) from err
            yield batch


class _Rows:
    """A stream of batches read as runs of any length (the two files of a tile have their
    row groups in different places)."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self.batches, self.head = batches, None

    def take(self, n: int) -> pa.RecordBatch | None:
        parts = []
        while n:
            if self.head is None or self.head.num_rows == 0:
                self.head = next(self.batches, None)
                if self.head is None:
                    return None
            k = min(n, self.head.num_rows)
            parts.append(self.head.slice(0, k))
            self.head, n = self.head.slice(k), n - k
        return parts[0] if len(parts) == 1 else \
            pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def _damaged(file: Path, pixel_file: Path, what: str) -> InputError:
    return InputError(f"{pixel_file}: {what} those of {file}; the catalog is damaged. Rebuild "
                      "it with `astroembed crossmatch --overwrite`.")


def joined_batches(source: pq.ParquetFile, file: Path, pixel_file: Path,
                   columns: list[str], batch_size: int,
                   main_columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The main tile's batches (every column, or ``main_columns``, which must include
    ``ROW_ID``) with the pixel extension's ``columns`` appended, row for row; both files are
    read one row group at a time. InputError when the two files' ``ROW_ID`` values or row
    counts differ."""
    pixels = open_tile(pixel_file)
    with pixels:
        pixel_rows = _Rows(iter(read_batches(pixels, pixel_file, batch_size,
                                             [ROW_ID_COLUMN, *columns])))
        for batch in read_batches(source, file, batch_size, main_columns):
            extra = pixel_rows.take(batch.num_rows)
            if extra is None:
                raise _damaged(file, pixel_file, "fewer rows than")
            if not extra.column(ROW_ID_COLUMN).equals(batch.column(ROW_ID_COLUMN)):
                raise _damaged(file, pixel_file, f"{ROW_ID_COLUMN} values differ from")
            arrays = batch.columns + [extra.column(c) for c in columns]
            fields = list(batch.schema) + [extra.schema.field(c) for c in columns]
            yield pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        if pixel_rows.take(1) is not None:
            raise _damaged(file, pixel_file, "more rows than")


class RowGroupWriter:
    """Collects output batches and writes them as row groups of about ``target_bytes``, so the
    rewritten tile streams as well as the original (and memory stays bounded)."""

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema,
                 target_bytes: int = ROW_GROUP_BYTES) -> None:
        self.writer, self.schema, self.target = writer, schema, target_bytes
        self.batches: list[pa.RecordBatch] = []
        self.nbytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)
        self.nbytes += batch.nbytes
        if self.nbytes >= self.target:
            self.flush()

    def flush(self) -> None:
        if self.batches:
            table = pa.Table.from_batches(self.batches, schema=self.schema)
            self.writer.write_table(table, row_group_size=table.num_rows)
        self.batches, self.nbytes = [], 0


def with_column(schema: pa.Schema, fld: pa.Field) -> pa.Schema:
    """``schema`` with ``fld`` replacing the column of its name in place, or appended."""
    i = schema.get_field_index(fld.name)
    return schema.set(i, fld) if i >= 0 else schema.append(fld)


def assemble(batch: pa.RecordBatch, schema: pa.Schema,
             new: dict[str, pa.Array]) -> pa.RecordBatch:
    """The output batch: the input columns with the ``new`` ones set."""
    arrays = [new[f.name] if f.name in new else batch.column(f.name) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def rewrite_tile(file: Path, fields: list[pa.Field],
                 columns: Callable[[pa.RecordBatch], dict[str, pa.Array]],
                 batch_size: int = 4096) -> int:
    """Replace ``file`` by a copy with the columns ``fields`` set (in place) or appended, their
    values ``columns(batch)`` for each input batch; returns the rows written. The old file
    stays until the new one is complete."""
    rows = 0
    with open_tile(file) as source:
        schema = source.schema_arrow
        for fld in fields:
            schema = with_column(schema, fld)
        try:
            with atomic_path(file) as tmp:
                with pq.ParquetWriter(tmp, schema, **parquet_options(schema)) as writer:
                    groups = RowGroupWriter(writer, schema)
                    for batch in read_batches(source, file, batch_size):
                        groups.add(assemble(batch, schema, columns(batch)))
                        rows += batch.num_rows
                    groups.flush()
                publish_mode(tmp)
        except OSError as err:  # reading errors are InputError by now: this is the write
            raise OutputError(f"{file}: cannot write the new tile: "
                              f"{err.strerror or err}") from err
    return rows
