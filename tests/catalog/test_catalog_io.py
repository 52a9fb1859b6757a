"""The HATS catalog layout: what astroembed writes opens in lsdb/hats with every value intact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import healpy as hp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astroembed.errors import InputError, OutputError
from astroembed.catalog.layout import (healpix_dir, parse_tile, read_properties, tile_of,
                                       pixel_tile_path, tile_path, write_properties)
from astroembed.catalog.reader import find_tile, image_array, read_catalog_info, read_tile
from astroembed.catalog.tiles import write_tile
from astroembed.catalog.writer import (CatalogWriter, mark_incomplete, refresh_catalog,
                                       write_empty_catalog)

#: Disjoint tiles at orders 1-4 (plus one at order 7 for a Dir= other than 0):
#: (2,0), (2,1), (3,8), (4,36) all lie in (1,0); (2,2) contains (3,8) and (4,36).
TILES = [(1, 3), (1, 40), (2, 0), (2, 1), (3, 8), (4, 36), (7, 123456)]
H = W = 5
DIM = 8
PROVENANCE = {
    "config": {"crossmatch": {"radius_arcsec": 1.0, "mode": "best"}},
    "inputs": [{"path": f"/data/coadd-{i}.fits", "bytes": 1000 + i, "sha256": "ab" * 32}
               for i in range(40)],
    "models": {"image": "sha256:00ff"},
}


def _rows(rng: np.random.Generator, order: int, pixel: int, n: int, first_id: int) -> pa.Table:
    """``n`` random positions inside one tile, shuffled, with embedding and image columns."""
    shift = 2 * (29 - order)
    inside = (np.int64(pixel) << shift) + rng.integers(0, 1 << shift, n, dtype=np.int64)
    ra, dec = hp.pix2ang(2**29, inside, nest=True, lonlat=True)
    h29 = hp.ang2pix(2**29, ra, dec, nest=True, lonlat=True).astype(np.int64)
    assert np.all(h29 >> shift == pixel)
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    img = rng.normal(size=(n, 3, H, W)).astype(np.float32)
    return pa.table({
        "_healpix_29": h29,
        "ra": ra,
        "dec": dec,
        "TARGETID": np.arange(first_id, first_id + n, dtype=np.int64),
        "Z": rng.uniform(0, 1, n).astype(np.float32),
        "embedding_image": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), DIM),
        # from_numpy_ndarray sets permutation [0,1,2], which lsdb 0.11 cannot open unless
        # write_tile normalises it: this exercises that fix.
        "image": pa.FixedShapeTensorArray.from_numpy_ndarray(img),
    })


def _build(path: Path, tiles=TILES, seed: int = 0, **kw) -> pa.Table:
    """Write a catalog with the given tiles; return every row written."""
    rng = np.random.default_rng(seed)
    writer = CatalogWriter(path, ra_column="ra", dec_column="dec", **kw)
    writer.begin()
    parts = []
    for i, (order, pixel) in enumerate(tiles):
        table = _rows(rng, order, pixel, int(rng.integers(3, 30)), 1000 * (i + 1))
        write_tile(writer.write_path, order, pixel, table)
        parts.append(table)
    writer.finish(PROVENANCE, {"hats_max_bytes": 512 * 2**20})
    return pa.concat_tables(parts)


def _files(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its content, to prove a catalog was left untouched."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _main_names(table: pa.Table | pa.Schema) -> list[str]:
    """The main catalog's columns for rows written as ``table``: ``ROW_ID`` after
    ``_healpix_29``, the pixel columns gone to the extension."""
    names = [n for n in getattr(table, "schema", table).names if n != "image"]
    return names[:1] + ["ROW_ID"] + names[1:]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, pa.Table]:
    path = tmp_path_factory.mktemp("cat") / "matched"
    return path, _build(path)


# ----------------------------------------------------------------------------- layout

def test_layout_and_no_temporary_files(built):
    path, _ = built
    for order, pixel in TILES:
        file = path / "main" / "dataset" / f"Norder={order}" / f"Dir={(pixel // 10000) * 10000}" \
            / f"Npix={pixel}.parquet"
        assert file.is_file() and tile_path(path, order, pixel) == file
    assert tile_path(path, 7, 123456).parent.name == "Dir=120000"
    assert healpix_dir(9999) == 0 and healpix_dir(10000) == 10000
    leftovers = [p for p in path.parent.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    umask = os.umask(0)
    os.umask(umask)
    mode = tile_path(path, 1, 3).stat().st_mode & 0o777
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


def test_partition_info_lists_tiles_breadth_first(built):
    path, _ = built
    lines = (path / "main" / "partition_info.csv").read_text().splitlines()
    assert lines[0] == "Norder,Npix"
    listed = [tuple(map(int, ln.split(","))) for ln in lines[1:]]
    assert sorted(listed) == sorted(TILES)
    starts = [p << 2 * (29 - o) for o, p in listed]
    assert starts == sorted(starts)


def test_properties_have_required_keys(built):
    path, table = built
    props = read_properties(path / "main" / "hats.properties")
    required = {"obs_collection", "dataproduct_type", "hats_nrows", "hats_col_ra",
                "hats_col_dec", "hats_col_healpix", "hats_col_healpix_order",
                "hats_max_rows", "hats_order", "hats_npix_suffix", "hats_builder",
                "hats_creation_date", "hats_version", "hats_estsize", "astroembed_version",
                "astroembed_status", "astroembed_provenance"}
    assert required <= props.keys()
    assert props["dataproduct_type"] == "object"
    assert props["obs_collection"] == "matched"
    assert int(props["hats_nrows"]) == table.num_rows
    assert int(props["hats_order"]) == 7
    assert props["hats_max_bytes"] == str(512 * 2**20)
    assert props["astroembed_status"] == "complete"
    assert json.loads((path / "main" / props["astroembed_provenance"]).read_text()) == PROVENANCE
    hats = pytest.importorskip("hats")
    from hats.catalog.dataset.collection_properties import CollectionProperties
    from hats.catalog.dataset.extension_properties import ExtensionProperties
    from hats.catalog.dataset.table_properties import TableProperties

    # hats' own validation and parsers: a collection, its main catalog and its extension
    parsed = TableProperties.read_from_dir(path / "main")
    assert parsed.total_rows == table.num_rows and parsed.ra_column == "ra"
    collection = CollectionProperties.read_from_dir(path)
    assert collection.hats_primary_table_url == "main"
    assert collection.all_extensions == {"pixels": "pixels.properties"}
    ext = ExtensionProperties.read_from_file(path / "pixels.properties")
    assert (ext.primary_column, ext.join_column) == ("ROW_ID", "ROW_ID")
    assert ext.extension_columns == ["image"]
    pixels = TableProperties.read_from_dir(path / "pixels")
    assert pixels.total_rows == table.num_rows
    read = hats.read_hats(path)
    assert read.main_catalog.catalog_info.total_rows == table.num_rows


def test_metadata_row_counts_and_provenance_key(built):
    path, table = built
    meta = pq.read_metadata(path / "main" / "dataset" / "_metadata")
    per_file: dict[str, int] = {}
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        per_file[group.column(0).file_path] = per_file.get(group.column(0).file_path, 0) \
            + group.num_rows
    expected = {tile_path(path, o, p).relative_to(path / "main" / "dataset").as_posix():
                pq.read_metadata(tile_path(path, o, p)).num_rows for o, p in TILES}
    assert per_file == expected
    assert meta.num_rows == table.num_rows
    common = pq.read_schema(path / "main" / "dataset" / "_common_metadata")
    assert common.names == _main_names(table)
    compact = json.loads(common.metadata[b"astroembed"])
    assert compact["models"] == PROVENANCE["models"]
    assert compact["provenance_file"] == "astroembed_provenance.json"
    assert "inputs" in compact["omitted"]  # too big for a footer: only in the JSON


def test_tiles_sorted_and_inside(built):
    path, _ = built
    for order, pixel in TILES:
        h29 = read_tile(path, order, pixel, columns=["_healpix_29"])["_healpix_29"].to_numpy()
        assert np.all(np.diff(h29) >= 0)
        assert np.all(tile_of(h29, order) == pixel)


def test_read_catalog_info(built):
    path, table = built
    info = read_catalog_info(path)
    assert info.complete and sorted(info.tiles) == sorted(TILES)
    assert info.total_rows == table.num_rows == sum(info.rows.values())
    assert info.provenance == PROVENANCE
    assert info.schema.names == _main_names(table) + ["image"]
    assert info.pixel_columns == ["image"]
    assert isinstance(info.schema.field("image").type, pa.FixedShapeTensorType)
    assert (info.ra_column, info.dec_column) == ("ra", "dec")


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # nested-pandas vs pandas 3.1
def test_lsdb_opens_and_computes_every_value(built):
    lsdb = pytest.importorskip("lsdb")
    path, table = built
    catalog = lsdb.open_catalog(path)
    assert "image" not in catalog.columns  # pixels stay out of the main catalog
    frame = catalog.load_extension("pixels").compute()
    assert len(frame) == table.num_rows
    frame = frame.sort_values("TARGETID")
    want = table.sort_by("TARGETID")
    np.testing.assert_array_equal(frame.index.to_numpy(), want["_healpix_29"].to_numpy())
    for name in ("ra", "dec", "TARGETID", "Z"):
        np.testing.assert_array_equal(frame[name].to_numpy(), want[name].to_numpy())
    got_emb = pa.array(frame["embedding_image"].array)
    np.testing.assert_array_equal(got_emb.flatten().to_numpy().reshape(-1, DIM),
                                  want["embedding_image"].combine_chunks().flatten()
                                  .to_numpy().reshape(-1, DIM))
    got_img = image_array(pa.array(frame["image"].array))
    assert got_img.shape == (table.num_rows, 3, H, W) and got_img.dtype == np.float32
    np.testing.assert_array_equal(got_img, image_array(want["image"]))


# ----------------------------------------------------------------------------- guards

def test_row_outside_tile_raises_and_writes_nothing(tmp_path):
    table = _rows(np.random.default_rng(1), 2, 0, 5, 0)
    with pytest.raises(ValueError, match=r"do not lie in tile 2/1.*in tile 2/0"):
        write_tile(tmp_path, 2, 1, table)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    with pytest.raises(ValueError, match="no _healpix_29"):
        write_tile(tmp_path, 2, 0, table.drop_columns(["_healpix_29"]))


def test_existing_catalog_refused_and_kept(built):
    path, _ = built
    before = _files(path)
    with pytest.raises(OutputError, match="--overwrite"):
        CatalogWriter(path, ra_column="ra", dec_column="dec").begin()
    assert _files(path) == before


def test_non_catalog_directory_refused_even_with_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds files astroembed did not make"):
        CatalogWriter(tmp_path, ra_column="ra", dec_column="dec", overwrite=True).begin()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_overwrite_keeps_old_catalog_until_finish(tmp_path):
    path = tmp_path / "cat"
    _build(path, tiles=[(1, 3), (2, 0)])
    old = _files(path)
    writer = CatalogWriter(path, ra_column="ra", dec_column="dec", overwrite=True)
    writer.begin()
    assert writer.write_path != path
    writer.write_tile(3, 8, _rows(np.random.default_rng(2), 3, 8, 4, 0))
    assert _files(path) == old and read_catalog_info(path).complete
    info = writer.finish({"run": 2})
    assert info.tiles == [(3, 8)] and info.total_rows == 4 and info.provenance == {"run": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


def test_failed_overwrite_leaves_old_catalog(tmp_path):
    path = tmp_path / "cat"
    _build(path, tiles=[(1, 3)])
    old = _files(path)
    with pytest.raises(RuntimeError, match="boom"):
        with CatalogWriter(path, ra_column="ra", dec_column="dec", overwrite=True) as w:
            w.write_tile(2, 0, _rows(np.random.default_rng(3), 2, 0, 3, 0))
            raise RuntimeError("boom")
    assert _files(path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


def test_failed_fresh_run_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with CatalogWriter(tmp_path / "new", ra_column="ra", dec_column="dec"):
            raise RuntimeError("bad input")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_while_running_then_complete(tmp_path):
    path = tmp_path / "cat"
    writer = CatalogWriter(path, ra_column="ra", dec_column="dec")
    writer.begin()
    info = read_catalog_info(path)
    assert not info.complete and info.tiles == [] and info.total_rows == 0
    writer.write_tile(2, 1, _rows(np.random.default_rng(4), 2, 1, 6, 0))
    # A killed worker's leftover: finish() must clean it up.
    stale = tile_path(path, 2, 5).with_name(".Npix=5.parquet.x1y2.tmp")
    stale.write_bytes(b"partial")
    info = read_catalog_info(path)
    assert not info.complete and info.tiles == [(2, 1)] and info.rows == {(2, 1): 6}
    assert not (path / "main" / "dataset" / "_common_metadata").exists()  # so lsdb refuses it
    assert writer.finish({}).complete
    assert not stale.exists()


def test_mark_incomplete_and_refresh(tmp_path):
    path = tmp_path / "cat"
    table = _build(path, tiles=[(1, 3), (1, 40)])
    created = read_catalog_info(path).properties["hats_creation_date"]
    mark_incomplete(path)
    assert not read_catalog_info(path).complete
    extra = _rows(np.random.default_rng(5), 2, 0, 7, 99000)
    write_tile(path, 2, 0, extra)
    info = refresh_catalog(path)
    assert info.complete and info.total_rows == table.num_rows + 7
    assert info.provenance == PROVENANCE and info.properties["hats_creation_date"] == created


def test_tiles_with_different_schemas_refused(tmp_path):
    writer = CatalogWriter(tmp_path / "cat", ra_column="ra", dec_column="dec")
    writer.begin()
    rng = np.random.default_rng(6)
    writer.write_tile(1, 3, _rows(rng, 1, 3, 3, 0))
    writer.write_tile(1, 4, _rows(rng, 1, 4, 3, 10).drop_columns(["Z"]))
    with pytest.raises(OutputError, match=r"different schemas.*'Z'"):
        writer.finish({})


def test_tiles_lacking_an_embedding_column_make_a_partial_catalog(tmp_path):
    """As `embed --tile` leaves it: one tile has a new embedding column. Finished only when
    asked for a partial catalog, with the union schema and no _metadata."""
    path = tmp_path / "cat"
    table = _build(path, tiles=[(1, 3), (1, 40), (2, 0)])
    one = read_tile(path, 1, 3)
    fld = pa.field("embedding_image_x", pa.list_(pa.float32(), DIM),
                   metadata={"astroembed_embedding": "1", "model_hash": "h"})
    values = pa.array(np.ones(one.num_rows * DIM, np.float32))
    mark_incomplete(path)
    write_tile(path, 1, 3, one.append_column(fld, pa.FixedSizeListArray.from_arrays(values, DIM)))
    with pytest.raises(OutputError, match="embedding_image_x in 1 of 3 tiles"):
        refresh_catalog(path)
    info = refresh_catalog(path, partial=True)
    assert info.status == "partial" and not info.complete
    common = pq.read_schema(path / "main" / "dataset" / "_common_metadata")
    assert common.names == _main_names(table) + ["embedding_image_x"]
    assert not (path / "main" / "dataset" / "_metadata").exists()
    assert info.rows == {t: pq.read_metadata(tile_path(path, *t)).num_rows
                         for t in info.tiles}
    assert info.total_rows == table.num_rows


def test_overlapping_tiles_refused(tmp_path):
    writer = CatalogWriter(tmp_path / "cat", ra_column="ra", dec_column="dec")
    writer.begin()
    rng = np.random.default_rng(7)
    writer.write_tile(1, 0, _rows(rng, 1, 0, 3, 0))
    writer.write_tile(3, 5, _rows(rng, 3, 5, 3, 10))
    with pytest.raises(OutputError, match="1/0 and 3/5 overlap"):
        writer.finish({})


# ----------------------------------------------------------------------------- empty catalogs

@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_empty_catalog_is_valid(tmp_path):
    schema = _rows(np.random.default_rng(8), 1, 0, 1, 0).schema
    info = write_empty_catalog(tmp_path / "empty", schema, ra_column="ra", dec_column="dec",
                                   provenance={"note": "no overlap"})
    assert info.complete and info.tiles == [] and info.total_rows == 0
    assert info.schema.names == _main_names(schema)  # no pixels: LSDB cannot join an
    assert info.properties["hats_nrows"] == "0"       # extension without tiles
    lsdb = pytest.importorskip("lsdb")
    frame = lsdb.open_catalog(tmp_path / "empty").compute()
    assert len(frame) == 0 and "TARGETID" in frame.columns


def test_empty_catalog_without_schema(tmp_path):
    writer = CatalogWriter(tmp_path / "e", ra_column="RA", dec_column="DEC")
    writer.begin()
    info = writer.finish({})
    assert info.schema.names == ["_healpix_29", "RA", "DEC"] and info.tiles == []


# ----------------------------------------------------------------------------- tile names

def test_parse_tile():
    assert parse_tile("5/1234") == (5, 1234)
    assert parse_tile(" 0 / 11 ") == (0, 11)
    for bad in ("5", "5/", "a/b", "5/-1", "5:12", "1/2/3"):
        with pytest.raises(InputError, match="ORDER/PIXEL"):
            parse_tile(bad)
    with pytest.raises(InputError, match="outside 0..47"):
        parse_tile("1/48")
    with pytest.raises(InputError, match="order 30"):
        parse_tile("30/0")


def test_find_tile_names_tiles_under_or_over(built):
    path, _ = built
    info = read_catalog_info(path)
    assert find_tile(info, 4, 36) == (4, 36)
    with pytest.raises(InputError, match=r"split into the tiles 2/0, 2/1, 3/8, 4/36;"):
        find_tile(info, 1, 0)
    with pytest.raises(InputError, match=r"split into the tiles 3/8, 4/36;") as err:
        find_tile(info, 2, 2)
    assert "2/0" not in str(err.value)
    with pytest.raises(InputError, match=r"lies inside tile 4/36; use --tile 4/36"):
        find_tile(info, 6, 36 * 16 + 5)
    with pytest.raises(InputError, match=r"no tile covers it.*7 tiles"):
        find_tile(info, 1, 5)


# ----------------------------------------------------------------------------- reading errors

def test_read_errors_name_the_problem(tmp_path, built):
    with pytest.raises(InputError, match="does not exist"):
        read_catalog_info(tmp_path / "nope")
    with pytest.raises(InputError, match="not a catalog: no main/hats.properties"):
        read_catalog_info(tmp_path)
    (tmp_path / "f.parquet").write_bytes(b"PAR1")
    with pytest.raises(InputError, match="is a file"):
        read_catalog_info(tmp_path / "f.parquet")
    path, _ = built
    with pytest.raises(InputError, match="no tile 1/5"):
        read_tile(path, 1, 5)
    with pytest.raises(InputError, match="no column 'flux'"):
        read_tile(path, 1, 3, columns=["ra", "flux"])
    bad = tmp_path / "badcat"
    (bad / "main").mkdir(parents=True)
    (bad / "main" / "hats.properties").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InputError, match="not UTF-8"):
        read_catalog_info(bad)


# ----------------------------------------------------------------------------- helpers

def test_properties_round_trip_with_hats_parser(tmp_path):
    values = {"obs_collection": "a name\\with back#slash", "dataproduct_type": "object",
              "hats_col_ra": "ra", "hats_col_dec": "dec",
              "obs_description": " lead, tab\tnl\nend", "k.dot-dash": "x=y:z", "n": 3}
    write_properties(tmp_path / "hats.properties", values)
    # hats' model adds its default tile suffix
    expected = {k: str(v) for k, v in values.items()} | {"hats_npix_suffix": ".parquet"}
    assert read_properties(tmp_path / "hats.properties") == expected
    from hats.catalog import TableProperties

    parsed_by_hats = TableProperties.read_from_dir(tmp_path)
    assert parsed_by_hats.catalog_name == values["obs_collection"]
    assert parsed_by_hats.extra_dict()["obs_description"] == values["obs_description"]
    jproperties = pytest.importorskip("jproperties")
    parsed = jproperties.Properties()
    with open(tmp_path / "hats.properties", "rb") as fh:
        parsed.load(fh, "utf-8")
    assert {k: v.data for k, v in parsed.items()} == expected
    assert [p.name for p in tmp_path.iterdir()] == ["hats.properties"]  # no legacy copy
    with pytest.raises(ValueError, match="property key"):
        write_properties(tmp_path / "q", values | {"bad key": 1})
    # hats' model refuses what its readers could not use, and nothing is written
    with pytest.raises(ValueError, match="margin_threshold"):
        write_properties(tmp_path / "m", {"obs_collection": "m", "dataproduct_type": "margin",
                                          "hats_primary_table_url": "main"})
    with pytest.raises(ValueError, match="hats_col_assn_join"):
        write_properties(tmp_path / "e", {"obs_collection": "e", "hats_primary_table_url": "c",
                                          "hats_col_assn_primary": "ROW_ID",
                                          "hats_assn_join_table_url": "e"}, kind="extension")
    assert [p.name for p in tmp_path.iterdir()] == ["hats.properties"]


def test_image_array_tensor_and_plain_list():
    images = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(images)
    np.testing.assert_array_equal(image_array(pa.chunked_array([tensor])), images)
    plain = pa.FixedSizeListArray.from_arrays(pa.array(images.ravel()), 24)
    np.testing.assert_array_equal(image_array(plain, (3, 2, 4)), images)
    np.testing.assert_array_equal(image_array(plain.slice(1), (3, 2, 4)), images[1:])
    with pytest.raises(ValueError, match="needs its shape"):
        image_array(plain)


def test_tile_numbers_checked():
    with pytest.raises(ValueError):
        tile_path(Path("x"), 1, 48)
    with pytest.raises(ValueError):
        tile_path(Path("x"), 30, 0)


def test_statistics_on_scalars_and_embeddings_not_on_pixel_arrays(tmp_path):
    """Min/max over every pixel of a cutout or spectrum prune nothing and slow every write;
    embedding columns keep their statistics because ``info`` counts null rows from them."""
    table = _rows(np.random.default_rng(3), 2, 0, 20, 1)
    marked = pa.field("embedding_spectrum", pa.list_(pa.float32(), DIM),
                      metadata={"astroembed_embedding": "1"})
    emb = pa.array([None if i % 4 == 0 else [0.5] * DIM for i in range(20)], marked.type)
    flux = pa.array([[1.0, 2.0, 3.0]] * 20, pa.list_(pa.float32()))
    table = table.append_column(marked, emb).append_column("flux", flux)
    path = write_tile(tmp_path / "cat", 2, 0, table)
    stats = {}
    for file in (path, pixel_tile_path(tmp_path / "cat", 2, 0)):
        group = pq.read_metadata(file).row_group(0)
        stats |= {group.column(i).path_in_schema: group.column(i)
                  for i in range(group.num_columns)}
    assert {p for p, c in stats.items() if not c.is_stats_set} == {
        "image.list.element", "flux.list.element", "embedding_image.list.element"}
    assert stats["embedding_spectrum.list.element"].statistics.null_count == 5
    # float arrays: uncompressed, BYTE_STREAM_SPLIT (bench/README.md); scalars: snappy
    for leaf in ("image.list.element", "flux.list.element", "embedding_spectrum.list.element"):
        assert stats[leaf].compression == "UNCOMPRESSED"
        assert "BYTE_STREAM_SPLIT" in stats[leaf].encodings
    assert stats["TARGETID"].compression == "SNAPPY"
    assert stats["Z"].statistics.min >= 0 and stats["TARGETID"].statistics.max == 20
