"""`head` and `info --schema` at an 80-column terminal: no line longer than 80 characters
(except, in `head`, one holding a single value longer than that), and every value still
there, whole; a wide terminal shows each row on one line of one table.

Oracles: the tables are read back by the character positions of their header words, each
cell's pieces joined and compared with the value the (faked) API returned, spaces aside.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import astroembed
from astroembed.cli import app

runner = CliRunner()

LONG = ("inverse variance of the flux of every pixel of the coadded spectrum, in the units of "
        "the flux to the power minus two (0: no information)")
COLUMNS = [
    {"name": "RA", "type": "float64", "unit": "deg", "part": "main",
     "description": "right ascension (ICRS) of the Legacy Survey object"},
    {"name": "FLUX_G_left", "type": "float32", "unit": "nanomaggy", "part": "main",
     "description": "g-band flux, not extinction-corrected (Legacy Survey side)"},
    {"name": "embedding_spectrum_v2", "type": "fixed_size_list<float32>[128]", "unit": "",
     "part": "main", "description": "L2-normalised spectrum embedding by astroembed-sim 1.4.0"},
    {"name": "image", "type": "fixed_shape_tensor<float32>[3, 152, 152]", "unit": "nanomaggy",
     "part": "pixels", "description": "g, r, z cutout, (3, H, W)"},
    {"name": "ivar", "type": "fixed_size_list<float32>[7781]",
     "unit": "(1e-17 erg/s/cm2/Angstrom)^-2", "part": "pixels", "description": LONG},
]
HEADERS = ("column", "type", "unit", "meaning", "part")


def squeezed(text: str) -> str:
    return "".join(text.split())


def schema_cells(stdout: str) -> list[dict[str, list[str]]]:
    """The schema table read back: each row's cells as the pieces on its lines."""
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["column"])
    header = lines[at]
    starts = [header.index(f" {h}") + 1 for h in HEADERS] + [None]
    rows: list[dict[str, list[str]]] = []
    for line in lines[at + 2:]:
        if not line.strip():
            continue
        pieces = {h: line[starts[i]:starts[i + 1]].strip() for i, h in enumerate(HEADERS)}
        if pieces["part"]:  # never wrapped: on the first line of each row
            rows.append({h: [] for h in HEADERS})
        for h, piece in pieces.items():
            if piece:
                rows[-1][h].append(piece)
    return rows


def joined(pieces: list[str]) -> str:
    return squeezed("".join(pieces))


def assert_clean_breaks(value: str, pieces: list[str]) -> None:
    """Each line of a wrapped value ends after a space, comma, slash, underscore, ``<`` or
    ``>``, or else (a word longer than the column) holds none of them."""
    end = 0
    for piece in pieces[:-1]:
        end = value.index(piece, end) + len(piece)
        clean = value[end - 1] in ",/_<>-" or value[end] == " "
        assert clean or not any(c in piece for c in " ,/_<>"), (value, pieces)


def schema(monkeypatch, columns: list[dict], width: int):
    monkeypatch.setattr(astroembed, "info", lambda *a, **k: {"path": "cat", "columns": columns})
    out = runner.invoke(app, ["info", "-c", "cat", "--schema"], env={"COLUMNS": str(width)})
    assert out.exit_code == 0, out.output
    return out.stdout


@pytest.mark.parametrize("width", [80, 60])
def test_schema_fits_a_narrow_terminal_with_every_value_whole(monkeypatch, width):
    stdout = schema(monkeypatch, COLUMNS, width)
    assert max(len(line) for line in stdout.splitlines()) <= width, stdout
    rows = schema_cells(stdout)
    assert [joined(r["column"]) for r in rows] == [c["name"] for c in COLUMNS]
    for row, column in zip(rows, COLUMNS):
        assert joined(row["type"]) == squeezed(column["type"])
        assert joined(row["unit"]) == squeezed(column["unit"])
        assert joined(row["meaning"]) == squeezed(column["description"])
        assert row["part"] == [column["part"]]
        # a wrapped value breaks after a space or punctuation, inside a word only where the
        # word is longer than the column
        room = max(len(piece) for r in rows for piece in r["meaning"])
        for word in column["description"].split():
            assert len(word) > room or any(word in piece for piece in row["meaning"]), word
        for key, value in (("type", column["type"]), ("unit", column["unit"])):
            assert_clean_breaks(value, row[key])
    assert len(stdout.splitlines()) > len(COLUMNS) + 4  # some rows took several lines


def test_schema_on_a_wide_terminal_is_one_line_a_column(monkeypatch):
    stdout = schema(monkeypatch, COLUMNS, 300)
    for column in COLUMNS:
        line = next(line for line in stdout.splitlines() if line.split()[:1] == [column["name"]])
        for key in ("type", "unit", "description", "part"):
            assert column[key] in line
    assert len([line for line in stdout.splitlines() if line.strip()]) == len(COLUMNS) + 3


def test_schema_a_name_longer_than_the_terminal_wraps_too(monkeypatch):
    name = "embedding_image_" + "x" * 90
    columns = COLUMNS + [{**COLUMNS[0], "name": name}]
    stdout = schema(monkeypatch, columns, 80)
    assert max(len(line) for line in stdout.splitlines()) <= 80, stdout
    rows = schema_cells(stdout)
    assert [joined(r["column"]) for r in rows] == [c["name"] for c in columns]
    assert joined(rows[-1]["meaning"]) == squeezed(COLUMNS[0]["description"])


HEAD = {"path": "cat", "id_column": "TARGETID", "total_rows": 1000, "tile": None, "cone": None,
        "columns": ["TARGETID", "RA", "DEC", "Z", "SPECTYPE", "embedding_image",
                    "embedding_spectrum"],
        "rows": [{"TARGETID": 39627810469314561 + i, "RA": 0.3167704 + i, "DEC": -1.3160571,
                  "Z": 0.000179941, "SPECTYPE": "GALAXY",
                  "embedding_image": {"length": 128, "head": [0.0342, -0.00654, 0.05]},
                  "embedding_spectrum": {"length": 128, "head": [-0.0669, -0.113, 0.13]}}
                 for i in range(3)]}


def head(monkeypatch, width: int) -> str:
    monkeypatch.setattr(astroembed, "head", lambda *a, **k: HEAD)
    out = runner.invoke(app, ["head", "-c", "cat"], env={"COLUMNS": str(width)})
    assert out.exit_code == 0, out.output
    return out.stdout


def tables(stdout: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each table's header words and its rows' words (no value here holds a space but the
    vectors, read back as their first word)."""
    lines = stdout.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line.strip()) == {"─"}]
    return [(lines[r - 1].split(), [line.split() for line in lines[r + 1:end] if line.strip()])
            for r, end in zip(rules, [r - 1 for r in rules[1:]] + [len(lines)])]


def test_head_at_80_columns_goes_on_in_further_tables_each_led_by_the_id(monkeypatch):
    stdout = head(monkeypatch, 80)
    assert max(len(line) for line in stdout.splitlines()) <= 80, stdout
    found = tables(stdout)
    assert len(found) > 1
    shown = [name for names, _ in found for name in names if name != "TARGETID"]
    assert shown == HEAD["columns"][1:]
    ids = [str(r["TARGETID"]) for r in HEAD["rows"]]
    for names, rows in found:
        assert names[0] == "TARGETID"
        assert [r[0] for r in rows] == ids  # one line a row, the ID whole
        for row, expected in zip(rows, HEAD["rows"]):
            for name, word in zip(names, row):
                if name.startswith("embedding"):
                    break
                value = expected[name]
                assert (word == value if isinstance(value, str)
                        else float(word) == pytest.approx(value, rel=1e-5)), (name, word)
    vectors = [r for names, rows in found for r in rows if names[-1].startswith("embedding")]
    assert len(vectors) == 2 * len(ids) and all(r[-1] == "(128)" for r in vectors)


def test_head_on_a_wide_terminal_is_one_table(monkeypatch):
    stdout = head(monkeypatch, 200)
    found = tables(stdout)
    assert len(found) == 1 and found[0][0] == HEAD["columns"]
    assert [r[0] for r in found[0][1]] == [str(r["TARGETID"]) for r in HEAD["rows"]]
    for line in [line for line in stdout.splitlines() if line.strip()][3:]:
        assert line.count("(128)") == 2 and "GALAXY" in line


def test_head_a_value_wider_than_the_terminal_wraps_beside_its_id(monkeypatch):
    note = "seen twice, " * 12
    rows = [{"TARGETID": 7 + i, "NOTE": note + str(i), "Z": 0.5} for i in range(2)]
    monkeypatch.setattr(astroembed, "head", lambda *a, **k: {
        **HEAD, "columns": ["TARGETID", "NOTE", "Z"], "rows": rows})
    out = runner.invoke(app, ["head", "-c", "cat"], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    assert max(len(line) for line in out.stdout.splitlines()) <= 80, out.stdout
    found = tables(out.stdout)
    assert [names for names, _ in found] == [["TARGETID", "NOTE"], ["TARGETID", "Z"]]
    text = " ".join(" ".join(words) for words in found[0][1])
    assert text.split() == " ".join(f"{r['TARGETID']} {r['NOTE']}" for r in rows).split()
