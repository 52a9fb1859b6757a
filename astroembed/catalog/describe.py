"""What ``astroembed info`` reports: each embedding column with the tiles and models that
hold it (read from the tiles' footers alone), the catalog's state and what to do about it,
and the work files runs leave beside a catalog.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from astroembed.errors import InputError
from astroembed.catalog.layout import INCOMPLETE, is_embedding_field, tile_path
from astroembed.catalog.reader import CatalogInfo, read_footers, read_catalog_info
from astroembed.catalog.outputs import disk_bytes

__all__ = [
    "catalog_state",
    "describe_catalog",
    "leftover_work_files",
    "tile_embeddings",
]

def _field_meta(fld: pa.Field) -> dict[str, str]:
    """A field's Parquet metadata as text."""
    return {k.decode(): v.decode() for k, v in (fld.metadata or {}).items()}


# ----------------------------------------------------------------------------- what info says

#: The states :func:`describe_catalog` reports (``astroembed info``).
STATE_COMPLETE, STATE_PARTLY_EMBEDDED, STATE_INCOMPLETE = (
    "complete", "partly embedded", "incomplete")

#: Hidden siblings of ``CAT`` that runs write beside it (never inside it, so lsdb never
#: sees them), as (name prefix, name suffix, what they are).
WORK_SIBLINGS = (
    (".astroembed-staging", "", "work files of `astroembed crossmatch`; running the same "
     "cross-match again resumes from them"),
    (".partial", "", "a replacement catalog being built by `crossmatch --overwrite`"),
    (".astroembed-update", "", "work files of an `astroembed run` update"),
    (".old-", "*", "the old catalog of an interrupted replacement"),
)


def null_rows(footer: pq.FileMetaData, column: str) -> int:
    """Null rows of a fixed-size-list column from the row-group statistics (one null leaf
    entry per null list), without reading the data."""
    nulls = 0
    for g in range(footer.num_row_groups):
        group = footer.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema.split(".")[0] == column:
                stats = chunk.statistics
                nulls += int(stats.null_count) if stats is not None and stats.has_null_count else 0
                break
    return nulls


def tile_footers(info: CatalogInfo) -> dict[tuple[int, int], pq.FileMetaData]:
    """Each tile's Parquet footer (InputError naming an unreadable tile)."""
    return read_footers({t: tile_path(info.path, *t) for t in info.tiles}, InputError)


def tile_embeddings(footers: dict[tuple[int, int], pq.FileMetaData]) -> dict[str, dict]:
    """Per embedding column, what the tiles hold, read from their footers alone: the model
    (the one in most tiles), rows embedded and null, the tiles holding it of all tiles,
    and every model found in it with its tile count (more than one while a column is being
    replaced tile by tile)."""
    columns: dict[str, dict] = {}
    for footer in footers.values():
        for fld in footer.schema.to_arrow_schema():
            meta = _field_meta(fld)
            if not is_embedding_field(fld) or "model_hash" not in meta:
                continue
            entry = columns.setdefault(fld.name, {
                "modality": meta.get("modality"),
                "embedding_dim": int(meta.get("embedding_dim", 0)),
                "created": meta.get("created"), "updated": meta.get("created"),
                "rows_embedded": 0, "rows_null": 0, "tiles": 0, "tiles_total": len(footers),
                "models": {}})
            nulls = null_rows(footer, fld.name)
            entry["created"] = min(entry["created"] or "", meta.get("created") or "")
            entry["updated"] = max(entry["updated"] or "", meta.get("created") or "")
            entry["rows_null"] += nulls
            entry["rows_embedded"] += footer.num_rows - nulls
            entry["tiles"] += 1
            model = entry["models"].setdefault(meta["model_hash"], {
                "model_hash": meta["model_hash"], "model_name": meta.get("model_name"),
                "model_version": meta.get("model_version"), "tiles": 0})
            model["tiles"] += 1
    for name, entry in columns.items():
        models = sorted(entry.pop("models").values(), key=lambda m: -m["tiles"])
        main = {k: models[0][k] for k in ("model_name", "model_version", "model_hash")}
        columns[name] = {"modality": entry.pop("modality")} | main | entry | {"models": models}
    return columns


def embedding_gaps(columns: dict[str, dict]) -> dict[str, dict]:
    """The embedding columns that are not in every tile, or not by one model."""
    return {name: e for name, e in columns.items()
            if e["tiles"] < e["tiles_total"] or len(e["models"]) > 1}


def _embed_command(path: Path, column: str, entry: dict, columns: dict[str, dict]) -> str:
    """The ``embed`` command that fills the gaps of ``column`` (its --name and, when the
    name has only this modality, --modality)."""
    modality = entry.get("modality") or ""
    stem = f"embedding_{modality}"
    name = column[len(stem) + 1:] if column.startswith(stem + "_") else ""
    suffix = f"_{name}" if name else ""
    siblings = {e.get("modality") for c, e in columns.items()
                if c == f"embedding_{e.get('modality')}{suffix}"}
    command = (f"astroembed embed --catalog {shlex.quote(str(path))}"
               + (f" --name {shlex.quote(name)}" if name else ""))
    if siblings == {modality}:
        command += f" --modality {modality}"
    return command


def partly_embedded_detail(path: Path, columns: dict[str, dict]) -> str:
    """``embedding_image_x in 1 of 6 tiles; run `astroembed embed ...` to embed the rest``."""
    gaps = embedding_gaps(columns)
    parts, commands = [], []
    for column, e in gaps.items():
        if len(e["models"]) > 1:
            made = " and ".join(f"{m['model_name']} {m['model_version']} "
                                f"({m['model_hash'][:12]}) in {m['tiles']}" for m in e["models"])
            parts.append(f"{column} made by {made} of {e['tiles_total']} tiles")
        else:
            parts.append(f"{column} in {e['tiles']} of {e['tiles_total']} tiles")
        model = ("the model wanted in every tile" if len(e["models"]) > 1 else
                 f"the model that made them ({e['model_name']} {e['model_version']})")
        command = f"`{_embed_command(path, column, e, columns)}` with {model}"
        if command not in commands:
            commands.append(command)
    return "; ".join(parts) + "; run " + " and ".join(commands) + " to embed the rest"


def catalog_state(info: CatalogInfo, columns: dict[str, dict]) -> tuple[str, str | None]:
    """The catalog's state for people, and what it means: ``incomplete`` only while a writer
    is at work or after an interrupted run (``astroembed_status=incomplete``); ``partly
    embedded`` when its tiles differ in their embedding columns (``embed --tile``);
    ``complete`` otherwise."""
    if info.status == INCOMPLETE:
        from astroembed.catalog.lock import holders

        working = holders(info.path)
        detail = (f"being written now by {'; '.join(working)}" if working else
                  "a run was interrupted (no astroembed process holds the catalog); run the "
                  "interrupted command again to finish it")
        if embedding_gaps(columns):
            detail += " (tiles so far: " + partly_embedded_detail(info.path, columns) + ")"
        return STATE_INCOMPLETE, detail
    if embedding_gaps(columns):
        return STATE_PARTLY_EMBEDDED, partly_embedded_detail(info.path, columns)
    return STATE_COMPLETE, None


def leftover_work_files(path: str | os.PathLike) -> list[dict]:
    """The hidden work directories beside the catalog (:data:`WORK_SIBLINGS`), with their
    sizes: in use while a run is under way, else left by an interrupted one and safe to
    remove (``rm -rf``); listed so the user knows where the space went."""
    path = Path(path)
    try:
        siblings = sorted(path.parent.iterdir())
    except OSError:
        return []
    found = []
    for sibling in siblings:
        for suffix, more, what in WORK_SIBLINGS:
            stem = f".{path.name}{suffix}"
            if sibling.name == stem or (more and sibling.name.startswith(stem)):
                found.append({"path": str(sibling), "bytes": disk_bytes(sibling), "what": what})
                break
    return found


def _all_columns(info: CatalogInfo,
                 footers: dict[tuple[int, int], pq.FileMetaData]) -> list[dict]:
    """Every column of the catalog or of any tile (a run under way may have added some),
    with its type, unit, meaning and part (main or pixels)."""
    from astroembed.catalog.schema import DEFAULT_SUFFIXES, describe_columns

    fields = {f.name: f for f in info.schema}
    for footer in footers.values():
        for fld in footer.schema.to_arrow_schema():
            fields.setdefault(fld.name, fld)
    config = (info.provenance or {}).get("config") or {}
    suffixes = tuple(config.get("suffixes") or DEFAULT_SUFFIXES) if isinstance(config, dict) \
        else DEFAULT_SUFFIXES
    return describe_columns(pa.schema(list(fields.values())), info.pixel_columns,
                            suffixes)  # type: ignore[arg-type]


def catalog_parts(info: CatalogInfo) -> dict[str, dict]:
    """Bytes on disk of the main catalog, the pixel extension and the margin catalog, and per
    row of the catalog: what a reader of each part pays (``embed`` rewrites the main one and
    the margin, never the pixels)."""
    from astroembed.catalog.layout import MARGIN_DIR, PIXELS_DIR
    from astroembed.catalog.outputs import disk_bytes

    parts = {"main": info.main}
    if info.pixel_columns:
        parts["pixels"] = info.path / PIXELS_DIR
    if (info.path / MARGIN_DIR).is_dir():
        parts["margin"] = info.path / MARGIN_DIR
    out = {}
    for name, root in parts.items():
        size = disk_bytes(root)
        out[name] = {"path": str(root), "bytes": size,
                     "bytes_per_row": round(size / info.total_rows, 1) if info.total_rows else None}
    return out


def describe_catalog(path: str | os.PathLike) -> dict:
    """What a catalog holds and its state, as ``astroembed info --json`` prints it: tiles
    with rows, columns, embedding columns with their tile counts (from the tiles' footers),
    the state and what it means, leftover work files beside it, the last ``astroembed run``,
    properties and provenance."""
    from astroembed.pipeline.state import read_state  # the run's state file lives in the catalog

    info = read_catalog_info(path)
    footers = tile_footers(info)
    columns = tile_embeddings(footers)
    state, detail = catalog_state(info, columns)
    return {
        "path": str(info.path), "state": state, "state_detail": detail,
        "complete": state == STATE_COMPLETE, "total_rows": info.total_rows,
        "tiles": [{"order": o, "pixel": p, "rows": info.rows.get((o, p), 0)}
                  for o, p in info.tiles],
        "columns": _all_columns(info, footers), "embeddings": columns,
        "parts": catalog_parts(info),
        "leftover_work_files": leftover_work_files(info.path),
        "last_run": (read_state(info.path) or {}).get("last_run"),
        "properties": info.properties, "provenance": info.provenance,
    }
