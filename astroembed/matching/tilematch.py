"""Build one output tile: assemble each side from its staged fragments, match, join, write.

Left rows are Legacy Survey catalog rows with their cutouts attached; right rows are DESI
spectra joined to their redshifts (or redshift rows alone, or any table with RA/Dec), after
the redshift-level quality cuts. Only the tile's own left rows produce output; margin rows
are there so that pairs across the tile edge are found exactly once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroembed.catalog.atomic import atomic_path
from astroembed.catalog.tiles import sorted_by_healpix
from astroembed.matching.partition import (IMAGE_JOIN_ARCSEC, WORK_SUFFIX, Plan, radec_names, read_fragments,
                        tile_dir, work_file_schema)

INTERNAL = ("_margin", "_key")


@dataclass
class TileOptions:
    """The matching options a tile task needs (a picklable subset of the run's config)."""

    radius: float
    mode: str
    how: str
    match_on: str
    compare_ids: bool
    suffixes: tuple[str, str]
    cutout_size: int = 64  # stamps cut from brick coadds
    # a bad brick file leaves its objects without a brick stamp (recorded in
    # TileResult.skipped_bricks) instead of failing the tile
    skip_bad_bricks: bool = False


@dataclass
class TileResult:
    tile: tuple[int, int]
    left_rows: int = 0
    right_rows: int = 0
    matched: int = 0
    output_rows: int = 0
    dropped: Counter = field(default_factory=Counter)
    id_comparison: Counter = field(default_factory=Counter)
    skipped: bool = False
    skipped_bricks: dict = field(default_factory=dict)  # brick file -> why it was not read

    def to_json(self) -> str:
        import json

        return json.dumps({k: (dict(v) if isinstance(v, Counter) else v)
                           for k, v in self.__dict__.items()})

    @classmethod
    def from_json(cls, text: str) -> "TileResult":
        import json

        d = json.loads(text)
        d["tile"] = tuple(d["tile"])
        d["dropped"], d["id_comparison"] = Counter(d["dropped"]), Counter(d["id_comparison"])
        return cls(**d)


def _empty_role(staging: str, prefix: str) -> pa.Table | None:
    """A fragment with no rows but the columns of role ``prefix`` (from any staged file of
    it), for tiles that role does not reach: every tile then gets the same columns."""
    staged = next(iter(sorted((Path(staging) / "inputs").glob(f"{prefix}-*{WORK_SUFFIX}"))), None)
    if staged is None:
        return None
    schema = work_file_schema(staged).append(pa.field("_margin", pa.bool_()))
    return schema.empty_table()


def _has_role(plan: Plan | None, side: str, role: str) -> bool:
    return plan is not None and any(f["side"] == side and f["role"] == role for f in plan.inputs)


def left_side(staging: str, tile: tuple[int, int], plan: Plan | None = None,
              cutout_size: int = 64, skipped_bricks: dict[str, str] | None = None
              ) -> pa.Table | None:
    """Catalog rows of the tile (own + margin) with cutouts attached where there are any
    (an all-null ``image`` column when the run has cutouts but none reach this tile).

    With brick coadds among the inputs, the tile's own rows get stamps cut from them
    (replacing any cutout) and the stamp columns; margin rows produce no output and get
    nulls, so no stamp is cut twice. With ``skipped_bricks`` (a dict), a bad brick file is
    recorded there (file -> why) and its objects get no brick stamp, instead of an error.
    """
    from astroembed.readers import attach_cutouts

    catalog = read_fragments(staging, tile, "left-catalog")
    if catalog is None:
        return None
    images = read_fragments(staging, tile, "left-images")
    if images is None and catalog.num_rows and _has_role(plan, "left", "images"):
        images = _empty_role(staging, "left-images")
    if images is not None and catalog.num_rows:
        cutouts = images.drop_columns([c for c in images.column_names
                                       if c in INTERNAL or c == "_healpix_29"])
        catalog = attach_cutouts(catalog, cutouts, max_sep_arcsec=IMAGE_JOIN_ARCSEC)
    bricks = [f["path"] for f in (plan.inputs if plan is not None else ())
              if f["side"] == "left" and f["role"] == "bricks"]
    if bricks:
        catalog = _brick_stamps(catalog, bricks, cutout_size, skipped_bricks)
    return catalog


def _brick_stamps(catalog: pa.Table, roots: list[str], size: int,
                  skipped: dict[str, str] | None = None) -> pa.Table:
    """Stamps from the brick directories ``roots`` for the own rows; margin rows get the
    same columns, null. An object without a brick stamp (no brick holds it, or its brick's
    files are bad and ``skipped`` records them) keeps its cutout when that has the stamps'
    shape (one image column holds one shape)."""
    from astroembed.readers.bricks import attach_brick_stamps

    own = np.flatnonzero(~catalog.column("_margin").to_numpy(zero_copy_only=False))
    stamped = attach_brick_stamps(catalog.take(pa.array(own)), roots, size, skipped)
    if "image" in catalog.column_names:
        stamped = _keep_cutouts(stamped, catalog.column("image").combine_chunks().take(
            pa.array(own)))
    added = [c for c in stamped.column_names if c not in catalog.column_names or c == "image"]
    rows = np.full(catalog.num_rows, -1, np.int64)
    rows[own] = np.arange(own.size)
    take = pa.array(np.where(rows < 0, 0, rows), mask=rows < 0)
    out = catalog.drop_columns([c for c in added if c in catalog.column_names])
    for name in added:
        column = stamped.column(name).combine_chunks()
        out = out.append_column(stamped.schema.field(name), column.take(take) if own.size
                                else _nulls_like(column, catalog.num_rows))
    return out


def _keep_cutouts(stamped: pa.Table, cutouts: pa.Array) -> pa.Table:
    """``stamped`` with ``cutouts`` (same rows) as the image where no brick gave a stamp."""
    image = stamped.column("image").combine_chunks()
    if cutouts.type != image.type:
        return stamped
    use = (image.is_null().to_numpy(zero_copy_only=False)
           & cutouts.is_valid().to_numpy(zero_copy_only=False))
    if not use.any():
        return stamped
    n = len(image)
    pick = np.where(use, n + np.arange(n), np.arange(n))
    storage = pa.concat_arrays([image.storage, cutouts.storage]).take(pa.array(pick))
    merged = pa.ExtensionArray.from_storage(image.type, storage)
    return stamped.set_column(stamped.column_names.index("image"), "image", merged)


def _nulls_like(column: pa.Array, n: int) -> pa.Array:
    if isinstance(column.type, pa.ExtensionType):
        return pa.ExtensionArray.from_storage(column.type, pa.nulls(n, column.type.storage_type))
    return pa.nulls(n, column.type)


def right_side(staging: str, tile: tuple[int, int], own_counts: Counter,
               keep_all: bool = False, plan: Plan | None = None) -> pa.Table | None:
    """Usable DESI rows of the tile (own + margin): spectra joined to redshifts, cuts applied.

    Drop counts are added to ``own_counts`` for the tile's own rows only (margin rows are
    some other tile's own rows and are counted there). When the run has spectra and redshift
    files but only one of them reaches this tile, the other is taken as empty, exactly as in
    tiles that both reach: redshifts without a spectrum are not pairs, spectra without a
    redshift are cut; and the tile keeps the columns of both.
    """
    from astroembed.matching.quality import redshift_cuts

    spectra = read_fragments(staging, tile, "right-spectra")
    redshifts = read_fragments(staging, tile, "right-redshifts")
    if spectra is None and redshifts is not None and _has_role(plan, "right", "spectra"):
        spectra = _empty_role(staging, "right-spectra")
    if redshifts is None and spectra is not None and _has_role(plan, "right", "redshifts"):
        redshifts = _empty_role(staging, "right-redshifts")
    if spectra is None and redshifts is None:
        return read_fragments(staging, tile, "right-table")
    if spectra is None:
        table, has_z, primary = redshifts, np.ones(redshifts.num_rows, bool), None
    elif redshifts is None:
        table, has_z, primary = spectra, np.ones(spectra.num_rows, bool), _first_per_target(spectra)
    else:
        table, has_z, primary = _join_redshifts(spectra, redshifts)
    if keep_all:
        return table
    zwarn = None
    if "ZWARN" in table.column_names:
        zwarn = pc.fill_null(table.column("ZWARN"), 0).to_numpy(zero_copy_only=False)
    own = ~table.column("_margin").to_numpy(zero_copy_only=False)
    keep, own_dropped = redshift_cuts(has_z, primary, zwarn, counted=own)
    own_counts.update(own_dropped)
    return table.filter(pa.array(keep))


_Z_COLUMNS = ("Z", "ZERR", "ZWARN", "SPECTYPE", "DELTACHI2", "ZCAT_PRIMARY", "HEALPIX")


def _join_redshifts(spectra: pa.Table, redshifts: pa.Table):
    """Attach each spectrum's redshift; flag spectra that are not their target's primary one.

    Redshift rows are keyed by (TARGETID, SURVEY, PROGRAM) when both sides know the survey
    and program (a zcatalog lists a target once per survey/program and marks the primary),
    else by TARGETID.
    """
    z_by_survey = ("SURVEY" in redshifts.column_names
                   and redshifts.column("SURVEY").null_count < redshifts.num_rows
                   and spectra.column("SURVEY").null_count < spectra.num_rows)
    keys = ["TARGETID", "SURVEY", "PROGRAM"] if z_by_survey else ["TARGETID"]
    z_cols = [c for c in _Z_COLUMNS if c in redshifts.column_names]
    z = redshifts.select(keys + z_cols).group_by(keys, use_threads=False).aggregate(
        [(c, "first") for c in z_cols]).rename_columns(keys + z_cols)
    # Join on the keys alone (Acero cannot carry the fixed-size-list spectra), then take.
    left_keys = spectra.select(keys).append_column("_srow", pa.array(np.arange(spectra.num_rows)))
    right_keys = z.select(keys).append_column("_zrow", pa.array(np.arange(z.num_rows)))
    rows = left_keys.join(right_keys, keys, join_type="left outer", use_threads=False)
    rows = rows.sort_by("_srow")
    zrow = rows.column("_zrow").combine_chunks()
    joined = spectra
    for name in z_cols:
        column = z.column(name).take(zrow)
        if name in joined.column_names:
            joined = joined.set_column(joined.column_names.index(name), name, column)
        else:
            joined = joined.append_column(name, column)
    tid = joined.column("TARGETID").to_numpy()
    has_redshift = np.isin(tid, redshifts.column("TARGETID").to_numpy())
    # A spectrum whose target has a redshift under another survey/program is a repeat
    # observation that is not the primary one; so is a second spectrum of the same key.
    primary = joined.column("Z").is_valid().to_numpy(zero_copy_only=False)
    candidates = np.flatnonzero(primary)
    primary[candidates[~_first_per_target(joined.take(pa.array(candidates)))]] = False
    return joined, has_redshift, primary


def _first_per_target(table: pa.Table) -> np.ndarray:
    """True for the first row of each TARGETID (by SURVEY, PROGRAM when known)."""
    tid = table.column("TARGETID").to_numpy()
    if "SURVEY" in table.column_names:
        survey = pc.fill_null(table.column("SURVEY"), "").to_numpy(zero_copy_only=False)
        order = np.lexsort((survey, tid))
    else:
        order = np.argsort(tid, kind="stable")
    first = np.zeros(len(tid), bool)
    if len(tid):
        sorted_tid = tid[order]
        first[order[np.r_[True, sorted_tid[1:] != sorted_tid[:-1]]]] = True
    return first


def _xyz(table: pa.Table) -> np.ndarray:
    from astroembed.matching.sky import radec_to_xyz

    ra, dec = radec_names(table)
    return radec_to_xyz(table.column(ra).to_numpy(zero_copy_only=False),
                        table.column(dec).to_numpy(zero_copy_only=False))


def match_ids(left: pa.Table, right: pa.Table, own: np.ndarray):
    """Pairs (li, ri) with equal Legacy Survey IDs, own left rows only: the catalog's
    (RELEASE, BRICKID, OBJID) against the (RELEASE, BRICKID, BRICK_OBJID) DESI carries."""
    from astroembed.readers.legacysurvey import first_match, id_keys

    empty = np.empty(0, np.int64), np.empty(0, np.int64)
    lkeys = id_keys(left, (("RELEASE",), ("BRICKID",), ("OBJID",)))
    rkeys = id_keys(right, (("RELEASE",), ("BRICKID",), ("BRICK_OBJID",)))
    if lkeys is None or rkeys is None:
        return empty
    ri = first_match(lkeys[0], lkeys[1] & own, *rkeys)
    li = np.flatnonzero(ri >= 0)
    return li, ri[li]


def build_tile(tile: tuple[int, int], staging: str, catalog: str, plan: Plan,
               opts: TileOptions, keep_all: bool = False, force: bool = False) -> TileResult:
    """Match one tile and write it to the catalog (skipped if already written)."""
    from astroembed.matching.pairs import join_pairs, match_tile
    from astroembed.catalog.tiles import write_tile
    from astroembed.matching.sky import angular_separation_arcsec

    done = tile_dir(staging, tile) / "result.json"
    if done.exists() and not force:  # written by an earlier, interrupted run
        result = TileResult.from_json(done.read_text())
        result.skipped = True
        return result
    result = TileResult(tile)
    left = left_side(staging, tile, plan, opts.cutout_size,
                     result.skipped_bricks if opts.skip_bad_bricks else None)
    right = right_side(staging, tile, result.dropped, keep_all, plan)
    if left is None or left.num_rows == 0:
        done.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(done) as tmp:
            tmp.write_text(result.to_json())
        return result
    # sorted, pairs taken in left order come out in the order the tile is written in
    left = sorted_by_healpix(left, left.column("_healpix_29").to_numpy())
    own = ~left.column("_margin").to_numpy(zero_copy_only=False)
    result.left_rows = int(own.sum())
    if right is not None:
        result.right_rows = int((~right.column("_margin").to_numpy(zero_copy_only=False)).sum())
    if right is None or right.num_rows == 0:
        right = _empty_like_right(right)
    lxyz, rxyz = _xyz(left), _xyz(right) if right.num_rows else np.empty((0, 3))
    if opts.match_on == "ids":
        li, ri = match_ids(left, right, own)
        lra, ldec = radec_names(left)
        rra, rdec = radec_names(right)
        dist = angular_separation_arcsec(
            left.column(lra).to_numpy()[li], left.column(ldec).to_numpy()[li],
            right.column(rra).to_numpy()[ri], right.column(rdec).to_numpy()[ri])
    else:
        li, ri, dist = match_tile(lxyz, left.column("_key").to_numpy(), own, rxyz,
                                  right.column("_key").to_numpy(), opts.radius, opts.mode)
    if opts.compare_ids:
        result.id_comparison = _compare_ids(left, right, own, li, ri, opts)
    result.matched = len(li)
    left_out = left.drop_columns([c for c in INTERNAL if c in left.column_names])
    right_out = right.drop_columns([c for c in (*INTERNAL, "_healpix_29") if c in right.column_names])
    joined = join_pairs(left_out, right_out, li, ri, dist, how=opts.how, left_own=own,
                        suffixes=opts.suffixes)
    result.output_rows = joined.num_rows
    if joined.num_rows:
        write_tile(catalog, tile[0], tile[1], joined)
    with atomic_path(done) as tmp:
        tmp.write_text(result.to_json())
    return result


def _empty_like_right(right: pa.Table | None) -> pa.Table:
    if right is not None:
        return right
    return pa.table({"RA": pa.array([], pa.float64()), "DEC": pa.array([], pa.float64()),
                     "_key": pa.array([], pa.int64()), "_margin": pa.array([], pa.bool_())})


def _compare_ids(left, right, own, li, ri, opts) -> Counter:
    """How the positional pairs and the ID join agree, counted on own left rows."""
    if opts.match_on == "ids":
        return Counter()
    id_li, id_ri = match_ids(left, right, own)
    pos_pairs = set(zip(left.column("_key").to_numpy()[li], right.column("_key").to_numpy()[ri]))
    id_pairs = set(zip(left.column("_key").to_numpy()[id_li], right.column("_key").to_numpy()[id_ri]))
    return Counter(both=len(pos_pairs & id_pairs), position_only=len(pos_pairs - id_pairs),
                   ids_only=len(id_pairs - pos_pairs))
