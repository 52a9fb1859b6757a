"""How realistic is the simulator? Compare with 10,000 real SDSS main-sample galaxies.

    .venv/bin/python examples/realism.py [PATH/TO/sdss_main_10000gal_ugriz_specz.fits]

Draws simulated galaxies to the SDSS main-sample limit (r < 17.77, SDSS filters) with the
simulator's own population code and prints, per redshift bin of 0.05, the median g-r of both
and the redshift quartiles. The reference file lives in ../shared/fixtures/real/reference/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

from astroembed.simulation.population import sample_galaxies

DEFAULT = Path(__file__).resolve().parents[2] / "shared/fixtures/real/reference/sdss_main_10000gal_ugriz_specz.fits"


def main(path: Path, n: int = 3000, seed: int = 11) -> None:
    with fits.open(path) as h:
        d = h[1].data
        mags = 22.5 - 2.5 * np.log10(np.clip(d["MODELFLUX"], 1e-3, None)) - d["EXTINCTION"]
        ref_z, ref_gr = np.asarray(d["Z"], float), mags[:, 1] - mags[:, 2]
    gal = sample_galaxies(np.random.default_rng(seed), n, r_limit=17.77)
    keep = gal.mags["sdss2010-r"] < 17.77
    z, gr = gal.z[keep], (gal.mags["sdss2010-g"] - gal.mags["sdss2010-r"])[keep]
    print(f"{'z bin':>11s} {'n sim':>6s} {'g-r sim':>8s} {'g-r SDSS':>9s} {'diff':>6s}")
    for lo in np.arange(0.02, 0.25, 0.05):
        s = (z >= lo) & (z < lo + 0.05)
        r = (ref_z >= lo) & (ref_z < lo + 0.05)
        a, b = np.median(gr[s]), np.median(ref_gr[r])
        print(f"{lo:.2f}-{lo + 0.05:.2f} {s.sum():6d} {a:8.3f} {b:9.3f} {a - b:+6.3f}")
    q = [25, 50, 75]
    print("z quartiles  sim", np.round(np.percentile(z, q), 3), " SDSS", np.round(np.percentile(ref_z, q), 3))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
