"""Readers for DESI spectra (``coadd-*.fits``, ``spectra-*.fits``) and redshifts.

DESI stores each spectrum per spectrograph arm (B, R, Z) on its own wavelength grid; the
arms overlap by a few hundred Angstrom. The models want one vector per object, so
:func:`read_spectra` puts the arms on one common grid, combining overlaps with inverse-
variance weights. Readers return *every* fibre (sky fibres, negative TARGETIDs, bad fibre
status): quality cuts live in one place, the cross-match (docs/architecture.md).

Common wavelength grid
    ``WAVE_START + WAVE_STEP * i`` for ``i`` in ``0 .. N_WAVE-1``: 3600.0 .. 9824.0 A in
    0.8 A steps, 7781 pixels (vacuum wavelengths, as DESI writes them).

Canonical schema of :func:`read_spectra` (one row per fibre, in file order; every column
is always present, all-null when the file lacks it, so tables from different files
concatenate without schema promotion):

====================  =================================  ================================
column                Arrow type                         meaning / unit
====================  =================================  ================================
TARGETID              int64                              DESI target ID (negative: unassigned fibre)
TARGET_RA             float64                            deg (ICRS)
TARGET_DEC            float64                            deg
OBJTYPE               string                             'TGT', 'SKY', '' ...
COADD_FIBERSTATUS     int32                              0 = good. Per-exposure ``spectra-*``
  or FIBERSTATUS                                         files carry FIBERSTATUS instead, and
                                                         the column keeps that name
RELEASE               int32                              Legacy Survey release of the target
BRICKID               int32                              Legacy Survey brick
BRICK_OBJID           int32                              Legacy Survey OBJID within the brick
FLUX_G/R/Z            float32                            nanomaggies (targeting photometry)
FLUX_IVAR_G/R/Z       float32                            1/nanomaggies^2
EBV                   float32                            mag (SFD E(B-V))
MORPHTYPE             string                             Tractor type ('REX', 'DEV', ...)
SURVEY, PROGRAM       string                             primary-header keywords (null if absent)
flux                  fixed_size_list<float32>[7781]     1e-17 erg/s/cm2/A on the common grid
ivar                  fixed_size_list<float32>[7781]     1/flux^2; 0 = no information
====================  =================================  ================================

Schema metadata (bytes): ``wave_start``, ``wave_step``, ``n_wave``, ``wave_unit``,
``flux_unit``, ``ivar_unit``, ``source`` (file name), ``kind`` = ``desi_spectra``. The
``flux`` and ``ivar`` fields carry the same grid keys and their unit in field metadata, so a
tile written to Parquet stays self-describing.

Canonical schema of :func:`read_redshifts` (again every column always present):

TARGETID int64, Z float64, ZERR float64, ZWARN int64, SPECTYPE string, TARGET_RA float64
(deg), TARGET_DEC float64 (deg), HEALPIX int32, SURVEY string, PROGRAM string, RELEASE
int32, BRICKID int32, BRICK_OBJID int32, OBJTYPE string, COADD_FIBERSTATUS int32,
ZCAT_PRIMARY bool, DELTACHI2 float64. Schema metadata: ``source``, ``kind`` =
``desi_redshifts``, ``hdu``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy import units as u

from astroembed.errors import InputError, where
from astroembed.readers.fitsutil import (
    canonical_column,
    find_column,
    find_hdu,
    hdu_label,
    hdu_summary,
    native,
    open_fits,
    read_hdu_data,
    table_to_arrow,
    validate_radec,
)

__all__ = [
    "WAVE_START",
    "WAVE_STEP",
    "N_WAVE",
    "FLUX_UNIT",
    "IVAR_UNIT",
    "wavelength_grid",
    "spectra_schema",
    "redshift_schema",
    "read_spectra",
    "read_redshifts",
    "is_desi_spectra",
    "is_desi_redshifts",
]

WAVE_START = 3600.0
WAVE_STEP = 0.8
N_WAVE = 7781
FLUX_UNIT = "1e-17 erg / (s cm2 Angstrom)"
IVAR_UNIT = "1e+34 (s2 cm4 Angstrom2) / erg2"
_WAVE_TOL = 1e-3  # Angstrom: an arm pixel must sit this close to a grid pixel
_CHUNK = 1024  # fibres combined at a time: bounds the float64 accumulators to ~130 MB

_FIBERMAP_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("TARGETID", pa.int64()),
    ("TARGET_RA", pa.float64()),
    ("TARGET_DEC", pa.float64()),
    ("OBJTYPE", pa.string()),
    ("COADD_FIBERSTATUS", pa.int32()),  # or FIBERSTATUS, see _status_name
    ("RELEASE", pa.int32()),
    ("BRICKID", pa.int32()),
    ("BRICK_OBJID", pa.int32()),
    ("FLUX_G", pa.float32()),
    ("FLUX_R", pa.float32()),
    ("FLUX_Z", pa.float32()),
    ("FLUX_IVAR_G", pa.float32()),
    ("FLUX_IVAR_R", pa.float32()),
    ("FLUX_IVAR_Z", pa.float32()),
    ("EBV", pa.float32()),
    ("MORPHTYPE", pa.string()),
    ("SURVEY", pa.string()),
    ("PROGRAM", pa.string()),
]

_REDSHIFT_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("TARGETID", pa.int64()),
    ("Z", pa.float64()),
    ("ZERR", pa.float64()),
    ("ZWARN", pa.int64()),
    ("SPECTYPE", pa.string()),
    ("TARGET_RA", pa.float64()),
    ("TARGET_DEC", pa.float64()),
    ("HEALPIX", pa.int32()),
    ("SURVEY", pa.string()),
    ("PROGRAM", pa.string()),
    ("RELEASE", pa.int32()),
    ("BRICKID", pa.int32()),
    ("BRICK_OBJID", pa.int32()),
    ("OBJTYPE", pa.string()),
    ("COADD_FIBERSTATUS", pa.int32()),
    ("ZCAT_PRIMARY", pa.bool_()),
    ("DELTACHI2", pa.float64()),
]

_ARM_HDU = re.compile(r"^([A-Z]+)_(WAVELENGTH|FLUX|IVAR|MASK)$")


def wavelength_grid() -> np.ndarray:
    """The common grid (Angstrom, float64), computed from integers so it is exact to 1 ulp."""
    return WAVE_START + WAVE_STEP * np.arange(N_WAVE, dtype=np.float64)


def _grid_metadata() -> dict[bytes, bytes]:
    return {
        b"wave_start": repr(WAVE_START).encode(),
        b"wave_step": repr(WAVE_STEP).encode(),
        b"n_wave": str(N_WAVE).encode(),
        b"wave_unit": b"Angstrom",
    }


def spectra_schema(status_column: str = "COADD_FIBERSTATUS", source: str = "") -> pa.Schema:
    """The canonical schema of :func:`read_spectra` (see the module docstring)."""
    fields = []
    for name, type_ in _FIBERMAP_COLUMNS:
        if name == "COADD_FIBERSTATUS":
            name = status_column
        fields.append(pa.field(name, type_))
    grid = _grid_metadata()
    fields.append(pa.field("flux", pa.list_(pa.float32(), N_WAVE),
                           metadata={**grid, b"unit": FLUX_UNIT.encode()}))
    fields.append(pa.field("ivar", pa.list_(pa.float32(), N_WAVE),
                           metadata={**grid, b"unit": IVAR_UNIT.encode()}))
    meta = {**_grid_metadata(), b"flux_unit": FLUX_UNIT.encode(),
            b"ivar_unit": IVAR_UNIT.encode(), b"source": source.encode(),
            b"kind": b"desi_spectra"}
    return pa.schema(fields, metadata=meta)


def redshift_schema(source: str = "", hdu: str = "") -> pa.Schema:
    """The canonical schema of :func:`read_redshifts` (see the module docstring)."""
    return pa.schema([pa.field(n, t) for n, t in _REDSHIFT_COLUMNS],
                     metadata={b"source": source.encode(), b"kind": b"desi_redshifts",
                               b"hdu": hdu.encode()})


# ----------------------------------------------------------------------------- detection

def is_desi_spectra(path: str | os.PathLike) -> bool:
    """True for a FITS file with a FIBERMAP HDU and at least one ``<arm>_FLUX`` HDU."""
    hdus = hdu_summary(path)
    if not hdus:
        return False
    names = {n for n, _ in hdus}
    return "FIBERMAP" in names and any(n.endswith("_FLUX") for n in names)


def is_desi_redshifts(path: str | os.PathLike) -> bool:
    """True for a FITS file with a REDSHIFTS (redrock) or ZCATALOG (zcatalog) HDU."""
    hdus = hdu_summary(path)
    if not hdus:
        return False
    names = {n for n, _ in hdus}
    return bool(names & {"REDSHIFTS", "ZCATALOG"})


# ----------------------------------------------------------------------------- spectra

def _unit_scale(header, path: Path, label: str, target: u.UnitBase, what: str) -> float:
    """Factor converting the HDU's BUNIT to ``target``; 1 when BUNIT is absent.

    DESI writes ``10**-17 erg/(s cm2 Angstrom)``; a file in other (convertible) units is
    rescaled rather than silently mixed with DESI-unit spectra.
    """
    bunit = header.get("BUNIT")
    if bunit is None or not str(bunit).strip():
        return 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            unit = u.Unit(str(bunit).strip(), format="fits")
            return float(unit.to(target))
    except Exception:
        raise InputError(
            f"{where(path, label)}: BUNIT = {bunit!r} cannot be converted to {what} "
            f"({target}). Fix the BUNIT keyword or convert the data."
        ) from None


def _grid_index(wave: np.ndarray, path: Path, label: str) -> np.ndarray:
    """Grid pixel index of each arm pixel; InputError if any is off the common grid."""
    if wave.ndim != 1 or wave.size == 0:
        raise InputError(
            f"{where(path, label)}: expected a 1-D wavelength array, found shape "
            f"{wave.shape}. The file is not a valid DESI spectra file."
        )
    if not np.all(np.isfinite(wave)):
        raise InputError(f"{where(path, label)}: wavelengths contain NaN or infinity.")
    pos = (wave - WAVE_START) / WAVE_STEP
    idx = np.rint(pos).astype(np.int64)
    off = np.abs(wave - (WAVE_START + WAVE_STEP * idx))
    bad = (off >= _WAVE_TOL) | (idx < 0) | (idx >= N_WAVE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{where(path, label)}: wavelength {wave[i]:.4f} A (pixel {i}) is not on the "
            f"common grid {WAVE_START:g}..{WAVE_START + WAVE_STEP * (N_WAVE - 1):g} A in "
            f"{WAVE_STEP:g} A steps (tolerance {_WAVE_TOL:g} A). astroembed reads DESI "
            "spectra on their native linear grid; resample the file onto it first."
        )
    if np.unique(idx).size != idx.size:
        raise InputError(
            f"{where(path, label)}: two pixels fall on the same grid wavelength; the "
            "wavelength array must be strictly increasing in 0.8 A steps."
        )
    return idx


def _image(hdul, name: str, path: Path):
    """(label, header, native ndarray) of image HDU ``name``; None if absent."""
    found = find_hdu(hdul, name)
    if found is None:
        return None
    i, hdu = found
    data = read_hdu_data(hdu, path, i)
    if data is None:
        data = np.zeros((0,), dtype=np.float32)
    return hdu_label(hdu, i), hdu.header, native(np.asarray(data))


def _arms(hdul, path: Path) -> list[str]:
    """Arm prefixes (B, R, Z, or BRZ for camera-combined files) found among the HDUs."""
    arms: list[str] = []
    for hdu in hdul:
        m = _ARM_HDU.match((hdu.name or "").strip().upper())
        if m and m.group(1) not in arms:
            arms.append(m.group(1))
    if not arms:
        raise InputError(
            f"{path}: has a FIBERMAP but no spectrograph arm HDUs (B_WAVELENGTH, B_FLUX, "
            "B_IVAR, ... R_*, Z_*). It is not a DESI coadd/spectra file."
        )
    return arms


def _status_name(fibermap: pa.Table) -> str:
    """COADD_FIBERSTATUS for coadds, FIBERSTATUS for per-exposure spectra files."""
    if find_column(fibermap.column_names, "COADD_FIBERSTATUS"):
        return "COADD_FIBERSTATUS"
    if find_column(fibermap.column_names, "FIBERSTATUS"):
        return "FIBERSTATUS"
    return "COADD_FIBERSTATUS"


def _header_string(header, key: str) -> str | None:
    value = header.get(key)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def read_spectra(path: str | os.PathLike) -> pa.Table:
    """Read a DESI coadd or spectra FITS file: one row per fibre, arms on the common grid.

    Where arms overlap, flux is the ivar-weighted mean and ivar the sum. Pixels with
    MASK != 0, non-finite flux or ivar, or ivar < 0 count as ivar 0 and flux 0; grid pixels
    with no information (total ivar 0, or no arm covers them) get flux 0 and ivar 0. The
    per-arm RESOLUTION matrices are not read. ``<arm>_MASK`` is optional.
    """
    p = Path(path)
    with open_fits(p) as hdul:
        found = find_hdu(hdul, "FIBERMAP")
        if found is None:
            raise InputError(
                f"{p}: no FIBERMAP HDU. A DESI coadd-*.fits / spectra-*.fits file has one; "
                "check that this is such a file."
            )
        fm_index, fm_hdu = found
        fm_label = hdu_label(fm_hdu, fm_index)
        wanted = [n for n, _ in _FIBERMAP_COLUMNS] + ["FIBERSTATUS"]
        fibermap = table_to_arrow(fm_hdu, p, fm_index, columns=wanted)
        for col in ("TARGETID", "TARGET_RA", "TARGET_DEC"):
            if find_column(fibermap.column_names, col) is None:
                raise InputError(
                    f"{where(p, fm_label, col)}: required FIBERMAP column is missing. DESI "
                    "spectra need TARGETID, TARGET_RA and TARGET_DEC."
                )
        nspec = fibermap.num_rows
        primary = hdul[0].header

        arms = _arms(hdul, p)
        arm_data = []
        for arm in arms:
            parts = {}
            for kind in ("WAVELENGTH", "FLUX", "IVAR", "MASK"):
                name = f"{arm}_{kind}"
                item = _image(hdul, name, p)
                if item is None and kind != "MASK":
                    raise InputError(
                        f"{p}: HDU {name} is missing (the file has other {arm}_* HDUs). "
                        f"A DESI spectra file needs {arm}_WAVELENGTH, {arm}_FLUX and "
                        f"{arm}_IVAR for each arm; the file is incomplete."
                    )
                parts[kind] = item
            wl_label, wl_header, wave = parts["WAVELENGTH"]
            wave_scale = _unit_scale(wl_header, p, wl_label, u.AA, "a wavelength")
            idx = _grid_index(wave.astype(np.float64) * wave_scale, p, wl_label)
            for kind in ("FLUX", "IVAR", "MASK"):
                if parts[kind] is None:
                    continue
                label, _, arr = parts[kind]
                if nspec == 0 and arr.size == 0:
                    parts[kind] = (label, parts[kind][1], arr.reshape(0, wave.size))
                    continue
                if arr.ndim != 2 or arr.shape[1] != wave.size:
                    raise InputError(
                        f"{where(p, label)}: shape {arr.shape} does not match "
                        f"(n_fibres, {wave.size}) given by {wl_label}; the file is "
                        "inconsistent."
                    )
                if arr.shape[0] != nspec:
                    raise InputError(
                        f"{where(p, label)}: has {arr.shape[0]} spectra but "
                        f"{where(p, fm_label)} has {nspec} rows; they must match one to one."
                    )
            fl_label, fl_header, flux = parts["FLUX"]
            scale = _unit_scale(fl_header, p, fl_label, u.Unit(FLUX_UNIT), "a flux density")
            mask = None if parts["MASK"] is None else parts["MASK"][2]
            arm_data.append((idx, flux, parts["IVAR"][2], mask, scale))

    flux_out = np.zeros((nspec, N_WAVE), dtype=np.float32)
    ivar_out = np.zeros((nspec, N_WAVE), dtype=np.float32)
    for start in range(0, nspec, _CHUNK):
        stop = min(start + _CHUNK, nspec)
        wsum = np.zeros((stop - start, N_WAVE), dtype=np.float64)
        fwsum = np.zeros_like(wsum)
        for idx, flux, ivar, mask, scale in arm_data:
            f = flux[start:stop].astype(np.float64)
            iv = ivar[start:stop].astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                good = np.isfinite(f) & np.isfinite(iv) & (iv >= 0)
                if mask is not None:
                    good &= mask[start:stop] == 0
                if scale != 1.0:
                    f = f * scale
                    iv = iv / (scale * scale)
            iv = np.where(good, iv, 0.0)
            f = np.where(good, f, 0.0)
            # idx is unique within an arm (checked), so fancy-index += is exact
            wsum[:, idx] += iv
            fwsum[:, idx] += iv * f
        has = wsum > 0
        out = np.zeros_like(wsum)
        np.divide(fwsum, wsum, out=out, where=has)
        flux_out[start:stop] = out
        ivar_out[start:stop] = wsum

    status = _status_name(fibermap)
    schema = spectra_schema(status, source=p.name)
    columns: list[pa.Array] = []
    for field in schema:
        name = field.name
        if name in ("flux", "ivar"):
            values = flux_out if name == "flux" else ivar_out
            columns.append(pa.FixedSizeListArray.from_arrays(
                pa.array(values.reshape(-1)), N_WAVE))
        elif name in ("SURVEY", "PROGRAM"):
            value = _header_string(primary, name)
            if value is None and find_column(fibermap.column_names, name):
                columns.append(canonical_column(fibermap, name, pa.string()))
            else:
                columns.append(pa.array([value] * nspec, pa.string()))
        else:
            try:
                columns.append(canonical_column(fibermap, name, field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(
                    f"{where(p, fm_label, name)}: cannot be read as {field.type} ({exc}). "
                    "Fix the column type."
                ) from None
    table = pa.Table.from_arrays(columns, schema=schema)
    validate_radec(table.column("TARGET_RA"), table.column("TARGET_DEC"), p, fm_label,
                   "TARGET_RA", "TARGET_DEC")
    return table


# ----------------------------------------------------------------------------- redshifts

def read_redshifts(path: str | os.PathLike) -> pa.Table:
    """Read a redrock ``REDSHIFTS`` HDU or a zcatalog ``ZCATALOG`` HDU.

    If the table has ZCAT_PRIMARY, only its primary rows are kept (one per TARGETID). A
    redrock file's REDSHIFTS HDU has no positions; when its FIBERMAP lists the same
    TARGETIDs in the same order, TARGET_RA/DEC and the target columns are taken from it.
    SURVEY/PROGRAM come from the table, else from the primary header.
    """
    p = Path(path)
    with open_fits(p) as hdul:
        found = find_hdu(hdul, "REDSHIFTS", "ZCATALOG")
        if found is None:
            raise InputError(
                f"{p}: no REDSHIFTS or ZCATALOG HDU. Pass a redrock-*.fits or a "
                "zall-pix-*/zpix-* redshift catalogue."
            )
        index, hdu = found
        label = hdu_label(hdu, index)
        wanted = [n for n, _ in _REDSHIFT_COLUMNS]
        z = table_to_arrow(hdu, p, index, columns=wanted)
        for col in ("TARGETID", "Z", "ZWARN"):
            if find_column(z.column_names, col) is None:
                raise InputError(
                    f"{where(p, label, col)}: required column is missing. A DESI redshift "
                    "table needs TARGETID, Z and ZWARN."
                )
        primary = hdul[0].header
        extra = None
        fm = find_hdu(hdul, "FIBERMAP")
        if label == "REDSHIFTS" and fm is not None:
            fm_table = table_to_arrow(fm[1], p, fm[0], columns=wanted)
            tid = find_column(fm_table.column_names, "TARGETID")
            if tid and fm_table.num_rows == z.num_rows:
                same = np.array_equal(
                    canonical_column(fm_table, tid, pa.int64()).to_numpy(zero_copy_only=False),
                    canonical_column(z, "TARGETID", pa.int64()).to_numpy(zero_copy_only=False))
                if same:
                    extra = fm_table

    schema = redshift_schema(source=p.name, hdu=str(label))
    n = z.num_rows
    columns = []
    for field in schema:
        name = field.name
        source_table = z
        if find_column(z.column_names, name) is None and extra is not None \
                and find_column(extra.column_names, name) is not None:
            source_table = extra
        if name in ("SURVEY", "PROGRAM") and find_column(source_table.column_names, name) is None:
            value = _header_string(primary, name)
            columns.append(pa.array([value] * n, pa.string()))
            continue
        try:
            columns.append(canonical_column(source_table, name, field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(
                f"{where(p, label, name)}: cannot be read as {field.type} ({exc}). "
                "Fix the column type."
            ) from None
    table = pa.Table.from_arrays(columns, schema=schema)
    ra, dec = table.column("TARGET_RA"), table.column("TARGET_DEC")
    if ra.null_count < len(ra) or dec.null_count < len(dec):  # rows as in the file
        validate_radec(ra, dec, p, label, "TARGET_RA", "TARGET_DEC")
    if find_column(z.column_names, "ZCAT_PRIMARY") is not None:
        table = table.filter(pc.fill_null(table.column("ZCAT_PRIMARY"), False))
    return table
