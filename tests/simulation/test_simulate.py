"""The simulator: real formats, determinism, and physics checked against independent oracles
(rest-frame line wavelengths, astropy separations, the real SDSS main sample)."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits

import astroembed
from astroembed.readers import (
    attach_cutouts,
    detect_kind,
    read_catalog,
    read_cutout_fits,
    read_cutout_stack,
    read_redshifts,
    read_spectra,
    wavelength_grid,
)

HALPHA, OIII_5008 = 6564.61, 5008.24  # vacuum rest wavelengths (A), NIST


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern))


def _truth(root: Path):
    return pq.read_table(root / "truth.parquet").to_pandas()


def _spectra(root: Path) -> pa.Table:
    return pa.concat_tables([read_spectra(f) for f in _files(root / "desi", "coadd-main-*.fits")])


def test_layout_and_kinds(small_survey):
    expected = {
        "coadd-*.fits": "desi_spectra", "redrock-*.fits": "desi_redshifts",
        "zpix-*.fits": "desi_redshifts", "sweep-*.fits": "ls_catalog",
        "cutouts-*.h5": "ls_cutout_stack", "cutout_ra*_grz.fits": "ls_cutout_fits",
    }
    for pattern, kind in expected.items():
        files = _files(small_survey, pattern)
        assert files, pattern
        assert {detect_kind(f) for f in files} == {kind}, pattern
    # DESI's own layout: healpix/{survey}/{program}/{hpx // 100}/{hpx}/coadd-...-{hpx}.fits
    for f in _files(small_survey, "coadd-*.fits"):
        hpx = int(f.parent.name)
        assert f.parent.parent.name == str(hpx // 100)
        assert f.name.endswith(f"-{hpx}.fits")
        with fits.open(f) as h:
            assert h[0].header["HPXNSIDE"] == 64 and h[0].header["HPXPIXEL"] == hpx
            assert {"FIBERMAP", "B_FLUX", "R_IVAR", "Z_MASK", "B_WAVELENGTH"} <= {x.name for x in h}
            assert h["R_WAVELENGTH"].data.shape == (2326,)


def test_same_seed_same_files_and_other_seed_differs(small_survey, tmp_path):
    again = tmp_path / "again"
    astroembed.simulate(again, n_galaxies=200, seed=7, cutout_size=32)
    names = sorted(p.relative_to(small_survey) for p in small_survey.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in names:
        assert filecmp.cmp(small_survey / name, again / name, shallow=False), name
    other = tmp_path / "other"
    astroembed.simulate(other, n_galaxies=200, seed=8, cutout_size=32)
    assert not np.array_equal(_truth(other)["z"], _truth(small_survey)["z"])


def test_sky_region_crosses_ra_zero_and_spans_tiles(small_survey):
    truth = _truth(small_survey)
    assert (truth["ra"] > 359).any() and (truth["ra"] < 1).any()
    assert ((truth["ra"] >= 0) & (truth["ra"] < 360)).all()
    healpix_dirs = {f.parent.name for f in _files(small_survey, "coadd-main-*.fits")}
    assert len(healpix_dirs) >= 3
    assert len(_files(small_survey, "sweep-*.fits")) >= 2  # sweeps on both sides of RA = 0


def test_astrometric_offsets_between_surveys(small_survey):
    truth = _truth(small_survey)
    seen = truth[truth["in_spectro"]]
    ls = SkyCoord(seen["ra_ls"].to_numpy() * u.deg, seen["dec_ls"].to_numpy() * u.deg)
    desi = SkyCoord(seen["ra_desi"].to_numpy() * u.deg, seen["dec_desi"].to_numpy() * u.deg)
    sep = ls.separation(desi).arcsec
    assert 0.1 <= np.median(sep) <= 0.3
    assert sep.max() < 1.5


def test_targetid_encodes_legacy_survey_ids(small_survey):
    spectra = _spectra(small_survey)
    tgt = spectra.filter(pa.compute.equal(spectra["OBJTYPE"], "TGT"))
    tid = tgt["TARGETID"].to_numpy()
    # desitarget bit layout: OBJID bits 0-21, BRICKID 22-41, RELEASE 42-57.
    assert np.array_equal(tid & (2**22 - 1), tgt["BRICK_OBJID"].to_numpy())
    assert np.array_equal((tid >> 22) & (2**20 - 1), tgt["BRICKID"].to_numpy())
    assert np.array_equal((tid >> 42) & (2**16 - 1), tgt["RELEASE"].to_numpy())
    # ... and those IDs are the Legacy Survey catalogue's own.
    cat = pa.concat_tables([read_catalog(f) for f in _files(small_survey, "sweep-*.fits")])
    keys = set(zip(cat["RELEASE"].to_pylist(), cat["BRICKID"].to_pylist(), cat["OBJID"].to_pylist()))
    assert all(k in keys for k in zip(tgt["RELEASE"].to_pylist(), tgt["BRICKID"].to_pylist(),
                                      tgt["BRICK_OBJID"].to_pylist()))


def test_realistic_impurities(small_survey):
    spectra = _spectra(small_survey)
    objtype = spectra["OBJTYPE"].to_numpy(zero_copy_only=False)
    status = spectra["COADD_FIBERSTATUS"].to_numpy()
    tid = spectra["TARGETID"].to_numpy()
    assert (objtype == "SKY").any() and (status != 0).any() and (tid < 0).any()
    z = pa.concat_tables([read_redshifts(f) for f in _files(small_survey, "zpix-*.fits")])
    assert (z["ZWARN"].to_numpy() != 0).any()
    assert "STAR" in z["SPECTYPE"].to_pylist()
    truth = _truth(small_survey)
    assert (~truth["in_spectro"]).any()  # imaging-only objects
    assert (truth["kind"] == "star").any()


def test_zcat_primary_once_per_target(small_survey):
    rows = []
    for f in _files(small_survey, "zpix-*.fits"):
        with fits.open(f) as h:
            d = h["ZCATALOG"].data
            rows.append((np.asarray(d["TARGETID"]), np.asarray(d["ZCAT_PRIMARY"])))
    tid = np.concatenate([r[0] for r in rows])
    primary = np.concatenate([r[1] for r in rows])
    assert len(np.unique(tid)) < len(tid)  # some targets observed twice (main and sv3)
    uniq, counts = np.unique(tid[primary], return_counts=True)
    assert (counts == 1).all() and set(uniq) == set(tid)


def test_emission_lines_at_redshifted_wavelength(small_survey):
    """H-alpha (or [OIII] 5008 beyond the Z arm) peaks at (1 + z_true) x its rest wavelength."""
    truth = _truth(small_survey).set_index("TARGETID")
    spectra = _spectra(small_survey)
    wave = wavelength_grid()
    flux = np.asarray(spectra["flux"].combine_chunks().flatten()).reshape(-1, len(wave))
    checked = hits = 0
    for i, tid in enumerate(spectra["TARGETID"].to_numpy()):
        if tid not in truth.index or truth.loc[tid, "kind"] != "galaxy":
            continue
        row = truth.loc[tid]
        if not (row["ha_ew"] > 20 and row["mag_r"] < 19.0):
            continue
        rest = HALPHA if (1 + row["z"]) * HALPHA < 9750 else OIII_5008
        expected = rest * (1 + row["z"])
        window = np.abs(wave - expected) < 40
        smooth = np.convolve(flux[i], np.ones(3) / 3, mode="same")
        peak = wave[window][np.argmax(smooth[window])]
        checked += 1
        hits += abs(peak - expected) < 2.0
    assert checked >= 10
    assert hits / checked >= 0.9


def test_spectral_noise_like_desi_bgs(small_survey):
    """Median S/N per 0.8 A pixel in the R arm is ~2-5 for galaxies at r ~ 19."""
    truth = _truth(small_survey).set_index("TARGETID")
    spectra = _spectra(small_survey)
    wave = wavelength_grid()
    r_only = (wave > 5800) & (wave < 7520)
    flux = np.asarray(spectra["flux"].combine_chunks().flatten()).reshape(-1, len(wave))[:, r_only]
    ivar = np.asarray(spectra["ivar"].combine_chunks().flatten()).reshape(-1, len(wave))[:, r_only]
    snr = np.median(flux * np.sqrt(ivar), axis=1)
    tids = spectra["TARGETID"].to_numpy()
    mags = np.array([truth.loc[t, "mag_r"] if t in truth.index else np.nan for t in tids])
    kinds = np.array([truth.loc[t, "kind"] if t in truth.index else "" for t in tids])
    near19 = (kinds == "galaxy") & (np.abs(mags - 19.0) < 0.25)
    assert near19.sum() >= 20
    assert 2.0 <= np.median(snr[near19]) <= 5.0
    bright = (kinds == "galaxy") & (mags < 18.0)
    if bright.sum() >= 5:
        assert np.median(snr[bright]) > np.median(snr[near19])


def test_cutouts_match_catalogue(small_survey):
    cat = pa.concat_tables([read_catalog(f) for f in _files(small_survey, "sweep-*.fits")])
    stacks = [read_cutout_stack(f) for f in _files(small_survey, "cutouts-*.h5")]
    joined = attach_cutouts(cat, stacks)
    assert joined["image"].null_count == 0
    images = np.asarray(joined["image"].combine_chunks().storage.flatten()).reshape(-1, 3, 32, 32)
    # Stamps hold the catalogue flux: point sources and compact galaxies lose little outside.
    compact = np.asarray(cat["SHAPE_R"]) < 0.8
    ratio = images[compact, 1].sum(axis=(1, 2)) / np.asarray(cat["FLUX_R"])[compact]
    assert 0.85 < np.median(ratio) < 1.05
    # Single FITS cutouts join to their object by WCS centre.
    singles = [read_cutout_fits(f) for f in _files(small_survey, "cutout_ra*_grz.fits")]
    by_position = attach_cutouts(cat, singles)
    assert by_position["image"].null_count == cat.num_rows - len(singles)


def test_simulation_summary(small_survey):
    summary = json.loads((small_survey / "simulation.json").read_text())
    assert summary["config"] == {"n_galaxies": 200, "seed": 7, "cutout_size": 32, "dec_centre": 2.0,
                                 "bricks": 0}
    truth = _truth(small_survey)
    assert (truth["kind"] == "galaxy").sum() == 200
    assert set(summary["files"]) == {str(p.relative_to(small_survey))
                                     for p in small_survey.rglob("*")
                                     if p.is_file() and p.name not in ("truth.parquet", "simulation.json")}


@pytest.fixture(scope="module")
def sdss(real_fixtures):
    path = real_fixtures / "reference" / "sdss_main_10000gal_ugriz_specz.fits"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with fits.open(path) as h:
        d = h[1].data
        mags = 22.5 - 2.5 * np.log10(np.clip(d["MODELFLUX"], 1e-3, None)) - d["EXTINCTION"]
        return {"z": np.asarray(d["Z"], float), "g_r": mags[:, 1] - mags[:, 2]}


@pytest.fixture(scope="module")
def bright_sample():
    """Simulated galaxies with SDSS r < 17.77, from the simulator's own population code."""
    from astroembed.simulation.population import sample_galaxies

    gal = sample_galaxies(np.random.default_rng(11), 3000, r_limit=17.77)
    keep = gal.mags["sdss2010-r"] < 17.77
    return {"z": gal.z[keep], "g_r": (gal.mags["sdss2010-g"] - gal.mags["sdss2010-r"])[keep]}


def test_colour_redshift_relation_matches_sdss(sdss, bright_sample):
    """Median g-r in redshift bins of 0.05 over 0.02-0.25 within 0.1 mag of real SDSS."""
    for lo in np.arange(0.02, 0.25, 0.05):
        sim = (bright_sample["z"] >= lo) & (bright_sample["z"] < lo + 0.05)
        ref = (sdss["z"] >= lo) & (sdss["z"] < lo + 0.05)
        assert sim.sum() >= 30
        diff = np.median(bright_sample["g_r"][sim]) - np.median(sdss["g_r"][ref])
        assert abs(diff) < 0.1, f"z {lo:.2f}-{lo + 0.05:.2f}: median g-r off by {diff:+.3f}"


def test_redshift_distribution_matches_sdss(sdss, bright_sample):
    from scipy.stats import ks_2samp

    assert abs(np.median(bright_sample["z"]) - np.median(sdss["z"])) < 0.015
    assert ks_2samp(bright_sample["z"], sdss["z"]).statistic < 0.08


# The same checks on the SDSS statistics shipped with the tests (sdss_main_reference.json, with
# their source), so the simulator's realism is checked wherever the tests run.
SDSS_REFERENCE = json.loads((Path(__file__).with_name("sdss_main_reference.json"))
                            .read_text(encoding="utf-8"))


def test_colour_redshift_relation_matches_shipped_sdss_medians(bright_sample):
    for b in SDSS_REFERENCE["g_r_by_redshift"]:
        sim = (bright_sample["z"] >= b["z_min"]) & (bright_sample["z"] < b["z_max"])
        assert sim.sum() >= 30
        diff = np.median(bright_sample["g_r"][sim]) - b["median_g_r"]
        assert abs(diff) < 0.1, f"z {b['z_min']}-{b['z_max']}: median g-r off by {diff:+.3f}"


def test_redshift_distribution_matches_shipped_sdss_quantiles(bright_sample):
    """Median within 0.015; the simulated CDF within 0.08 of SDSS's at every shipped quantile
    (the KS statistic restricted to those points)."""
    z = np.sort(bright_sample["z"])
    assert abs(np.median(z) - SDSS_REFERENCE["median_z"]) < 0.015
    quantiles = SDSS_REFERENCE["z_quantiles"]
    cdf = np.searchsorted(z, quantiles["z"], side="right") / len(z)
    gap = np.abs(cdf - np.asarray(quantiles["levels"]))
    assert gap.max() < 0.08, dict(zip(quantiles["levels"], gap.round(3)))


def test_shipped_sdss_statistics_are_the_fixtures(sdss):
    assert SDSS_REFERENCE["galaxies"] == len(sdss["z"])
    assert SDSS_REFERENCE["median_z"] == pytest.approx(np.median(sdss["z"]), abs=5e-5)
    for b in SDSS_REFERENCE["g_r_by_redshift"]:
        ref = (sdss["z"] >= b["z_min"]) & (sdss["z"] < b["z_max"])
        assert b["galaxies"] == ref.sum()
        assert b["median_g_r"] == pytest.approx(np.median(sdss["g_r"][ref]), abs=5e-5)
    quantiles = SDSS_REFERENCE["z_quantiles"]
    assert quantiles["z"] == pytest.approx(
        np.percentile(sdss["z"], 100 * np.asarray(quantiles["levels"])), abs=5e-5)


def test_every_reader_reads_simulated_files(small_survey):
    from astroembed.readers import read_table

    truth = _truth(small_survey)
    redrock = pa.concat_tables([read_redshifts(f) for f in _files(small_survey, "redrock-main-*.fits")])
    spectra = _spectra(small_survey)
    assert redrock.num_rows == spectra.num_rows
    # redrock positions come from the same file's FIBERMAP, in the same fibre order
    assert np.array_equal(redrock["TARGETID"].to_numpy(), spectra["TARGETID"].to_numpy())
    by_id = truth.set_index("TARGETID")
    good = (redrock["ZWARN"].to_numpy() == 0) & (redrock["TARGETID"].to_numpy() > 0)
    tids = redrock["TARGETID"].to_numpy()[good]
    z = redrock["Z"].to_numpy()[good]
    z_true = by_id.loc[tids, "z"].to_numpy()
    assert np.median(np.abs(z - z_true) / (1 + z_true)) < 1e-3
    table = read_table(small_survey / "truth.parquet")
    assert table.num_rows == len(truth)


def test_redrock_positions_from_its_fibermap(small_survey):
    for f in _files(small_survey, "redrock-main-*.fits")[:2]:
        z = read_redshifts(f)
        with fits.open(f) as h:
            assert np.allclose(z["TARGET_RA"].to_numpy(), h["FIBERMAP"].data["TARGET_RA"])
        assert z["SURVEY"].to_pylist() == ["main"] * z.num_rows


def test_progress_counts_rise_to_every_object_and_fibre(tmp_path):
    calls: list[tuple[str, int, int]] = []
    out = tmp_path / "survey"
    summary = astroembed.simulate(out, n_galaxies=300, seed=5, cutout_size=16,
                                  progress=lambda *args: calls.append(args))
    assert [c[0] for c in calls] == sorted((c[0] for c in calls), key=["objects", "fibres"].index)
    fibres = sum(len(fits.getdata(f, "FIBERMAP"))
                 for f in _files(out / "desi", "coadd-*.fits"))
    assert fibres > summary["n_fibres"]  # main and the sv3 re-observations
    for stage, total in (("objects", summary["n_imaging"]), ("fibres", fibres)):
        done = [d for s, d, t in calls if s == stage]
        assert {t for s, _, t in calls if s == stage} == {total}
        assert len(done) > 1 and all(b > a for a, b in zip(done, done[1:]))
        assert done[-1] == total


def test_simulate_draws_its_bars_on_stderr_and_none_with_json_or_quiet(tmp_path):
    """At a terminal (``TTY_COMPATIBLE=1`` tells rich that CliRunner's stderr is one)."""
    from typer.testing import CliRunner

    from astroembed.cli import app

    runner = CliRunner(env={"TTY_COMPATIBLE": "1"})
    args = ["--n-galaxies", "30", "--seed", "2", "--cutout-size", "16"]
    shown = runner.invoke(app, ["simulate", str(tmp_path / "a"), *args])
    assert shown.exit_code == 0, shown.output
    assert "objects" in shown.stderr and "fibres" in shown.stderr
    assert "Simulated 30 galaxies" in shown.stdout
    for argv in (["simulate", str(tmp_path / "b"), *args, "--json"],
                 ["-q", "simulate", str(tmp_path / "c"), *args]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
