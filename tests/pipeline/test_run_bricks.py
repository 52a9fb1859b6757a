"""``astroembed run`` over a survey with brick coadds, one brick file truncated: ``fail``
stops with the file named and writes nothing; ``skip`` finishes (exit 4), reports the file,
and every other object's stamp holds the brick's pixels.

Oracles: astropy's Cutout2D on the fully decompressed brick images, and the pre-cut
cutouts read from the survey's HDF5 files with h5py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from oracles import cutout2d_stamp
from astropy.io import fits

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32  # the survey's cutout size: an object whose brick is bad keeps its cutout


def cli(*args, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "astroembed.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def sweep_rows(survey: Path) -> pa.Table:
    from astroembed.readers import read_catalog

    files = sorted((survey / "legacysurvey" / "sweep").rglob("sweep-*.fits"))
    return pa.concat_tables(read_catalog(f).select(["RA", "DEC", "BRICKNAME", "FLUX_G", "FLUX_R",
                                                    "FLUX_Z", "TYPE"]) for f in files)


def brick_stamp(files: dict[str, Path], ra: float, dec: float) -> np.ndarray:
    return cutout2d_stamp(files, ra, dec, SIZE)


@pytest.fixture()
def pipeline(small_survey, tmp_path):
    """The survey copied as the inputs, with small bricks (160 x 160 pixels) around three
    BRICKNAMEs' objects and a config keeping every imaging object (left join)."""
    from astroembed.simulation.bricks import write_brick

    shutil.copytree(small_survey, tmp_path / "in")
    root = tmp_path / "in" / "legacysurvey"
    rows = sweep_rows(small_survey)
    names = rows.column("BRICKNAME").to_pylist()
    ra, dec = rows.column("RA").to_numpy(), rows.column("DEC").to_numpy()
    flux = {b: np.clip(rows.column(f"FLUX_{b.upper()}").to_numpy(), 0, None) for b in "grz"}
    point = np.asarray(rows.column("TYPE").to_pylist()) == "PSF"
    bricks = {}
    for k, i in enumerate(sorted(np.unique(names, return_index=True)[1])[:3]):
        n = len(ra)
        bricks[names[i]] = write_brick(root, names[i], ra[i], dec[i], ra, dec, flux,
                                       np.full(n, 1.0), np.ones(n), np.full(n, 0.8),
                                       np.zeros(n), point, np.random.default_rng(k), width=160)
    config = tmp_path / "pipe.toml"
    config.write_text('images = "in/legacysurvey"\nspectra = "in/desi"\ncatalog = "out/cat"\n'
                      f'[crossmatch]\nhow = "left"\ncutout_size = {SIZE}\n')
    bad_brick = sorted(bricks)[1]
    bad = bricks[bad_brick]["r"]
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    return config, bricks, bad_brick, bad


def cutouts_by_position(survey: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    xy, images = [], []
    for f in sorted((survey / "legacysurvey" / "cutouts").glob("*.h5")):
        with h5py.File(f, "r") as h5:
            xy.append(np.c_[h5["ra"][:], h5["dec"][:]])
            images.append(np.asarray(h5["images"][:], dtype=np.float32))
    return np.concatenate(xy), np.concatenate(images)


def test_a_truncated_brick_fails_the_run_or_costs_only_its_stamps(pipeline, small_survey,
                                                                   tmp_path):
    import astroembed

    config, bricks, bad_brick, bad = pipeline
    catalog = tmp_path / "out" / "cat"

    failed = cli("run", config)
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert str(bad) in last and "truncated" in last and "again" in last
    assert not catalog.exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.endswith(".lock")] == []

    skipped = cli("run", config, "--on-error", "skip", "--json")
    assert skipped.returncode == 4, skipped.stderr
    report = json.loads(skipped.stdout)
    assert list(report["skipped_inputs"]) == [str(bad)]
    assert "truncated" in report["skipped_inputs"][str(bad)]
    assert str(bad) in skipped.stderr
    assert report["stages"]["embed"]["tiles_embedded"] > 0

    main = pq.ParquetDataset(catalog / "main" / "dataset").read()
    ra_col = "RA_left" if "RA_left" in main.column_names else "RA"
    dec_col = "DEC_left" if "DEC_left" in main.column_names else "DEC"
    row_ids = main.column("ROW_ID").to_pylist()
    images = astroembed.pixels(catalog, row_ids, ["image"]).column("image").combine_chunks()
    valid = images.is_valid().to_numpy(zero_copy_only=False)
    pixels = images.storage.values.to_numpy().reshape(-1, 3, SIZE, SIZE)  # null rows included
    got = {rid: (pixels[k] if valid[k] else None) for k, rid in enumerate(
        astroembed.pixels(catalog, row_ids, ["image"]).column("ROW_ID").to_pylist())}
    xy, cutouts = cutouts_by_position(small_survey)
    stamped = {name: 0 for name in bricks}
    for k, name in enumerate(main.column("stamp_brick").to_pylist()):
        if name is None:
            continue
        stamped[name] += 1
        ra, dec = main.column(ra_col)[k].as_py(), main.column(dec_col)[k].as_py()
        image = got[row_ids[k]]
        if name == bad_brick:
            assert main.column("stamp_covered_fraction")[k].as_py() == 0.0
            assert main.column("stamp_offset_x")[k].as_py() is None
            assert main.column("stamp_masked_fraction")[k].as_py() is None
            j = int(np.argmin(np.hypot(*(xy - [ra, dec]).T)))
            assert np.array_equal(image, cutouts[j])  # its pre-cut cutout
        else:
            assert np.array_equal(image, brick_stamp(bricks[name], ra, dec))
            assert main.column("stamp_covered_fraction")[k].as_py() > 0
    assert all(stamped.values()), stamped


def test_a_repaired_brick_file_is_a_changed_input(pipeline, tmp_path):
    """The brick directory is one input, fingerprinted by its files: nothing new after a
    skip run, and a repaired file redoes the tiles, its objects then getting stamps."""
    config, bricks, bad_brick, bad = pipeline
    catalog = tmp_path / "out" / "cat"
    assert cli("-q", "run", config, "--on-error", "skip").returncode == 4
    again = cli("run", config, "--on-error", "skip", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["outcome"] == "nothing to do"

    # the repaired file: the same brick's g pixels on its grid, compressed as before
    with fits.open(bricks[bad_brick]["g"]) as hdul:
        data, header = np.array(hdul[1].data), hdul[1].header
    hdu = fits.CompImageHDU(data, header=header, compression_type="RICE_1",
                            tile_shape=(1, data.shape[1]))
    bad.unlink()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(bad)
    fixed = cli("run", config, "--json")
    assert fixed.returncode == 0, fixed.stderr
    report = json.loads(fixed.stdout)
    assert report["inputs"]["changed"] == [str(tmp_path / "in" / "legacysurvey")]
    main = pq.ParquetDataset(catalog / "main" / "dataset").read()
    names = main.column("stamp_brick").to_pylist()
    covered = main.column("stamp_covered_fraction").to_pylist()
    mine = [c for n, c in zip(names, covered) if n == bad_brick]
    assert mine and all(c > 0 for c in mine)


def test_a_brick_directory_is_compared_by_its_listing(tmp_path):
    """Names, sizes and mtimes of the coadd files decide (the bytes of a coadd tree are too
    many to read each run): a copy with the same listing is unchanged; a renamed, resized
    or re-dated file, or one more file, is a change."""
    from astroembed.pipeline.state import diff_inputs

    root = tmp_path / "ls"
    brick = root / "coadd" / "011" / "0116p000"
    brick.mkdir(parents=True)
    for band in "grz":
        (brick / f"legacysurvey-0116p000-image-{band}.fits.fz").write_bytes(band.encode() * 100)
    known = diff_inputs([str(root)], {}).fingerprints
    assert diff_inputs([str(root)], known).changed == []
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # copy2: same sizes and mtimes
    assert diff_inputs([str(copy)], {str(copy): known[str(root)]}).changed == []

    g = brick / "legacysurvey-0116p000-image-g.fits.fz"
    st = g.stat()
    for change in (lambda: os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9)),
                   lambda: g.write_bytes(b"g" * 101),
                   lambda: g.rename(brick / "legacysurvey-0116p000-image-i.fits.fz"),
                   lambda: (brick / "legacysurvey-0116p000-maskbits.fits.fz").write_bytes(b"")):
        before = diff_inputs([str(root)], {}).fingerprints
        change()
        assert diff_inputs([str(root)], before).changed == [str(root)]
