"""Bad inputs: each must raise InputError naming the file (and HDU / column / row).

Broken files are written into tmp_path, mostly by copying a real file's HDUs and altering
one thing, so every other part of the file stays realistic.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astroembed.errors import InputError
from astroembed.readers import (
    read_any,
    read_catalog,
    read_cutout_fits,
    read_cutout_stack,
    read_redshifts,
    read_spectra,
    read_table,
)

COADD = "desi/coadd-4-80613-thru20210324.fits"
SV3 = "desi/coadd-sv3-dark-26065.fits"
ZALL = "desi/zall-pix-iron_10rows.fits"
SWEEP = "legacysurvey/sweep-320m005-330p000.fits"
CUTOUT = "legacysurvey/cutout_ra357.9087_dec-54.8817_grz.fits"


def _message(excinfo) -> str:
    return str(excinfo.value)


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy ``src`` to ``dst`` through astropy, letting ``edit`` change the HDU list."""
    with fits.open(src, memmap=False) as h:
        hdus = [hdu.copy() for hdu in h]
    hdus = edit(hdus)
    fits.HDUList(hdus).writeto(dst)
    return dst


def _without(hdus, name):
    return [h for h in hdus if h.name != name]


def _drop_column(hdu, column):
    cols = [c for c in hdu.columns if c.name != column]
    return fits.BinTableHDU.from_columns(cols, name=hdu.name if hdu.name else None)


# ----------------------------------------------------------------------------- file level


def test_truncated_fits(real_fixtures, tmp_path):
    path = tmp_path / "coadd-truncated.fits"
    path.write_bytes((real_fixtures / COADD).read_bytes()[:200_000])
    with pytest.raises(InputError) as exc:
        read_spectra(path)
    assert path.name in _message(exc) and "truncated" in _message(exc)
    with pytest.raises(InputError) as exc:
        read_any(path)
    assert path.name in _message(exc) and "truncated" in _message(exc)


def test_truncated_inside_header(real_fixtures, tmp_path):
    """Cut inside the last extension header: astropy drops that HDU with only a warning."""
    data = (real_fixtures / COADD).read_bytes()
    path = tmp_path / "coadd-cut-header.fits"
    path.write_bytes(data[: len(data) - 5000])
    with pytest.raises(InputError) as exc:
        read_spectra(path)
    assert path.name in _message(exc) and "truncated" in _message(exc)


def test_truncated_data_of_table(real_fixtures, tmp_path):
    data = (real_fixtures / ZALL).read_bytes()
    path = tmp_path / "zall-truncated.fits"
    path.write_bytes(data[: len(data) - 4000])
    with pytest.raises(InputError) as exc:
        read_redshifts(path)
    assert path.name in _message(exc) and "truncated" in _message(exc)


def test_not_fits(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("these are not the spectra you are looking for\n")
    for reader in (read_spectra, read_catalog, read_redshifts, read_cutout_fits):
        with pytest.raises(InputError) as exc:
            reader(path)
        assert path.name in _message(exc) and "not a FITS file" in _message(exc)
    with pytest.raises(InputError) as exc:
        read_any(path)
    assert path.name in _message(exc) and "unrecognised" in _message(exc)


@pytest.mark.parametrize("reader", [read_spectra, read_redshifts, read_catalog,
                                    read_cutout_fits, read_cutout_stack, read_table, read_any])
def test_empty_file(tmp_path, reader):
    path = tmp_path / "empty-download.fits"
    path.write_bytes(b"")
    with pytest.raises(InputError) as exc:
        reader(path)
    assert path.name in _message(exc) and "empty" in _message(exc)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.fits"
    with pytest.raises(InputError) as exc:
        read_any(path)
    assert path.name in _message(exc) and "no such file" in _message(exc)


# ----------------------------------------------------------------------------- DESI spectra


def test_coadd_missing_fibermap(real_fixtures, tmp_path):
    path = _rewrite(real_fixtures / COADD, tmp_path / "coadd-nofibermap.fits",
                    lambda h: _without(h, "FIBERMAP"))
    with pytest.raises(InputError) as exc:
        read_spectra(path)
    assert path.name in _message(exc) and "FIBERMAP" in _message(exc)


def test_coadd_missing_arm_hdu(real_fixtures, tmp_path):
    path = _rewrite(real_fixtures / COADD, tmp_path / "coadd-no-rflux.fits",
                    lambda h: _without(h, "R_FLUX"))
    with pytest.raises(InputError) as exc:
        read_spectra(path)
    assert path.name in _message(exc) and "R_FLUX" in _message(exc)
    # read_any still recognises it as spectra and reports the same problem
    with pytest.raises(InputError) as exc:
        read_any(path)
    assert "R_FLUX" in _message(exc)


def test_coadd_wrong_arm_shape(real_fixtures, tmp_path):
    def edit(hdus):
        for i, h in enumerate(hdus):
            if h.name == "B_IVAR":
                hdus[i] = fits.ImageHDU(np.ones((1, 100), dtype=np.float32), name="B_IVAR")
        return hdus

    path = _rewrite(real_fixtures / COADD, tmp_path / "coadd-bad-shape.fits", edit)
    with pytest.raises(InputError) as exc:
        read_spectra(path)
    msg = _message(exc)
    assert path.name in msg and "[B_IVAR]" in msg and "(1, 100)" in msg


def test_coadd_fibermap_row_count_mismatch(real_fixtures, tmp_path):
    def edit(hdus):
        for i, h in enumerate(hdus):
            if h.name == "FIBERMAP":
                hdus[i] = fits.BinTableHDU(h.data[:4], header=h.header, name="FIBERMAP")
        return hdus

    path = _rewrite(real_fixtures / SV3, tmp_path / "coadd-rows.fits", edit)
    with pytest.raises(InputError) as exc:
        read_spectra(path)
    msg = _message(exc)
    assert path.name in msg and "FIBERMAP" in msg and "4 rows" in msg


def test_coadd_off_grid_wavelength(real_fixtures, tmp_path):
    def edit(hdus):
        for h in hdus:
            if h.name == "Z_WAVELENGTH":
                h.data = h.data + 0.3
        return hdus

    path = _rewrite(real_fixtures / COADD, tmp_path / "coadd-offgrid.fits", edit)
    with pytest.raises(InputError) as exc:
        read_spectra(path)
    assert path.name in _message(exc) and "Z_WAVELENGTH" in _message(exc)


def test_coadd_nan_ra(real_fixtures, tmp_path):
    def edit(hdus):
        for h in hdus:
            if h.name == "FIBERMAP":
                h.data["TARGET_RA"][3] = np.nan
        return hdus

    path = _rewrite(real_fixtures / SV3, tmp_path / "coadd-nan-ra.fits", edit)
    with pytest.raises(InputError) as exc:
        read_spectra(path)
    msg = _message(exc)
    assert path.name in msg and "[FIBERMAP]" in msg and "TARGET_RA" in msg and "row 3" in msg


def test_coadd_missing_targetid(real_fixtures, tmp_path):
    def edit(hdus):
        return [_drop_column(h, "TARGETID") if h.name == "FIBERMAP" else h for h in hdus]

    path = _rewrite(real_fixtures / COADD, tmp_path / "coadd-no-tid.fits", edit)
    with pytest.raises(InputError) as exc:
        read_spectra(path)
    assert path.name in _message(exc) and "column TARGETID" in _message(exc)


# ----------------------------------------------------------------------------- redshifts


def test_zcatalog_missing_z(real_fixtures, tmp_path):
    def edit(hdus):
        return [_drop_column(h, "Z") if h.name == "ZCATALOG" else h for h in hdus]

    path = _rewrite(real_fixtures / ZALL, tmp_path / "zpix-no-z.fits", edit)
    with pytest.raises(InputError) as exc:
        read_redshifts(path)
    msg = _message(exc)
    assert path.name in msg and "[ZCATALOG]" in msg and "column Z" in msg


def test_redshifts_without_redshift_hdu(real_fixtures, tmp_path):
    path = tmp_path / "sweep-as-z.fits"
    shutil.copy(real_fixtures / SWEEP, path)
    with pytest.raises(InputError) as exc:
        read_redshifts(path)
    assert path.name in _message(exc) and "ZCATALOG" in _message(exc)


# ----------------------------------------------------------------------------- catalogs


def test_sweep_dec_out_of_range(real_fixtures, tmp_path):
    def edit(hdus):
        hdus[1].data["DEC"][2] = 95.0
        return hdus

    path = _rewrite(real_fixtures / SWEEP, tmp_path / "sweep-dec95.fits", edit)
    with pytest.raises(InputError) as exc:
        read_catalog(path)
    msg = _message(exc)
    assert path.name in msg and "column DEC" in msg and "row 2" in msg and "95" in msg
    with pytest.raises(InputError):
        read_any(path)


def test_sweep_missing_ra(real_fixtures, tmp_path):
    path = _rewrite(real_fixtures / SWEEP, tmp_path / "sweep-no-ra.fits",
                    lambda h: [h[0], _drop_column(h[1], "RA")])
    with pytest.raises(InputError) as exc:
        read_catalog(path)
    msg = _message(exc)
    assert path.name in msg and "column RA" in msg


def test_parquet_ra_out_of_range(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"ra": [10.0, 361.0], "dec": [0.0, 0.0]}), path)
    with pytest.raises(InputError) as exc:
        read_table(path)
    msg = _message(exc)
    assert path.name in msg and "column ra" in msg and "row 1" in msg


def test_parquet_without_positions(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nopos.parquet"
    pq.write_table(pa.table({"x": [1.0]}), path)
    with pytest.raises(InputError) as exc:
        read_table(path)
    assert path.name in _message(exc) and "RA/DEC" in _message(exc)


# ----------------------------------------------------------------------------- cutouts


def test_stack_missing_images(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "stack-noimages.h5"
    with h5py.File(path, "w") as f:
        f["ra"] = np.array([1.0])
        f["dec"] = np.array([1.0])
    with pytest.raises(InputError) as exc:
        read_cutout_stack(path)
    assert path.name in _message(exc) and "images" in _message(exc)
    with pytest.raises(InputError) as exc:
        read_any(path)
    assert path.name in _message(exc) and "images" in _message(exc)


def test_stack_length_mismatch(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "stack-mismatch.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 3, 4, 4), dtype=np.float32)
        f["ra"] = np.array([1.0, 2.0, 3.0])
        f["dec"] = np.array([1.0, 2.0])
    with pytest.raises(InputError) as exc:
        read_cutout_stack(path)
    assert path.name in _message(exc) and "[ra]" in _message(exc)


def test_stack_not_hdf5(tmp_path):
    path = tmp_path / "stack.h5"
    path.write_text("not hdf5")
    with pytest.raises(InputError) as exc:
        read_cutout_stack(path)
    assert path.name in _message(exc) and "HDF5" in _message(exc)


def test_cutout_with_four_bands(real_fixtures, tmp_path):
    def edit(hdus):
        cube = hdus[0].data
        header = hdus[0].header
        header["BANDS"] = "griz"
        header["BAND3"] = "z"
        header["BAND2"] = "i"
        return [fits.PrimaryHDU(np.concatenate([cube, cube[-1:]]), header=header)]

    path = _rewrite(real_fixtures / CUTOUT, tmp_path / "cutout-griz.fits", edit)
    with pytest.raises(InputError) as exc:
        read_cutout_fits(path)
    msg = _message(exc)
    assert path.name in msg and "g, r, i, z" in msg and "grz" in msg


def test_cutout_wrong_dimensions(real_fixtures, tmp_path):
    def edit(hdus):
        header = hdus[0].header
        for key in ("BANDS", "BAND0", "BAND1", "BAND2"):
            del header[key]
        return [fits.PrimaryHDU(hdus[0].data[0], header=header)]

    path = _rewrite(real_fixtures / CUTOUT, tmp_path / "cutout-2d.fits", edit)
    with pytest.raises(InputError) as exc:
        read_cutout_fits(path)
    assert path.name in _message(exc) and "(3, H, W)" in _message(exc)
