"""What astroembed makes of its inputs: one summary per file, grouped by kind.

``astroembed inspect`` runs this on files or whole directories (a simulated survey, a DESI
healpix tree) so a user can check, before any cross-match, that every file is read as what it
is and how many usable rows it holds.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from astroembed.errors import AstroembedError, InputError

SKIP_NAMES = {"simulation.json"}


def input_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand directories into the files under them (hidden files skipped); keep files as given.

    A HATS catalog or Parquet dataset directory counts as one input, and so does a
    directory of brick coadds (the one holding ``coadd/``): stamps are cut from it per object.
    """
    from astroembed.readers import is_brick_directory, is_table

    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"{p}: no such file or directory.")
        if p.is_dir() and p.name == "coadd" and is_brick_directory(p):
            out.append(p)
        elif p.is_dir() and not is_table(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                if "coadd" in dirs and is_brick_directory(root):
                    out.append(Path(root))
                    dirs.remove("coadd")
                out += [Path(root) / f for f in sorted(files)
                        if not f.startswith(".") and f not in SKIP_NAMES]
        else:
            out.append(p)
    return out


def describe_file(path: Path) -> dict:
    """Read one file and summarise it (kind, rows and the numbers that matter for that kind)."""
    from astroembed.readers import read_any

    kind, table = read_any(path)
    info: dict = {"path": str(path), "kind": kind, "rows": table.num_rows}
    cols = table.column_names
    if kind == "desi_spectra":
        tid = np.asarray(table["TARGETID"].to_numpy(zero_copy_only=False))
        objtype = np.asarray(table["OBJTYPE"].fill_null("").to_numpy(zero_copy_only=False))
        status_col = "COADD_FIBERSTATUS" if "COADD_FIBERSTATUS" in cols else "FIBERSTATUS"
        status = np.asarray(table[status_col].fill_null(-1).to_numpy(zero_copy_only=False))
        info.update(usable=int(((tid > 0) & (objtype == "TGT") & (status == 0)).sum()),
                    sky=int((objtype == "SKY").sum()), bad_status=int((status != 0).sum()),
                    negative_targetid=int((tid <= 0).sum()))
    elif kind == "desi_redshifts":
        zwarn = table["ZWARN"].to_numpy(zero_copy_only=False)
        spectype = Counter(table["SPECTYPE"].fill_null("").to_pylist())
        good = zwarn == 0
        z = table["Z"].to_numpy(zero_copy_only=False)
        info.update(zwarn_ok=int(good.sum()), spectype=dict(spectype),
                    z_median=float(np.median(z[good])) if good.any() else None)
    elif kind == "ls_catalog":
        info.update(types=dict(Counter(table["TYPE"].fill_null("").to_pylist())))
    elif kind == "ls_bricks":
        info.update(bricks=table.column("BRICKNAME").to_pylist())
    elif kind in ("ls_cutout_stack", "ls_cutout_fits"):
        info.update(image_shape=list(table.schema.field("image").type.shape))
    else:
        info.update(columns=len(cols))
    return info


def describe(paths: list[str | os.PathLike]) -> dict:
    """Summaries of every input file plus totals per kind; unreadable files listed as errors."""
    files = input_files(paths)
    if not files:
        raise InputError(f"{', '.join(map(str, paths))}: no input files found.")
    results, errors = [], []
    for f in files:
        try:
            results.append(describe_file(f))
        except AstroembedError as exc:
            errors.append({"path": str(f), "error": str(exc)})
    totals: dict[str, dict] = {}
    for r in results:
        t = totals.setdefault(r["kind"], {"files": 0, "rows": 0})
        t["files"] += 1
        t["rows"] += r["rows"]
        for key in ("usable", "sky", "bad_status", "zwarn_ok"):
            if key in r:
                t[key] = t.get(key, 0) + r[key]
    return {"files": results, "totals": totals, "errors": errors}
