"""The Python snippet of docs/outputs.md ("Reading a catalog in Python") runs as written and
gives the catalog's values: checked against the tile files read one by one with pyarrow."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_PATH = '"demo-output/matched"'


def snippet() -> str:
    """The first Python block under the heading "Reading a catalog in Python"."""
    text = (ROOT / "docs" / "outputs.md").read_text(encoding="utf-8")
    section = text.split("## Reading a catalog in Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_snippet_names_the_demo_catalog():
    assert snippet().count(DEMO_PATH) == 1


@pytest.mark.filterwarnings("ignore:Right catalog does not have a margin cache")
@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_the_snippet_runs_and_reads_the_catalog(embedded_catalog, capsys):
    pytest.importorskip("lsdb")
    code = snippet().replace(DEMO_PATH, repr(str(embedded_catalog)))
    namespace: dict = {}
    exec(compile(code, "docs/outputs.md", "exec"), namespace)

    files = sorted((embedded_catalog / "main" / "dataset").rglob("Npix=*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()
            if r["embedding_image"] is not None]
    expected = {r["TARGETID"]: r for r in rows}
    embeddings, ids = namespace["embeddings"], namespace["ids"]
    assert embeddings.shape == (len(rows), 8) and embeddings.dtype == np.float32
    assert sorted(ids.tolist()) == sorted(expected)
    for i, target in enumerate(ids):
        np.testing.assert_array_equal(embeddings[i], np.float32(expected[target]["embedding_image"]))
    assert f"({len(rows)}, 8) float32" in capsys.readouterr().out
    assert len(namespace["frame"]) == len(rows)

    first = namespace["table"]["ROW_ID"][:4].to_pylist()
    pixel_files = sorted((embedded_catalog / "pixels" / "dataset").rglob("Npix=*.parquet"))
    pixels = pa.concat_tables(pq.read_table(f) for f in pixel_files)
    by_row = {r: i for i, r in enumerate(pixels["ROW_ID"].to_pylist())}
    for k, row_id in enumerate(first):
        stored = pixels.slice(by_row[row_id], 1).to_pylist()[0]
        np.testing.assert_array_equal(namespace["images"][k].ravel(),
                                      np.float32(stored["image"]))
        np.testing.assert_array_equal(namespace["flux"][k], np.float32(stored["flux"]))
    assert namespace["images"].shape == (4, 3, 32, 32)

    objects = namespace["objects"]
    assert len(objects) == sum(pq.read_metadata(f).num_rows for f in files)
    joined = namespace["with_pixels"].compute()
    assert {"image", "flux", "ivar"} <= set(joined.columns) and len(joined) == len(objects)
