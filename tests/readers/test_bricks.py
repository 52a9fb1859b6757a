"""Stamps cut from brick coadds against astropy's Cutout2D on the same decompressed image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS

from astroembed.errors import InputError
from astroembed.readers.bricks import cut_stamps, find_bricks, is_brick_directory

PIXSCALE = 0.262 / 3600.0
REAL_CUTOUT = (Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "real"
               / "legacysurvey" / "cutout_ra357.9087_dec-54.8817_grz.fits")


def tan_header(ra: float, dec: float, width: int, height: int) -> fits.Header:
    h = fits.Header()
    for k, v in dict(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=ra, CRVAL2=dec,
                     CRPIX1=(width + 1) / 2, CRPIX2=(height + 1) / 2, CD1_1=-PIXSCALE,
                     CD1_2=0.0, CD2_1=0.0, CD2_2=PIXSCALE, RADESYS="ICRS").items():
        h[k] = v
    return h


def write_brick_files(root: Path, brick: str, header: fits.Header,
                      planes: dict[str, np.ndarray]) -> dict[str, Path]:
    """The bands as the data centre lays them out: RICE row tiles, empty primary HDU."""
    out = {}
    for band, data in planes.items():
        path = root / "coadd" / brick[:3] / brick / f"legacysurvey-{brick}-image-{band}.fits.fz"
        path.parent.mkdir(parents=True, exist_ok=True)
        hdu = fits.CompImageHDU(data.astype(np.float32), header=header,
                                compression_type="RICE_1", tile_shape=(1, data.shape[1]))
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
        out[band] = path
    return out


def synthetic_brick(root: Path, brick: str, ra: float, dec: float, width: int = 120,
                    height: int = 100, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    planes = {b: rng.normal(0, 1, (height, width)) + k for k, b in enumerate("grz")}
    return write_brick_files(root, brick, tan_header(ra, dec, width, height), planes)


def decompressed(path: Path) -> tuple[np.ndarray, WCS]:
    with fits.open(path) as hdul:
        return np.array(hdul[1].data), WCS(hdul[1].header)


def check_against_cutout2d(files: dict[str, Path], brick: str, ra, dec, size: int) -> None:
    """Bounds, offsets, coverage and pixels of every stamp equal what Cutout2D gives."""
    stamps = cut_stamps(brick, files, ra, dec, size)
    assert stamps.images.shape == (len(ra), 3, size, size)
    assert stamps.images.dtype == np.float32
    for k, band in enumerate("grz"):
        data, wcs = decompressed(files[band])
        for i, (a, d) in enumerate(zip(ra, dec)):
            c = Cutout2D(data, SkyCoord(a, d, unit="deg"), (size, size), wcs=wcs,
                         mode="partial", fill_value=0)
            x0 = c.slices_original[1].start - c.slices_cutout[1].start
            y0 = c.slices_original[0].start - c.slices_cutout[0].start
            assert (stamps.x0[i], stamps.y0[i]) == (x0, y0)
            assert np.array_equal(stamps.images[i, k], c.data)
            inside = ((c.slices_cutout[0].stop - c.slices_cutout[0].start)
                      * (c.slices_cutout[1].stop - c.slices_cutout[1].start))
            assert stamps.covered[i] == pytest.approx(inside / size**2)
            # pixels from the brick are the brick's own, by NumPy indexing of the image
            ys, xs = c.slices_original
            sub = stamps.images[i, k][c.slices_cutout]
            assert np.array_equal(sub, data[ys, xs])
            px, py = wcs.world_to_pixel(SkyCoord(a, d, unit="deg"))
            centre = (size - 1) / 2
            assert abs(stamps.offset_x[i] - (px - x0 - centre)) < 0.01
            assert abs(stamps.offset_y[i] - (py - y0 - centre)) < 0.01


def pixel_to_sky(files, x, y):
    _, wcs = decompressed(files["g"])
    sky = wcs.pixel_to_world(np.asarray(x, float), np.asarray(y, float))
    return np.mod(sky.ra.deg, 360.0), sky.dec.deg


@pytest.mark.parametrize("size", [15, 16])
def test_interior_and_edges_match_cutout2d(tmp_path, size):
    files = synthetic_brick(tmp_path, "1500p020", 150.0, 2.0)
    # interior, the four edges and a corner, at fractional pixel positions
    x = [60.3, 0.2, 119.4, 50.7, 70.1, 1.4]
    y = [49.8, 50.6, 40.2, 0.1, 99.3, 98.9]
    ra, dec = pixel_to_sky(files, x, y)
    check_against_cutout2d(files, "1500p020", ra, dec, size)
    stamps = cut_stamps("1500p020", files, ra, dec, size)
    assert stamps.covered[0] == 1.0
    assert (stamps.covered[1:] < 1.0).all()
    # the filled part is zero, never shifted brick pixels
    assert (stamps.images[1, :, :, : size // 2 - 1] == 0).all()


def test_ra_wrap(tmp_path):
    files = synthetic_brick(tmp_path, "0000p000", 0.0, 0.0, seed=1)
    ra = np.array([359.9990, 0.0010, 0.0, 359.99575, 0.0043])
    dec = np.array([0.001, -0.002, 0.0, 0.0, 0.0012])
    check_against_cutout2d(files, "0000p000", ra, dec, 21)


def test_high_declination(tmp_path):
    files = synthetic_brick(tmp_path, "1200p880", 120.0, 88.0, seed=2)
    x, y = [10.5, 60.0, 118.7], [90.2, 50.0, 3.3]
    ra, dec = pixel_to_sky(files, x, y)
    assert (dec > 87.99).all()
    check_against_cutout2d(files, "1200p880", ra, dec, 24)


def test_find_bricks_layout(tmp_path):
    files = synthetic_brick(tmp_path, "1500p020", 150.0, 2.0)
    (tmp_path / "coadd" / "150" / "1500p020" / "legacysurvey-1500p020-invvar-g.fits.fz").write_bytes(b"x")
    (tmp_path / "stray-image-g.fits").write_bytes(b"x")
    assert find_bricks(tmp_path) == {"1500p020": files}
    assert find_bricks(tmp_path / "coadd") == {"1500p020": files}
    assert is_brick_directory(tmp_path)
    assert not is_brick_directory(tmp_path / "coadd" / "150" / "1500p020" / "nothing")


@pytest.mark.skipif(not REAL_CUTOUT.is_file(), reason="real fixtures (../shared) are absent")
def test_real_cutout_as_a_brick(tmp_path):
    with fits.open(REAL_CUTOUT) as hdul:
        cube = np.array(hdul[0].data, dtype=np.float32)
        header = WCS(hdul[0].header, naxis=2).to_header()
    brick = "3579m550"
    files = write_brick_files(tmp_path, brick, header,
                              {b: cube[k] for k, b in enumerate("grz")})
    assert find_bricks(tmp_path)[brick] == files
    x, y = [127.5, 130.2, 3.0, 250.6], [127.5, 100.9, 200.4, 5.5]
    ra, dec = pixel_to_sky(files, x, y)
    check_against_cutout2d(files, brick, ra, dec, 64)
    stamps = cut_stamps(brick, files, [357.9087], [-54.8817], 256)
    assert stamps.covered[0] == 1.0
    # nearly lossless quantization keeps the real pixels to within their noise
    assert np.allclose(stamps.images[0], cube, atol=0.05 * np.std(cube))


def test_truncated_file(tmp_path):
    files = synthetic_brick(tmp_path, "1500p020", 150.0, 2.0)
    raw = files["r"].read_bytes()
    files["r"].write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"image-r\.fits\.fz.*truncated.*again"):
        cut_stamps("1500p020", files, [150.0], [2.0], 16)


def test_missing_band(tmp_path):
    files = synthetic_brick(tmp_path, "1500p020", 150.0, 2.0)
    files["z"].unlink()
    found = find_bricks(tmp_path)["1500p020"]
    with pytest.raises(InputError, match=r"image-z\.fits\.fz: brick 1500p020 has no z image"):
        cut_stamps("1500p020", found, [150.0], [2.0], 16)


def test_no_wcs(tmp_path):
    planes = {b: np.ones((50, 50)) for b in "grz"}
    files = write_brick_files(tmp_path, "1500p020", fits.Header(), planes)
    with pytest.raises(InputError, match=r"image-g\.fits\.fz: no usable sky WCS.*TAN WCS"):
        cut_stamps("1500p020", files, [150.0], [2.0], 16)


def test_object_outside_the_brick(tmp_path):
    files = synthetic_brick(tmp_path, "1500p020", 150.0, 2.0)
    with pytest.raises(InputError, match=r"RA 151\.000000, Dec 2\.000000 lies outside brick "
                                         r"1500p020.*BRICKNAME"):
        cut_stamps("1500p020", files, [150.0, 151.0], [2.0, 2.0], 16)


def test_simulated_brick(tmp_path):
    from astroembed.simulation.bricks import write_brick

    ra = np.array([150.0, 150.003, 150.0069])
    dec = np.array([2.0, 1.998, 2.0041])
    fluxes = {b: np.array([40.0, 25.0, 30.0]) for b in "grz"}
    files = write_brick(tmp_path, "1500p020", 150.0, 2.0, ra, dec, fluxes,
                        r_eff=np.array([0.8, 1.5, 0.5]), n=np.array([1.0, 4.0, 1.0]),
                        q=np.array([0.8, 0.5, 1.0]), pa=np.array([0.0, 45.0, 0.0]),
                        is_point=np.array([False, False, True]),
                        rng=np.random.default_rng(3), width=200)
    assert find_bricks(tmp_path) == {"1500p020": files}
    for band, path in files.items():
        with fits.open(path) as hdul:
            assert isinstance(hdul[1], fits.CompImageHDU)
            assert hdul[1].compression_type == "RICE_1"
            assert WCS(hdul[1].header).wcs.ctype[0] == "RA---TAN"
        assert path.with_name(path.name.replace("-image-", "-invvar-")).is_file()
    assert (tmp_path / "coadd/150/1500p020/legacysurvey-1500p020-maskbits.fits.fz").is_file()
    check_against_cutout2d(files, "1500p020", ra, dec, 25)
    stamps = cut_stamps("1500p020", files, ra, dec, 25)
    # each object's light peaks at its own position (within a pixel of the stamp centre)
    for i in range(2):
        peak = np.unravel_index(np.argmax(stamps.images[i, 1]), (25, 25))
        assert abs(peak[0] - (12 + stamps.offset_y[i])) <= 1.0
        assert abs(peak[1] - (12 + stamps.offset_x[i])) <= 1.0


def two_bricks(root: Path) -> dict[str, dict[str, Path]]:
    """Two overlapping 120 x 100 bricks side by side in RA (centres 0.0065 deg apart)."""
    return {"1500p020": synthetic_brick(root, "1500p020", 150.0, 2.0, seed=4),
            "1501p020": synthetic_brick(root, "1501p020", 150.0065, 2.0, seed=5)}


def cutout2d_stamp(files: dict[str, Path], ra: float, dec: float, size: int) -> np.ndarray:
    planes = []
    for band in "grz":
        data, wcs = decompressed(files[band])
        planes.append(Cutout2D(data, SkyCoord(ra, dec, unit="deg"), (size, size), wcs=wcs,
                               mode="partial", fill_value=0).data)
    return np.stack(planes)


def test_attach_by_brickname_and_by_position(tmp_path):
    import pyarrow as pa

    from astroembed.readers.bricks import attach_brick_stamps

    bricks = two_bricks(tmp_path)
    # row 0 lies on both bricks, nearer the centre of 1501p020, but its BRICKNAME says
    # 1500p020; row 1 has no name: the brick holding it farthest from the edges wins;
    # row 2 is on no brick
    ra = [150.0040, 150.0043, 151.0]
    dec = [2.0, 2.0005, 2.0]
    for third in ("9999p999", "1500p020"):  # a brick absent, or one not holding it
        catalog = pa.table({"RA": ra, "DEC": dec, "BRICKNAME": ["1500p020", None, third]})
        out = attach_brick_stamps(catalog, tmp_path, 16)
        assert out.column("stamp_brick").to_pylist() == ["1500p020", "1501p020", None]
    # a BRICKNAME that does not hold the position counts as absent
    catalog = pa.table({"RA": [150.0040, 150.0065], "DEC": [2.0, 2.0],
                        "BRICKNAME": ["1500p020", "1500p020"]})
    assert attach_brick_stamps(catalog, tmp_path, 16).column("stamp_brick").to_pylist() == [
        "1500p020", "1501p020"]
    storage = out.column("image").combine_chunks().storage
    images = storage.flatten().to_numpy().reshape(-1, 3, 16, 16)
    for i in (0, 1):
        brick = out.column("stamp_brick")[i].as_py()
        assert np.array_equal(images[i], cutout2d_stamp(bricks[brick], ra[i], dec[i], 16))
    assert out.column("image").null_count == 1 and not out.column("image")[2].is_valid
    covered = out.column("stamp_covered_fraction").to_pylist()
    assert covered[0] < 1.0 and covered[1] == 1.0 and covered[2] is None
    assert out.schema.field("image").type.shape == [3, 16, 16]


def test_attach_without_brick_images(tmp_path):
    import pyarrow as pa

    from astroembed.readers.bricks import attach_brick_stamps

    with pytest.raises(InputError, match="no brick images"):
        attach_brick_stamps(pa.table({"RA": [1.0], "DEC": [2.0]}), tmp_path, 16)


def test_a_brick_directory_is_one_input(tmp_path):
    from astroembed.readers import detect_kind, read_any
    from astroembed.readers.inventory import input_files

    root = tmp_path / "legacysurvey"
    synthetic_brick(root, "1500p020", 150.0, 2.0)
    sweep = root / "sweep" / "sweep-150p000-160p005.fits"
    sweep.parent.mkdir()
    sweep.write_bytes(b"placeholder")
    assert input_files([tmp_path]) == [root, sweep]
    assert input_files([root / "coadd"]) == [root / "coadd"]
    assert detect_kind(root) == detect_kind(root / "coadd") == "ls_bricks"
    kind, table = read_any(root)
    assert kind == "ls_bricks"
    assert table.to_pylist() == [{"BRICKNAME": "1500p020", "BANDS": "grz"}]


def write_mask_files(root: Path, brick: str, header: fits.Header, maskbits: np.ndarray | None,
                     invvar: dict[str, np.ndarray]) -> None:
    """Mask bits and inverse variances beside the images, compressed as the survey's."""
    folder = root / "coadd" / brick[:3] / brick
    planes = {f"invvar-{b}": (v.astype(np.float32), 2) for b, v in invvar.items()}
    if maskbits is not None:
        planes["maskbits"] = (maskbits.astype(np.int16), 1)
    for name, (data, quantize) in planes.items():
        # dither 2 keeps invvar's zeros exactly zero, as the data centre's files do
        kw = {"quantize_method": quantize} if data.dtype.kind == "f" else {}
        hdu = fits.CompImageHDU(data, header=header, compression_type="RICE_1",
                                tile_shape=(1, data.shape[1]), **kw)
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(
            folder / f"legacysurvey-{brick}-{name}.fits.fz")


def masked_oracle(files: dict[str, Path], brick: str, ra, dec, size: int) -> np.ndarray:
    """Fraction of each stamp's pixels that are masked or off the brick, by plain NumPy over
    the fully decompressed mask files and Cutout2D's bounds."""
    folder = files["g"].parent
    _, wcs = decompressed(files["g"])
    shape = decompressed(files["g"])[0].shape
    bad = np.zeros(shape, bool)
    for path in sorted(folder.glob(f"legacysurvey-{brick}-*.fits.fz")):
        if "-maskbits" in path.name:
            bad |= decompressed(path)[0] != 0
        elif "-invvar-" in path.name:
            bad |= decompressed(path)[0] == 0
    out = []
    for a, d in zip(ra, dec):
        c = Cutout2D((~bad).astype(np.uint8), SkyCoord(a, d, unit="deg"), (size, size),
                     wcs=wcs, mode="partial", fill_value=0)
        out.append(1.0 - c.data.sum() / size**2)
    return np.array(out)


def brick_with_masks(root: Path, with_maskbits: bool = True, invvar_bands: str = "grz"):
    rng = np.random.default_rng(6)
    files = synthetic_brick(root, "1500p020", 150.0, 2.0, seed=6)
    maskbits = np.zeros((100, 120), np.int16)
    maskbits[rng.random((100, 120)) < 0.05] = 1 << 3
    maskbits[20:30, 40:70] |= 1 << 1  # a bright-star disc
    invvar = {}
    for k, b in enumerate(invvar_bands):
        iv = rng.uniform(50.0, 200.0, (100, 120))
        iv[rng.random((100, 120)) < 0.03 * (k + 1)] = 0.0
        iv[:, 110 + k:] = 0.0  # no exposure along one side
        invvar[b] = iv
    write_mask_files(root, "1500p020", tan_header(150.0, 2.0, 120, 100),
                     maskbits if with_maskbits else None, invvar)
    return files


@pytest.mark.parametrize("maskbits, bands", [(True, "grz"), (True, ""), (False, "grz"),
                                             (False, "r")])
def test_masked_fraction_against_numpy(tmp_path, maskbits, bands):
    files = brick_with_masks(tmp_path, maskbits, bands)
    x = [60.3, 0.2, 119.4, 50.7, 70.1, 1.4, 55.0, 112.0]
    y = [49.8, 50.6, 40.2, 0.1, 99.3, 98.9, 25.2, 70.0]
    ra, dec = pixel_to_sky(files, x, y)
    stamps = cut_stamps("1500p020", files, ra, dec, 15)
    expected = masked_oracle(files, "1500p020", ra, dec, 15)
    assert stamps.masked is not None
    assert np.allclose(stamps.masked, expected, rtol=0, atol=1e-12)
    # off-brick pixels count as masked
    assert (stamps.masked >= 1.0 - stamps.covered - 1e-12).all()
    assert len(np.unique(stamps.masked)) > 3  # not all 0 or 1: the masks' pixels count
    # the images are the same as without the mask files
    check_against_cutout2d(files, "1500p020", ra, dec, 15)


def test_masked_fraction_is_unknown_without_mask_files(tmp_path):
    import pyarrow as pa

    from astroembed.readers.bricks import attach_brick_stamps

    files = synthetic_brick(tmp_path / "plain", "1500p020", 150.0, 2.0)
    assert cut_stamps("1500p020", files, [150.0], [2.0], 16).masked is None
    out = attach_brick_stamps(pa.table({"RA": [150.0, 151.0], "DEC": [2.0, 2.0]}),
                              tmp_path / "plain", 16)
    assert out.column("stamp_masked_fraction").to_pylist() == [None, None]
    assert out.schema.field("stamp_masked_fraction").type == pa.float32()
    masked = brick_with_masks(tmp_path / "masked")
    ra, dec = pixel_to_sky(masked, [60.3, 119.4], [49.8, 40.2])
    out = attach_brick_stamps(pa.table({"RA": [*ra, 151.0], "DEC": [*dec, 2.0]}),
                              tmp_path / "masked", 16)
    got = out.column("stamp_masked_fraction").to_pylist()
    assert got[2] is None
    assert np.allclose(got[:2], masked_oracle(masked, "1500p020", ra, dec, 16), atol=1e-6)


def test_truncated_mask_file(tmp_path):
    files = brick_with_masks(tmp_path)
    path = files["g"].parent / "legacysurvey-1500p020-maskbits.fits.fz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"maskbits\.fits\.fz.*(truncated|download)"):
        cut_stamps("1500p020", files, [150.0], [2.0], 16)


def test_simulated_brick_masks_saturated_pixels(tmp_path):
    from astroembed.simulation import images as img
    from astroembed.simulation.bricks import SATURATION, write_brick

    # a bright star (saturated core) and a faint galaxy
    files = write_brick(tmp_path, "1500p020", 150.0, 2.0, np.array([150.0, 150.002]),
                        np.array([2.0, 2.002]), {b: np.array([3000.0, 20.0]) for b in "grz"},
                        r_eff=np.array([1.0, 1.0]), n=np.array([1.0, 1.0]),
                        q=np.array([1.0, 0.7]), pa=np.array([0.0, 30.0]),
                        is_point=np.array([True, False]), rng=np.random.default_rng(9),
                        width=120)
    folder = files["g"].parent
    with fits.open(folder / "legacysurvey-1500p020-maskbits.fits.fz") as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
        maskbits = np.array(hdul[1].data)
    assert maskbits.dtype == np.int16
    for k, band in enumerate("grz"):
        image = decompressed(files[band])[0]
        bit = (maskbits & (1 << (2 + k))) != 0  # DR9 SATUR_G, SATUR_R, SATUR_Z
        margin = 10 * img.SKY_SIGMA[band]
        assert bit.sum() > 0
        assert (image[bit] > SATURATION - margin).all()
        assert bit[image > SATURATION + margin].all()
        invvar = decompressed(folder / f"legacysurvey-1500p020-invvar-{band}.fits.fz")[0]
        assert np.allclose(invvar, 1.0 / img.SKY_SIGMA[band] ** 2, rtol=1e-3)
    assert (maskbits & ~np.int16(0b11100)).max() == 0
    # the star's stamp is partly masked, the galaxy's not at all
    ra, dec = [150.0, 150.002], [2.0, 2.002]
    stamps = cut_stamps("1500p020", files, ra, dec, 21)
    assert stamps.masked[0] > 0 and stamps.masked[1] == 0
    assert np.allclose(stamps.masked, masked_oracle(files, "1500p020", ra, dec, 21))


@pytest.mark.parametrize("damage", ["truncated", "missing band", "no wcs"])
def test_attach_skips_a_bad_brick_when_asked(tmp_path, damage):
    import pyarrow as pa

    from astroembed.readers.bricks import attach_brick_stamps

    good = synthetic_brick(tmp_path, "1500p020", 150.0, 2.0, seed=7)
    bad = synthetic_brick(tmp_path, "1510p020", 151.0, 2.0, seed=8)
    if damage == "truncated":
        broken = bad["r"]
        broken.write_bytes(broken.read_bytes()[:3000])
    elif damage == "missing band":
        bad["z"].unlink()
        broken = bad["z"]
    else:
        broken = bad["g"]
        planes = {b: np.ones((100, 120)) for b in "g"}
        broken.unlink()
        write_brick_files(tmp_path, "1510p020", fits.Header(), planes)
    catalog = pa.table({"RA": [150.0, 151.0, 150.001], "DEC": [2.0, 2.0, 2.001],
                        "BRICKNAME": ["1500p020", "1510p020", "1500p020"]})
    with pytest.raises(InputError, match=str(broken.name).replace(".", r"\.")):
        attach_brick_stamps(catalog, tmp_path, 16)
    skipped: dict[str, str] = {}
    out = attach_brick_stamps(catalog, tmp_path, 16, skipped)
    assert list(skipped) == [str(broken)]
    assert "again" in skipped[str(broken)] or "download" in skipped[str(broken)]
    images = out.column("image").combine_chunks()
    assert images.is_valid().to_pylist() == [True, False, True]
    pixels = images.storage.values.to_numpy().reshape(-1, 3, 16, 16)  # null rows included
    for i in (0, 2):
        assert np.array_equal(pixels[i], cutout2d_stamp(good, catalog["RA"][i].as_py(),
                                                        catalog["DEC"][i].as_py(), 16))
    assert out.column("stamp_offset_x").is_valid().to_pylist() == [True, False, True]
    covered = out.column("stamp_covered_fraction").to_pylist()
    if damage == "no wcs":  # its header is unusable: the brick takes no part at all
        assert out.column("stamp_brick").to_pylist() == ["1500p020", None, "1500p020"]
        assert covered[1] is None
    else:
        assert out.column("stamp_brick").to_pylist() == ["1500p020", "1510p020", "1500p020"]
        assert covered[1] == 0.0
