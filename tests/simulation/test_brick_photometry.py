"""Stamps cut from a simulated brick coadd hold the light the sweep catalog says they hold.

The oracle is the sweep: each compact, isolated object's stamp sum (all its pixels, no
background to subtract: the coadds are sky-subtracted) must equal the catalogued FLUX_<band>
within the noise, which is the sum over the stamp of the brick's own inverse variances (read
with astropy) plus the catalogue's 1 / FLUX_IVAR. Extended profiles (de Vaucouleurs, large
Sersic) lose their wings beyond a stamp, as they do in the survey, so they are left out, as
are objects with a neighbour whose light falls on the stamp.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS

from astroembed.readers import read_catalog
from astroembed.readers.bricks import brick_path, cut_stamps, find_bricks

SIZE = 64  # 16.8 arcsec: several half-light radii of a compact galaxy
PIXSCALE = 0.262  # arcsec per pixel of the coadds


def sweep(survey) -> pa.Table:
    files = sorted((survey / "legacysurvey" / "sweep").rglob("sweep-*.fits"))
    return pa.concat_tables(read_catalog(f) for f in files)


def test_stamp_sums_equal_the_sweep_fluxes_within_the_noise(brick_survey):
    (name, files), = find_bricks(brick_survey / "legacysurvey").items()
    rows = sweep(brick_survey)
    ra, dec = rows.column("RA").to_numpy(), rows.column("DEC").to_numpy()
    kind = np.asarray(rows.column("TYPE").to_pylist())
    radius = np.nan_to_num(rows.column("SHAPE_R").to_numpy(zero_copy_only=False), nan=0.0)
    mine = np.asarray(rows.column("BRICKNAME").to_pylist()) == name
    # a neighbour within a stamp diagonal (plus its own light's reach) spoils the sum
    cosd = np.cos(np.radians(dec))
    sep = np.hypot((ra[:, None] - ra[None, :]) * cosd[:, None], dec[:, None] - dec[None, :])
    np.fill_diagonal(sep, np.inf)
    isolated = sep.min(axis=1) * 3600 > SIZE * PIXSCALE
    compact = (kind == "PSF") | ((kind == "EXP") & (radius < 1.5))
    chosen = np.flatnonzero(mine & isolated & compact)
    assert chosen.size >= 4, "too few compact, isolated objects in the brick to test"

    stamps = cut_stamps(name, files, ra[chosen], dec[chosen], SIZE)
    assert (stamps.covered == 1.0).all()
    for k, band in enumerate("grz"):
        path = brick_path(brick_survey / "legacysurvey", name, band, "invvar")
        with fits.open(path) as hdul:
            invvar, wcs = np.asarray(hdul[1].data, dtype=np.float64), WCS(hdul[1].header)
        variance = np.array([
            (1.0 / Cutout2D(invvar, SkyCoord(ra[i], dec[i], unit="deg"), (SIZE, SIZE),
                            wcs=wcs).data).sum() for i in chosen])
        flux = rows.column(f"FLUX_{band.upper()}").to_numpy()[chosen]
        ivar = rows.column(f"FLUX_IVAR_{band.upper()}").to_numpy()[chosen]
        sigma = np.sqrt(variance + 1.0 / ivar)
        pull = (stamps.images[:, k].sum(axis=(1, 2), dtype=np.float64) - flux) / sigma
        assert np.all(np.abs(pull) < 4), (band, pull)
        assert abs(pull.mean()) < 4 / np.sqrt(pull.size), (band, pull)
