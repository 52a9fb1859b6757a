"""Generic positional tables: Parquet files, directories of Parquet, HATS catalogs, FITS tables.

Why: users bring their own catalogs (and astroembed's own output is HATS Parquet), so any
table with a sky position must be readable without a survey-specific reader.

Schema of :func:`read_table`: the file's own columns, unchanged (no renaming, nothing
added), with native-endian types; FITS strings are stripped of trailing blanks and
multi-dimensional FITS columns become fixed-size lists. Which columns hold the position is
told by :func:`radec_columns`: the first pair present, case-insensitively, of
``RA``/``DEC``, then ``TARGET_RA``/``TARGET_DEC`` (degrees, ICRS). The positions are
validated (finite, RA in [0, 360], Dec in [-90, 90]). Schema metadata gains ``source`` (the
file or directory name) and keeps what the file had.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from astroembed.errors import InputError, where
from astroembed.readers.fitsutil import (
    check_file,
    find_column,
    find_table_hdu,
    hdu_label,
    is_fits,
    open_fits,
    table_to_arrow,
    validate_radec,
)

__all__ = [
    "RADEC_PAIRS",
    "radec_columns",
    "read_table",
    "is_parquet",
    "is_hats_catalog",
    "is_table",
]

#: Accepted (RA, Dec) column-name pairs, in order of preference (matched case-insensitively).
RADEC_PAIRS: tuple[tuple[str, str], ...] = (("RA", "DEC"), ("TARGET_RA", "TARGET_DEC"))

_PARQUET_MAGIC = b"PAR1"
_REQUIRE = [tuple(ra for ra, _ in RADEC_PAIRS), tuple(dec for _, dec in RADEC_PAIRS)]


def radec_columns(table: pa.Table | pa.Schema | list[str],
                  path: str | os.PathLike | None = None) -> tuple[str, str]:
    """The (RA, Dec) column names of ``table`` as spelled there.

    Accepts RA/DEC, ra/dec, TARGET_RA/TARGET_DEC in any case; raises InputError naming
    ``path`` (when given) if none is present.
    """
    if isinstance(table, pa.Table):
        names = table.column_names
    elif isinstance(table, pa.Schema):
        names = table.names
    else:
        names = list(table)
    for ra, dec in RADEC_PAIRS:
        ra_name, dec_name = find_column(names, ra), find_column(names, dec)
        if ra_name and dec_name:
            return ra_name, dec_name
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise InputError(
        f"{path if path is not None else 'table'}: no position columns: expected RA/DEC or "
        f"TARGET_RA/TARGET_DEC (degrees, any case); found {shown or 'no columns'}. Rename "
        "the position columns."
    )


def is_parquet(path: str | os.PathLike) -> bool:
    """True for a file that starts with the Parquet magic bytes ``PAR1``."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == _PARQUET_MAGIC
    except OSError:
        return False


def is_hats_catalog(path: str | os.PathLike) -> bool:
    """True for a HATS catalog directory (``hats.properties`` and ``dataset/``)."""
    p = Path(path)
    return p.is_dir() and (p / "hats.properties").is_file() and (p / "dataset").is_dir()


def is_table(path: str | os.PathLike) -> bool:
    """True for Parquet, a Parquet/HATS directory, or a FITS file with an RA/Dec table."""
    p = Path(path)
    if p.is_dir():
        # A Parquet dataset holds nothing but Parquet files (plus _metadata-style sidecars);
        # a directory that mixes in other files is a folder of inputs, not one table.
        files = [f for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_"))]
        return is_hats_catalog(p) or (bool(files) and all(f.suffix == ".parquet" for f in files))
    if is_parquet(p):
        return True
    if is_fits(p):
        try:
            with open_fits(p) as hdul:
                return find_table_hdu(hdul, _REQUIRE) is not None
        except InputError:
            return False
    return False


def _with_source(table: pa.Table, source: str) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta[b"source"] = source.encode()
    return table.replace_schema_metadata(meta)


def _read_dataset(directory: Path, shown: Path) -> pa.Table:
    """All Parquet files under ``directory`` (``_metadata`` and dot files are skipped)."""
    files = sorted(
        f for f in directory.rglob("*.parquet")
        if f.is_file() and not any(part.startswith((".", "_"))
                                   for part in f.relative_to(directory).parts)
    )
    if not files:
        raise InputError(f"{shown}: holds no .parquet files; the catalog is empty or broken.")
    try:
        return pads.dataset([str(f) for f in files], format="parquet").to_table()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise InputError(
            f"{shown}: cannot read the Parquet files in it ({str(exc).splitlines()[0]}). "
            "A file may be corrupt, or the files may have different schemas."
        ) from None


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read a positional table: Parquet file, Parquet/HATS directory, or FITS table.

    For FITS, the first table HDU with an accepted RA/Dec pair is read.
    """
    p = Path(path)
    if p.is_dir():
        if is_hats_catalog(p):
            table = _read_dataset(p / "dataset", p)
        elif any(p.rglob("*.parquet")):
            table = _read_dataset(p, p)
        else:
            raise InputError(
                f"{p}: is a directory but neither a HATS catalog (hats.properties + "
                "dataset/) nor a directory of .parquet files."
            )
        hdu = None
    else:
        check_file(p)
        if is_parquet(p):
            try:
                table = pq.read_table(p)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise InputError(
                    f"{p}: cannot be read as Parquet ({str(exc).splitlines()[0]}). The file "
                    "may be truncated or corrupt; write or copy it again."
                ) from None
            hdu = None
        elif is_fits(p):
            with open_fits(p) as hdul:
                found = find_table_hdu(hdul, _REQUIRE)
                if found is None:
                    tables = [i for i, h in enumerate(hdul) if hasattr(h, "columns")]
                    if not tables:
                        raise InputError(f"{p}: has no table HDU. Pass a FITS binary table.")
                    first = hdul[tables[0]]
                    # raises InputError listing the columns that are there
                    radec_columns(list(first.columns.names),
                                  where(p, hdu_label(first, tables[0])))
                index, table_hdu = found
                hdu = hdu_label(table_hdu, index)
                table = table_to_arrow(table_hdu, p, index)
        else:
            raise InputError(
                f"{p}: not a Parquet or FITS file (unrecognised content). astroembed reads "
                "Parquet, FITS tables, HATS catalogs, DESI and Legacy Survey files."
            )
    ra, dec = radec_columns(table, where(p, hdu))
    validate_radec(table.column(ra), table.column(dec), p, hdu, ra, dec)
    return _with_source(table, p.name)


def iter_table_chunks(path: str | os.PathLike, rows: int):
    """Yield ``(first_row, table)`` chunks of a Parquet file, positions checked per chunk.

    Lets the cross-match stage a table of any size with bounded memory; other inputs are
    read whole by their readers.
    """
    p = check_file(path)
    try:
        parquet = pq.ParquetFile(p, pre_buffer=False)  # pre-buffering keeps every chunk read
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{p}: cannot be read as Parquet ({str(exc).splitlines()[0]}). The "
                         "file may be truncated or corrupt; write or copy it again.") from None
    ra_name, dec_name = radec_columns(parquet.schema_arrow.names, str(p))
    offset = 0
    try:
        for batch in parquet.iter_batches(batch_size=rows):
            table = pa.Table.from_batches([batch])
            validate_radec(table.column(ra_name), table.column(dec_name), p, None, ra_name,
                           dec_name, row_offset=offset)
            yield offset, _with_source(table, p.name)
            offset += table.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{p}: cannot be read as Parquet after row {offset} "
                         f"({str(exc).splitlines()[0]}); the file may be truncated.") from None
