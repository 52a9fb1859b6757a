"""Converting a catalog in the single-table layout of earlier versions (pixels in every row)
to the collection layout, in place and atomically.

The new collection is built beside the old catalog from its tiles as they are (every column
kept, embeddings and predictions with their field metadata), then swapped in by a rename;
until then the old catalog is untouched, and a failed or interrupted conversion leaves it as
it was. The tiles keep their layout, so an ``astroembed run`` state file stays valid and is
carried over; a stored search index is not (``search`` builds it again).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from astroembed.errors import InputError, OutputError
from astroembed.catalog.layout import (COMPLETE, INCOMPLETE, PARTIAL, PROPERTIES_FILE,
                                       STATUS_KEY, dataset_tile, main_dir, read_properties,
                                       scan_tiles)
from astroembed.catalog.reader import read_provenance

__all__ = ["convert_catalog"]

#: Properties the writer computes again; the others of the old catalog are kept.
_COMPUTED = {"hats_nrows", "hats_max_rows", "hats_order", "moc_sky_fraction", "hats_estsize",
             "hats_builder", "hats_version", "astroembed_version", "astroembed_provenance",
             STATUS_KEY, "dataproduct_type", "hats_col_healpix", "hats_col_healpix_order",
             "hats_npix_suffix"}
_STATE_FILE = "astroembed_state.json"


def _old_properties(path: Path) -> dict[str, str]:
    if (main_dir(path) / PROPERTIES_FILE).is_file():
        raise InputError(f"{path}: already in the collection layout; nothing to convert.")
    file = path / PROPERTIES_FILE
    if not path.is_dir() or not file.is_file():
        raise InputError(f"{path}: not a catalog in the single-table layout (no "
                         f"{PROPERTIES_FILE}).")
    props = read_properties(file)
    if "astroembed_version" not in props and not props.get("hats_builder", "").startswith(
            "astroembed"):
        raise InputError(f"{file}: not written by astroembed; only astroembed's catalogs are "
                         "converted.")
    if props.get(STATUS_KEY, COMPLETE) == INCOMPLETE:
        raise InputError(f"{path}: incomplete (a run was interrupted); finish it with the "
                         "version that wrote it, or rebuild it with `astroembed crossmatch "
                         "--overwrite`.")
    return props


def convert_catalog(path: str | os.PathLike) -> dict:
    """Convert the single-table catalog at ``path`` to the collection layout in place; what
    was converted (tiles, rows, columns, the parts' paths)."""
    from astroembed.catalog.lock import CatalogLock
    from astroembed.catalog.outputs import CATALOG
    from astroembed.catalog.writer import CatalogWriter

    path = Path(path)
    props = _old_properties(path)
    foreign = CATALOG.foreign(path)
    if foreign:
        raise OutputError(f"{path}: holds files astroembed did not write there "
                          f"({', '.join(foreign[:5])}); move them out before converting, since "
                          "the old directory is replaced.")
    with CatalogLock(path, "convert").exclusive():
        tiles = scan_tiles(path)
        if not tiles:
            raise InputError(f"{path}: has no tiles to convert; rebuild it with "
                             "`astroembed crossmatch --overwrite`.")
        provenance = read_provenance(path, props)
        writer = CatalogWriter(path, ra_column=props.get("hats_col_ra", "RA"),
                               dec_column=props.get("hats_col_dec", "DEC"), overwrite=True,
                               catalog_name=props.get("obs_collection"))
        rows = 0
        columns: dict[str, str] = {}
        with writer:
            for (order, pixel) in tiles:
                file = dataset_tile(path, order, pixel)
                try:
                    table = pq.read_table(file)
                except (OSError, pa.ArrowException) as err:
                    raise InputError(f"{file}: unreadable tile ({err}); nothing was "
                                     "converted.") from err
                writer.write_tile(order, pixel, table)
                rows += table.num_rows
                columns.update({f.name: str(f.type) for f in table.schema})
            state = path / _STATE_FILE
            if state.is_file():
                shutil.copy2(state, writer.write_path / _STATE_FILE)
            kept = {k: v for k, v in props.items() if k not in _COMPUTED}
            info = writer.finish(provenance, kept,
                                 partial=props.get(STATUS_KEY) == PARTIAL)
    return {"path": str(path), "tiles": len(tiles), "rows": rows,
            "columns": sorted(columns), "pixel_columns": info.pixel_columns,
            "state": info.status, "main": str(info.main),
            "pixels": str(path / "pixels") if info.pixel_columns else None}
