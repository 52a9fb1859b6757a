"""Input readers: every supported file becomes a ``pyarrow.Table`` with a canonical schema.

:func:`read_any` looks at a file's *content* (magic bytes, FITS HDU names and columns, HDF5
data sets), never at its name, because survey files get renamed and the simulator writes
the same formats under its own names. Kinds, in the order they are tested:

=================  ==========================================  ==============================
kind               recognised by                               reader
=================  ==========================================  ==============================
desi_spectra       FITS with FIBERMAP and ``<arm>_FLUX`` HDUs  :func:`desi.read_spectra`
desi_redshifts     FITS with a REDSHIFTS or ZCATALOG HDU       :func:`desi.read_redshifts`
ls_cutout_fits     FITS with a 3-D image and no tables         :func:`legacysurvey.read_cutout_fits`
ls_catalog         FITS table with RA, DEC, FLUX_G/R/Z and     :func:`legacysurvey.read_catalog`
                   BRICKID/OBJID/BRICKNAME/TYPE/MW_TRANSMISSION
ls_cutout_stack    HDF5 with an ``images`` data set            :func:`legacysurvey.read_cutout_stack`
ls_bricks          directory with ``coadd/<ddd>/<brick>/``     :func:`bricks.read_brick_index`
                   ``legacysurvey-<brick>-image-<band>.fits.fz``
table              Parquet, Parquet/HATS directory, or any     :func:`tables.read_table`
                   FITS table with RA/DEC or TARGET_RA/DEC
=================  ==========================================  ==============================

The schemas are documented in each module. All failures caused by the input raise
:class:`astroembed.errors.InputError` naming the file.

May import: NumPy, pyarrow, astropy, h5py, the standard library and
:mod:`astroembed.errors`; nothing of the other astroembed packages, no Dask, torch or
onnxruntime.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from astroembed.errors import InputError
from astroembed.readers import bricks, desi, legacysurvey, tables
from astroembed.readers.bricks import is_brick_directory, read_brick_index
from astroembed.readers.desi import (
    N_WAVE,
    WAVE_START,
    WAVE_STEP,
    is_desi_redshifts,
    is_desi_spectra,
    read_redshifts,
    read_spectra,
    wavelength_grid,
)
from astroembed.readers.fitsutil import check_file, is_fits, validate_radec
from astroembed.readers.legacysurvey import (
    attach_cutouts,
    image_type,
    is_ls_catalog,
    is_ls_cutout_fits,
    is_ls_cutout_stack,
    read_catalog,
    read_cutout_fits,
    read_cutout_stack,
)
from astroembed.readers.tables import is_hats_catalog, is_parquet, is_table, radec_columns, read_table

__all__ = [
    "KINDS",
    "N_WAVE",
    "WAVE_START",
    "WAVE_STEP",
    "attach_cutouts",
    "bricks",
    "desi",
    "detect_kind",
    "image_type",
    "is_desi_redshifts",
    "is_brick_directory",
    "is_desi_spectra",
    "is_hats_catalog",
    "is_ls_catalog",
    "is_ls_cutout_fits",
    "is_ls_cutout_stack",
    "is_parquet",
    "is_table",
    "legacysurvey",
    "radec_columns",
    "read_any",
    "read_catalog",
    "read_cutout_fits",
    "read_cutout_stack",
    "read_redshifts",
    "read_spectra",
    "read_table",
    "tables",
    "validate_radec",
    "wavelength_grid",
]

KINDS = ("desi_spectra", "desi_redshifts", "ls_catalog", "ls_cutout_fits",
         "ls_cutout_stack", "ls_bricks", "table")

_READERS = {
    "desi_spectra": read_spectra,
    "desi_redshifts": read_redshifts,
    "ls_catalog": read_catalog,
    "ls_cutout_fits": read_cutout_fits,
    "ls_cutout_stack": read_cutout_stack,
    "ls_bricks": read_brick_index,
    "table": read_table,
}


def detect_kind(path: str | os.PathLike) -> str:
    """The kind of file at ``path`` (one of :data:`KINDS`), from its content.

    Raises InputError for a missing or empty file, or one that is none of the kinds.
    """
    p = Path(path)
    if p.is_dir():
        if is_table(p):
            return "table"
        if is_brick_directory(p):
            return "ls_bricks"
        raise InputError(
            f"{p}: is a directory but not a HATS catalog (hats.properties + dataset/), a "
            "directory of Parquet files or of Legacy Survey brick coadds (coadd/)."
        )
    check_file(p)
    if is_fits(p):
        if is_desi_spectra(p):
            return "desi_spectra"
        if is_desi_redshifts(p):
            return "desi_redshifts"
        if is_ls_cutout_fits(p):
            return "ls_cutout_fits"
        if is_ls_catalog(p):
            return "ls_catalog"
        if is_table(p):
            return "table"
        # Unreadable FITS: let the strict opener explain what is wrong with it.
        from astroembed.readers.fitsutil import open_fits

        with open_fits(p):
            pass
        raise InputError(
            f"{p}: a FITS file, but not one astroembed recognises: no DESI FIBERMAP + arm "
            "HDUs, no REDSHIFTS/ZCATALOG HDU, no (3, H, W) g,r,z cutout and no table with "
            "RA/DEC or TARGET_RA/TARGET_DEC columns."
        )
    if is_parquet(p):
        return "table"
    if is_ls_cutout_stack(p):
        return "ls_cutout_stack"
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x89HDF"):
        return "ls_cutout_stack"  # its reader says what is missing
    raise InputError(
        f"{p}: unrecognised file format (not FITS, HDF5 or Parquet). astroembed reads DESI "
        "coadd/spectra/redrock/zcatalog FITS, Legacy Survey catalogs and cutouts (FITS or "
        "HDF5), and Parquet/FITS tables with RA/DEC."
    )


def read_any(path: str | os.PathLike) -> tuple[str, pa.Table]:
    """Detect what ``path`` holds and read it: returns ``(kind, table)``."""
    kind = detect_kind(path)
    return kind, _READERS[kind](path)
