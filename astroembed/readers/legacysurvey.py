"""Readers for Legacy Survey catalogs (sweep, Tractor, targets) and g,r,z image cutouts.

Canonical schema of :func:`read_catalog` (one row per object, file order). These columns
come first and are always present (all-null when the file lacks them, e.g. targets files
have no BRICKID/OBJID/TYPE):

==========================  ==========  ==============================================
column                      Arrow type  meaning / unit
==========================  ==========  ==============================================
RA, DEC                     float64     deg (ICRS); required, validated
RELEASE                     int32       Legacy Survey data release code (e.g. 9010)
BRICKID                     int32       brick number
OBJID                       int32       object number within the brick
BRICKNAME                   string      e.g. '1054p567'
TYPE                        string      Tractor model: PSF, REX, EXP, DEV, SER, DUP, COMP
FLUX_G, FLUX_R, FLUX_Z      float32     nanomaggies (not extinction-corrected)
FLUX_IVAR_G/R/Z             float32     1/nanomaggies^2
MW_TRANSMISSION_G/R/Z       float32     Galactic transmission (0..1)
SHAPE_R                     float32     half-light radius, arcsec. DR8-style files have
                                        SHAPEDEV_R/SHAPEEXP_R instead: SHAPEDEV_R for
                                        TYPE 'DEV', else SHAPEEXP_R
==========================  ==========  ==============================================

All other columns of the file are **kept** after these, under their own names, with native
types (multi-dimensional ones such as ``DCHISQ`` (5) as fixed-size lists): the
quality columns (MASKBITS, FRACFLUX, NOBS, ...) are what users cut on later, and dropping
them would send users back to the FITS file. A file column whose name matches a canonical
one in another case is not repeated. Schema metadata: ``source``, ``kind``, ``hdu``.

Cutouts (``image`` is always ``fixed_shape_tensor(float32, (3, H, W))``, bands g, r, z in
that order, nanomaggies; Arrow stores it as a fixed-size list, so any Parquet reader can
read it):

* :func:`read_cutout_fits`, one row: ``image``, ``RA`` float64 and ``DEC`` float64 (deg,
  WCS position of the centre pixel ((W-1)/2, (H-1)/2), 0-based), ``pixscale`` float64
  (arcsec/pixel).
* :func:`read_cutout_stack` (HDF5 like the Legacy Survey SSL data sets), N rows: ``RA``,
  ``DEC`` float64, ``RELEASE``, ``BRICKID``, ``OBJID`` int32 (null when the file lacks the
  data set), ``image``.

:func:`attach_cutouts` adds the ``image`` column to catalog rows.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroembed.errors import InputError, where
from astroembed.readers.fitsutil import (
    canonical_column,
    check_file,
    find_column,
    find_table_hdu,
    hdu_label,
    hdu_summary,
    open_fits,
    read_hdu_data,
    table_to_arrow,
    validate_radec,
)
from astroembed.readers.tables import radec_columns

__all__ = [
    "BANDS",
    "CATALOG_COLUMNS",
    "catalog_schema",
    "image_type",
    "images_to_arrow",
    "read_catalog",
    "read_cutout_fits",
    "read_cutout_stack",
    "attach_cutouts",
    "is_ls_catalog",
    "is_ls_cutout_fits",
    "is_ls_cutout_stack",
]

BANDS = ("g", "r", "z")

CATALOG_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("RA", pa.float64()),
    ("DEC", pa.float64()),
    ("RELEASE", pa.int32()),
    ("BRICKID", pa.int32()),
    ("OBJID", pa.int32()),
    ("BRICKNAME", pa.string()),
    ("TYPE", pa.string()),
    ("FLUX_G", pa.float32()),
    ("FLUX_R", pa.float32()),
    ("FLUX_Z", pa.float32()),
    ("FLUX_IVAR_G", pa.float32()),
    ("FLUX_IVAR_R", pa.float32()),
    ("FLUX_IVAR_Z", pa.float32()),
    ("MW_TRANSMISSION_G", pa.float32()),
    ("MW_TRANSMISSION_R", pa.float32()),
    ("MW_TRANSMISSION_Z", pa.float32()),
    ("SHAPE_R", pa.float32()),
]
_UNITS = {"RA": "deg", "DEC": "deg", "SHAPE_R": "arcsec"} | {
    f"FLUX_{b}": "nanomaggy" for b in "GRZ"} | {f"FLUX_IVAR_{b}": "nanomaggy-2" for b in "GRZ"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Columns that mark a positional FITS table as a Legacy Survey catalog.
_LS_MARKERS = ("BRICKID", "OBJID", "BRICKNAME", "MW_TRANSMISSION_G", "TYPE")


def catalog_schema() -> pa.Schema:
    """The canonical leading columns of :func:`read_catalog` (units in field metadata)."""
    return pa.schema([
        pa.field(n, t, metadata={b"unit": _UNITS[n].encode()} if n in _UNITS else None)
        for n, t in CATALOG_COLUMNS
    ])


def image_type(height: int, width: int) -> pa.DataType:
    """``fixed_shape_tensor(float32, (3, H, W))``: the one image type used everywhere."""
    return pa.fixed_shape_tensor(pa.float32(), (3, int(height), int(width)))


def images_to_arrow(images: np.ndarray) -> pa.ExtensionArray:
    """(N, 3, H, W) array -> fixed-shape tensor array (float32, native, C order)."""
    arr = np.ascontiguousarray(images, dtype=np.float32)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    n, _, h, w = arr.shape
    storage = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), 3 * h * w)
    return pa.ExtensionArray.from_storage(image_type(h, w), storage)


# ----------------------------------------------------------------------------- detection

def is_ls_catalog(path: str | os.PathLike) -> bool:
    """True for a FITS table with RA, DEC, FLUX_G/R/Z and a Legacy Survey marker column."""
    hdus = hdu_summary(path)
    if not hdus:
        return False
    for _, hdu in hdus:
        if not hasattr(hdu, "columns"):
            continue
        names = {n.upper() for n in hdu.columns.names}
        if {"RA", "DEC", "FLUX_G", "FLUX_R", "FLUX_Z"} <= names and \
                any(m in names for m in _LS_MARKERS):
            return True
    return False


def is_ls_cutout_fits(path: str | os.PathLike) -> bool:
    """True for a FITS file whose first image HDU is a 3-D cube and that has no tables."""
    hdus = hdu_summary(path)
    if not hdus:
        return False
    if any(hasattr(h, "columns") for _, h in hdus):
        return False
    return any(h.header.get("NAXIS", 0) == 3 for _, h in hdus)


def is_ls_cutout_stack(path: str | os.PathLike) -> bool:
    """True for an HDF5 file with an ``images`` data set."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != _HDF5_MAGIC:
                return False
        import h5py

        with h5py.File(path, "r") as f:
            return _h5_find(f, "images") is not None
    except Exception:
        return False


# ----------------------------------------------------------------------------- catalogs

def _shape_r(table: pa.Table) -> pa.Array:
    """SHAPE_R, or for DR8-style files SHAPEDEV_R when TYPE is DEV else SHAPEEXP_R."""
    names = table.column_names
    if find_column(names, "SHAPE_R"):
        return canonical_column(table, "SHAPE_R", pa.float32())
    dev = find_column(names, "SHAPEDEV_R")
    exp = find_column(names, "SHAPEEXP_R")
    if dev is None and exp is None:
        return pa.nulls(table.num_rows, pa.float32())
    if dev is None:
        return canonical_column(table, exp, pa.float32())
    if exp is None:
        return canonical_column(table, dev, pa.float32())
    types = canonical_column(table, "TYPE", pa.string())
    is_dev = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(types), "DEV"), False)
    return pc.if_else(is_dev, canonical_column(table, dev, pa.float32()),
                      canonical_column(table, exp, pa.float32()))


def read_catalog(path: str | os.PathLike) -> pa.Table:
    """Read a sweep, Tractor or targets FITS catalog (first table HDU with RA and DEC)."""
    p = Path(path)
    with open_fits(p) as hdul:
        found = find_table_hdu(hdul, [("RA",), ("DEC",)])
        if found is None:
            tables = [i for i, h in enumerate(hdul) if hasattr(h, "columns")]
            if not tables:
                raise InputError(
                    f"{p}: has no table HDU. A Legacy Survey sweep/Tractor/targets catalog "
                    "is a FITS binary table in HDU 1."
                )
            first = hdul[tables[0]]
            names = [n.upper() for n in first.columns.names]
            missing = "RA" if "RA" not in names else "DEC"
            raise InputError(
                f"{where(p, hdu_label(first, tables[0]), missing)}: required column is "
                "missing. A Legacy Survey catalog needs RA and DEC (degrees)."
            )
        index, hdu = found
        label = hdu_label(hdu, index)
        raw = table_to_arrow(hdu, p, index)

    columns, fields = [], []
    for field in catalog_schema():
        try:
            col = (_shape_r(raw) if field.name == "SHAPE_R"
                   else canonical_column(raw, field.name, field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(
                f"{where(p, label, field.name)}: cannot be read as {field.type} ({exc}). "
                "Fix the column type."
            ) from None
        columns.append(col)
        fields.append(field)
    canonical = {f.name for f in fields}
    for name in raw.column_names:
        if name.upper() in canonical:
            continue
        columns.append(raw.column(name))
        fields.append(pa.field(name, raw.schema.field(name).type))
    meta = {b"source": p.name.encode(), b"kind": b"ls_catalog", b"hdu": str(label).encode()}
    table = pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=meta))
    validate_radec(table.column("RA"), table.column("DEC"), p, label,
                   find_column(raw.column_names, "RA"), find_column(raw.column_names, "DEC"))
    return table


# ----------------------------------------------------------------------------- cutouts

def _declared_bands(header, nplanes: int, path: Path, label) -> list[str] | None:
    """Bands from BANDS ('grz' or 'g,r,z') and/or BAND0..BANDn; None if neither is there."""
    from_bands = None
    value = header.get("BANDS")
    if value is not None and str(value).strip():
        text = str(value).strip()
        parts = [b.strip() for b in text.split(",")] if "," in text else list(text)
        from_bands = [b.lower() for b in parts if b]
    from_keys = []
    i = 0
    while f"BAND{i}" in header:
        from_keys.append(str(header[f"BAND{i}"]).strip().lower())
        i += 1
    from_keys = from_keys or None
    if from_bands and from_keys and from_bands != from_keys:
        raise InputError(
            f"{where(path, label)}: BANDS = {value!r} disagrees with BAND0..BAND{i - 1} = "
            f"{', '.join(from_keys)}. Fix the header so both list the planes in order."
        )
    return from_bands or from_keys


def _band_order(bands: list[str] | None, nplanes: int, path: Path, label,
                warn_undeclared: bool = True) -> list[int]:
    """Plane indices that give g, r, z; InputError for any other set of bands.

    Undeclared bands are taken as g, r, z when there are 3 planes (with a warning for FITS,
    whose cutout service always declares them; HDF5 stacks by convention do not).
    """
    if bands is None:
        if nplanes != 3:
            raise InputError(
                f"{where(path, label)}: the image has {nplanes} planes; astroembed needs "
                "exactly 3 (g, r, z). Request a 'grz' cutout."
            )
        if warn_undeclared:
            warnings.warn(f"{path}: no BANDS/BAND0.. header keywords; assuming planes g, r, z",
                          stacklevel=3)
        return [0, 1, 2]
    if len(bands) != nplanes:
        raise InputError(
            f"{where(path, label)}: header lists {len(bands)} bands ({', '.join(bands)}) "
            f"but the image has {nplanes} planes. The file is inconsistent."
        )
    if sorted(bands) != sorted(BANDS) or len(set(bands)) != 3:
        raise InputError(
            f"{where(path, label)}: has bands {', '.join(bands)}; astroembed needs exactly "
            "g, r, z (any order). Request a 'grz' cutout (bands=grz) from the cutout service."
        )
    return [bands.index(b) for b in BANDS]


def read_cutout_fits(path: str | os.PathLike) -> pa.Table:
    """Read one cutout as the Legacy Survey cutout service returns it (one row)."""
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    p = Path(path)
    with open_fits(p) as hdul:
        chosen = None
        for i, hdu in enumerate(hdul):
            if hasattr(hdu, "columns"):
                continue
            if hdu.header.get("NAXIS", 0) > 0:
                chosen = (i, hdu)
                break
        if chosen is None:
            raise InputError(
                f"{p}: has no image data. A Legacy Survey cutout has a (3, H, W) g,r,z cube "
                "in its primary HDU."
            )
        index, hdu = chosen
        label = hdu_label(hdu, index)
        data = read_hdu_data(hdu, p, index)
        header = hdu.header.copy()
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(
            f"{where(p, label)}: image has shape {data.shape}; expected (3, H, W) with bands "
            "g, r, z. Request a 'grz' cutout."
        )
    order = _band_order(_declared_bands(header, data.shape[0], p, label), data.shape[0], p,
                        label)
    cube = np.ascontiguousarray(data[order], dtype=np.float32)
    _, h, w = cube.shape
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=2)
            if not wcs.has_celestial:
                raise ValueError("no celestial axes (CTYPE1/CTYPE2)")
            ra, dec = wcs.celestial.all_pix2world([(w - 1) / 2.0], [(h - 1) / 2.0], 0)
            scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial))) * 3600.0
    except Exception as exc:
        raise InputError(
            f"{where(p, label)}: no usable sky WCS ({str(exc).splitlines()[0]}). A cutout "
            "needs a TAN WCS (CTYPE1/2, CRVAL1/2, CRPIX1/2, CD matrix) to be placed on the sky."
        ) from None
    ra = float(np.mod(ra[0], 360.0))
    dec = float(dec[0])
    validate_radec(np.array([ra]), np.array([dec]), p, label, "WCS centre RA", "WCS centre Dec")
    meta = {b"source": p.name.encode(), b"kind": b"ls_cutout_fits",
            b"bands": b"grz", b"image_unit": b"nanomaggy"}
    schema = pa.schema([
        pa.field("image", image_type(h, w)),
        pa.field("RA", pa.float64(), metadata={b"unit": b"deg"}),
        pa.field("DEC", pa.float64(), metadata={b"unit": b"deg"}),
        pa.field("pixscale", pa.float64(), metadata={b"unit": b"arcsec"}),
    ], metadata=meta)
    return pa.Table.from_arrays(
        [images_to_arrow(cube[None]), pa.array([ra]), pa.array([dec]), pa.array([scale])],
        schema=schema)


def _h5_find(group, name: str):
    """Data set ``name`` in ``group`` (exact name first, then case-insensitive)."""
    if name in group:
        return group[name]
    for key in group.keys():
        if key.lower() == name.lower():
            return group[key]
    return None


def read_cutout_stack(path: str | os.PathLike) -> pa.Table:
    """Read an HDF5 stack of cutouts: ``images`` (N, 3, H, W) plus per-object ``ra``, ``dec``
    and, optionally, ``release``, ``brickid``, ``objid`` (needed for ID joins).

    An ``images`` attribute ``bands`` (e.g. 'grz'), when present, is checked like a FITS
    BANDS keyword. The whole stack is read into memory.
    """
    import h5py

    p = check_file(path)
    with open(p, "rb") as fh:
        magic = fh.read(8)
    if magic != _HDF5_MAGIC:
        raise InputError(
            f"{p}: not an HDF5 file. A cutout stack is HDF5 with data sets images "
            "(N, 3, H, W), ra, dec, release, brickid, objid."
        )
    try:
        f = h5py.File(p, "r")
    except Exception as exc:
        raise InputError(
            f"{p}: cannot be opened as HDF5 ({str(exc).splitlines()[0]}). The file may be "
            "truncated or corrupt; download or copy it again."
        ) from None
    try:
        with f:
            images = _h5_find(f, "images")
            if images is None or not isinstance(images, h5py.Dataset):
                raise InputError(
                    f"{p}: no 'images' data set (found: {', '.join(sorted(f.keys())) or 'none'}). "
                    "A cutout stack needs images (N, 3, H, W) float32 in nanomaggies."
                )
            if images.ndim != 4:
                raise InputError(
                    f"{p}[images]: shape {images.shape}; expected (N, 3, H, W) with bands g, "
                    "r, z on axis 1."
                )
            n = images.shape[0]
            raw_bands = images.attrs.get("bands")
            if isinstance(raw_bands, bytes):
                raw_bands = raw_bands.decode()
            bands = None
            if raw_bands is not None:
                text = str(raw_bands)
                bands = [b.strip().lower() for b in (text.split(",") if "," in text else text)
                         if b.strip()]
            order = _band_order(bands, images.shape[1], p, "images", warn_undeclared=False)
            arrays = {}
            for name, required in (("ra", True), ("dec", True), ("release", False),
                                   ("brickid", False), ("objid", False)):
                ds = _h5_find(f, name)
                if ds is None:
                    if required:
                        raise InputError(
                            f"{p}: no '{name}' data set. A cutout stack needs ra and dec "
                            "(degrees) for every image."
                        )
                    continue
                if ds.shape != (n,):
                    raise InputError(
                        f"{p}[{name}]: shape {ds.shape} does not match the {n} images; "
                        f"expected ({n},)."
                    )
                arrays[name] = np.asarray(ds[()])
            cube = np.asarray(images[()], dtype=np.float32)[:, order]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{p}: cannot be read as HDF5 ({str(exc).splitlines()[0]}). The file may be "
            "truncated or corrupt; download or copy it again."
        ) from None

    def ids(name: str) -> pa.Array:
        if name not in arrays:
            return pa.nulls(n, pa.int32())
        values = arrays[name]
        if values.dtype.kind not in "iu":
            raise InputError(f"{p}[{name}]: must be integers, found {values.dtype}.")
        return pa.array(values.astype(np.int32))

    ra = arrays["ra"].astype(np.float64)
    dec = arrays["dec"].astype(np.float64)
    validate_radec(ra, dec, p, None, "ra", "dec")
    _, _, h, w = cube.shape
    meta = {b"source": p.name.encode(), b"kind": b"ls_cutout_stack", b"bands": b"grz",
            b"image_unit": b"nanomaggy"}
    schema = pa.schema([
        pa.field("RA", pa.float64(), metadata={b"unit": b"deg"}),
        pa.field("DEC", pa.float64(), metadata={b"unit": b"deg"}),
        pa.field("RELEASE", pa.int32()),
        pa.field("BRICKID", pa.int32()),
        pa.field("OBJID", pa.int32()),
        pa.field("image", image_type(h, w)),
    ], metadata=meta)
    return pa.Table.from_arrays(
        [pa.array(ra), pa.array(dec), ids("release"), ids("brickid"), ids("objid"),
         images_to_arrow(cube)], schema=schema)


# ----------------------------------------------------------------------------- joining

# A Legacy Survey object is (RELEASE, BRICKID, OBJID); DESI spells OBJID as BRICK_OBJID.
ID_COLUMNS = (("RELEASE",), ("BRICKID",), ("OBJID", "BRICK_OBJID"))
# Packed into one int64 (RELEASE < 2^21, BRICKID < 2^20 (662,174 bricks), OBJID < 2^22) so a
# join is one sort and one searchsorted, not a row-wise np.unique over (n, 3) keys.
_BRICKID_SHIFT, _RELEASE_SHIFT = 22, 42


def id_keys(table: pa.Table, columns=ID_COLUMNS) -> tuple[np.ndarray, np.ndarray] | None:
    """One packed int64 key per row and a mask of rows whose three IDs are all present.

    ``columns``: candidate names for RELEASE, BRICKID and OBJID, the first present wins.
    None when a column is missing or entirely null: the IDs cannot be used to join.
    """
    names = []
    for candidates in columns:
        name = find_column(table.column_names, *candidates)
        if name is None:
            return None
        names.append(name)
    cols = [table.column(n) for n in names]
    if table.num_rows == 0 or any(c.null_count == len(c) for c in cols):
        return None
    valid = np.ones(table.num_rows, dtype=bool)
    parts = []
    for c in cols:
        valid &= ~np.asarray(c.is_null().to_numpy(zero_copy_only=False))
        parts.append(pc.fill_null(c.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
    release, brickid, objid = (np.asarray(a, dtype=np.int64) for a in parts)
    valid &= ((release >= 0) & (release < 1 << 21) & (brickid >= 0) & (brickid < 1 << 20)
              & (objid >= 0) & (objid < 1 << _BRICKID_SHIFT))
    return (release << _RELEASE_SHIFT) | (brickid << _BRICKID_SHIFT) | objid, valid


def first_match(keys: np.ndarray, valid: np.ndarray, ref_keys: np.ndarray,
                ref_valid: np.ndarray) -> np.ndarray:
    """For each row, the first row of the reference with the same key, or -1.

    Rows and reference rows outside their ``valid`` masks never match.
    """
    rows = np.flatnonzero(ref_valid)
    out = np.full(keys.shape[0], -1, dtype=np.int64)
    if rows.size == 0 or keys.size == 0:
        return out
    order = rows[np.argsort(ref_keys[rows], kind="stable")]  # equal keys keep file order
    sorted_keys = ref_keys[order]
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    hit = valid & (sorted_keys[pos] == keys)
    out[hit] = order[pos[hit]]
    return out


def _positions(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    source = (table.schema.metadata or {}).get(b"source", b"table").decode()
    ra_name, dec_name = radec_columns(table, source)
    ra = table.column(ra_name).cast(pa.float64()).to_numpy(zero_copy_only=False)
    dec = table.column(dec_name).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)


def _combine_cutouts(cutouts: pa.Table | Sequence[pa.Table]) -> pa.Table:
    """One table from one or several cutout tables; InputError if image shapes differ."""
    tables = [cutouts] if isinstance(cutouts, pa.Table) else list(cutouts)
    if not tables:
        raise InputError("no cutouts given: pass at least one cutout table.")
    first_type = None
    for t in tables:
        if "image" not in t.column_names:
            src = (t.schema.metadata or {}).get(b"source", b"cutouts").decode()
            raise InputError(f"{src}: has no 'image' column; it is not a cutout table.")
        image_t = t.schema.field("image").type
        if first_type is None:
            first_type, first_src = image_t, (t.schema.metadata or {}).get(b"source", b"?")
        elif image_t != first_type:
            src = (t.schema.metadata or {}).get(b"source", b"?").decode()
            raise InputError(
                f"cutouts have different shapes: {_shape_of(first_type)} in "
                f"{first_src.decode()} but {_shape_of(image_t)} in {src}. Use cutouts of one "
                "size (same width, height and bands)."
            )
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="default")


def _shape_of(type_: pa.DataType) -> str:
    shape = getattr(type_, "shape", None)
    return str(tuple(shape)) if shape is not None else str(type_)


def attach_cutouts(catalog: pa.Table, cutouts: pa.Table | Sequence[pa.Table],
                   max_sep_arcsec: float = 0.5) -> pa.Table:
    """Add an ``image`` column (null where no cutout) to ``catalog``.

    Cutouts that carry Legacy Survey IDs (a stack with release/brickid/objid) are joined
    exactly on (RELEASE, BRICKID, OBJID) when the catalog has them too (it may spell OBJID
    as BRICK_OBJID); for duplicate IDs the first cutout wins. The other cutouts (single FITS
    cutouts, or any cutout when the catalog lacks IDs) go to their nearest catalog row not
    already matched by ID, within ``max_sep_arcsec`` of their centre; if two claim one row
    the closer wins and the other stays unattached. Several cutout tables may be passed;
    their images must have one shape. An existing ``image`` column is replaced.
    """
    cut = _combine_cutouts(cutouts)
    n, m = catalog.num_rows, cut.num_rows
    index = np.full(n, -1, dtype=np.int64)
    positional = np.ones(m, dtype=bool)  # cutouts still to place by position
    cat_keys, cut_keys = id_keys(catalog), id_keys(cut)
    if cat_keys is not None and cut_keys is not None:
        index = first_match(*cat_keys, *cut_keys)
        positional = ~cut_keys[1]
    if positional.any() and n:
        _match_positions(catalog, cut, index, np.flatnonzero(positional), max_sep_arcsec)

    image_t = cut.schema.field("image").type
    mask = index < 0
    if m:
        take = pa.array(np.where(mask, 0, index), mask=mask, type=pa.int64())
        column = cut.column("image").combine_chunks().take(take)
    else:
        column = pa.ExtensionArray.from_storage(image_t, pa.nulls(n, image_t.storage_type))
    out = catalog.drop_columns(["image"]) if "image" in catalog.column_names else catalog
    return out.append_column(pa.field("image", image_t), column)


def _match_positions(catalog: pa.Table, cut: pa.Table, index: np.ndarray,
                     cut_rows: np.ndarray, max_sep_arcsec: float) -> None:
    """Fill ``index`` (catalog row -> cutout row) for ``cut_rows`` by nearest position.

    KD-tree on unit vectors of the catalog rows not matched yet; chord radius
    2 sin(r/2), so there is no special case at RA = 0/360 or at the poles.
    """
    from scipy.spatial import cKDTree

    from astroembed.matching.sky import radec_to_xyz

    cra, cdec = _positions(catalog)
    ura, udec = _positions(cut)
    free = np.flatnonzero((index < 0) & np.isfinite(cra) & np.isfinite(cdec))
    if free.size == 0 or cut_rows.size == 0:
        return
    tree = cKDTree(radec_to_xyz(cra[free], cdec[free]))
    chord = 2.0 * np.sin(np.radians(max_sep_arcsec / 3600.0) / 2.0)
    dist, nearest = tree.query(radec_to_xyz(ura[cut_rows], udec[cut_rows]), k=1,
                               distance_upper_bound=chord)
    hit = np.flatnonzero(np.isfinite(dist) & (dist <= chord))
    rows, js, d = free[nearest[hit]], cut_rows[hit], dist[hit]
    order = np.lexsort((js, d, rows))  # per catalog row: closest, then first cutout
    rows, js = rows[order], js[order]
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    index[rows[first]] = js[first]
