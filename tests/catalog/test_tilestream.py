"""Rewriting a tile batch by batch (io/tilestream): what `embed` and `predict` stand on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from astroembed.errors import InputError
from astroembed.catalog.rewrite import rewrite_tile


def _tile(path, n=50, row_group=12):
    rng = np.random.default_rng(3)
    flux = rng.normal(size=(n, 9)).astype(np.float32)
    table = pa.table({"id": np.arange(n), "x": rng.normal(size=n),
                      "flux": pa.array(list(flux), pa.list_(pa.float32())),
                      "old": np.zeros(n)})
    pq.write_table(table, path, row_group_size=row_group)
    return table


def _twice_x(batch):
    return {"x2": pc.multiply(batch.column("x"), 2.0)}


def test_rewrite_appends_a_column_across_row_groups_and_batches(tmp_path):
    file = tmp_path / "tile.parquet"
    table = _tile(file)
    calls = []

    def columns(batch):
        calls.append(batch.num_rows)
        return _twice_x(batch)

    fld = pa.field("x2", pa.float64(), metadata={b"made_by": b"test"})
    assert rewrite_tile(file, [fld], columns, batch_size=5) == 50
    assert max(calls) <= 5 and sum(calls) == 50  # never more than a batch at a time
    out = pq.read_table(file)
    assert out.column_names == ["id", "x", "flux", "old", "x2"]
    assert out.select(["id", "x", "flux", "old"]).equals(table)
    np.testing.assert_array_equal(out["x2"].to_numpy(), 2 * table["x"].to_numpy())
    assert out.schema.field("x2").metadata == {b"made_by": b"test"}
    assert not list(tmp_path.glob(".*"))  # no temporary left


def test_rewrite_replaces_a_column_in_place(tmp_path):
    file = tmp_path / "tile.parquet"
    table = _tile(file)
    rewrite_tile(file, [pa.field("old", pa.float64())],
                 lambda b: {"old": pc.add(b.column("id").cast(pa.float64()), 0.5)})
    out = pq.read_table(file)
    assert out.column_names == table.column_names
    np.testing.assert_array_equal(out["old"].to_numpy(), np.arange(50) + 0.5)


def test_a_failure_leaves_the_old_tile(tmp_path):
    file = tmp_path / "tile.parquet"
    _tile(file)
    before = file.read_bytes()

    def fails_late(batch):
        if batch.column("id")[0].as_py() >= 24:
            raise RuntimeError("boom")
        return _twice_x(batch)

    with pytest.raises(RuntimeError, match="boom"):
        rewrite_tile(file, [pa.field("x2", pa.float64())], fails_late, batch_size=6)
    assert file.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tile.parquet"]


def test_an_unreadable_tile_is_an_input_error(tmp_path):
    file = tmp_path / "tile.parquet"
    file.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="unreadable tile"):
        rewrite_tile(file, [pa.field("x2", pa.float64())], _twice_x)
    assert file.read_bytes() == b"PAR1 not really"
