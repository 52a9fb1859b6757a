"""Which DESI spectra are usable: the quality cuts, in one place (docs/architecture.md).

Readers return every fibre with its quality columns; the cross-match calls these functions
and reports how many rows each reason removed. A row is counted under the first reason it
fails, in the order of ``FIBRE_REASONS`` then ``REDSHIFT_REASONS``, so the counts add up to
the rows dropped.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FIBRE_REASONS = ("TARGETID", "OBJTYPE", "FIBERSTATUS")
REDSHIFT_REASONS = ("no_redshift", "not_primary", "ZWARN")


def _column(table: pa.Table, *names: str) -> np.ndarray | None:
    """The first of ``names`` the table has with any non-null value (nulls -> '' or -1)."""
    for name in names:
        if name in table.column_names and table.column(name).null_count < table.num_rows:
            col = table.column(name)
            fill = "" if pa.types.is_string(col.type) else -1
            return pc.fill_null(col, fill).to_numpy(zero_copy_only=False)
    return None


def fibre_cuts(table: pa.Table) -> tuple[np.ndarray, Counter]:
    """Keep mask and drop counts for fibre-level cuts: TARGETID > 0, OBJTYPE 'TGT', status 0.

    Columns a table lacks (e.g. a plain Parquet table) impose no cut.
    """
    checks = {
        "TARGETID": (_column(table, "TARGETID"), lambda v: v > 0),
        "OBJTYPE": (_column(table, "OBJTYPE"), lambda v: v == "TGT"),
        "FIBERSTATUS": (_column(table, "COADD_FIBERSTATUS", "FIBERSTATUS"), lambda v: v == 0),
    }
    keep = np.ones(table.num_rows, dtype=bool)
    dropped: Counter = Counter()
    for reason in FIBRE_REASONS:
        values, test = checks[reason]
        if values is None:
            continue
        ok = test(values)
        dropped[reason] += int((keep & ~ok).sum())
        keep &= ok
    return keep, dropped


def redshift_cuts(has_redshift: np.ndarray, primary: np.ndarray | None,
                  zwarn: np.ndarray | None,
                  counted: np.ndarray | None = None) -> tuple[np.ndarray, Counter]:
    """Keep mask and drop counts once spectra are joined to their redshifts.

    ``has_redshift``: a redshift row was found (only checked when redshift catalogs were
    given); ``primary``: the spectrum is the ZCAT_PRIMARY one of its TARGETID; ``zwarn``:
    redrock's warning bits (0 = good; null treated as unknown, not cut). Only rows where
    ``counted`` is true enter the drop counts (e.g. a tile's own rows, not its margin).
    """
    keep = np.ones(len(has_redshift), dtype=bool)
    counted = keep if counted is None else counted
    dropped: Counter = Counter()
    for reason, ok in (("no_redshift", has_redshift),
                       ("not_primary", primary),
                       ("ZWARN", None if zwarn is None else zwarn == 0)):
        if ok is None:
            continue
        dropped[reason] += int((keep & ~ok & counted).sum())
        keep &= ok
    return keep, dropped
