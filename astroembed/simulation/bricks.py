"""Small Legacy Survey brick coadds holding simulated galaxies, in the data centre's layout.

Files as the data centre publishes them (``coadd/<ddd>/<brick>/legacysurvey-<brick>-
{image-g,image-r,image-z,invvar-g,invvar-r,invvar-z,maskbits}.fits.fz``): an empty primary
HDU and a RICE tile-compressed image (one tile per row) with a TAN WCS centred on the brick,
0.262"/pixel, north up and east left, in nanomaggies. Galaxies are rendered with the same
Sersic/point-source models and PSFs as the simulated cutouts, added into the brick, and the
sky noise is drawn once over the whole image. Bricks are smaller than the real 3600 x 3600
so tests stay fast.

The inverse variance is the sky noise's, 1 / SKY_SIGMA^2. The mask bits (int16) set the
survey's SATUR_G/R/Z bits where the noiseless model exceeds ``SATURATION`` nanomaggies in
that band: the cores of the brightest stars, as a real coadd's saturated pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from astroembed.catalog.atomic import atomic_path
from astroembed.simulation import images as img

STAMP = 64  # pixels rendered around each object before it is added into the brick
# A pixel level (nanomaggies) above which a detector saturates: stars brighter than about
# r = 16 reach it in their central pixel, as in the real coadds.
SATURATION = 10.0
SATUR_BITS = {"g": 1 << 2, "r": 1 << 3, "z": 1 << 4}  # DR9 maskbits SATUR_G, SATUR_R, SATUR_Z


def brick_header(ra_centre: float, dec_centre: float, width: int):
    """A brick's TAN WCS header: reference pixel at the image centre, 0.262"/pixel."""
    from astropy.io import fits

    h = fits.Header()
    for k, v in dict(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=float(ra_centre),
                     CRVAL2=float(dec_centre), CRPIX1=(width + 1) / 2.0,
                     CRPIX2=(width + 1) / 2.0, CD1_1=-img.PIXSCALE / 3600.0, CD1_2=0.0,
                     CD2_1=0.0, CD2_2=img.PIXSCALE / 3600.0, RADESYS="ICRS",
                     EQUINOX=2000.0, BUNIT="nanomaggy", SURVEY="LegacySurvey",
                     VERSION="DR9").items():
        h[k] = v
    return h


def render_into(shape: tuple[int, int], x: np.ndarray, y: np.ndarray,
                fluxes: dict[str, np.ndarray], r_eff: np.ndarray, n: np.ndarray,
                q: np.ndarray, pa: np.ndarray, is_point: np.ndarray) -> np.ndarray:
    """Noiseless (3, H, W) g, r, z image with the objects at 0-based pixel positions (x, y).

    Each object is rendered on a STAMP-pixel grid placed so its centre falls at (x, y), then
    added into the image (the part outside it is lost, as at a real brick edge).
    """
    height, width = shape
    out = np.zeros((3, height, width), dtype=np.float64)
    x0 = np.floor(x - STAMP / 2.0 + 1.0).astype(np.int64)
    y0 = np.floor(y - STAMP / 2.0 + 1.0).astype(np.int64)
    # the renderer centres an object at stamp pixel STAMP/2 - 0.5 + d
    dx, dy = x - x0 - (STAMP / 2.0 - 0.5), y - y0 - (STAMP / 2.0 - 0.5)
    for start in range(0, len(x), 64):
        sl = slice(start, min(start + 64, len(x)))
        models = img.render_sersic(STAMP, r_eff[sl], n[sl], q[sl], pa[sl], dx[sl], dy[sl])
        pts = is_point[sl]
        if pts.any():
            models[pts] = img.point_sources(STAMP, int(pts.sum()), dx[sl][pts], dy[sl][pts])
        stamps, _ = img.observe_stamps(models, {b: f[sl] for b, f in fluxes.items()}, STAMP,
                                       None)
        for j, i in enumerate(range(sl.start, sl.stop)):
            xa, xb = max(x0[i], 0), min(x0[i] + STAMP, width)
            ya, yb = max(y0[i], 0), min(y0[i] + STAMP, height)
            if xa < xb and ya < yb:
                out[:, ya:yb, xa:xb] += stamps[j][:, ya - y0[i]:yb - y0[i], xa - x0[i]:xb - x0[i]]
    return out


def write_brick(root: str | os.PathLike, brick: str, ra_centre: float, dec_centre: float,
                ra: np.ndarray, dec: np.ndarray, fluxes: dict[str, np.ndarray],
                r_eff: np.ndarray, n: np.ndarray, q: np.ndarray, pa: np.ndarray,
                is_point: np.ndarray, rng: np.random.Generator, width: int = 400) -> dict[str, Path]:
    """Write one simulated brick (images, inverse variances, mask bits) under ``root``.

    Objects are given by position (deg) and the simulator's galaxy parameters (fluxes in
    nanomaggies per band, ``r_eff`` arcsec, Sersic ``n``, axis ratio ``q``, position angle
    ``pa`` deg); those off the brick are skipped. Returns {band: image file}.
    """
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS

    from astroembed.readers.bricks import brick_path

    header = brick_header(ra_centre, dec_centre, width)
    header["BRICKNAM"] = brick
    x, y = WCS(header).world_to_pixel(SkyCoord(np.asarray(ra), np.asarray(dec), unit="deg"))
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    near = np.flatnonzero((x > -STAMP) & (x < width + STAMP) & (y > -STAMP) & (y < width + STAMP))
    model = render_into((width, width), x[near], y[near],
                        {b: np.asarray(f)[near] for b, f in fluxes.items()},
                        np.asarray(r_eff)[near], np.asarray(n)[near], np.asarray(q)[near],
                        np.asarray(pa)[near], np.asarray(is_point)[near])
    written = {}
    maskbits = np.zeros((width, width), dtype=np.int16)
    for k, band in enumerate(img.BANDS):
        sigma = img.SKY_SIGMA[band]
        image = (model[k] + rng.normal(0.0, sigma, model[k].shape)).astype(np.float32)
        written[band] = _write_compressed(brick_path(root, brick, band), image, header, band)
        invvar = np.full(image.shape, 1.0 / sigma**2, dtype=np.float32)
        _write_compressed(brick_path(root, brick, band, "invvar"), invvar, header, band)
        maskbits[model[k] > SATURATION] |= SATUR_BITS[band]
    _write_compressed(brick_path(root, brick, "", "maskbits"), maskbits, header, None)
    return written


def _write_compressed(path: Path, data: np.ndarray, header, band: str | None) -> Path:
    """Empty primary HDU + RICE tile-compressed image, one row per tile (as the coadds)."""
    from astropy.io import fits

    h = header.copy()
    if band is not None:
        h["BAND"] = band
    hdu = fits.CompImageHDU(data, header=h, compression_type="RICE_1",
                            tile_shape=(1, data.shape[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp, overwrite=True)
    return path
