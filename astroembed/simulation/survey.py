"""Write a simulated mini-survey in the real Legacy Survey and DESI file formats.

Layout of ``OUT`` (the same shapes and names the surveys publish, so the same readers serve
real and simulated data)::

    desi/healpix/{survey}/{program}/{hpx//100}/{hpx}/coadd-{survey}-{program}-{hpx}.fits
    desi/healpix/{survey}/{program}/{hpx//100}/{hpx}/redrock-{survey}-{program}-{hpx}.fits
    desi/zcatalog/zpix-{survey}-{program}.fits
    legacysurvey/sweep/9.0/sweep-{ra0}{p|m}{dec0}-{ra1}{p|m}{dec1}.fits
    legacysurvey/cutouts/cutouts-{sweep box}.h5       (all objects, like the SSL datasets)
    legacysurvey/cutouts/fits/cutout_ra{RA}_dec{DEC}_grz.fits   (a few, as the cutout service)
    legacysurvey/coadd/{brick[:3]}/{brick}/legacysurvey-{brick}-image-{g,r,z}.fits.fz
                           (with --bricks: brick coadds, -invvar-{g,r,z} and -maskbits beside)
    truth.parquet          every object's true properties and its IDs in both surveys
    simulation.json        seed, sizes and software versions

HEALPix grouping is nside 64, nested, as DESI's healpix directories.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from astroembed.config import SimulationConfig
from astroembed.catalog.atomic import atomic_directory, atomic_path
from astroembed.catalog.outputs import SURVEY, claim_directory, may_replace
from astroembed.simulation import ANSWER_KEY, SIMULATION_FILE
from astroembed.simulation import images as img
from astroembed.simulation import spectra as spec
from astroembed.simulation.population import DECAM, Galaxies, Stars, sample_galaxies, sample_stars
from astroembed.simulation.sed import galaxy_sed, star_sed

#: ``progress(stage, done, total)``, as the other long commands take it.
Progress = Callable[[str, int, int], None]

NSIDE = 64
RELEASE = 9010  # Legacy Survey DR9, south
DENSITY = 800.0  # BGS-bright-like galaxies per deg^2 at r < 19.5
MW_R = {"g": 3.214, "r": 2.165, "z": 1.211}  # Legacy Survey DR9 extinction coefficients
MW_R_WAVE = (4800.0, 6400.0, 9100.0)
DEPTH_SIGMA = {"g": 0.050, "r": 0.087, "z": 0.20}  # flux errors (nanomaggies), DR9-like depths
FIBRE_COMPLETENESS = 0.85  # fraction of target galaxies that get a fibre
STAR_FRACTION = 0.08  # stars per galaxy in the imaging catalogue
STAR_SPEC_FRACTION = 0.3  # of stars with r < 19.5, observed by DESI (MWS-like)
SKY_FIBRE_FRACTION = 0.04
UNASSIGNED_FRACTION = 0.01  # fibres with negative TARGETID (stuck or unassigned positioners)
BAD_STATUS_FRACTION = 0.015
SV3_FRACTION = 0.03  # targets re-observed in sv3 (duplicates resolved by ZCAT_PRIMARY)
N_CUTOUT_FITS = 5
SKY_BIT = 59
BRICK_PIXELS = 3600  # a brick coadd's width and height (0.262 deg at 0.262"/pixel)
ZWARN_SMALL_DELTA_CHI2 = 4
ZWARN_BAD_TARGET = 512
ZWARN_SKY = 1


# --------------------------------------------------------------------------- geometry


def sky_box(n_galaxies: int, dec_centre: float) -> tuple[float, float, float, float]:
    """A box centred on RA = 0 (so it crosses the wrap) holding ``n`` galaxies at DENSITY.

    At least 2 deg^2, so even a small survey spans several nside-64 HEALPix pixels.
    Returns (half-width in RA (deg, on the sky), dec_min, dec_max, area).
    """
    area = max(n_galaxies / DENSITY, 2.0)
    side = np.sqrt(area)
    return side / 2, dec_centre - side / 2, dec_centre + side / 2, area


def random_positions(rng, n, half_width, dec_min, dec_max, dec_centre):
    """Uniform on the sphere within the box; RA in [0, 360)."""
    sin_dec = rng.uniform(np.sin(np.radians(dec_min)), np.sin(np.radians(dec_max)), n)
    dec = np.degrees(np.arcsin(sin_dec))
    ra = rng.uniform(-half_width, half_width, n) / np.cos(np.radians(dec_centre))
    return np.mod(ra, 360.0), dec


def offset_positions(rng, ra, dec, sigma_arcsec):
    """Add a random 2-D astrometric offset with per-axis sigma (arcsec)."""
    ddec = rng.normal(0, sigma_arcsec, len(ra)) / 3600.0
    dra = rng.normal(0, sigma_arcsec, len(ra)) / 3600.0 / np.cos(np.radians(dec))
    return np.mod(ra + dra, 360.0), np.clip(dec + ddec, -90, 90)


def bricks(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Legacy Survey-style bricks: 0.25 deg rows in Dec, ~0.25 deg wide in RA.

    Returns (BRICKID, BRICKNAME), following the DR9 survey-bricks scheme: rows numbered from
    the south pole, bricks counted along each row from RA = 0, names from the brick centre.
    """
    brickid, names, _, _ = brick_grid(ra, dec)
    return brickid, names


def brick_grid(ra: np.ndarray, dec: np.ndarray):
    """(BRICKID, BRICKNAME, RA centre, Dec centre) of each position's brick (see bricks)."""
    rows = np.arange(721)
    dec_c = -90.0 + 0.25 * rows
    n_ra = np.maximum(1, np.round(360.0 * np.cos(np.radians(dec_c)) / 0.25)).astype(int)
    n_ra[[0, -1]] = 1
    first_id = np.concatenate([[1], 1 + np.cumsum(n_ra)[:-1]])
    row = np.clip(np.round((dec + 90.0) / 0.25).astype(int), 0, 720)
    nr = n_ra[row]
    col = np.floor(np.mod(ra, 360.0) / 360.0 * nr).astype(int) % nr
    ra_c = (col + 0.5) * 360.0 / nr
    names = np.array([f"{int(a * 10):04d}{'p' if d >= 0 else 'm'}{int(round(abs(d) * 10)):03d}"
                      for a, d in zip(ra_c, dec_c[row])])
    return first_id[row] + col, names, ra_c, dec_c[row]


def sweep_name(ra: float, dec: float) -> str:
    """The 10 x 5 deg sweep box containing (ra, dec), e.g. 'sweep-350p000-360p005'."""
    ra0 = int(np.floor(ra / 10.0) * 10)
    dec0 = int(np.floor(dec / 5.0) * 5)

    def fmt(r: int, d: int) -> str:
        return f"{r:03d}{'p' if d >= 0 else 'm'}{abs(d):03d}"

    return f"sweep-{fmt(ra0, dec0)}-{fmt(ra0 + 10, dec0 + 5)}"


def targetid(release, brickid, objid, sky=False) -> np.ndarray:
    """DESI TARGETID bit layout: OBJID 22 bits, BRICKID 20, RELEASE 16, MOCK 1, SKY 1."""
    tid = (np.asarray(objid, np.int64) | (np.asarray(brickid, np.int64) << 22)
           | (np.asarray(release, np.int64) << 42))
    return tid | (np.int64(1) << SKY_BIT) if sky else tid


def mw_transmission(ebv: np.ndarray, band: str) -> np.ndarray:
    return 10 ** (-0.4 * MW_R[band] * ebv)


def mw_curve(ebv: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """Galactic transmission (N, L), interpolating the DR9 coefficients in 1/lambda."""
    r_lam = np.interp(1.0 / wave, 1.0 / np.array(MW_R_WAVE[::-1]), [MW_R["z"], MW_R["r"], MW_R["g"]])
    return 10 ** (-0.4 * ebv[:, None] * r_lam[None, :])


# --------------------------------------------------------------------------- the survey


@dataclass
class Objects:
    """Everything simulated, one row per astrophysical object (galaxies then stars)."""

    is_star: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    z: np.ndarray
    mags: dict[str, np.ndarray]  # true DECam AB magnitudes (before Galactic extinction)
    ebv: np.ndarray


def write_survey(out: str | Path, config: SimulationConfig, overwrite: bool = False,
                 progress: Progress | None = None) -> dict:
    """Simulate a survey into ``out``, which appears complete or not at all.

    ``progress(stage, done, total)`` follows the two long stages: ``objects`` (cutouts
    rendered, out of every imaged object) and ``fibres`` (spectra observed and written, out
    of every DESI fibre of every survey).

    An existing ``out`` is replaced only when it is a survey this simulator wrote, holding
    nothing else, and only with ``overwrite``; the swap happens once the new survey is
    complete (:mod:`astroembed.catalog.outputs`). Returns a summary (counts, files) for the CLI.
    """
    config.validate()
    out = Path(out)
    claim_directory(out, SURVEY, overwrite=overwrite, option="OUT")
    with atomic_directory(out, lambda p: may_replace(p, SURVEY, "OUT")) as tmp:
        summary = _simulate(tmp, config, progress)
    return summary


def _simulate(out: Path, config: SimulationConfig, progress: Progress | None = None) -> dict:
    """Simulate and write everything into the empty directory ``out``."""
    rng = np.random.default_rng(config.seed)
    half, dmin, dmax, area = sky_box(config.n_galaxies, config.dec_centre)

    def stage(name: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    gal = sample_galaxies(rng, config.n_galaxies)
    n_star = max(1, int(round(STAR_FRACTION * config.n_galaxies)))
    stars = sample_stars(rng, n_star)
    n_obj = len(gal) + n_star
    is_star = np.r_[np.zeros(len(gal), bool), np.ones(n_star, bool)]
    ra, dec = random_positions(rng, n_obj, half, dmin, dmax, config.dec_centre)
    ebv = np.clip(rng.normal(0.03, 0.008, n_obj), 0.005, None)
    z_true = np.r_[gal.z, rng.normal(0, 1e-4, n_star)]
    mags = {b: np.r_[gal.mags[b], stars.mags[b]] for b in DECAM}

    # Legacy Survey: measured positions (30 mas errors), bricks, IDs, photometry, cutouts.
    ra_ls, dec_ls = offset_positions(rng, ra, dec, 0.03)
    brickid, brickname = bricks(ra_ls, dec_ls)
    objid = _objids(brickid, ra_ls)
    flux_true = {b[-1]: 10 ** (-0.4 * (mags[b] - 22.5)) * mw_transmission(ebv, b[-1]) for b in DECAM}
    r_eff = np.r_[gal.r_eff, np.zeros(n_star)]
    sersic = np.r_[gal.sersic_n, np.ones(n_star)]
    q = np.r_[gal.axis_ratio, np.ones(n_star)]
    pa = np.r_[gal.pos_angle, np.zeros(n_star)]
    r_eff_safe = np.where(is_star, 1.0, r_eff)
    cutouts, fibre_frac = img.make_cutouts(rng, config.cutout_size, flux_true, r_eff_safe, sersic,
                                           q, pa, is_star, progress=stage("objects"))
    ls = _legacysurvey_table(rng, ra_ls, dec_ls, brickid, brickname, objid, flux_true, ebv,
                             is_star, gal, r_eff, sersic, fibre_frac)

    # DESI: who gets a fibre, positions with ~0.2" offsets, spectra and redshifts.
    r_obs = mags["decam2014-r"]
    targeted = np.where(is_star, (r_obs < 19.5) & (rng.random(n_obj) < STAR_SPEC_FRACTION),
                        rng.random(n_obj) < FIBRE_COMPLETENESS)
    ra_desi, dec_desi = offset_positions(rng, ra, dec, 0.15)
    tid = targetid(RELEASE, brickid, objid)
    desi = _desi_targets(rng, np.flatnonzero(targeted), tid, ra_desi, dec_desi, ls, is_star, z_true)
    model = _fibre_model(gal, stars, is_star, fibre_frac, ebv)
    files = _write_all(out, config, rng, ls, cutouts, desi, model, half, dmin, dmax,
                       stage("fibres"))
    if config.bricks:
        files += _write_bricks(out, config, ra_ls, dec_ls, flux_true, r_eff_safe, sersic, q, pa,
                               is_star, stage("bricks"))

    truth = _truth_table(is_star, gal, stars, z_true, ra, dec, ra_ls, dec_ls, ra_desi, dec_desi,
                         brickid, objid, tid, targeted, desi, mags, ebv, fibre_frac)
    _write_parquet(out / ANSWER_KEY, truth)
    summary = {
        "seed": config.seed, "n_galaxies": len(gal), "n_stars": n_star,
        "area_deg2": round(area, 3), "ra_range": [round(float(-half / np.cos(np.radians(config.dec_centre))) % 360, 4),
                                                 round(float(half / np.cos(np.radians(config.dec_centre))), 4)],
        "dec_range": [round(dmin, 4), round(dmax, 4)],
        "n_imaging": int(n_obj), "n_targets": int(targeted.sum()),
        "n_fibres": int(len(desi["TARGETID"])), "files": files, "answer_key": ANSWER_KEY,
        "config": asdict(config), "versions": _versions(),
    }
    with atomic_path(out / SIMULATION_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_bricks(out: Path, config: SimulationConfig, ra, dec, flux, r_eff, sersic, q, pa,
                  is_point, progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Full-size brick coadds (3600 x 3600) for the ``config.bricks`` most populated bricks,
    every object rendered into the bricks whose image holds it. Their own random stream, so
    asking for bricks leaves every other file as it would be without them."""
    from astroembed.simulation.bricks import write_brick

    rng = np.random.default_rng([config.seed, 1])
    _, names, ra_c, dec_c = brick_grid(ra, dec)
    unique, first, counts = np.unique(names, return_index=True, return_counts=True)
    order = np.lexsort((unique, -counts))[:config.bricks]
    files = []
    for n, k in enumerate(order, start=1):
        i = first[k]
        written = write_brick(out / "legacysurvey", str(unique[k]), float(ra_c[i]),
                              float(dec_c[i]), ra, dec, flux, r_eff, sersic, q, pa, is_point,
                              rng, width=BRICK_PIXELS)
        files += [str(p.relative_to(out)) for p in sorted(written["g"].parent.iterdir())]
        if progress:
            progress(n, len(order))
    return files


def _objids(brickid: np.ndarray, ra: np.ndarray) -> np.ndarray:
    """Sequential OBJID within each brick (ordered by RA), as Tractor numbers its sources."""
    order = np.lexsort((ra, brickid))
    objid = np.empty(len(ra), dtype=np.int32)
    sorted_b = brickid[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_b)) + 1]
    counts = np.diff(np.r_[starts, len(order)])
    objid[order] = np.arange(len(order)) - np.repeat(starts, counts)
    return objid


def _legacysurvey_table(rng, ra, dec, brickid, brickname, objid, flux_true, ebv, is_star, gal,
                        r_eff, sersic, fibre_frac) -> dict[str, np.ndarray]:
    n = len(ra)
    n_gal = len(gal)
    cols: dict[str, np.ndarray] = {
        "RELEASE": np.full(n, RELEASE, np.int16), "BRICKID": brickid.astype(np.int32),
        "BRICKNAME": brickname, "OBJID": objid.astype(np.int32),
    }
    types = np.full(n, "PSF", dtype="<U3")
    g_type = np.where(gal.r_eff < 0.4, "REX", np.where(gal.sersic_n > 2.5, "DEV", "EXP"))
    g_type = np.where((gal.sersic_n > 1.6) & (gal.sersic_n < 2.5), "SER", g_type)
    types[:n_gal] = g_type
    cols.update(TYPE=types, RA=ra, DEC=dec, EBV=ebv.astype(np.float32))
    for b in "grz":
        sig = img.SKY_SIGMA[b] * 0 + DEPTH_SIGMA[b] * rng.lognormal(0, 0.15, n)
        cols[f"FLUX_{b.upper()}"] = (flux_true[b] + rng.normal(0, sig)).astype(np.float32)
        cols[f"FLUX_IVAR_{b.upper()}"] = (1 / sig**2).astype(np.float32)
        cols[f"MW_TRANSMISSION_{b.upper()}"] = mw_transmission(ebv, b).astype(np.float32)
        cols[f"FIBERFLUX_{b.upper()}"] = (flux_true[b] * fibre_frac).astype(np.float32)
        cols[f"NOBS_{b.upper()}"] = rng.integers(2, 6, n).astype(np.int16)
    measured_re = np.where(is_star, 0.0, r_eff * rng.lognormal(0, 0.05, n))
    cols["SHAPE_R"] = measured_re.astype(np.float32)
    cols["SERSIC"] = np.where(types == "SER", sersic, np.where(types == "DEV", 4.0,
                              np.where(types == "PSF", 0.0, 1.0))).astype(np.float32)
    cols["MASKBITS"] = np.zeros(n, np.int16)
    return cols


def _desi_targets(rng, idx, tid, ra_desi, dec_desi, ls, is_star, z_true) -> dict[str, np.ndarray]:
    """FIBERMAP-like columns for targeted objects plus sky and unassigned fibres."""
    n_t = len(idx)
    n_sky = int(np.ceil(SKY_FIBRE_FRACTION * n_t))
    n_un = int(np.ceil(UNASSIGNED_FRACTION * n_t))
    # Sky fibres sit at blank positions inside the footprint; unassigned positioners report
    # the position they are parked at.
    pick = rng.integers(0, len(ra_desi), n_sky + n_un)
    sky_ra, sky_dec = offset_positions(rng, ra_desi[pick], dec_desi[pick], 20.0)
    kind = np.r_[np.where(is_star[idx], "star", "galaxy"), np.full(n_sky, "sky"), np.full(n_un, "none")]
    sky_tid = targetid(RELEASE, ls["BRICKID"][pick[:n_sky]], 1_000_000 + np.arange(n_sky), sky=True)
    targetids = np.r_[tid[idx], sky_tid, -(1_000_000 + rng.choice(9_000_000, n_un, replace=False))]
    status = np.zeros(len(kind), np.int32)
    bad = (kind != "none") & (rng.random(len(kind)) < BAD_STATUS_FRACTION)
    status[bad] = rng.choice([2, 8, 520, 1033], bad.sum())
    status[kind == "none"] = 1033
    obj = np.r_[idx, pick]  # the imaging object each fibre belongs to (or sits near)
    cols = {
        "TARGETID": targetids.astype(np.int64), "COADD_FIBERSTATUS": status,
        "TARGET_RA": np.r_[ra_desi[idx], sky_ra], "TARGET_DEC": np.r_[dec_desi[idx], sky_dec],
        "OBJTYPE": np.where(kind == "sky", "SKY", np.where(kind == "none", "", "TGT")),
        "RELEASE": np.where(kind == "none", 0, RELEASE).astype(np.int16),
        "BRICKID": np.where(kind == "none", 0, ls["BRICKID"][obj]).astype(np.int32),
        "BRICK_OBJID": np.r_[ls["OBJID"][idx], np.zeros(n_sky + n_un, np.int32)].astype(np.int32),
        "BRICKNAME": ls["BRICKNAME"][obj],
        "MORPHTYPE": np.r_[ls["TYPE"][idx], np.full(n_sky + n_un, "")],
    }
    for col in ("EBV", "FLUX_G", "FLUX_R", "FLUX_Z", "FLUX_IVAR_G", "FLUX_IVAR_R", "FLUX_IVAR_Z",
                "FIBERFLUX_G", "FIBERFLUX_R", "FIBERFLUX_Z", "SHAPE_R", "SERSIC"):
        vals = ls[col][obj].copy()
        vals[len(idx):] = 0.0
        cols[col] = vals.astype(np.float32)
    cols["_kind"] = kind
    cols["_obj"] = np.where(kind == "none", -1, obj)
    cols["_z_true"] = np.where(np.isin(kind, ["galaxy", "star"]), z_true[obj], np.nan)
    cols["_depth"] = rng.lognormal(0.0, 0.25, len(kind))
    # A few targets are observed again in sv3 (deeper), as in real DESI data releases.
    cols["_sv3"] = (kind != "none") & (kind != "sky") & (rng.random(len(kind)) < SV3_FRACTION)
    return cols


def _fibre_model(gal: Galaxies, stars: Stars, is_star, fibre_frac, ebv):
    """A function giving noiseless fibre spectra (1e-17 units) for a set of object indices."""
    n_gal = len(gal)

    def model(obj: np.ndarray, wave: np.ndarray) -> np.ndarray:
        out = np.zeros((len(obj), len(wave)))
        valid = obj >= 0
        g = valid & ~is_star[np.maximum(obj, 0)]
        s = valid & is_star[np.maximum(obj, 0)]
        if g.any():
            gi = obj[g]
            out[g] = galaxy_sed(gal.sed.take(gi), wave, gal.z[gi]) * gal.amplitude[gi, None]
        if s.any():
            si = obj[s] - n_gal
            out[s] = star_sed(stars.temp[si], wave) * stars.amplitude[si, None]
        frac = np.where(valid, fibre_frac[np.maximum(obj, 0)], 0.0)
        ext = mw_curve(np.where(valid, ebv[np.maximum(obj, 0)], 0.0), wave)
        return out * frac[:, None] * ext / spec.FLUX_UNIT

    return model


def _redshifts(rng, desi, arms_snr, sel) -> dict[str, np.ndarray]:
    """Redrock-like results for the fibres in ``sel`` given their median R-arm S/N."""
    kind = desi["_kind"][sel]
    ztrue = desi["_z_true"][sel]
    status = desi["COADD_FIBERSTATUS"][sel]
    n = len(kind)
    snr = np.maximum(arms_snr, 0.05)
    zerr = np.where(kind == "star", 3e-5, 2e-5 * (1 + np.nan_to_num(ztrue)) * np.sqrt(3.0 / snr))
    z = np.where(np.isnan(ztrue), rng.uniform(0, 1.5, n), ztrue + rng.normal(0, 1, n) * zerr)
    fail = (kind != "sky") & (rng.random(n) < 0.01 + 0.6 * np.exp(-snr / 0.5))
    zwarn = np.where(fail, ZWARN_SMALL_DELTA_CHI2, 0)
    catastrophic = fail & (rng.random(n) < 0.5)
    z = np.where(catastrophic, rng.uniform(0.0, 1.6, n), z)
    zwarn = np.where(kind == "sky", ZWARN_SKY, zwarn)
    zwarn = np.where(status != 0, zwarn | ZWARN_BAD_TARGET, zwarn)
    zwarn = np.where(kind == "none", ZWARN_BAD_TARGET, zwarn)
    return {
        "Z": z, "ZERR": zerr, "ZWARN": zwarn.astype(np.int64),
        "SPECTYPE": np.where(kind == "star", "STAR", "GALAXY"),
        "DELTACHI2": np.where(fail, rng.uniform(0, 9, n), 25 + 400 * snr),
    }


# --------------------------------------------------------------------------- writing


def _write_all(out, config, rng, ls, cutouts, desi, model, half, dmin, dmax,
               progress: Callable[[int, int], None] | None = None) -> list[str]:
    import healpy as hp

    files: list[str] = []
    # Legacy Survey sweeps and cutout stacks, grouped by 10 x 5 deg box.
    boxes = np.array([sweep_name(a, d) for a, d in zip(ls["RA"], ls["DEC"])])
    for box in np.unique(boxes):
        sel = np.flatnonzero(boxes == box)
        path = out / "legacysurvey" / "sweep" / "9.0" / f"{box}.fits"
        _write_fits_table(path, {k: v[sel] for k, v in ls.items()}, extname=None)
        files.append(str(path.relative_to(out)))
        h5 = out / "legacysurvey" / "cutouts" / f"cutouts-{box.removeprefix('sweep-')}.h5"
        _write_cutout_stack(h5, cutouts[sel], ls, sel)
        files.append(str(h5.relative_to(out)))
    # A few single cutouts as the cutout service writes them.
    galaxies = np.flatnonzero(ls["TYPE"] != "PSF")
    for i in rng.choice(galaxies, min(N_CUTOUT_FITS, len(galaxies)), replace=False):
        path = _write_cutout_fits(out / "legacysurvey" / "cutouts" / "fits", cutouts[i],
                                  ls["RA"][i], ls["DEC"][i])
        files.append(str(path.relative_to(out)))

    # DESI: one coadd + redrock file per healpix (main/bright), and sv3/bright for re-observations.
    hpx = hp.ang2pix(NSIDE, desi["TARGET_RA"], desi["TARGET_DEC"], nest=True, lonlat=True)
    zrows: dict[tuple[str, str], list[dict]] = {}
    surveys = (("main", np.ones(len(hpx), bool)), ("sv3", desi["_sv3"]))
    done, total = 0, int(sum(fibres.sum() for _, fibres in surveys))
    for survey, fibres in surveys:
        program = "bright"
        for pix in np.unique(hpx[fibres]):
            sel = np.flatnonzero(fibres & (hpx == pix))
            depth = desi["_depth"][sel] * (2.0 if survey == "sv3" else 1.0)
            arms = spec.observe_arms(lambda w: model(desi["_obj"][sel], w), depth, rng)
            r = arms["R"]
            snr = np.median(r.flux * np.sqrt(r.ivar), axis=1)
            fm = {k: v[sel] for k, v in desi.items() if not k.startswith("_")}
            zres = _redshifts(rng, desi, snr, sel)
            d = out / "desi" / "healpix" / survey / program / str(pix // 100) / str(pix)
            coadd = d / f"coadd-{survey}-{program}-{pix}.fits"
            _write_coadd(coadd, fm, arms, survey, program, int(pix))
            redrock = d / f"redrock-{survey}-{program}-{pix}.fits"
            _write_redrock(redrock, fm, zres, survey, program, int(pix))
            files += [str(coadd.relative_to(out)), str(redrock.relative_to(out))]
            zrows.setdefault((survey, program), []).append(
                dict(fm=fm, z=zres, hpx=np.full(len(sel), pix), tsnr=depth * np.maximum(snr, 0)))
            done += len(sel)
            if progress is not None:
                progress(done, total)
    files += _write_zcatalogs(out, zrows)
    return files


def _write_zcatalogs(out: Path, zrows) -> list[str]:
    """zpix-{survey}-{program}.fits with ZCAT_NSPEC/ZCAT_PRIMARY across all surveys."""
    parts = {}
    for (survey, program), chunks in zrows.items():
        cols = {k: np.concatenate([c["fm"][k] for c in chunks]) for k in chunks[0]["fm"]}
        cols.update({k: np.concatenate([c["z"][k] for c in chunks]) for k in chunks[0]["z"]})
        cols["HEALPIX"] = np.concatenate([c["hpx"] for c in chunks]).astype(np.int32)
        cols["SURVEY"] = np.full(len(cols["HEALPIX"]), survey)
        cols["PROGRAM"] = np.full(len(cols["HEALPIX"]), program)
        cols["TSNR2_BGS"] = np.concatenate([c["tsnr"] for c in chunks]).astype(np.float32)
        parts[(survey, program)] = cols
    # Primary: per TARGETID, the spectrum with the highest TSNR2 (DESI's rule, simplified).
    all_tid = np.concatenate([p["TARGETID"] for p in parts.values()])
    all_tsnr = np.concatenate([p["TSNR2_BGS"] for p in parts.values()])
    order = np.lexsort((-all_tsnr, all_tid))
    primary = np.zeros(len(all_tid), bool)
    first = np.r_[True, all_tid[order][1:] != all_tid[order][:-1]]
    primary[order[first]] = True
    uniq, inv, counts = np.unique(all_tid, return_inverse=True, return_counts=True)
    nspec = counts[inv]
    files, offset = [], 0
    for (survey, program), cols in parts.items():
        n = len(cols["TARGETID"])
        cols["ZCAT_NSPEC"] = nspec[offset:offset + n].astype(np.int16)
        cols["ZCAT_PRIMARY"] = primary[offset:offset + n]
        offset += n
        order_cols = ["TARGETID", "SURVEY", "PROGRAM", "HEALPIX", "Z", "ZERR", "ZWARN",
                      "SPECTYPE", "DELTACHI2", "COADD_FIBERSTATUS", "TARGET_RA", "TARGET_DEC",
                      "OBJTYPE", "RELEASE", "BRICKNAME", "BRICKID", "BRICK_OBJID", "MORPHTYPE",
                      "EBV", "FLUX_G", "FLUX_R", "FLUX_Z", "FLUX_IVAR_G", "FLUX_IVAR_R",
                      "FLUX_IVAR_Z", "FIBERFLUX_G", "FIBERFLUX_R", "FIBERFLUX_Z", "SHAPE_R",
                      "SERSIC", "TSNR2_BGS", "ZCAT_NSPEC", "ZCAT_PRIMARY"]
        path = out / "desi" / "zcatalog" / f"zpix-{survey}-{program}.fits"
        _write_fits_table(path, {k: cols[k] for k in order_cols}, extname="ZCATALOG")
        files.append(str(path.relative_to(out)))
    return files


def _write_fits_table(path: Path, cols: dict[str, np.ndarray], extname: str | None,
                      primary_header: dict | None = None) -> None:
    from astropy.io import fits
    from astropy.table import Table

    table = Table({k: _fits_ready(v) for k, v in cols.items()})
    hdu = fits.BinTableHDU(table)
    if extname:
        hdu.name = extname
    primary = fits.PrimaryHDU()
    for k, v in (primary_header or {}).items():
        primary.header[k] = v
    with atomic_path(path) as tmp:
        fits.HDUList([primary, hdu]).writeto(tmp, overwrite=True)


def _fits_ready(v: np.ndarray) -> np.ndarray:
    """Unicode to fixed-width bytes (FITS strings), everything else as is."""
    if v.dtype.kind == "U":
        width = max(1, max((len(s) for s in v), default=1))
        return v.astype(f"S{width}")
    return v


def _write_coadd(path: Path, fm: dict, arms: dict, survey: str, program: str, pix: int) -> None:
    from astropy.io import fits
    from astropy.table import Table

    primary = fits.PrimaryHDU()
    for k, v in dict(SPGRP="healpix", SPGRPVAL=pix, HPXPIXEL=pix, HPXNSIDE=NSIDE, HPXNEST=True,
                     SURVEY=survey, PROGRAM=program, SIMULATD=True).items():
        primary.header[k] = v
    hdus = [primary]
    fibermap = fits.BinTableHDU(Table({k: _fits_ready(v) for k, v in fm.items()}))
    fibermap.name = "FIBERMAP"
    hdus.append(fibermap)
    for arm, data in arms.items():
        w = fits.ImageHDU(data.wave, name=f"{arm}_WAVELENGTH")
        w.header["BUNIT"] = "Angstrom"
        f = fits.ImageHDU(data.flux, name=f"{arm}_FLUX")
        f.header["BUNIT"] = "10**-17 erg/(s cm2 Angstrom)"
        iv = fits.ImageHDU(data.ivar, name=f"{arm}_IVAR")
        iv.header["BUNIT"] = "10**+34 (s2 cm4 Angstrom2) / erg2"
        hdus += [w, f, iv, fits.ImageHDU(data.mask, name=f"{arm}_MASK")]
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)


def _write_redrock(path: Path, fm: dict, zres: dict, survey: str, program: str, pix: int) -> None:
    """REDSHIFTS plus the FIBERMAP in the same fibre order, as redrock writes them."""
    from astropy.io import fits
    from astropy.table import Table

    primary = fits.PrimaryHDU()
    for k, v in dict(SPGRP="healpix", SPGRPVAL=pix, SURVEY=survey, PROGRAM=program).items():
        primary.header[k] = v
    redshifts = fits.BinTableHDU(Table({k: _fits_ready(v) for k, v in
                                        {"TARGETID": fm["TARGETID"], **zres}.items()}))
    redshifts.name = "REDSHIFTS"
    fibermap = fits.BinTableHDU(Table({k: _fits_ready(v) for k, v in fm.items()}))
    fibermap.name = "FIBERMAP"
    with atomic_path(path) as tmp:
        fits.HDUList([primary, redshifts, fibermap]).writeto(tmp, overwrite=True)


def _write_cutout_stack(path: Path, images: np.ndarray, ls: dict, sel: np.ndarray) -> None:
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]))
            f.create_dataset("ra", data=ls["RA"][sel])
            f.create_dataset("dec", data=ls["DEC"][sel])
            f.create_dataset("release", data=ls["RELEASE"][sel].astype(np.int32))
            f.create_dataset("brickid", data=ls["BRICKID"][sel])
            f.create_dataset("objid", data=ls["OBJID"][sel])
            f.attrs["bands"] = "grz"
            f.attrs["pixscale"] = img.PIXSCALE
            f.attrs["units"] = "nanomaggies"


def _write_cutout_fits(directory: Path, image: np.ndarray, ra: float, dec: float) -> Path:
    """A cutout as the Legacy Survey cutout service returns it (TAN WCS, BANDS='grz')."""
    from astropy.io import fits

    size = image.shape[-1]
    hdu = fits.PrimaryHDU(image.astype(np.float32))
    h = hdu.header
    for k, v in dict(SURVEY="LegacySurvey", VERSION="DR9", IMAGETYP="IMAGE", BANDS="grz",
                     BAND0="g", BAND1="r", BAND2="z", CTYPE1="RA---TAN", CTYPE2="DEC--TAN",
                     CRVAL1=float(ra), CRVAL2=float(dec), CRPIX1=size / 2 + 0.5,
                     CRPIX2=size / 2 + 0.5, CD1_1=-img.PIXSCALE / 3600, CD1_2=0.0, CD2_1=0.0,
                     CD2_2=img.PIXSCALE / 3600, IMAGEW=float(size), IMAGEH=float(size)).items():
        h[k] = v
    path = directory / f"cutout_ra{ra:.4f}_dec{dec:.4f}_grz.fits"
    with atomic_path(path) as tmp:
        hdu.writeto(tmp, overwrite=True)
    return path


def _truth_table(is_star, gal, stars, z_true, ra, dec, ra_ls, dec_ls, ra_desi, dec_desi,
                 brickid, objid, tid, targeted, desi, mags, ebv, fibre_frac):
    import pyarrow as pa

    n = len(ra)
    n_gal = len(gal)
    pad = lambda a, fill=np.nan: np.r_[a, np.full(n - n_gal, fill)]  # noqa: E731
    observed = np.zeros(n, bool)
    obj = desi["_obj"][np.isin(desi["_kind"], ["galaxy", "star"])]
    observed[obj] = True
    sv3 = np.zeros(n, bool)
    sv3[desi["_obj"][desi["_sv3"] & (desi["_obj"] >= 0)]] = True
    return pa.table({
        "obj_id": np.arange(n, dtype=np.int64),
        "kind": np.where(is_star, "star", "galaxy"),
        "z": z_true,
        "sf": pad(gal.sed.sf), "red": pad(gal.red.astype(float)) > 0.5,
        "log_mstar": pad(gal.log_mstar), "abs_mag_r": pad(gal.abs_mag_r),
        "r_eff_arcsec": pad(gal.r_eff, 0.0), "sersic_n": pad(gal.sersic_n),
        "axis_ratio": pad(gal.axis_ratio, 1.0), "pos_angle": pad(gal.pos_angle, 0.0),
        "ha_ew": pad(gal.sed.ha_ew), "av": pad(gal.sed.av),
        "star_temp": np.r_[np.full(n_gal, np.nan), stars.temp],
        "mag_g": mags["decam2014-g"], "mag_r": mags["decam2014-r"], "mag_z": mags["decam2014-z"],
        "ebv": ebv, "fibre_fraction": fibre_frac,
        "ra": ra, "dec": dec, "ra_ls": ra_ls, "dec_ls": dec_ls, "ra_desi": ra_desi, "dec_desi": dec_desi,
        "RELEASE": np.full(n, RELEASE, np.int32), "BRICKID": brickid.astype(np.int32),
        "OBJID": objid.astype(np.int32), "TARGETID": np.where(observed, tid, -1),
        "in_imaging": np.ones(n, bool), "in_spectro": observed, "in_sv3": sv3,
        "targeted": targeted,
    })


def _write_parquet(path: Path, table) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _versions() -> dict[str, str]:
    import astropy
    import speclite

    from astroembed import __version__

    return {"astroembed": __version__, "numpy": np.__version__, "astropy": astropy.__version__,
            "speclite": speclite.__version__, "python": platform.python_version()}
