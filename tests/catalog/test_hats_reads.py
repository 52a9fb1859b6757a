"""What astroembed writes, as hats reads it: the collection, its main catalog, the pixel
extension and the margin catalog pass hats' strict validation, and hats' readers give the
tiles, row counts and properties the files hold.

Oracles: hats' validators and readers, and pyarrow reading the tile files directly.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import astroembed

hats = pytest.importorskip("hats")


def _tiles_on_disk(root: Path) -> dict[tuple[int, int], int]:
    """(order, pixel) -> rows of every tile file under ``root/dataset``, read by pyarrow."""
    out = {}
    for file in (root / "dataset").rglob("Npix=*.parquet"):
        order, pixel = re.search(r"Norder=(\d+)/Dir=\d+/Npix=(\d+)\.parquet$",
                                 file.as_posix()).groups()
        out[(int(order), int(pixel))] = pq.read_metadata(file).num_rows
    return out


def test_hats_strict_validation_accepts_every_part(tiled_catalog, caplog):
    from hats.io.validation import is_valid_catalog, is_valid_collection

    caplog.set_level(logging.WARNING)
    assert is_valid_collection(tiled_catalog, strict=True, verbose=False)
    for part in ("main", "pixels", "margin"):
        assert is_valid_catalog(tiled_catalog / part, strict=True, verbose=False), part
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_hats_reads_the_tiles_rows_and_properties(tiled_catalog):
    from hats.catalog import PartitionInfo

    collection = hats.read_hats(tiled_catalog)
    main = collection.main_catalog
    on_disk = _tiles_on_disk(tiled_catalog / "main")
    assert len(on_disk) > 1
    pixels = [(p.order, p.pixel) for p in main.get_healpix_pixels()]
    assert sorted(pixels) == sorted(on_disk)
    starts = [p << 2 * (29 - o) for o, p in pixels]
    assert starts == sorted(starts)  # breadth-first, as hats orders them
    from_metadata = PartitionInfo.read_from_file(tiled_catalog / "main" / "dataset" / "_metadata")
    assert from_metadata.get_healpix_pixels() == main.get_healpix_pixels()
    info = main.catalog_info
    assert info.total_rows == sum(on_disk.values())
    assert info.hats_max_rows >= max(on_disk.values())  # the tiling limit the run used
    assert (info.ra_column, info.dec_column) == ("RA", "DEC")
    assert (info.healpix_column, info.healpix_order) == ("_healpix_29", 29)
    extra = info.extra_dict()
    assert extra["astroembed_status"] == "complete"
    assert extra["astroembed_version"] == astroembed.__version__
    assert int(extra["hats_order"]) == max(o for o, _ in on_disk)
    schema = main.schema
    assert "ROW_ID" in schema.names and "image" not in schema.names


def test_hats_opens_the_margin_and_the_extension(tiled_catalog):
    collection = hats.read_hats(tiled_catalog)
    assert collection.get_margin_thresholds() == {"margin": 5.0}
    margin = hats.read_hats(collection.default_margin_catalog_dir)
    assert type(margin).__name__ == "MarginCatalog"
    assert margin.catalog_info.margin_threshold == 5.0
    assert margin.catalog_info.primary_catalog == "matched"
    margin_tiles = _tiles_on_disk(tiled_catalog / "margin")
    assert margin.catalog_info.total_rows == sum(margin_tiles.values())
    assert sorted((p.order, p.pixel) for p in margin.get_healpix_pixels()) == sorted(margin_tiles)

    assert collection.all_extensions == {"pixels": "pixels.properties"}
    extension = hats.read_hats(collection.get_extension_path("pixels"))
    assert Path(extension.join_catalog_dir) == tiled_catalog / "pixels"
    props = extension.extension_info
    assert (props.primary_column, props.join_column) == ("ROW_ID", "ROW_ID")
    assert props.extension_columns == ["image", "flux", "ivar"]
    pixels = extension.catalog
    main_tiles = _tiles_on_disk(tiled_catalog / "main")
    assert pixels.catalog_info.total_rows == sum(main_tiles.values())
    assert sorted((p.order, p.pixel) for p in pixels.get_healpix_pixels()) == sorted(main_tiles)


@pytest.mark.parametrize("tiles", [
    [],
    [(0, 4)],
    [(1, 3), (1, 40), (2, 0), (2, 1), (3, 8), (4, 36), (7, 123456)],
    [(10, 4 * 4**10 + k) for k in range(0, 4**10, 997)] + [(3, 700)],
])
def test_the_uncovered_sky_is_hats_negative_tree(tiles):
    from hats.pixel_tree.negative_tree import compute_negative_tree_pixels
    from hats.pixel_tree.pixel_tree import PixelTree

    from astroembed.catalog.margin import uncovered_pixels

    expected = ([(0, p) for p in range(12)] if not tiles else
                [(p.order, p.pixel)
                 for p in compute_negative_tree_pixels(PixelTree.from_healpix(tiles))])
    assert sorted(uncovered_pixels(tiles)) == sorted(expected)


def test_a_hand_edited_properties_file_hats_refuses_is_one_clear_error(tiled_catalog, tmp_path):
    import shutil

    from astroembed.catalog.writer import mark_incomplete
    from astroembed.errors import InputError

    cat = tmp_path / "cat"
    shutil.copytree(tiled_catalog, cat)
    props = cat / "main" / "hats.properties"
    props.write_text(props.read_text().replace("hats_nrows=", "hats_nrows=many\n#was "))
    before = props.read_bytes()
    with pytest.raises(InputError, match=r"hats\.properties: not valid HATS table properties: "
                       r"hats_nrows: .*integer.*'many'.*--overwrite"):
        mark_incomplete(cat)
    assert props.read_bytes() == before
    with pytest.raises(InputError) as err:
        mark_incomplete(cat)
    assert "\n" not in str(err.value)
