"""docs/outputs.md lists every column a catalog holds, with the type, unit and meaning that
``astroembed/catalog/schema.py`` gives it: checked against the schema of a real cross-match
(read from its Parquet files with pyarrow) and of the columns ``embed`` and ``predict`` add,
both ways, so the table cannot drift from what is written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import astroembed
from astroembed.catalog.schema import describe_field

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ROOT / "docs" / "outputs.md"
PRIMITIVES = {"float32": pa.float32(), "float64": pa.float64(), "int16": pa.int16(),
              "int32": pa.int32(), "int64": pa.int64(), "string": pa.string(), "bool": pa.bool_()}


def _table(marker: str) -> dict[str, dict]:
    """The rows of the Markdown table between ``<!-- MARKER: begin/end -->``, by column."""
    text = OUTPUTS.read_text(encoding="utf-8")
    body = text.split(f"<!-- {marker}: begin -->")[1].split(f"<!-- {marker}: end -->")[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in body.strip().splitlines()[2:]]
    return {name.strip("`"): {"type": t, "unit": unit, "part": part, "meaning": meaning}
            for name, t, unit, part, meaning in rows}


def _matches(documented: str, actual: pa.DataType, dim: int | None = None) -> bool:
    """Whether a type as the table writes it is the Arrow type of the column."""
    vector = re.fullmatch(r"fixed_size_list<(\w+)>\[(\w+)\]", documented)
    if vector:
        size = dim if vector[2] == "d" else int(vector[2])
        return actual == pa.list_(PRIMITIVES[vector[1]], size)
    tensor = re.fullmatch(r"fixed_shape_tensor<(\w+)>\[3, H, W\]", documented)
    if tensor:
        return (getattr(actual, "extension_name", "") == "arrow.fixed_shape_tensor"
                and actual.value_type == PRIMITIVES[tensor[1]] and actual.shape[0] == 3)
    return actual == PRIMITIVES[documented]


def _schemas(catalog: Path) -> tuple[pa.Schema, pa.Schema]:
    """The main and pixel schemas of the catalog's first tile, from the files."""
    main = sorted((catalog / "main" / "dataset").rglob("Npix=*.parquet"))[0]
    pixels = catalog / "pixels" / main.relative_to(catalog / "main")
    return pq.read_schema(main), pq.read_schema(pixels)


@pytest.fixture(scope="module")
def predicted(embedded_catalog, tmp_path_factory) -> Path:
    """The embedded catalog with a probe's prediction column."""
    root = tmp_path_factory.mktemp("predicted")
    out = root / "matched"
    shutil.copytree(embedded_catalog, out)
    astroembed.probe(out, method=("knn",), k=5, baselines=False, save=str(root / "probe"))
    astroembed.predict(out, root / "probe")
    return out


def test_the_table_is_every_column_a_crossmatch_writes(tiled_catalog):
    documented = _table("columns")
    main, pixels = _schemas(tiled_catalog)
    written = {f.name: (f, "main") for f in main} | {
        f.name: (f, "pixels") for f in pixels if f.name not in main.names}
    assert set(documented) == set(written), (
        f"written, not documented: {sorted(set(written) - set(documented))}; "
        f"documented, not written: {sorted(set(documented) - set(written))}")
    for name, row in documented.items():
        fld, part = written[name]
        assert _matches(row["type"], fld.type), (name, row["type"], fld.type)
        assert row["part"] == part, name
        unit, meaning = describe_field(fld)
        assert (row["unit"], row["meaning"]) == (unit, meaning), name


def test_every_column_added_later_is_documented(predicted):
    documented = _table("columns")
    added = _table("added columns")
    main, _ = _schemas(predicted)
    later = [f for f in main if f.name not in documented]
    assert {f.name for f in later} == {"embedding_image", "embedding_spectrum", "pred_Z",
                                       "pred_Z_quantiles", "pred_Z_lower_68", "pred_Z_upper_68",
                                       "pred_Z_lower_95", "pred_Z_upper_95"}
    # the most specific documented name a column fits (pred_<target> fits pred_Z_lower_68 too)
    patterns = sorted(((re.sub(r"<[^>]+>", "[^_]+", name), row) for name, row in added.items()),
                      key=lambda item: -len(item[0]))
    for fld in later:
        row = added.get(fld.name) or next(
            row for pattern, row in patterns if re.fullmatch(pattern, fld.name))
        assert _matches(row["type"], fld.type, dim=8), (fld.name, row["type"], fld.type)
        assert row["part"] == "main"
    probe_target = (main.field("pred_Z").metadata or {})[b"astroembed_probe"].decode()
    assert '"target": "Z"' in probe_target
    for name in added:  # each documented pattern is one a command writes
        assert any(re.fullmatch(re.sub(r"<[^>]+>", "[^_]+", name), f.name) for f in later) or \
            name == "embedding_<modality>_<NAME>", name


def test_embed_name_columns_follow_the_documented_pattern(tiled_catalog, tiny_model, tmp_path):
    out = tmp_path / "named"
    shutil.copytree(tiled_catalog, out)
    astroembed.embed(out, model=str(tiny_model), name="tiny", modality="image")
    main, _ = _schemas(out)
    new = [f for f in main if f.name not in _table("columns") and f.name not in _table(
        "added columns")]
    assert [f.name for f in new] == ["embedding_image_tiny"]
    pattern = next(n for n in _table("added columns") if "<NAME>" in n)
    found = re.fullmatch(pattern.replace("<modality>", "(.+)").replace("<NAME>", "(.+)"),
                         new[0].name)
    assert found and found.groups() == ("image", "tiny")
