"""A magnitude-limited galaxy population (BGS-like, r < 19.5) and a sprinkle of stars.

Galaxies are drawn from two Schechter luminosity functions (red and blue, r band, with
luminosity evolution) over the comoving volume to z = 0.6, then kept if their apparent r
magnitude, computed from their own SED through the DECam filter, passes the limit. Type,
dust, line strengths, size, Sersic index and velocity dispersion follow the scaling relations
of low-redshift surveys (SDSS/GAMA), with scatter. Stellar mass uses the Bell et al. (2003)
colour–M/L relation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from astroembed.simulation.sed import GalaxySED, galaxy_sed, star_sed

R_LIMIT = 19.5
Z_MAX = 0.6
H0, OM0 = 70.0, 0.3
# r-band Schechter parameters at z = 0.1 for H0 = 70 (Blanton et al. 2005-like, split by colour).
RED_LF = dict(mstar=-21.45, alpha=-0.9, phistar=0.0055, q=1.2)
BLUE_LF = dict(mstar=-21.1, alpha=-1.1, phistar=0.005, q=1.6)
DECAM = ("decam2014-g", "decam2014-r", "decam2014-z")
SDSS = ("sdss2010-g", "sdss2010-r")
OBS_WAVE = np.arange(3300.0, 11002.0, 2.0)  # observed-frame grid for photometry (A)
REST_WAVE = OBS_WAVE  # rest-frame grid for absolute magnitudes (A)


@dataclass
class Galaxies:
    """True properties of simulated galaxies (arrays of length N)."""

    z: np.ndarray
    abs_mag_r: np.ndarray
    red: np.ndarray  # bool: drawn from the red (quiescent) population
    sed: GalaxySED
    amplitude: np.ndarray  # scales the SED shape to observed f_lambda, erg/s/cm2/A
    mags: dict[str, np.ndarray]  # observed AB magnitudes in DECAM and SDSS bands
    log_mstar: np.ndarray
    r_eff: np.ndarray  # half-light radius, arcsec
    sersic_n: np.ndarray
    axis_ratio: np.ndarray
    pos_angle: np.ndarray  # degrees east of north

    def __len__(self) -> int:
        return len(self.z)


@lru_cache(maxsize=1)
def _cosmo():
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=H0, Om0=OM0)


@lru_cache(maxsize=8)
def _filters(names: tuple[str, ...]):
    import speclite.filters

    return speclite.filters.load_filters(*names)


def _maggies(names: tuple[str, ...], flam: np.ndarray, wave: np.ndarray) -> dict[str, np.ndarray]:
    """AB maggies of f_lambda spectra (erg/s/cm2/A) through the named filters."""
    table = _filters(names).get_ab_maggies(flam, wave)
    return {n: np.asarray(table[n], dtype=float) for n in names}


def _schechter_sample(rng, alpha: float, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Draw M - M* from a Schechter function truncated to [lower, upper] (inverse CDF)."""
    grid = np.linspace(-6.0, 10.0, 4000)
    x = 10 ** (-0.4 * grid)
    cdf = np.cumsum(x ** (alpha + 1) * np.exp(-x))
    cdf /= cdf[-1]
    lo, hi = np.interp(lower, grid, cdf), np.interp(upper, grid, cdf)
    return np.interp(lo + rng.random(len(lower)) * (hi - lo), cdf, grid)


def _draw_lf(rng, n: int, lf: dict, r_limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw (z, M_r) pairs with density dV/dz * phi(M, z) that can reach r < ``r_limit``."""
    cosmo = _cosmo()
    zg = np.linspace(0.005, Z_MAX, 600)
    dm = cosmo.distmod(zg).value
    dvdz = cosmo.differential_comoving_volume(zg).value
    # No galaxy with a positive K-correction is brighter than this; 0.5 mag of slack for blue SEDs.
    mlim = r_limit - dm + 0.5
    mbright = -24.5
    weight = np.empty_like(zg)
    for i, (mz, ml) in enumerate(zip(lf["mstar"] - lf["q"] * (zg - 0.1), mlim)):
        m = np.linspace(mbright, ml, 400)
        x = 10 ** (-0.4 * (m - mz))
        weight[i] = np.trapezoid(lf["phistar"] * x ** (lf["alpha"] + 1) * np.exp(-x), m) * dvdz[i]
    cdf = np.cumsum(weight)
    cdf /= cdf[-1]
    z = np.interp(rng.random(n), cdf, zg)
    mz = lf["mstar"] - lf["q"] * (z - 0.1)
    ml = np.interp(z, zg, mlim)
    return z, mz + _schechter_sample(rng, lf["alpha"], mbright - mz, ml - mz)


def _sed_params(rng, red: np.ndarray, abs_mag: np.ndarray) -> GalaxySED:
    """Type, dust and line parameters from colour class and luminosity, with scatter."""
    n = len(red)
    lum = abs_mag + 21.0  # > 0 fainter than M_r = -21
    sf = np.where(red, rng.beta(1.0, 25.0, n), 0.15 + 0.85 * rng.beta(1.3, 3.0, n))
    sf = np.clip(sf + np.where(red, 0, 0.08 * np.clip(lum, -2, 3)), 0, 1)
    av = np.where(red, rng.uniform(0.0, 0.2, n),
                  np.clip(0.15 + 0.6 * sf * rng.lognormal(0, 0.35, n) - 0.1 * lum, 0.0, 2.0))
    sigma_v = np.where(red, 10 ** (2.25 - 0.1 * lum + rng.normal(0, 0.06, n)),
                       10 ** (1.8 - 0.08 * lum + rng.normal(0, 0.08, n)))
    ha_ew = np.where(red, rng.lognormal(np.log(1.5), 0.5, n),
                     10 ** (0.7 + 1.3 * (sf - 0.15) / 0.85 + rng.normal(0, 0.2, n)))
    oiii_hb = np.where(red, rng.uniform(1.0, 3.0, n),
                       np.clip(10 ** (-0.35 + 0.18 * lum + rng.normal(0, 0.2, n)), 0.1, 8.0))
    nii_ha = np.where(red, rng.uniform(0.7, 1.5, n),
                      np.clip(0.42 - 0.06 * lum + rng.normal(0, 0.05, n), 0.04, 0.7))
    oii_hb = np.where(red, rng.uniform(3.0, 5.0, n), np.clip(rng.normal(2.8, 0.6, n), 1.0, 5.0))
    return GalaxySED(sf=sf, av=av, sigma_v=sigma_v, ha_ew=ha_ew, oiii_hb=oiii_hb,
                     nii_ha=nii_ha, oii_hb=oii_hb)


def observe(sed: GalaxySED, z: np.ndarray, abs_mag_r: np.ndarray, chunk: int = 500):
    """Scale SEDs to M_r and place them at z: returns (amplitude, observed AB magnitudes).

    The amplitude A makes ``A * galaxy_sed(params, wave, z)`` the observed f_lambda
    in erg/s/cm2/A, so spectra and images use the same normalisation as the photometry.
    """
    cosmo = _cosmo()
    d_ratio2 = (10.0 / (cosmo.luminosity_distance(z).to("pc").value)) ** 2
    amp = np.empty(len(z))
    mags = {b: np.empty(len(z)) for b in DECAM + SDSS}
    for s in range(0, len(z), chunk):
        sl = slice(s, s + chunk)
        part = sed.take(np.arange(len(z))[sl])
        rest = galaxy_sed(part, REST_WAVE)
        m_rest = _maggies(("decam2014-r",), rest, REST_WAVE)["decam2014-r"]
        a_abs = 10 ** (-0.4 * abs_mag_r[sl]) / m_rest  # amplitude at 10 pc
        amp[sl] = a_abs * d_ratio2[sl] / (1 + z[sl])
        obs = galaxy_sed(part, OBS_WAVE, z[sl]) * amp[sl, None]
        for band, val in _maggies(DECAM + SDSS, obs, OBS_WAVE).items():
            mags[band][sl] = -2.5 * np.log10(val)
    return amp, mags


def sample_galaxies(rng: np.random.Generator, n: int, r_limit: float = R_LIMIT) -> Galaxies:
    """Draw ``n`` galaxies brighter than ``r_limit`` (DECam r, AB, before extinction)."""
    n_red_lf, n_blue_lf = _lf_counts(r_limit)
    frac_red = n_red_lf / (n_red_lf + n_blue_lf)
    keep: list[dict] = []
    total = 0
    while total < n:
        m = int((n - total) * 1.6) + 50
        red = rng.random(m) < frac_red
        z = np.empty(m)
        mag = np.empty(m)
        for flag, lf in ((True, RED_LF), (False, BLUE_LF)):
            sel = red == flag
            z[sel], mag[sel] = _draw_lf(rng, int(sel.sum()), lf, r_limit)
        sed = _sed_params(rng, red, mag)
        amp, mags = observe(sed, z, mag)
        ok = np.flatnonzero(mags["decam2014-r"] < r_limit)
        keep.append(dict(z=z[ok], mag=mag[ok], red=red[ok], sed=sed.take(ok), amp=amp[ok],
                         mags={k: v[ok] for k, v in mags.items()}))
        total += len(ok)
    cat = lambda key: np.concatenate([k[key] for k in keep])[:n]  # noqa: E731
    sed = GalaxySED(**{f: np.concatenate([getattr(k["sed"], f) for k in keep])[:n]
                       for f in GalaxySED.__dataclass_fields__})
    mags = {b: np.concatenate([k["mags"][b] for k in keep])[:n] for b in DECAM + SDSS}
    z, abs_mag, red = cat("z"), cat("mag"), cat("red")
    rest_gr = _rest_color(sed)
    # Bell et al. (2003): log(M/L_r) = -0.306 + 1.097 (g - r); M_sun,r = 4.65.
    log_mstar = -0.306 + 1.097 * rest_gr + 0.4 * (4.65 - abs_mag) + rng.normal(0, 0.1, n)
    r_eff, n_s, q = _structure(rng, red, abs_mag, z)
    return Galaxies(z=z, abs_mag_r=abs_mag, red=red, sed=sed, amplitude=cat("amp"), mags=mags,
                    log_mstar=log_mstar, r_eff=r_eff, sersic_n=n_s, axis_ratio=q,
                    pos_angle=rng.uniform(0, 180, n))


@lru_cache(maxsize=4)
def _lf_counts(r_limit: float) -> tuple[float, float]:
    """Expected numbers of red and blue galaxies that can pass the limit (for mixing)."""
    cosmo = _cosmo()
    zg = np.linspace(0.005, Z_MAX, 300)
    dvdz = cosmo.differential_comoving_volume(zg).value
    mlim = r_limit - cosmo.distmod(zg).value + 0.5
    out = []
    for lf in (RED_LF, BLUE_LF):
        w = []
        for mz, ml in zip(lf["mstar"] - lf["q"] * (zg - 0.1), mlim):
            m = np.linspace(-24.5, ml, 300)
            x = 10 ** (-0.4 * (m - mz))
            w.append(np.trapezoid(lf["phistar"] * x ** (lf["alpha"] + 1) * np.exp(-x), m))
        out.append(float(np.trapezoid(np.array(w) * dvdz, zg)))
    return out[0], out[1]


def _rest_color(sed: GalaxySED) -> np.ndarray:
    rest = galaxy_sed(sed, REST_WAVE)
    m = _maggies(("sdss2010-g", "sdss2010-r"), rest, REST_WAVE)
    return -2.5 * np.log10(m["sdss2010-g"] / m["sdss2010-r"])


def _structure(rng, red, abs_mag, z):
    """Half-light radius (arcsec), Sersic index and axis ratio (Shen et al. 2003-like)."""
    n = len(z)
    lum = abs_mag + 21.0
    re_kpc = np.where(red, 10 ** (0.55 - 0.26 * lum + rng.normal(0, 0.15, n)),
                      10 ** (0.6 - 0.1 * lum + rng.normal(0, 0.18, n)))
    kpc_per_arcsec = _cosmo().kpc_proper_per_arcmin(z).value / 60.0
    r_eff = re_kpc / kpc_per_arcsec
    sersic_n = np.where(red, np.clip(rng.normal(4.0, 0.7, n), 2.0, 6.0),
                        np.clip(rng.lognormal(0.1, 0.3, n), 0.6, 2.5))
    q = np.where(red, rng.uniform(0.5, 1.0, n), rng.uniform(0.2, 1.0, n))
    return r_eff, sersic_n, q


@dataclass
class Stars:
    temp: np.ndarray
    amplitude: np.ndarray  # scales star_sed to observed f_lambda
    mags: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.temp)


def sample_stars(rng: np.random.Generator, n: int) -> Stars:
    """Field stars with r ~ 15-20 and temperatures 3500-9000 K."""
    temp = np.clip(rng.lognormal(np.log(5200), 0.22, n), 3300, 10000)
    r_mag = rng.uniform(15.0, 20.0, n)
    shape = star_sed(temp, OBS_WAVE)
    m = _maggies(("decam2014-r",), shape, OBS_WAVE)["decam2014-r"]
    amp = 10 ** (-0.4 * r_mag) / m
    mags = {b: -2.5 * np.log10(v) for b, v in _maggies(DECAM, shape * amp[:, None], OBS_WAVE).items()}
    return Stars(temp=temp, amplitude=amp, mags=mags)
