"""Rest-frame galaxy and star spectral energy distributions, evaluated analytically.

A galaxy's continuum is a mix of three stellar populations, each a blackbody shaped by the
features that make real spectra recognisable: an old population (K giants) with the 4000 A
break from metal-line blanketing, an intermediate one (A stars) with the Balmer break and deep
Balmer absorption, and a young one (OB stars). A single ``sf`` parameter in [0, 1] moves a
galaxy from quiescent (old light, deep Ca H&K, Mg b, Na D, faint LINER-like lines) to
star-forming (blue continuum, strong nebular emission at HII-region ratios). Dust follows
Calzetti et al. (2000); nebular lines are attenuated more than stars (Balmer decrement).

Everything is vectorised: parameters are arrays of length N and wavelengths either a common
1-D grid or an (N, L) array, so the same code makes the photometry (observed-frame grid) and
the spectra (DESI arms). Units are f_lambda, arbitrary normalisation (the survey code scales
them to an absolute magnitude).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

C_KMS = 299_792.458

# Vacuum rest wavelengths (A), as DESI uses.
OII = (3727.09, 3729.88)
HDELTA, HGAMMA, HBETA, HALPHA = 4102.89, 4341.68, 4862.68, 6564.61
OIII = (4960.30, 5008.24)
NII = (6549.86, 6585.27)
SII = (6718.29, 6732.67)
# Stellar absorption (vacuum): Ca K, Ca H + H-epsilon, G band, Mg b, Na D.
METAL_LINES = np.array([3934.78, 3969.59, 4305.6, 5176.7, 5895.6])
METAL_EW = np.array([9.0, 8.0, 4.5, 5.0, 3.5])  # A, for a purely old population
BALMER_ABS = np.array([HDELTA, HGAMMA, HBETA, HALPHA, 3890.2])
BALMER_EW = np.array([8.0, 7.0, 7.0, 6.0, 6.0])  # A, for a purely intermediate population


@dataclass
class GalaxySED:
    """Per-galaxy SED parameters (arrays of equal length N)."""

    sf: np.ndarray  # 0 quiescent ... 1 strongly star-forming
    av: np.ndarray  # V-band attenuation of the stars (mag)
    sigma_v: np.ndarray  # stellar/gas velocity dispersion, km/s
    ha_ew: np.ndarray  # rest-frame H-alpha emission equivalent width before dust, A
    oiii_hb: np.ndarray  # [OIII]5007 / H-beta
    nii_ha: np.ndarray  # [NII]6584 / H-alpha
    oii_hb: np.ndarray  # [OII]3727+3729 / H-beta (intrinsic)

    def __len__(self) -> int:
        return len(self.sf)

    def take(self, idx: np.ndarray) -> "GalaxySED":
        return GalaxySED(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


def planck(wave: np.ndarray, temp: float) -> np.ndarray:
    """Blackbody f_lambda shape, normalised to 1 at 5500 A."""
    hc_k = 1.438777e8  # A K
    def bb(w):
        return w ** -5.0 / np.expm1(hc_k / (w * temp))
    return bb(wave) / bb(5500.0)


def _step_blue(wave: np.ndarray, edge: float, width: float) -> np.ndarray:
    """Smooth step: 1 well blueward of ``edge``, 0 well redward."""
    return 1.0 / (1.0 + np.exp(np.clip((wave - edge) / width, -50, 50)))


def population_templates(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Old, intermediate and young continua (no absorption lines), each 1 at 5500 A."""
    old = planck(wave, 4620.0) * (1.0 - 0.45 * _step_blue(wave, 4000.0, 15.0))
    old = old * np.where(wave < 3200.0, (np.maximum(wave, 1.0) / 3200.0) ** 1.5, 1.0)
    inter = planck(wave, 8200.0) * (1.0 - 0.45 * _step_blue(wave, 3700.0, 35.0))
    young = planck(wave, 22000.0) * (1.0 - 0.15 * _step_blue(wave, 3660.0, 30.0))
    return old, inter, young


def population_weights(sf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Light fractions at 5500 A of the old, intermediate and young populations."""
    sf = np.asarray(sf, dtype=float)
    young = 0.55 * sf ** 1.6
    inter = 0.45 * np.sin(np.pi * np.clip(sf, 0, 1) ** 0.8) ** 2 + 0.05
    old = np.clip(1.0 - young - inter, 0.0, None)
    total = old + inter + young
    return old / total, inter / total, young / total


def calzetti_k(wave: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) k(lambda) with R_V = 4.05; lambda in A."""
    um = np.asarray(wave, dtype=float) / 1e4
    um = np.clip(um, 0.12, 2.2)
    inv = 1.0 / um
    short = 2.659 * (-2.156 + 1.509 * inv - 0.198 * inv**2 + 0.011 * inv**3) + 4.05
    long = 2.659 * (-1.857 + 1.040 * inv) + 4.05
    return np.where(um < 0.63, short, long)


_TEMPLATE_STEP = 0.5
_TEMPLATE_WAVE = np.arange(900.0, 14000.0, _TEMPLATE_STEP)


@lru_cache(maxsize=1)
def _template_table() -> np.ndarray:
    """Old, intermediate, young continua and Calzetti k on a fine rest grid, shape (L, 4)."""
    return np.ascontiguousarray(
        np.vstack([*population_templates(_TEMPLATE_WAVE), calzetti_k(_TEMPLATE_WAVE)]).T)


def _lookup(rest: np.ndarray) -> np.ndarray:
    """Linear interpolation of the template table at rest wavelengths: shape rest.shape + (4,)."""
    x = np.clip((rest - _TEMPLATE_WAVE[0]) / _TEMPLATE_STEP, 0, len(_TEMPLATE_WAVE) - 1.000001)
    i = x.astype(np.intp)
    f = (x - i)[..., None]
    table = _template_table()
    lo = table[i]
    return lo + (table[i + 1] - lo) * f


def _add_lines(out: np.ndarray, wave: np.ndarray, centre: np.ndarray, sigma: np.ndarray,
               amp: np.ndarray) -> None:
    """Add Gaussians (one per row) to ``out`` (N, L) on the uniform grid ``wave``, in place.

    Only a window of +-6 sigma around each centre is touched, which keeps a spectrum with
    dozens of lines as cheap as its continuum.
    """
    step = wave[1] - wave[0]
    width = int(np.ceil(12 * sigma.max() / step)) + 2
    start = np.clip(np.floor((centre - 6 * sigma - wave[0]) / step).astype(np.intp),
                    0, max(len(wave) - width, 0))
    idx = start[:, None] + np.arange(min(width, len(wave)))
    rows = np.arange(len(centre))[:, None]
    w = wave[idx]
    out[rows, idx] += amp[:, None] * np.exp(-0.5 * ((w - centre[:, None]) / sigma[:, None]) ** 2)


def _absorption(params: GalaxySED, z: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """Fractional absorption depth (N, L) of metal and Balmer lines in the observed frame."""
    f_old, f_int, f_young = population_weights(params.sf)
    depth = np.zeros((len(params), len(wave)))
    sig = params.sigma_v / C_KMS
    for lam, ew in zip(METAL_LINES, METAL_EW):
        s = np.hypot(lam * sig, 2.0)  # intrinsic width plus the blend of neighbouring lines
        _add_lines(depth, wave, lam * (1 + z), s * (1 + z), 0.9 * f_old * ew / (s * np.sqrt(2 * np.pi)))
    for lam, ew in zip(BALMER_ABS, BALMER_EW):
        s = np.hypot(lam * sig, 6.0)  # pressure-broadened wings of A-star lines
        _add_lines(depth, wave, lam * (1 + z), s * (1 + z),
                   (f_int + 0.3 * f_young) * ew / (s * np.sqrt(2 * np.pi)))
    return depth


def continuum(params: GalaxySED, wave: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    """Dust-attenuated stellar continuum with absorption lines at redshift ``z``, (N, L).

    ``wave`` is a 1-D observed-frame grid (uniformly spaced); ``z = 0`` gives the rest frame.
    """
    n = len(params)
    z = np.zeros(n) if z is None else np.asarray(z, dtype=float)
    if np.all(z == z[0]):  # one redshift (e.g. the rest frame): look up a single row
        table = np.broadcast_to(_lookup(wave / (1 + z[0])), (n, len(wave), 4))
    else:
        table = _lookup(wave[None, :] / (1 + z[:, None]))
    weights = np.stack(population_weights(params.sf), axis=1)  # (N, 3)
    spec = np.einsum("nlk,nk->nl", table[..., :3], weights)
    k = table[..., 3]
    spec *= np.clip(1.0 - _absorption(params, z, wave), 0.05, None)
    return spec * np.exp(-0.4 * np.log(10) * params.av[:, None] * k / 4.05)


def emission_lines(params: GalaxySED, wave: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Nebular emission (N, L) at redshift ``z``, scaled to the H-alpha EW.

    Ratios: Case-B H-alpha/H-beta = 2.86 before dust; [OIII]4959 = 5007/2.98;
    [NII]6548 = 6584/3.05; [SII] 6716+6731 = 0.35 H-alpha, ratio 1.3 (low density);
    [OII] doublet 1:1.4. Gas sees 1/0.44 times the stellar reddening (Calzetti 2000).
    Line fluxes are in the units of the rest-frame continuum per A (an EW times it).
    """
    cont_ha = continuum(params, np.array([6540.0, 6590.0])).mean(axis=1)
    ha_flux = params.ha_ew * cont_ha
    ebv_gas = params.av / 0.44 / 4.05
    hb = ha_flux / 2.86
    lines = [
        (HALPHA, ha_flux), (HBETA, hb), (HGAMMA, hb * 0.468), (HDELTA, hb * 0.259),
        (OIII[1], hb * params.oiii_hb), (OIII[0], hb * params.oiii_hb / 2.98),
        (NII[1], ha_flux * params.nii_ha), (NII[0], ha_flux * params.nii_ha / 3.05),
        (SII[0], ha_flux * 0.35 * 1.3 / 2.3), (SII[1], ha_flux * 0.35 / 2.3),
        (OII[0], hb * params.oii_hb / 2.4), (OII[1], hb * params.oii_hb * 1.4 / 2.4),
    ]
    k_ha = calzetti_k(np.array(HALPHA))
    out = np.zeros((len(params), len(wave)))
    for lam, flux in lines:
        s = np.maximum(lam * params.sigma_v / C_KMS, 1.0)  # rest-frame width (A), >= DESI resolution
        # H-alpha EW is measured against the attenuated continuum; other lines scale from it.
        att = 10.0 ** (-0.4 * ebv_gas * (calzetti_k(np.array(lam)) - k_ha))
        # The rest-frame profile evaluated at wave / (1 + z): same peak, (1 + z) times wider.
        _add_lines(out, wave, lam * (1 + z), s * (1 + z), flux * att / (s * np.sqrt(2 * np.pi)))
    return out


def galaxy_sed(params: GalaxySED, wave: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    """Full f_lambda shape (N, L) on the observed grid ``wave`` at redshift ``z``.

    This is the rest-frame shape evaluated at ``wave / (1 + z)``; the survey code multiplies
    it by an amplitude that carries the distance and the 1/(1+z) bandwidth dilation.
    """
    z = np.zeros(len(params)) if z is None else np.asarray(z, dtype=float)
    return continuum(params, wave, z) + emission_lines(params, wave, z)


def star_sed(temp: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """Stellar f_lambda (N, L) on a 1-D grid: blackbody with Balmer (hot) or metal (cool) lines."""
    t = np.asarray(temp, dtype=float)[:, None]
    hc_k = 1.438777e8
    w = np.asarray(wave, dtype=float)[None, :]
    bb = w ** -5.0 / np.expm1(hc_k / (w * t))
    bb = bb / (5500.0 ** -5.0 / np.expm1(hc_k / (5500.0 * t)))
    hot = np.clip((t[:, 0] - 5000.0) / 4000.0, 0, 1)
    depth = np.zeros((len(temp), len(wave)))
    zero = np.zeros(len(temp))
    for lam, ew in zip(BALMER_ABS, BALMER_EW):
        _add_lines(depth, wave, lam + zero, 8.0 + zero, hot * ew / (8 * np.sqrt(2 * np.pi)))
    for lam, ew in zip(METAL_LINES, METAL_EW):
        _add_lines(depth, wave, lam + zero, 2.0 + zero, (1 - hot) * ew / (2 * np.sqrt(2 * np.pi)))
    bb = bb * (1.0 - 0.4 * (1 - hot[:, None]) * _step_blue(w, 4000.0, 60.0))
    return bb * np.clip(1.0 - depth, 0.05, None)
