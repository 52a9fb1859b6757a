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

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

import astroembed

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


def test_info_reports_the_bytes_of_each_part(embedded):
    path, _ = embedded
    doc = astroembed.info(path)
    parts = doc["parts"]
    assert set(parts) == {"main", "pixels"}
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
    with pytest.raises(astroembed.InputError, match=r"single-table layout.*--overwrite"):
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
