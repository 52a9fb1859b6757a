"""Test-owned geometry and catalog files: the independent oracles the cross-match, tiling and
catalog tests compare with.

Never imported by the package; written here from the textbook formulas (and pyarrow alone for
the files) so that a bug in ``astroembed.matching.sky`` or the catalog writer cannot hide behind
the same bug in its oracle.
"""

from __future__ import annotations

import numpy as np


def haversine_arcsec(ra1, dec1, ra2, dec2):
    """Great-circle distance in arcsec (haversine formula)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(a, dtype=float)) for a in (ra1, dec1, ra2, dec2))
    a = (np.sin((dec2 - dec1) / 2) ** 2
         + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))) * 3600


def offset(ra, dec, dist_arcsec, pa_deg):
    """The point ``dist_arcsec`` from (ra, dec) towards position angle ``pa_deg``.

    Built from vectors (not arcsin), so it stays exact to ~1e-16 rad at the poles.
    """
    r, d = np.radians(ra), np.radians(dec)
    delta, pa = np.radians(np.asarray(dist_arcsec) / 3600.0), np.radians(pa_deg)
    p = np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])
    east = np.stack([-np.sin(r), np.cos(r), np.zeros_like(r)])
    north = np.stack([-np.sin(d) * np.cos(r), -np.sin(d) * np.sin(r), np.cos(d)])
    v = np.cos(delta) * p + np.sin(delta) * (np.cos(pa) * north + np.sin(pa) * east)
    ra2 = np.degrees(np.arctan2(v[1], v[0])) % 360.0
    return ra2, np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1])))


def tile_with_pixels(catalog, order: int, pixel: int):
    """One tile as pyarrow reads its two files: the main catalog's columns, then the pixel
    extension's, checked to be the same rows by ``ROW_ID`` (paths written out here, not
    taken from the package)."""
    from pathlib import Path

    import pyarrow.parquet as pq

    name = f"Norder={order}/Dir={pixel // 10000 * 10000}/Npix={pixel}.parquet"
    main = pq.read_table(Path(catalog) / "main" / "dataset" / name)
    pixels_file = Path(catalog) / "pixels" / "dataset" / name
    if not pixels_file.is_file():
        return main
    pixels = pq.read_table(pixels_file)
    assert pixels.column("ROW_ID").equals(main.column("ROW_ID"))
    for fld in pixels.schema:
        if fld.name not in main.column_names:
            main = main.append_column(fld, pixels.column(fld.name))
    return main


def single_table_copy(collection, out) -> None:
    """The collection rewritten as earlier versions laid a catalog out (pyarrow only): one
    table per tile with every column, pixels included, ``hats.properties`` at the top."""
    import shutil
    from pathlib import Path

    import pyarrow.parquet as pq

    collection, out = Path(collection), Path(out)
    for f in sorted((collection / "main" / "dataset").rglob("Npix=*.parquet")):
        order, pixel = int(f.parent.parent.name.split("=")[1]), int(f.stem.split("=")[1])
        table = tile_with_pixels(collection, order, pixel).drop_columns(["ROW_ID"])
        dest = out / "dataset" / f.relative_to(collection / "main" / "dataset")
        dest.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, dest)
    props = (collection / "main" / "hats.properties").read_text()
    (out / "hats.properties").write_text(props)
    shutil.copy(collection / "main" / "astroembed_provenance.json", out)


def cutout2d_stamp(files: dict, ra: float, dec: float, size: int) -> np.ndarray:
    """A brick's (3, size, size) g, r, z stamp by astropy's Cutout2D of each decompressed
    band (0 outside the brick): the oracle for stamps cut from brick coadds."""
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS

    planes = []
    for band in "grz":
        with fits.open(files[band]) as hdul:
            data, wcs = np.array(hdul[1].data), WCS(hdul[1].header)
        planes.append(Cutout2D(data, SkyCoord(ra, dec, unit="deg"), (size, size), wcs=wcs,
                               mode="partial", fill_value=0).data)
    return np.stack(planes)
