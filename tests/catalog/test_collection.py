"""The catalog as a HATS collection: the main catalog carries the scalars and embeddings, the
pixel extension the cutouts and spectra, and ``embed`` never touches a pixel file.

Oracles: ``os.stat`` and SHA-256 of the files, pyarrow and h5py reading the files directly,
LSDB opening the collection.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

import astroembed

if TYPE_CHECKING:
    import pandas as pd

PIXELS = {"image", "flux", "ivar"}


def _files(root: Path) -> dict[str, tuple[int, int, str]]:
    """Inode, mtime and SHA-256 of every file under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = os.stat(p)
            out[str(p.relative_to(root))] = (st.st_ino, st.st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def embedded(tiled_catalog, tiny_model, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the tiled catalog, its pixel files recorded, then embedded."""
    path = tmp_path_factory.mktemp("collection") / "matched"
    shutil.copytree(tiled_catalog, path)
    before = _files(path / "pixels")
    astroembed.embed(path, model=tiny_model)
    return path, before


def test_embed_leaves_every_pixel_file_as_it_was(embedded):
    path, before = embedded
    assert before and any(k.endswith(".parquet") for k in before)
    assert _files(path / "pixels") == before


def test_no_file_holds_both_pixels_and_embeddings(embedded):
    path, _ = embedded
    tiles = sorted(path.rglob("Npix=*.parquet"))
    assert tiles
    for file in tiles:
        names = set(pq.read_schema(file).names)
        has_pixels = bool(names & PIXELS)
        has_embeddings = any(n.startswith("embedding_") for n in names)
        assert not (has_pixels and has_embeddings), file
        assert has_pixels == ("pixels" in file.relative_to(path).parts), file


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # nested-pandas vs pandas 3.1
@pytest.mark.filterwarnings("ignore:Right catalog does not have a margin cache")
def test_lsdb_opens_the_collection_and_joins_the_pixels(embedded, small_survey):
    lsdb = pytest.importorskip("lsdb")
    path, _ = embedded
    catalog = lsdb.open_catalog(path)
    frame = catalog.compute()
    info = astroembed.info(path)
    assert len(frame) == info["total_rows"] > 0
    assert not PIXELS & set(frame.columns)
    assert {"embedding_image", "embedding_spectrum"} <= set(frame.columns)
    assert frame["ROW_ID"].is_unique
    joined = catalog.load_extension("pixels").compute()
    assert len(joined) == len(frame) and PIXELS <= set(joined.columns)
    # The cutouts, bit for bit as the input HDF5 files hold them (h5py, keyed by the IDs).
    cutouts = {}
    for file in sorted((small_survey / "legacysurvey").rglob("*.h5")):
        with h5py.File(file) as h5:
            for key, image in zip(zip(h5["release"][:], h5["brickid"][:], h5["objid"][:]),
                                  h5["images"][:]):
                cutouts[tuple(int(v) for v in key)] = image
    release = "RELEASE_left" if "RELEASE_left" in joined.columns else "RELEASE"
    brickid = "BRICKID_left" if "BRICKID_left" in joined.columns else "BRICKID"
    compared = 0
    for _, row in joined.iterrows():
        key = (int(row[release]), int(row[brickid]), int(row["OBJID"]))
        got = np.asarray(row["image"], dtype=np.float32).reshape(3, 32, 32)
        np.testing.assert_array_equal(got, cutouts[key])
        compared += 1
    assert compared == len(frame)
    # The spectra: where only the blue camera covers the grid (below the red arm's first
    # wavelength), the flux is the coadd's B_FLUX, bit for bit (astropy reads the FITS), and
    # 0 where the pixel is unusable (B_MASK set, ivar <= 0 or not finite: read_spectra).
    from astropy.io import fits

    checked = 0
    for (survey, program, healpix), rows in joined.groupby(["SURVEY", "PROGRAM", "HEALPIX"]):
        file = (small_survey / "desi" / "healpix" / survey / program / str(healpix // 100)
                / str(healpix) / f"coadd-{survey}-{program}-{healpix}.fits")
        with fits.open(file) as hdus:
            b_only = int(np.searchsorted(hdus["B_WAVELENGTH"].data, hdus["R_WAVELENGTH"].data[0]))
            index = {int(t): i for i, t in enumerate(hdus["FIBERMAP"].data["TARGETID"])}
            blue, ivar, mask = (hdus[f"B_{k}"].data for k in ("FLUX", "IVAR", "MASK"))
            for _, row in rows.iterrows():
                i = index[int(row["TARGETID"])]
                good = (mask[i] == 0) & (ivar[i] > 0) & np.isfinite(ivar[i]) & np.isfinite(blue[i])
                expected = np.where(good, blue[i], 0).astype(np.float32)[:b_only]
                flux = np.asarray(row["flux"], dtype=np.float32)
                np.testing.assert_array_equal(flux[:b_only], expected)
                checked += 1
    assert checked == len(frame)


def test_info_reports_the_bytes_of_each_part(embedded):
    path, _ = embedded
    doc = astroembed.info(path)
    parts = doc["parts"]
    assert set(parts) == {"main", "pixels", "margin"}
    for name, part in parts.items():
        size = sum(f.stat().st_size for f in (path / name).rglob("*") if f.is_file())
        assert part["bytes"] == size
    assert parts["pixels"]["bytes_per_row"] > 5 * parts["main"]["bytes_per_row"]
    columns = {c["name"]: c["part"] for c in doc["columns"]}
    assert {c for c, part in columns.items() if part == "pixels"} == PIXELS


def test_row_ids_are_unique_and_tile_ordered(tiled_catalog):
    """ROW_ID: the tile's first order-29 pixel plus the row's place (docs/outputs.md)."""
    for file in sorted((tiled_catalog / "main" / "dataset").rglob("Npix=*.parquet")):
        order = int(file.parent.parent.name.split("=")[1])
        pixel = int(file.stem.split("=")[1])
        ids = pq.read_table(file, columns=["ROW_ID"]).column("ROW_ID").to_numpy()
        first = pixel * 4 ** (29 - order)
        np.testing.assert_array_equal(ids, first + np.arange(len(ids)))


def test_a_damaged_pixel_file_is_named(tiled_catalog, tiny_model, tmp_path):
    """A pixel tile whose rows are not the main tile's (lost or reordered rows) stops embed
    with a message naming both files; the main tile is left as it was."""
    path = tmp_path / "cat"
    shutil.copytree(tiled_catalog, path)
    pixel_file = next((path / "pixels" / "dataset").rglob("Npix=*.parquet"))
    table = pq.read_table(pixel_file)
    pq.write_table(table.slice(1), pixel_file)
    main_file = path / "main" / pixel_file.relative_to(path / "pixels")
    before = main_file.read_bytes()
    order = int(pixel_file.parent.parent.name.split("=")[1])
    pixel = int(pixel_file.stem.split("=")[1])
    with pytest.raises(astroembed.AstroembedError, match="damaged"):
        astroembed.embed(path, model=tiny_model, tiles=(f"{order}/{pixel}",))
    assert main_file.read_bytes() == before


def _single_table_catalog(path: Path) -> None:
    """A catalog as earlier versions wrote it: one HATS catalog, pixels in every row."""
    import pyarrow as pa

    tile = path / "dataset" / "Norder=0" / "Dir=0" / "Npix=4.parquet"
    tile.parent.mkdir(parents=True)
    pq.write_table(pa.table({"_healpix_29": pa.array([4 << 58], pa.int64()),
                             "RA": [1.0], "DEC": [1.0]}), tile)
    (path / "hats.properties").write_text("obs_collection=old\ndataproduct_type=object\n"
                                          "astroembed_version=0.0.9\n")
    (path / "astroembed_provenance.json").write_text("{}\n")


def test_a_single_table_catalog_is_named_and_can_be_rebuilt(small_survey, tmp_path):
    old = tmp_path / "old"
    _single_table_catalog(old)
    with pytest.raises(astroembed.InputError, match=r"single-table layout.*astroembed convert"):
        astroembed.info(old)
    astroembed.crossmatch(small_survey / "legacysurvey", small_survey / "desi", old,
                          overwrite=True)
    assert (old / "collection.properties").is_file() and not (old / "hats.properties").exists()
    assert astroembed.info(old)["total_rows"] > 0


def test_a_users_file_in_a_single_table_catalog_is_kept(small_survey, tmp_path):
    old = tmp_path / "old"
    _single_table_catalog(old)
    (old / "notes.md").write_text("mine")
    with pytest.raises(astroembed.AstroembedError, match="notes.md"):
        astroembed.crossmatch(small_survey / "legacysurvey", small_survey / "desi", old,
                              overwrite=True)
    assert (old / "notes.md").read_text() == "mine" and (old / "hats.properties").is_file()


def test_pixels_of_chosen_rows_in_their_order(tiled_catalog):
    """``astroembed.pixels``: any rows, any order, repeats allowed; equal to the pixel files
    as pyarrow reads them."""
    import pyarrow as pa
    from oracles import tile_with_pixels

    tiles = [(int(f.parent.parent.name.split("=")[1]), int(f.stem.split("=")[1]))
             for f in sorted((tiled_catalog / "main" / "dataset").rglob("Npix=*.parquet"))]
    every = pa.concat_tables([tile_with_pixels(tiled_catalog, *t) for t in tiles])
    assert len(tiles) > 2
    rng = np.random.default_rng(0)
    pick = rng.choice(every.num_rows, 25, replace=False).tolist() + [3, 3]
    ids = every.column("ROW_ID").to_numpy()[pick]
    got = astroembed.pixels(tiled_catalog, ids, columns=["image", "flux"])
    assert got.column_names == ["ROW_ID", "image", "flux"]
    np.testing.assert_array_equal(got.column("ROW_ID").to_numpy(), ids)
    for name in ("image", "flux"):
        assert got.column(name).equals(every.column(name).take(pa.array(pick)))
    with pytest.raises(astroembed.InputError, match="no row with ROW_ID 7"):
        astroembed.pixels(tiled_catalog, [7])
    with pytest.raises(astroembed.InputError, match="no pixel column 'Z'"):
        astroembed.pixels(tiled_catalog, ids[:1], columns=["Z"])


def test_run_refuses_to_update_a_single_table_catalog(run_survey, tmp_path):
    old = tmp_path / "cat"
    _single_table_catalog(old)
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    config = tmp_path / "pipe.toml"
    config.write_text(f'images = "{run_survey / "legacysurvey"}"\nspectra = "{run_survey / "desi"}"'
                      f'\ncatalog = "{old}"\n')
    with pytest.raises(astroembed.InputError, match="single-table layout"):
        astroembed.run(config)
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == before


def _rows_by_position(table) -> dict:
    keys = zip(table.column("_healpix_29").to_pylist(), table.column("TARGETID").to_pylist())
    return {k: i for i, k in enumerate(keys)}


def test_convert_keeps_every_row_embedding_and_prediction(embedded, tmp_path):
    import pyarrow as pa
    from oracles import single_table_copy, tile_with_pixels

    collection, _ = embedded
    old = tmp_path / "old"
    single_table_copy(collection, old)
    # a prediction column as `predict` writes it, in every tile
    for f in sorted((old / "dataset").rglob("Npix=*.parquet")):
        t = pq.read_table(f)
        fld = pa.field("Z_PRED", pa.float32(), metadata={"astroembed_probe": "p1"})
        pq.write_table(t.append_column(fld, pa.array(np.arange(t.num_rows, dtype=np.float32))), f)
    before = pa.concat_tables([pq.read_table(f)
                               for f in sorted((old / "dataset").rglob("Npix=*.parquet"))])
    summary = astroembed.convert(old)
    assert summary["rows"] == before.num_rows and set(summary["pixel_columns"]) == PIXELS
    assert not (old / "hats.properties").exists() and (old / "collection.properties").is_file()
    tiles = [(int(f.parent.parent.name.split("=")[1]), int(f.stem.split("=")[1]))
             for f in sorted((old / "main" / "dataset").rglob("Npix=*.parquet"))]
    after = pa.concat_tables([tile_with_pixels(old, *t) for t in tiles])
    assert after.num_rows == before.num_rows
    where = _rows_by_position(after)
    order = pa.array([where[k] for k in _rows_by_position(before)])
    for name in before.column_names:
        assert after.column(name).take(order).equals(before.column(name)), name
        assert after.schema.field(name).metadata == before.schema.field(name).metadata, name
    assert astroembed.info(old)["state"] == "complete"
    with pytest.raises(astroembed.InputError, match="already in the collection layout"):
        astroembed.convert(old)


def test_a_failed_conversion_leaves_the_old_catalog_as_it_was(embedded, tmp_path):
    from oracles import single_table_copy

    collection, _ = embedded
    old = tmp_path / "old"
    single_table_copy(collection, old)
    last = sorted((old / "dataset").rglob("Npix=*.parquet"))[-1]
    last.write_bytes(b"PAR1 not parquet")
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    with pytest.raises(astroembed.InputError, match="unreadable tile"):
        astroembed.convert(old)
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".old.astroembed.lock", "old"]


def _edge_catalog(path: Path, order: int = 6) -> "pd.DataFrame":
    """A catalog whose rows lie within a few arcsec of the edges of order-``order`` tiles
    (points on HEALPix pixel boundaries from healpy, jittered), written through the writer."""
    import healpy as hp
    import pandas as pd
    import pyarrow as pa
    from oracles import offset

    from astroembed.catalog.writer import CatalogWriter

    rng = np.random.default_rng(5)
    nside = 2**order
    first = hp.ang2pix(nside, 150.0, 2.0, nest=True, lonlat=True)
    vec = np.concatenate([hp.boundaries(nside, first + k, step=12, nest=True).T
                          for k in range(4)])
    ra, dec = hp.vec2ang(vec, lonlat=True)
    ra, dec = offset(ra, dec, rng.uniform(0, 3, ra.size), rng.uniform(0, 360, ra.size))
    h29 = hp.ang2pix(2**29, ra, dec, nest=True, lonlat=True).astype(np.int64)
    rows = pd.DataFrame({"_healpix_29": h29, "RA": ra, "DEC": dec,
                         "TARGETID": np.arange(ra.size, dtype=np.int64)})
    with CatalogWriter(path, ra_column="RA", dec_column="DEC") as writer:
        for pixel, group in rows.groupby(h29 >> 2 * (29 - order)):
            writer.write_tile(order, int(pixel), pa.Table.from_pandas(group, preserve_index=False))
        writer.finish({})
    main = pq.ParquetDataset(path / "main" / "dataset").read().to_pandas()
    return main


def test_margin_rows_are_those_hats_margin_pixels_select(tmp_path):
    """Each margin tile holds exactly the main rows lying in the margin pixels hats names for
    that partition (``get_margin`` at the order hats picks for the threshold, as hats-import
    builds a margin cache), over the tiles and hats' negative tree of the empty sky."""
    hats = pytest.importorskip("hats")
    import hats.pixel_math.healpix_shim as hp_shim
    from hats.pixel_math import get_margin
    from hats.pixel_tree.negative_tree import compute_negative_tree_pixels
    from hats.pixel_tree.pixel_tree import PixelTree

    main = _edge_catalog(tmp_path / "edges")
    margin = hats.read_hats(tmp_path / "edges" / "margin")
    threshold = margin.catalog_info.margin_threshold
    order = int(hp_shim.margin2order(threshold / 60.0))
    tiles = hats.read_hats(tmp_path / "edges").main_catalog.get_healpix_pixels()
    assert order > max(p.order for p in tiles)
    cell = main["_healpix_29"].to_numpy() >> 2 * (29 - order)
    expected = {}
    for part in tiles + compute_negative_tree_pixels(PixelTree.from_healpix(tiles)):
        near = np.isin(cell, get_margin(part.order, part.pixel, order - part.order))
        if near.any():
            expected[(part.order, part.pixel)] = set(main["ROW_ID"].to_numpy()[near].tolist())
    got = {}
    for pixel in margin.get_healpix_pixels():
        file = (tmp_path / "edges" / "margin" / "dataset" / f"Norder={pixel.order}"
                / f"Dir={pixel.pixel // 10000 * 10000}" / f"Npix={pixel.pixel}.parquet")
        got[(pixel.order, pixel.pixel)] = set(pq.read_table(file)["ROW_ID"].to_pylist())
    assert len(expected) > 4 and got == expected


@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_lsdb_crossmatch_against_the_catalog_is_right_at_tile_edges(tmp_path):
    """Points 2.5 arcsec from catalog rows that lie along tile edges: LSDB's crossmatch
    against the catalog (main + its margin) finds exactly the brute-force nearest pairs;
    without the margin it misses pairs across the edges."""
    import pandas as pd
    from oracles import haversine_arcsec, offset

    lsdb = pytest.importorskip("lsdb")
    main = _edge_catalog(tmp_path / "edges")
    assert (tmp_path / "edges" / "margin" / "hats.properties").is_file()
    rng = np.random.default_rng(1)
    ra, dec = offset(main.RA.to_numpy(), main.DEC.to_numpy(), 2.5,
                     rng.uniform(0, 360, len(main)))
    other = pd.DataFrame({"id": np.arange(len(ra)), "ra": ra, "dec": dec})
    left = lsdb.from_dataframe(other, ra_column="ra", dec_column="dec", margin_threshold=None)
    right = lsdb.open_catalog(tmp_path / "edges")
    assert right.margin is not None
    got = left.crossmatch(right, radius_arcsec=3.0, n_neighbors=1,
                          suffixes=("_a", "_b")).compute()
    pairs = set(zip(got["id_a"].tolist(), got["ROW_ID_b"].tolist()))
    expected = set()
    for i in range(len(ra)):
        d = haversine_arcsec(ra[i], dec[i], main.RA.to_numpy(), main.DEC.to_numpy())
        j = int(np.argmin(d))
        if d[j] <= 3.0:
            expected.add((i, int(main.ROW_ID.iloc[j])))
    assert len(expected) > 100 and pairs == expected
    without = lsdb.open_catalog(tmp_path / "edges" / "main")
    missed = left.crossmatch(without, radius_arcsec=3.0, n_neighbors=1,
                             suffixes=("_a", "_b")).compute()
    assert len(missed) < len(expected)
