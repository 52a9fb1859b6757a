"""A cross-match with brick coadds among its IMAGES: the matched objects get stamps cut from
their own brick, checked against astropy's Cutout2D on the decompressed brick."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS

import astroembed
from astroembed.readers import read_catalog
from astroembed.simulation.bricks import write_brick
from oracles import cutout2d_stamp

SIZE = 24


def sweep_rows(survey: Path) -> pa.Table:
    files = sorted((survey / "legacysurvey" / "sweep").rglob("sweep-*.fits"))
    return pa.concat_tables(read_catalog(f).select(
        ["RA", "DEC", "BRICKNAME", "FLUX_G", "FLUX_R", "FLUX_Z", "SHAPE_R", "TYPE"])
        for f in files)


def stamp_of(files: dict[str, Path], ra: float, dec: float, size: int = SIZE) -> np.ndarray:
    """The oracle: astropy's Cutout2D of each decompressed band, 0 outside the brick."""
    return cutout2d_stamp(files, ra, dec, size)


@pytest.fixture(scope="module")
def with_bricks(small_survey, tmp_path_factory):
    """Small bricks, named by three objects' BRICKNAMEs, around those objects; the sweeps
    and the bricks cross-matched with the DESI side (left join: every object kept)."""
    root = tmp_path_factory.mktemp("bricks") / "legacysurvey"
    rows = sweep_rows(small_survey)
    names = rows.column("BRICKNAME").to_pylist()
    picked = [i for k, i in enumerate(np.unique(names, return_index=True)[1]) if k < 3]
    ra = rows.column("RA").to_numpy()
    dec = rows.column("DEC").to_numpy()
    flux = {b: np.clip(rows.column(f"FLUX_{b.upper()}").to_numpy(), 0, None) for b in "grz"}
    r_eff = np.clip(np.nan_to_num(rows.column("SHAPE_R").to_numpy(), nan=0.5), 0.3, 5)
    point = np.asarray(rows.column("TYPE").to_pylist()) == "PSF"
    bricks = {}
    for k, i in enumerate(picked):
        # the first object sits near its brick's edge: a partial stamp
        shift = (-0.0026 if k == 0 else 0.0008) / np.cos(np.radians(dec[i]))
        bricks[names[i]] = write_brick(
            root, names[i], ra[i] + shift, dec[i], ra, dec, flux, r_eff,
            np.ones(len(ra)), np.full(len(ra), 0.8), np.zeros(len(ra)), point,
            np.random.default_rng(k), width=80)
    out = tmp_path_factory.mktemp("matched") / "cat"
    astroembed.crossmatch([small_survey / "legacysurvey" / "sweep", root], small_survey / "desi",
                          out, how="left", cutout_size=SIZE)
    return out, bricks, [(names[i], ra[i], dec[i]) for i in picked], root


def main_rows(catalog: Path) -> pa.Table:
    files = sorted((catalog / "main" / "dataset").rglob("Npix=*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files)


def test_objects_get_stamps_from_their_own_brick(with_bricks):
    catalog, bricks, picked, _ = with_bricks
    main = main_rows(catalog)
    ra_col = "RA_left" if "RA_left" in main.column_names else "RA"
    dec_col = "DEC_left" if "DEC_left" in main.column_names else "DEC"
    brick_col = "BRICKNAME_left" if "BRICKNAME_left" in main.column_names else "BRICKNAME"
    stamp_brick = main.column("stamp_brick").to_pylist()
    assert sum(b is not None for b in stamp_brick) >= len(picked)
    for name, ra, dec in picked:
        row = int(np.argmin(np.hypot(main.column(ra_col).to_numpy() - ra,
                                     main.column(dec_col).to_numpy() - dec)))
        assert main.column(brick_col)[row].as_py() == name
        assert stamp_brick[row] == name
        row_id = main.column("ROW_ID")[row].as_py()
        image = astroembed.pixels(catalog, [row_id], ["image"]).column("image")
        got = np.asarray(image.combine_chunks().storage.flatten()).reshape(3, SIZE, SIZE)
        assert np.array_equal(got, stamp_of(bricks[name], ra, dec))
    # rows whose brick is absent have no stamp and no coverage
    missing = [i for i, b in enumerate(stamp_brick) if b is None]
    assert missing
    assert all(main.column("stamp_covered_fraction")[i].as_py() is None for i in missing)
    covered = [main.column("stamp_covered_fraction")[i].as_py()
               for i, b in enumerate(stamp_brick) if b is not None]
    assert min(covered) < 1.0 and max(covered) == 1.0


def masked_fraction_of(files: dict[str, Path], ra: float, dec: float, size: int = SIZE) -> float:
    """The oracle: pixels of the Cutout2D window with a mask bit set, invvar 0 in any band,
    or off the brick, by NumPy over the fully decompressed maskbits and invvar files."""
    g = files["g"]
    with fits.open(g.with_name(g.name.replace("-image-g", "-maskbits"))) as hdul:
        bad = np.array(hdul[1].data) != 0
        wcs = WCS(hdul[1].header)
    for band in "grz":
        with fits.open(files[band].with_name(files[band].name.replace("-image-", "-invvar-"))) as hdul:
            bad |= np.array(hdul[1].data) == 0
    usable = Cutout2D((~bad).astype(np.uint8), SkyCoord(ra, dec, unit="deg"), (size, size),
                      wcs=wcs, mode="partial", fill_value=0).data
    return 1.0 - usable.sum() / size**2


def test_masked_fraction_in_the_catalog(with_bricks):
    catalog, bricks, picked, _ = with_bricks
    main = main_rows(catalog)
    ra_col = "RA_left" if "RA_left" in main.column_names else "RA"
    dec_col = "DEC_left" if "DEC_left" in main.column_names else "DEC"
    masked = main.column("stamp_masked_fraction").to_pylist()
    for k, name in enumerate(main.column("stamp_brick").to_pylist()):
        if name is None:
            assert masked[k] is None
            continue
        ra, dec = main.column(ra_col)[k].as_py(), main.column(dec_col)[k].as_py()
        assert masked[k] == pytest.approx(masked_fraction_of(bricks[name], ra, dec), abs=1e-6)
        # the simulator's bricks mask only saturated pixels: off-brick pixels dominate here
        assert masked[k] >= 1.0 - main.column("stamp_covered_fraction")[k].as_py() - 1e-6


def test_objects_no_brick_holds_keep_their_cutouts(with_bricks, small_survey, tmp_path):
    from astroembed.readers import read_cutout_stack

    _, bricks, picked, root = with_bricks
    out = tmp_path / "cat"
    ls = small_survey / "legacysurvey"
    astroembed.crossmatch([ls / "sweep", ls / "cutouts", root], small_survey / "desi", out,
                          how="left", cutout_size=32)
    main = main_rows(out)
    stacks = pa.concat_tables(read_cutout_stack(f) for f in sorted(ls.glob("cutouts/*.h5")))
    stack_images = stacks.column("image").combine_chunks().to_numpy_ndarray()
    stack_xy = np.c_[stacks.column("RA").to_numpy(), stacks.column("DEC").to_numpy()]
    ra_col = "RA_left" if "RA_left" in main.column_names else "RA"
    dec_col = "DEC_left" if "DEC_left" in main.column_names else "DEC"
    row_ids = main.column("ROW_ID").to_pylist()
    images = astroembed.pixels(out, row_ids, ["image"]).column("image").combine_chunks()
    images = images.storage.flatten().to_numpy().reshape(-1, 3, 32, 32)
    bricked = 0
    for k, name in enumerate(main.column("stamp_brick").to_pylist()):
        ra, dec = main.column(ra_col)[k].as_py(), main.column(dec_col)[k].as_py()
        if name is None:
            j = int(np.argmin(np.hypot(*(stack_xy - [ra, dec]).T)))
            assert np.array_equal(images[k], stack_images[j])
        else:
            bricked += 1
            assert np.array_equal(images[k], stamp_of(bricks[name], ra, dec, 32))
    assert bricked >= len(picked)


def documented_brick_columns() -> dict[str, list[str]]:
    """Rows of the brick columns table in docs/outputs.md: column -> [type, unit, part, meaning]."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "outputs.md").read_text()
    body = text.split("<!-- brick columns: begin -->")[1].split("<!-- brick columns: end -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in body.strip().splitlines()[2:]]
    return {r[0].strip("`"): r[1:] for r in rows}


def test_stamp_columns_are_documented(with_bricks):
    from astroembed.catalog.schema import describe_field

    catalog, _, _, _ = with_bricks
    documented = documented_brick_columns()
    main = pq.read_schema(sorted((catalog / "main" / "dataset").rglob("Npix=*.parquet"))[0])
    stamp_columns = {f.name: f for f in main if f.name.startswith("stamp_")}
    assert set(documented) == set(stamp_columns)
    types = {"string": pa.string(), "float32": pa.float32()}
    for name, (type_, unit, part, meaning) in documented.items():
        assert stamp_columns[name].type == types[type_], name
        assert part == "main"
        assert (unit, meaning) == describe_field(stamp_columns[name]), name


def test_simulated_survey_bricks(small_survey, brick_survey):
    """``simulate(bricks=1)``: the same survey plus one real-size brick, in which every
    object of that brick has a complete stamp holding its catalogued flux."""
    import json

    from astroembed.readers.bricks import cut_stamps, find_bricks

    out = brick_survey
    summary = json.loads((out / "simulation.json").read_text())
    bricks = find_bricks(out / "legacysurvey")
    assert len(bricks) == 1
    (name, files), = bricks.items()
    coadd = sorted(str(p.relative_to(out)) for p in (out / "legacysurvey" / "coadd").rglob("*.fz"))
    assert sorted(f for f in summary["files"] if "/coadd/" in f and "legacysurvey" in f) == coadd
    for sweep in sorted((small_survey / "legacysurvey" / "sweep").rglob("*.fits")):
        twin = out / sweep.relative_to(small_survey)
        assert twin.read_bytes() == sweep.read_bytes()
    rows = sweep_rows(out)
    mine = np.flatnonzero(np.asarray(rows.column("BRICKNAME").to_pylist()) == name)
    assert mine.size >= 2
    ra, dec = rows.column("RA").to_numpy()[mine], rows.column("DEC").to_numpy()[mine]
    stamps = cut_stamps(name, files, ra, dec, 32)
    assert (stamps.covered == 1.0).all()
    compact = rows.column("SHAPE_R").to_numpy()[mine] < 0.8
    flux_r = rows.column("FLUX_R").to_numpy()[mine]
    assert compact.any()
    ratio = stamps.images[compact, 1].sum(axis=(1, 2)) / flux_r[compact]
    assert 0.8 < np.median(ratio) < 1.1
