"""Readers on real DESI and Legacy Survey files (../shared/fixtures/real, read-only).

Expected values are read independently with astropy from the raw HDUs, never through the
reader under test.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits

from astroembed.readers import (
    N_WAVE,
    attach_cutouts,
    read_any,
    read_catalog,
    read_cutout_fits,
    read_redshifts,
    read_spectra,
    read_table,
    wavelength_grid,
)

COADD = "desi/coadd-4-80613-thru20210324.fits"
REDROCK = "desi/redrock-4-80613-thru20210324.fits"
SV3 = "desi/coadd-sv3-dark-26065.fits"
ZALL = "desi/zall-pix-iron_10rows.fits"
CUTOUT = "legacysurvey/cutout_ra357.9087_dec-54.8817_grz.fits"
SWEEP = "legacysurvey/sweep-320m005-330p000.fits"
TRACTOR6 = "legacysurvey/tractor-3301m002.fits"
TRACTOR1 = "legacysurvey/tractor-1054p567.fits"
TARGETS = "legacysurvey/targets.fits"
DESI_TARGETID = 39633345008634465


def _raw(path, hdu):
    with fits.open(path, memmap=False) as h:
        return h[hdu].data.copy()


def _grid_index(wave):
    return np.rint((np.asarray(wave, dtype=np.float64) - 3600.0) / 0.8).astype(int)


def _assert_native(table: pa.Table) -> None:
    """Every numeric column (lists and tensors included) converts to native-endian NumPy."""
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        while isinstance(col, pa.ExtensionArray) or pa.types.is_fixed_size_list(col.type):
            col = col.storage if isinstance(col, pa.ExtensionArray) else col.flatten()
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            arr = col.to_numpy(zero_copy_only=False)
            assert arr.dtype.isnative, name


# ----------------------------------------------------------------------------- DESI


def test_coadd_single_target(real_fixtures):
    t = read_spectra(real_fixtures / COADD)
    assert t.num_rows == 1
    row = t.slice(0, 1).to_pylist()[0]
    assert row["TARGETID"] == DESI_TARGETID
    assert row["TARGET_RA"] == pytest.approx(105.48977, abs=1e-5)
    assert row["TARGET_DEC"] == pytest.approx(56.66930, abs=1e-5)
    assert (row["RELEASE"], row["BRICKID"], row["BRICK_OBJID"]) == (9011, 607466, 2657)
    assert row["OBJTYPE"] == "TGT" and row["COADD_FIBERSTATUS"] == 0
    assert row["SURVEY"] is None  # tile coadds carry no SURVEY keyword
    assert t.schema.field("flux").type == pa.list_(pa.float32(), N_WAVE)
    flux = np.asarray(row["flux"], dtype=np.float32)
    ivar = np.asarray(row["ivar"], dtype=np.float32)
    assert flux.shape == ivar.shape == (7781,)
    assert np.isfinite(flux).all() and np.isfinite(ivar).all() and (ivar >= 0).all()
    meta = t.schema.metadata
    assert meta[b"n_wave"] == b"7781" and float(meta[b"wave_start"]) == 3600.0
    assert float(meta[b"wave_step"]) == 0.8 and meta[b"source"] == COADD.split("/")[1].encode()
    _assert_native(t)


def test_coadd_grid_matches_raw_arms(real_fixtures):
    path = real_fixtures / COADD
    t = read_spectra(path)
    flux = t.column("flux").combine_chunks().flatten().to_numpy().reshape(-1, N_WAVE)[0]
    ivar = t.column("ivar").combine_chunks().flatten().to_numpy().reshape(-1, N_WAVE)[0]
    grid = wavelength_grid()
    assert grid.shape == (7781,) and grid[0] == 3600.0 and grid[-1] == pytest.approx(9824.0)

    arms = {a: {k: _raw(path, f"{a}_{k}") for k in ("WAVELENGTH", "FLUX", "IVAR", "MASK")}
            for a in "BRZ"}
    # A pixel covered by R only (B ends at 5800 A, Z starts at 7520 A): identical values.
    r = arms["R"]
    ri = int(np.argmin(np.abs(r["WAVELENGTH"] - 6500.0)))
    gi = _grid_index(r["WAVELENGTH"][ri])
    assert abs(grid[gi] - r["WAVELENGTH"][ri]) < 1e-3
    assert r["MASK"][0, ri] == 0 and r["IVAR"][0, ri] > 0
    assert flux[gi] == r["FLUX"][0, ri]
    assert ivar[gi] == r["IVAR"][0, ri]

    # Every B/R overlap pixel: ivar-weighted mean and summed ivar, computed here.
    b = arms["B"]
    bsel = b["WAVELENGTH"] >= r["WAVELENGTH"][0] - 0.4
    rsel = r["WAVELENGTH"] <= b["WAVELENGTH"][-1] + 0.4
    assert bsel.sum() == rsel.sum() > 10
    bw = np.where(b["MASK"][0, bsel] == 0, b["IVAR"][0, bsel].astype(float), 0.0)
    rw = np.where(r["MASK"][0, rsel] == 0, r["IVAR"][0, rsel].astype(float), 0.0)
    expected_ivar = bw + rw
    expected_flux = (bw * b["FLUX"][0, bsel] + rw * r["FLUX"][0, rsel]) / expected_ivar
    gidx = _grid_index(b["WAVELENGTH"][bsel])
    np.testing.assert_array_equal(gidx, _grid_index(r["WAVELENGTH"][rsel]))
    np.testing.assert_allclose(flux[gidx], expected_flux, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ivar[gidx], expected_ivar, rtol=1e-6)

    # Z-only pixel at the red end, B-only pixel at the blue end.
    assert flux[-1] == arms["Z"]["FLUX"][0, -1] and flux[0] == b["FLUX"][0, 0]


def test_redrock(real_fixtures):
    z = read_redshifts(real_fixtures / REDROCK)
    assert z.num_rows == 1
    row = z.to_pylist()[0]
    assert row["TARGETID"] == DESI_TARGETID
    assert row["Z"] == pytest.approx(0.36874355, abs=1e-7)
    assert row["ZWARN"] == 0 and row["SPECTYPE"] == "GALAXY"
    # positions come from the redrock file's FIBERMAP (same TARGETIDs, same order)
    assert row["TARGET_RA"] == pytest.approx(105.48977, abs=1e-5)
    assert z.schema.field("ZWARN").type == pa.int64()
    _assert_native(z)


def test_sv3_healpix_coadd_keeps_every_fibre(real_fixtures):
    path = real_fixtures / SV3
    t = read_spectra(path)
    fm = _raw(path, "FIBERMAP")
    assert t.num_rows == 5
    assert t.column("TARGETID").to_pylist() == fm["TARGETID"].tolist()
    assert t.column("OBJTYPE").to_pylist() == [s.strip() for s in fm["OBJTYPE"]]
    assert t.column("COADD_FIBERSTATUS").to_pylist() == fm["COADD_FIBERSTATUS"].tolist()
    np.testing.assert_array_equal(t.column("TARGET_RA").to_numpy(), fm["TARGET_RA"])
    assert set(t.column("SURVEY").to_pylist()) == {"sv3"}
    assert set(t.column("PROGRAM").to_pylist()) == {"dark"}
    tid = np.asarray(t.column("TARGETID"))
    usable = (tid > 0) & (np.asarray(t.column("OBJTYPE")) == "TGT") & \
        (np.asarray(t.column("COADD_FIBERSTATUS")) == 0)
    assert sorted(tid[usable]) == [39627866878511337, 39627866878514741]

    # masked pixels (fibre 2 has R_MASK != 0) get ivar 0 and flux 0
    ivar = t.column("ivar").combine_chunks().flatten().to_numpy().reshape(-1, N_WAVE)
    flux = t.column("flux").combine_chunks().flatten().to_numpy().reshape(-1, N_WAVE)
    rw, rm = _raw(path, "R_WAVELENGTH"), _raw(path, "R_MASK")
    r_only = (rw > 5800.4) & (rw < 7519.6)
    masked = np.flatnonzero((rm[2] != 0) & r_only)
    assert masked.size > 0
    gi = _grid_index(rw[masked])
    assert (ivar[2, gi] == 0).all() and (flux[2, gi] == 0).all()
    assert np.isfinite(flux).all() and (ivar >= 0).all()
    _assert_native(t)


def test_zall_pix(real_fixtures):
    path = real_fixtures / ZALL
    z = read_redshifts(path)
    raw = _raw(path, "ZCATALOG")
    assert z.num_rows == 10  # all ZCAT_PRIMARY in this excerpt
    assert z.column("TARGETID").to_pylist() == raw["TARGETID"].tolist()
    np.testing.assert_array_equal(z.column("Z").to_numpy(), raw["Z"])
    assert z.column("ZWARN").to_pylist() == raw["ZWARN"].tolist()
    assert z.column("HEALPIX").to_pylist() == [2152] * 10
    assert set(z.column("SURVEY").to_pylist()) == {"cmx"}
    assert z.column("ZCAT_PRIMARY").to_pylist() == [True] * 10
    _assert_native(z)


def test_zcat_primary_filter(real_fixtures, tmp_path):
    """Only ZCAT_PRIMARY rows are kept (one row per TARGETID)."""
    with fits.open(real_fixtures / ZALL, memmap=False) as h:
        data = h["ZCATALOG"].data.copy()
        data["ZCAT_PRIMARY"][[1, 4]] = False
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(data, name="ZCATALOG")]).writeto(
            tmp_path / "zpix-test.fits")
    z = read_redshifts(tmp_path / "zpix-test.fits")
    assert z.num_rows == 8
    assert data["TARGETID"][1] not in z.column("TARGETID").to_pylist()


# ----------------------------------------------------------------------------- Legacy Survey


def test_cutout(real_fixtures):
    path = real_fixtures / CUTOUT
    t = read_cutout_fits(path)
    assert t.num_rows == 1
    image_t = t.schema.field("image").type
    assert isinstance(image_t, pa.FixedShapeTensorType) and tuple(image_t.shape) == (3, 256, 256)
    cube = t.column("image").combine_chunks().to_numpy_ndarray()
    assert cube.shape == (1, 3, 256, 256) and cube.dtype == np.float32 and cube.dtype.isnative
    np.testing.assert_array_equal(cube[0], _raw(path, 0))
    centre = SkyCoord(t.column("RA")[0].as_py() * u.deg, t.column("DEC")[0].as_py() * u.deg)
    assert centre.separation(SkyCoord(357.9087 * u.deg, -54.8817 * u.deg)) < 1 * u.arcsec
    assert t.column("pixscale")[0].as_py() == pytest.approx(0.262, abs=1e-3)


@pytest.mark.parametrize("name, rows", [(SWEEP, 6), (TRACTOR6, 6), (TRACTOR1, 1), (TARGETS, 1001)])
def test_catalogs(real_fixtures, name, rows):
    path = real_fixtures / name
    t = read_catalog(path)
    raw = _raw(path, 1)
    assert t.num_rows == rows
    np.testing.assert_array_equal(t.column("RA").to_numpy(), raw["RA"])
    np.testing.assert_array_equal(t.column("DEC").to_numpy(), raw["DEC"])
    assert t.schema.field("RELEASE").type == pa.int32()
    assert t.schema.field("FLUX_G").type == pa.float32()
    np.testing.assert_array_equal(t.column("FLUX_R").to_numpy(), raw["FLUX_R"])
    for col in ("BRICKID", "OBJID", "TYPE", "SHAPE_R"):
        if col in raw.dtype.names or (col == "SHAPE_R" and "SHAPEEXP_R" in raw.dtype.names):
            assert t.column(col).null_count == 0, col
        else:
            assert t.column(col).null_count == rows, col  # targets.fits lacks them
    _assert_native(t)


def test_dr8_shape_r_from_dev_or_exp(real_fixtures):
    path = real_fixtures / SWEEP
    t = read_catalog(path)
    raw = _raw(path, 1)
    types = [s.strip() for s in raw["TYPE"]]
    expected = np.where(np.array(types) == "DEV", raw["SHAPEDEV_R"], raw["SHAPEEXP_R"])
    np.testing.assert_array_equal(t.column("SHAPE_R").to_numpy(), expected)
    assert t.column("TYPE").to_pylist() == types
    assert t.schema.field("DCHISQ").type == pa.list_(pa.float32(), 5)


def test_tractor_row_is_the_desi_target(real_fixtures):
    cat = read_catalog(real_fixtures / TRACTOR1).to_pylist()[0]
    spec = read_spectra(real_fixtures / COADD).drop_columns(["flux", "ivar"]).to_pylist()[0]
    assert (cat["RELEASE"], cat["BRICKID"], cat["OBJID"]) == (9011, 607466, 2657)
    assert (cat["RELEASE"], cat["BRICKID"], cat["OBJID"]) == \
        (spec["RELEASE"], spec["BRICKID"], spec["BRICK_OBJID"])
    assert cat["TYPE"] == "REX" and cat["SHAPE_R"] == pytest.approx(0.38778415)


@pytest.mark.parametrize("name, kind, rows", [
    (COADD, "desi_spectra", 1), (SV3, "desi_spectra", 5), (REDROCK, "desi_redshifts", 1),
    (ZALL, "desi_redshifts", 10), (CUTOUT, "ls_cutout_fits", 1), (SWEEP, "ls_catalog", 6),
    (TRACTOR6, "ls_catalog", 6), (TRACTOR1, "ls_catalog", 1), (TARGETS, "ls_catalog", 1001),
    ("reference/sdss_main_10000gal_ugriz_specz.fits", "table", 10000),
])
def test_read_any_classifies(real_fixtures, name, kind, rows):
    got_kind, table = read_any(real_fixtures / name)
    assert got_kind == kind
    assert table.num_rows == rows


# ----------------------------------------------------------------------------- joins, tables


def test_attach_cutout_by_position(real_fixtures):
    cut = read_cutout_fits(real_fixtures / CUTOUT)
    off = 0.3 / 3600 / np.cos(np.radians(54.8817))  # 0.3 arcsec east
    catalog = pa.table({"RA": [357.9087 + off, 10.0, 357.9087 + 2 * off],
                        "DEC": [-54.8817, 0.0, -54.8817]})
    out = attach_cutouts(catalog, cut)
    assert out.column("image").is_null().to_pylist() == [False, True, True]
    assert out.schema.field("image").type == cut.schema.field("image").type


def test_attach_cutouts_by_ids(real_fixtures, tmp_path):
    h5py = pytest.importorskip("h5py")
    cat = read_catalog(real_fixtures / TRACTOR6)
    rows = [5, 0]
    images = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f["images"] = images
        # positions deliberately far off: an ID join must not look at them
        f["ra"] = np.array([1.0, 2.0])
        f["dec"] = np.array([0.0, 0.0])
        f["release"] = cat.column("RELEASE").to_numpy()[rows]
        f["brickid"] = cat.column("BRICKID").to_numpy()[rows]
        f["objid"] = cat.column("OBJID").to_numpy()[rows]
    kind, stack = read_any(tmp_path / "stack.h5")
    assert kind == "ls_cutout_stack" and stack.num_rows == 2
    out = attach_cutouts(cat, stack)
    nulls = out.column("image").is_null().to_pylist()
    assert [i for i, isnull in enumerate(nulls) if not isnull] == [0, 5]
    got = out.column("image").combine_chunks()
    np.testing.assert_array_equal(np.asarray(got.storage[5].values).reshape(3, 8, 8), images[0])
    np.testing.assert_array_equal(np.asarray(got.storage[0].values).reshape(3, 8, 8), images[1])


def test_read_table_parquet_and_hats(tmp_path):
    t = pa.table({"ra": [0.0, 359.9], "dec": [-90.0, 90.0], "x": [1, 2]})
    pq.write_table(t, tmp_path / "cat.parquet")
    kind, got = read_any(tmp_path / "cat.parquet")
    assert kind == "table" and got.column_names == ["ra", "dec", "x"] and got.num_rows == 2
    hats = tmp_path / "hats_cat"
    (hats / "dataset" / "Norder=0" / "Dir=0").mkdir(parents=True)
    (hats / "hats.properties").write_text("dataproduct_type=object\n")
    pq.write_table(t, hats / "dataset" / "Norder=0" / "Dir=0" / "Npix=4.parquet")
    pq.write_metadata(t.schema, hats / "dataset" / "_common_metadata")
    got = read_table(hats)
    assert got.num_rows == 2 and got.column_names == ["ra", "dec", "x"]


def test_empty_tables_are_not_errors(real_fixtures, tmp_path):
    with fits.open(real_fixtures / SWEEP, memmap=False) as h:
        empty = fits.BinTableHDU(h[1].data[:0])
        fits.HDUList([fits.PrimaryHDU(), empty]).writeto(tmp_path / "sweep-empty.fits")
    t = read_catalog(tmp_path / "sweep-empty.fits")
    assert t.num_rows == 0 and t.schema.field("RA").type == pa.float64()
    with fits.open(real_fixtures / ZALL, memmap=False) as h:
        empty = fits.BinTableHDU(h["ZCATALOG"].data[:0], name="ZCATALOG")
        fits.HDUList([fits.PrimaryHDU(), empty]).writeto(tmp_path / "zpix-empty.fits")
    z = read_redshifts(tmp_path / "zpix-empty.fits")
    assert z.num_rows == 0 and "Z" in z.column_names
