"""Shared FITS helpers: open files safely, find HDUs, turn tables into Arrow, check positions.

Why this module exists: astropy reports bad files in many ways (``OSError`` for a missing
SIMPLE card, a warning and silently *fewer* HDUs for a file cut short inside a header, a short
read only when the data are touched). Every reader goes through :func:`open_fits`, which turns
all of them into one :class:`~astroembed.errors.InputError` that names the file and says what
to do, so no astropy traceback reaches a user.

Conventions shared by all readers:

* FITS is big-endian; every numeric column comes out as a native-endian Arrow type.
* Strings lose their trailing blanks (FITS pads ``nA`` columns with spaces).
* Multi-dimensional columns (``5E``, ``TDIM``) become (nested) ``fixed_size_list`` columns.
* Rows in messages count from 0, like Arrow and NumPy.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from astropy.io import fits

from astroembed.errors import InputError, where

__all__ = [
    "check_file",
    "open_fits",
    "is_fits",
    "hdu_label",
    "find_hdu",
    "find_table_hdu",
    "read_hdu_data",
    "table_to_arrow",
    "numpy_to_arrow",
    "native",
    "find_column",
    "validate_radec",
    "canonical_column",
    "hdu_summary",
]

_FITS_MAGIC = b"SIMPLE  ="
_BLOCK = 2880


def check_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path after checking it is an existing, non-empty regular file.

    Done before any parser runs so that the three commonest user mistakes (typo, directory,
    0-byte leftover of a failed download) get a plain message instead of a parser error.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file. Check the path and try again.")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a file.")
    try:
        size = p.stat().st_size
    except OSError as exc:  # permissions, broken symlink
        raise InputError(f"{p}: cannot be read ({exc.strerror or exc}). Check its permissions.")
    if size == 0:
        raise InputError(
            f"{p}: the file is empty (0 bytes). It was probably not downloaded or written "
            "completely; fetch or regenerate it and try again."
        )
    return p


def is_fits(path: str | os.PathLike) -> bool:
    """True when the file starts with the FITS ``SIMPLE  =`` card (cheap: reads 9 bytes)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_FITS_MAGIC)) == _FITS_MAGIC
    except OSError:
        return False


def _check_structure(hdul: fits.HDUList, path: Path) -> None:
    """Detect truncation that astropy tolerates silently.

    astropy opens a file cut inside an HDU's data and only fails (or zero-fills) when the
    data are read, and it drops an HDU whose header was cut, with only a warning. Both are
    caught here from the header bookkeeping, before any data are read.
    """
    size = path.stat().st_size
    end = 0
    for i, hdu in enumerate(hdul):
        info = hdu.fileinfo()
        if info is None:  # pragma: no cover - only for HDUs not read from a file
            continue
        data_start = int(info["datLoc"])
        # A compressed image's ``size`` is its decompressed size; on disk it spans datSpan.
        stored = info["datSpan"] if isinstance(hdu, fits.CompImageHDU) else hdu.size
        need = data_start + int(stored)
        if need > size:
            raise InputError(
                f"{where(path, hdu_label(hdu, i))}: the file is truncated: this HDU needs "
                f"{need} bytes but the file has only {size}. Download or copy it again."
            )
        end = data_start + int(info["datSpan"])
    if size > end:
        with open(path, "rb") as fh:
            fh.seek(end)
            head = fh.read(8)
        if head.startswith(b"XTENSION"):
            raise InputError(
                f"{path}: the file is truncated or corrupt after HDU {len(hdul) - 1}: an "
                "extension header starts there but cannot be read. Download or copy it again."
            )


@contextlib.contextmanager
def open_fits(path: str | os.PathLike, memmap: bool = False) -> Iterator[fits.HDUList]:
    """Open a FITS file for reading, turning every way it can be broken into InputError.

    All headers are parsed up front and checked against the file length (see
    :func:`_check_structure`); data are read lazily through :func:`read_hdu_data`.
    ``memmap`` maps the file instead of reading it: a compressed image read a few row tiles
    at a time (``section``) then fetches each tile from the mapping rather than by a read
    call of its own. The structure check comes first, so a mapping never reaches past the
    end of a truncated file.
    """
    p = check_file(path)
    if not is_fits(p):
        raise InputError(
            f"{p}: not a FITS file (it does not start with the FITS 'SIMPLE  =' card). "
            "Check that you passed the right file."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(p, memmap=memmap, lazy_load_hdus=False)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{p}: cannot be read as FITS ({_short(exc)}). The file may be truncated or "
            "corrupt; download or copy it again."
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _check_structure(hdul, p)
        yield hdul
    finally:
        hdul.close()


def _short(exc: BaseException) -> str:
    """First line of an exception message, for embedding in a user-facing message."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def hdu_label(hdu: fits.hdu.base._BaseHDU, index: int) -> str | int:
    """The name users see for an HDU: its EXTNAME, else its 0-based index."""
    name = (hdu.name or "").strip()
    if name and not (index == 0 and name == "PRIMARY"):
        return name
    return index


def find_hdu(hdul: fits.HDUList, *names: str) -> tuple[int, fits.hdu.base._BaseHDU] | None:
    """First HDU whose EXTNAME equals one of ``names`` (case-insensitive), with its index."""
    wanted = [n.upper() for n in names]
    for want in wanted:
        for i, hdu in enumerate(hdul):
            if (hdu.name or "").strip().upper() == want:
                return i, hdu
    return None


def find_table_hdu(hdul: fits.HDUList,
                   require: Sequence[Sequence[str]] = ()) -> tuple[int, fits.BinTableHDU] | None:
    """First binary/ASCII table HDU having, for each group in ``require``, one of its names.

    E.g. ``require=[("RA", "TARGET_RA"), ("DEC", "TARGET_DEC")]``. Only headers are read.
    """
    for i, hdu in enumerate(hdul):
        if not isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
            continue
        names = {n.upper() for n in hdu.columns.names}
        if all(any(c.upper() in names for c in group) for group in require):
            return i, hdu
    return None


def read_hdu_data(hdu: fits.hdu.base._BaseHDU, path: str | os.PathLike, index: int):
    """``hdu.data`` with read failures (short reads, bad scaling) turned into InputError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return hdu.data
    except Exception as exc:
        raise InputError(
            f"{where(path, hdu_label(hdu, index))}: the data cannot be read ({_short(exc)}). "
            "The file may be truncated or corrupt; download or copy it again."
        ) from None


def native(arr: np.ndarray) -> np.ndarray:
    """``arr`` with native byte order (FITS is big-endian; Arrow wants native)."""
    if arr.dtype.kind in "biufc" and arr.dtype.byteorder not in ("=", "|"):
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def numpy_to_arrow(arr: np.ndarray) -> pa.Array:
    """Convert a column's NumPy values (1-D or N-D) to Arrow.

    Extra dimensions become nested fixed-size lists (row-major, like the FITS TDIM order
    astropy exposes); strings are stripped of trailing blanks; bytes are decoded as ASCII.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind == "O":  # variable-length array column (P/Q format)
        return pa.array([None if v is None else native(np.asarray(v)).tolist() for v in arr])
    n = arr.shape[0]
    inner = arr.shape[1:]
    flat = arr.reshape(-1) if inner else arr
    if flat.dtype.kind == "S":
        flat = np.char.decode(flat, "ascii", errors="replace")
    if flat.dtype.kind == "U":
        values = pa.array(np.char.rstrip(flat), type=pa.string())
    else:
        values = pa.array(native(np.ascontiguousarray(flat)))
    for size in reversed(inner):
        values = pa.FixedSizeListArray.from_arrays(values, int(size))
    assert len(values) == n
    return values


def table_to_arrow(hdu: fits.hdu.base._BaseHDU, path: str | os.PathLike, index: int,
                   columns: Iterable[str] | None = None) -> pa.Table:
    """Read a FITS table HDU into an Arrow table with native types.

    ``columns`` restricts (case-insensitively) which columns are converted, so readers that
    need a few columns of a wide sweep file do not convert all of them. Column names keep
    the file's spelling. Integer TNULL values are kept as plain numbers: DESI writes a
    TNULL on every integer column (TARGETID included) that is not meant as a null marker.
    """
    data = read_hdu_data(hdu, path, index)
    names = list(hdu.columns.names)
    if columns is not None:
        want = {c.upper() for c in columns}
        names = [n for n in names if n.upper() in want]
    arrays: list[pa.Array] = []
    label = hdu_label(hdu, index)
    nrows = 0 if data is None else len(data)
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if data is None:
                    values = np.zeros(0, dtype=hdu.columns[name].dtype)
                else:
                    values = data[name]
            arrays.append(numpy_to_arrow(values))
        except Exception as exc:
            raise InputError(
                f"{where(path, label, name)}: cannot be read ({_short(exc)}). The file may "
                "be corrupt; download or copy it again."
            ) from None
    if not names:  # keep the row count even with no columns
        return pa.table({"_": pa.nulls(nrows)}).drop_columns(["_"])
    return pa.table(arrays, names=names)


def find_column(names: Iterable[str], *candidates: str) -> str | None:
    """The actual spelling of the first of ``candidates`` present in ``names`` (any case)."""
    by_upper = {}
    for n in names:
        by_upper.setdefault(n.upper(), n)
    for c in candidates:
        if c.upper() in by_upper:
            return by_upper[c.upper()]
    return None


def canonical_column(table: pa.Table, name: str, type_: pa.DataType,
                     source: str | None = None) -> pa.Array:
    """Column ``source`` (default ``name``, found case-insensitively) cast to ``type_``.

    A missing column becomes all-null of ``type_`` so every reader returns the same schema
    whatever the file holds. Float narrowing (float64 -> float32) is allowed; anything else
    that does not fit is a user-facing error raised by the caller's context.
    """
    actual = find_column(table.column_names, source or name)
    if actual is None:
        return pa.nulls(table.num_rows, type_)
    col = table.column(actual).combine_chunks()
    if col.type == type_:
        return col
    safe = not (pa.types.is_floating(type_) and pa.types.is_floating(col.type))
    if pa.types.is_floating(type_) and pa.types.is_integer(col.type):
        safe = False
    return col.cast(type_, safe=safe)


def validate_radec(ra, dec, path: str | os.PathLike, hdu: object | None = None,
                   ra_name: str = "RA", dec_name: str = "DEC", row_offset: int = 0) -> None:
    """Check positions: RA finite in [0, 360], Dec finite in [-90, 90] (degrees).

    Arrow nulls count as bad. The message names the file, HDU, column and the first bad
    row (0-based), how many rows are bad, and asks the user to fix or drop them, because a
    silently dropped or wrapped position would corrupt the cross-match. ``row_offset`` is
    added to row numbers when the arrays are one chunk of a longer file.
    """
    checks = ((ra, ra_name, 0.0, 360.0, "RA"), (dec, dec_name, -90.0, 90.0, "Dec"))
    for values, column, lo, hi, what in checks:
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            try:
                arr = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise InputError(
                    f"{where(path, hdu, column)}: {what} must be numeric degrees, found "
                    f"type {values.type}. Convert the column to float degrees."
                ) from None
            arr = np.asarray(arr, dtype=np.float64)
        else:
            arr = np.asarray(values)
            if arr.dtype.kind not in "iuf":
                raise InputError(
                    f"{where(path, hdu, column)}: {what} must be numeric degrees, found "
                    f"dtype {arr.dtype}. Convert the column to float degrees."
                )
            arr = arr.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
        if bad.any():
            rows = np.flatnonzero(bad)
            first = int(rows[0])
            raise InputError(
                f"{where(path, hdu, column, first + row_offset)}: {what} = {float(arr[first])!r} is not "
                f"a finite number in [{lo:g}, {hi:g}] degrees ({rows.size} bad row(s) of "
                f"{arr.size}; rows count from 0). Fix or drop those rows and try again."
            )


def hdu_summary(path: str | os.PathLike) -> list[tuple[str, fits.hdu.base._BaseHDU]] | None:
    """(EXTNAME, HDU) pairs of a FITS file, reading headers only; None if not readable FITS.

    For the cheap ``is_*`` detection helpers, which must answer yes/no and never raise. The
    HDUs are returned from a closed file: use only their headers and ``columns``.
    """
    try:
        p = Path(path)
        if not p.is_file() or p.stat().st_size == 0 or not is_fits(p):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(p, memmap=False, lazy_load_hdus=False) as hdul:
                return [((h.name or "").strip().upper(), h) for h in hdul]
    except Exception:
        return None
