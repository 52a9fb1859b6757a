"""Stamps cut from Legacy Survey brick coadds.

A data centre keeps one coadd per brick and band, tile-compressed (RICE, row tiles), with a
TAN WCS, in nanomaggies::

    coadd/<ddd>/<brick>/legacysurvey-<brick>-image-<band>.fits.fz

(``<ddd>`` is the first three characters of the brick name; ``-invvar-`` and ``-maskbits-``
files sit beside the images). :func:`find_bricks` lists the bricks under a directory and
:func:`cut_stamps` cuts (3, N, N) g, r, z stamps for many objects of one brick.

Stamp geometry is astropy's ``Cutout2D(data, SkyCoord(ra, dec), (N, N), wcs=wcs,
mode="partial")``: the object's pixel position p (``wcs.world_to_pixel``, 0-based) gives the
first stamp pixel ``ceil(p - N/2)`` on each axis (Cutout2D's rounding), so for odd N the
object sits within half a pixel of the centre pixel and for even N within half a pixel of
the corner shared by the four central pixels. The stamp is never shifted to stay inside the
brick: pixels the brick does not have are 0 and ``covered`` says which fraction of the stamp
came from the brick. ``offset_x``/``offset_y`` are the object's position minus the stamp
centre ``(N - 1) / 2``, in pixels (x along RA axis 1 of the image, y along Dec axis 2).

Where the brick's ``-maskbits`` file or ``-invvar-<band>`` files sit beside the images,
``masked`` is the fraction of the stamp's pixels that hold no usable data: any mask bit set,
or inverse variance 0 in any band whose invvar file is there, or outside the brick. Without
any of those files it is None (unknown, not 0). Note that in the survey's mask bit 0
(NPRIMARY) marks pixels outside the brick's own unique area, so near a brick edge the
overlap with its neighbour counts as masked.

Only the rows of pixels that the stamps need are decompressed (section access on the
compressed HDU), and each file (images, inverse variances, mask bits) is opened once per
call.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astroembed.errors import InputError

__all__ = [
    "BRICK_BANDS",
    "BrickStamps",
    "assign_bricks",
    "attach_brick_stamps",
    "brick_files",
    "brick_path",
    "cut_stamps",
    "find_bricks",
    "is_brick_directory",
    "read_brick_index",
    "stamp_bounds",
]

BRICK_BANDS = ("g", "r", "z")
_IMAGE_NAME = re.compile(r"^legacysurvey-(?P<brick>\d{4}[pm]\d{3})-image-(?P<band>[a-z0-9]+)"
                         r"\.fits(\.fz)?$")


def brick_path(root: str | os.PathLike, brick: str, band: str, product: str = "image") -> Path:
    """Where the data centre keeps ``product`` (image, invvar, maskbits) of a brick."""
    suffix = f"{product}-{band}" if product != "maskbits" else "maskbits"
    return Path(root) / "coadd" / brick[:3] / brick / f"legacysurvey-{brick}-{suffix}.fits.fz"


def _coadd_root(root: Path) -> Path:
    """The directory holding ``coadd/`` (the root itself or a parent named in it)."""
    return root.parent if root.name == "coadd" else root


def find_bricks(root: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """Brick name -> {band: image file} for every brick image under ``root``'s ``coadd/``.

    Bands other than g, r, z are listed too; :func:`cut_stamps` says which one is missing.
    """
    base = _coadd_root(Path(root)) / "coadd"
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(base.glob("*/*/legacysurvey-*-image-*.fits*")):
        m = _IMAGE_NAME.match(path.name)
        if m and path.parent.name == m["brick"] and path.parent.parent.name == m["brick"][:3]:
            found.setdefault(m["brick"], {})[m["band"]] = path
    return found


def brick_files(root: str | os.PathLike) -> list[Path]:
    """Every file under ``root``'s ``coadd/`` (images, inverse variances, mask bits), sorted:
    what a brick directory holds as an input."""
    base = _coadd_root(Path(root)) / "coadd"
    return sorted(p for p in base.rglob("*") if p.is_file())


def read_brick_index(path: str | os.PathLike):
    """One row per brick under ``path``: ``BRICKNAME`` and the ``BANDS`` it has (e.g. 'grz').

    What ``read_any`` returns for a brick directory: the stamps themselves are cut per
    object, for the objects a cross-match has (:func:`attach_brick_stamps`).
    """
    import pyarrow as pa

    bricks = find_bricks(path)
    if not bricks:
        raise InputError(f"{path}: no brick images (coadd/<ddd>/<brick>/legacysurvey-<brick>-"
                         "image-<band>.fits.fz) found. Pass the directory that holds coadd/.")
    meta = {b"source": Path(path).name.encode(), b"kind": b"ls_bricks"}
    return pa.table({"BRICKNAME": list(bricks),
                     "BANDS": ["".join(sorted(b, key="grz".find)) for b in bricks.values()]}
                    ).replace_schema_metadata(meta)


def is_brick_directory(path: str | os.PathLike) -> bool:
    """True for a directory with brick image files in the data centre's layout."""
    p = Path(path)
    return p.is_dir() and bool(find_bricks(p))


@dataclass
class BrickStamps:
    """Stamps of several objects from one brick (row i belongs to object i)."""

    images: np.ndarray  # (n, 3, N, N) float32 nanomaggies, bands g, r, z
    covered: np.ndarray  # (n,) fraction of the stamp's pixels inside the brick
    offset_x: np.ndarray  # (n,) object x - stamp centre x, pixels
    offset_y: np.ndarray  # (n,) object y - stamp centre y, pixels
    x0: np.ndarray  # (n,) brick column of stamp pixel 0 (may be negative)
    y0: np.ndarray  # (n,) brick row of stamp pixel 0 (may be negative)
    # (n,) fraction of stamp pixels masked, no data or off the brick; None without the
    # brick's maskbits/invvar files
    masked: np.ndarray | None = None


def stamp_bounds(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First stamp column and row for 0-based pixel positions: Cutout2D's ``ceil(p - N/2)``."""
    x0 = np.ceil(np.asarray(x, np.float64) - size / 2.0).astype(np.int64)
    y0 = np.ceil(np.asarray(y, np.float64) - size / 2.0).astype(np.int64)
    return x0, y0


@dataclass
class _Band:
    """One open band file: its image HDU (compressed or plain), WCS and shape."""

    path: Path
    hdu: object
    wcs: object
    shape: tuple[int, int]


def _open_band(path: Path, stack: contextlib.ExitStack) -> _Band:
    """Open a brick image through the checked opener (closed with ``stack``); InputError
    without a 2-D image or a sky WCS."""
    import warnings

    from astropy.wcs import WCS

    from astroembed.readers.fitsutil import open_fits

    # mapped: a section read fetches each of its row tiles from the mapping, far cheaper
    # than a read call per tile
    hdul = stack.enter_context(open_fits(path, memmap=True))
    hdu = next((h for h in hdul if h.is_image and h.header.get("NAXIS", 0) == 2), None)
    if hdu is None:
        raise InputError(f"{path}: has no 2-D image HDU. A brick coadd holds one 2-D image "
                         "(3600 x 3600); download the file again.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(hdu.header)
        if not wcs.has_celestial or wcs.naxis != 2:
            raise ValueError("no celestial axes (CTYPE1/CTYPE2)")
    except Exception as exc:
        raise InputError(
            f"{path}: no usable sky WCS ({str(exc).splitlines()[0]}). A brick image needs a "
            "TAN WCS (CTYPE1/2, CRVAL1/2, CRPIX1/2, CD matrix); download the file again from "
            "the data centre.") from None
    return _Band(path, hdu, wcs, (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"])))


def _band_files(brick: str, files: dict[str, Path]) -> list[Path]:
    """The g, r, z image files of a brick; InputError naming the missing band."""
    missing = [b for b in BRICK_BANDS if b not in files]
    if missing:
        some = next(iter(files.values()))
        wanted = some.with_name(f"legacysurvey-{brick}-image-{missing[0]}.fits.fz")
        raise InputError(f"{wanted}: brick {brick} has no {', '.join(missing)} image. Stamps "
                         "need g, r and z; download the missing band beside the others.")
    return [Path(files[b]) for b in BRICK_BANDS]


def _mask_files(brick: str, files: dict[str, Path]) -> list[tuple[str, Path]]:
    """(product, file) of the brick's mask bits and g, r, z inverse variances that sit
    beside its g image (compressed ``.fits.fz`` or plain ``.fits``)."""
    folder = Path(files["g"]).parent
    found = []
    for product, band in (("maskbits", ""), ("invvar", "g"), ("invvar", "r"), ("invvar", "z")):
        stem = f"legacysurvey-{brick}-" + (product if product == "maskbits" else
                                           f"{product}-{band}")
        path = next((folder / (stem + ext) for ext in (".fits.fz", ".fits")
                     if (folder / (stem + ext)).is_file()), None)
        if path is not None:
            found.append((product, path))
    return found


def _same_grid(bands: Sequence[_Band]) -> None:
    """All bands of a brick share one pixel grid (else the stamps would not align)."""
    first = bands[0]
    for band in bands[1:]:
        same = band.shape == first.shape and np.allclose(
            band.wcs.wcs.crval, first.wcs.wcs.crval, rtol=0, atol=1e-10) and np.allclose(
            band.wcs.wcs.crpix, first.wcs.wcs.crpix, rtol=0, atol=1e-8) and np.allclose(
            band.wcs.pixel_scale_matrix, first.wcs.pixel_scale_matrix, rtol=1e-9, atol=0)
        if not same:
            raise InputError(f"{band.path}: its pixel grid (shape or WCS) differs from "
                             f"{first.path.name}. The bands of a brick share one grid; "
                             "download the brick's files again.")


def _read_rows(band: _Band, rows: list[tuple[int, int]], dtype=np.float32):
    """Decompress only the row ranges ``rows`` of a band (full width: tiles are rows), one
    range at a time, so only one range's pixels are held at once: yields (r0, block)."""
    import warnings

    for r0, r1 in rows:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                block = np.asarray(band.hdu.section[r0:r1, :], dtype=dtype)
                if block.shape != (r1 - r0, band.shape[1]):
                    raise ValueError(f"got {block.shape[0]} x {block.shape[1]} pixels")
        except Exception as exc:
            raise InputError(
                f"{band.path}: rows {r0}..{r1 - 1} cannot be read "
                f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                "). The file may be truncated or corrupt; download or copy it again.") from None
        yield r0, block


def _merged_rows(y0: np.ndarray, size: int, height: int) -> list[tuple[int, int]]:
    """Row ranges, clipped to the brick and merged where stamps overlap."""
    spans = sorted((max(0, int(a)), min(height, int(a) + size)) for a in y0)
    merged: list[list[int]] = []
    for a, b in spans:
        if a >= b:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _pixel_positions(band: _Band, ra: np.ndarray, dec: np.ndarray):
    """0-based pixel positions of (ra, dec) through the WCS, as Cutout2D computes them."""
    from astropy.coordinates import SkyCoord

    x, y = band.wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
    return np.atleast_1d(np.asarray(x, np.float64)), np.atleast_1d(np.asarray(y, np.float64))


def cut_stamps(brick: str, files: dict[str, Path], ra: Sequence[float], dec: Sequence[float],
               size: int) -> BrickStamps:
    """Cut (3, size, size) g, r, z stamps at (ra, dec) (deg) from one brick's image files.

    ``files`` maps band to image file (as :func:`find_bricks` gives them). Each object must
    lie on the brick (its pixel position inside the image); stamps reaching past the edge
    are filled with 0 there and report ``covered`` < 1.
    """
    if size < 1:
        raise InputError(f"stamp size {size}: must be at least 1 pixel.")
    ra = np.atleast_1d(np.asarray(ra, np.float64))
    dec = np.atleast_1d(np.asarray(dec, np.float64))
    with contextlib.ExitStack() as stack:
        bands = [_open_band(path, stack) for path in _band_files(brick, files)]
        masks = [(product, _open_band(path, stack)) for product, path in _mask_files(brick, files)]
        _same_grid(bands + [band for _, band in masks])
        height, width = bands[0].shape
        x, y = _pixel_positions(bands[0], ra, dec)
        outside = ~((x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5))
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise InputError(
                f"{bands[0].path}: object at RA {ra[i]:.6f}, Dec {dec[i]:.6f} lies outside "
                f"brick {brick} (pixel x {x[i]:.1f}, y {y[i]:.1f} of {width} x {height}; "
                f"{int(outside.sum())} such object(s)). Give each object its own brick "
                "(BRICKNAME) or add the brick that holds it.")
        x0, y0 = stamp_bounds(x, y, size)
        n = ra.size
        images = np.zeros((n, 3, size, size), dtype=np.float32)
        rows = _merged_rows(y0, size, height)
        for k, band in enumerate(bands):
            for r0, block in _read_rows(band, rows):
                r1 = r0 + block.shape[0]
                for i in np.flatnonzero((y0 < r1) & (y0 + size > r0)):
                    _paste(images[i, k], block, r0, int(x0[i]), int(y0[i]), width)
        masked = None
        if masks:
            # usable pixels: on the brick and unmasked (what stays False counts as masked)
            usable = np.zeros((n, size, size), dtype=bool)
            for r0, r1 in rows:
                bad = np.zeros((r1 - r0, width), dtype=bool)
                for product, band in masks:
                    (_, block), = _read_rows(band, [(r0, r1)], dtype=None)
                    bad |= (block != 0) if product == "maskbits" else ~(block > 0)
                for i in np.flatnonzero((y0 < r1) & (y0 + size > r0)):
                    _paste(usable[i], ~bad, r0, int(x0[i]), int(y0[i]), width)
            masked = 1.0 - usable.sum(axis=(1, 2)) / float(size * size)
    inside_x = np.clip(x0 + size, 0, width) - np.clip(x0, 0, width)
    inside_y = np.clip(y0 + size, 0, height) - np.clip(y0, 0, height)
    covered = (inside_x * inside_y) / float(size * size)
    centre = (size - 1) / 2.0
    return BrickStamps(images, covered, x - x0 - centre, y - y0 - centre, x0, y0, masked)


def _paste(stamp: np.ndarray, block: np.ndarray, r0: int, x0: int, y0: int, width: int) -> None:
    """Copy the part of ``block`` (brick rows r0.., full width) that the stamp covers."""
    size = stamp.shape[0]
    ya, yb = max(y0, r0), min(y0 + size, r0 + block.shape[0])
    xa, xb = max(x0, 0), min(x0 + size, width)
    if ya < yb and xa < xb:
        stamp[ya - y0:yb - y0, xa - x0:xb - x0] = block[ya - r0:yb - r0, xa:xb]


def _error_file(err: InputError) -> str:
    """The file an error of this module names (its messages start with the path, an HDU
    in brackets after it where the error is about one)."""
    return re.sub(r"\[[^\]/]*\]$", "", str(err).split(": ", 1)[0])


def _brick_grids(bricks: dict[str, dict[str, Path]], skipped: dict[str, str] | None = None
                 ) -> dict[str, tuple[object, tuple[int, int]]]:
    """Brick -> (WCS, (height, width)) of its first g, r or z image (headers only).

    With ``skipped`` (file -> why), a brick whose header cannot be used is recorded there and
    left out instead of raising."""
    grids = {}
    for brick, files in bricks.items():
        first = next((Path(files[b]) for b in BRICK_BANDS if b in files), None)
        try:
            with contextlib.ExitStack() as stack:
                band = _open_band(first or _band_files(brick, files)[0], stack)
                grids[brick] = (band.wcs, band.shape)
        except InputError as err:
            if skipped is None:
                raise
            skipped[_error_file(err)] = str(err)
    return grids


def assign_bricks(ra: np.ndarray, dec: np.ndarray, bricks: dict[str, dict[str, Path]],
                  names: Sequence[str | None] | None = None,
                  skipped: dict[str, str] | None = None) -> np.ndarray:
    """The brick each object's stamp comes from (object array; None where no brick has it).

    ``names`` (a catalog's BRICKNAME) decides where given, present under the directory and
    holding the position (Tractor assigns each object to the brick whose unique area holds
    it). Otherwise the brick whose image holds the position farthest from its edges (the
    most complete stamp). ``skipped``: as in :func:`attach_brick_stamps`.
    """
    from astropy.coordinates import SkyCoord

    ra = np.atleast_1d(np.asarray(ra, np.float64))
    dec = np.atleast_1d(np.asarray(dec, np.float64))
    out = np.full(ra.size, None, dtype=object)
    if ra.size == 0:
        return out
    named = [str(n).strip() if n is not None else None for n in
             (names if names is not None else [None] * ra.size)]
    best = np.full(ra.size, -np.inf)
    sky = SkyCoord(ra, dec, unit="deg")
    for brick, (wcs, (height, width)) in sorted(_brick_grids(bricks, skipped).items()):
        x, y = (np.atleast_1d(np.asarray(v, np.float64)) for v in wcs.world_to_pixel(sky))
        with np.errstate(invalid="ignore"):
            margin = np.minimum.reduce([x + 0.5, width - 0.5 - x, y + 0.5, height - 0.5 - y])
            inside = np.isfinite(margin) & (margin > 0)
        # its own brick wins over any other that holds the object
        own = inside & np.array([n == brick for n in named])
        margin = np.where(own, np.inf, margin)
        better = inside & (margin > best)
        best[better] = margin[better]
        out[better] = brick
    return out


def attach_brick_stamps(catalog, roots: str | os.PathLike | Sequence[str | os.PathLike],
                        size: int, skipped: dict[str, str] | None = None):
    """Add brick stamps to catalog rows: ``image`` (3, size, size) g, r, z nanomaggies,
    ``stamp_covered_fraction`` (float32, 0..1), ``stamp_brick`` (string),
    ``stamp_offset_x``/``stamp_offset_y`` (float32, pixels: object minus stamp centre) and
    ``stamp_masked_fraction`` (float32, 0..1; null where the brick has no maskbits/invvar
    files).

    Rows that no brick under ``roots`` (one directory or several; where two hold a brick,
    the first wins) holds get nulls. Each brick's files are opened once.

    A bad brick file (truncated, a band missing, no WCS, ...) raises InputError naming it;
    with ``skipped`` (a dict) it is recorded there instead (file -> why) and the other bricks
    go on: the rows of a brick whose stamps cannot be cut keep ``stamp_brick`` and get
    ``stamp_covered_fraction`` 0 and a null image, offsets and masked fraction; a brick
    whose header cannot be read takes no part in choosing bricks.
    """
    import pyarrow as pa

    from astroembed.readers.fitsutil import find_column
    from astroembed.readers.legacysurvey import _positions, images_to_arrow, image_type

    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    bricks: dict[str, dict[str, Path]] = {}
    for root in reversed(roots):
        bricks.update(find_bricks(root))
    if not bricks:
        raise InputError(f"{', '.join(map(str, roots))}: no brick images (coadd/<ddd>/<brick>/legacysurvey-<brick>-"
                         "image-<band>.fits.fz) found. Pass the directory that holds coadd/.")
    ra, dec = _positions(catalog)
    name_col = find_column(catalog.column_names, "BRICKNAME")
    names = (catalog.column(name_col).to_pylist() if name_col is not None else None)
    chosen = assign_bricks(ra, dec, bricks, names, skipped)
    n = catalog.num_rows
    images = np.zeros((n, 3, size, size), dtype=np.float32)
    covered = np.zeros(n, dtype=np.float32)
    off_x = np.zeros(n, dtype=np.float32)
    off_y = np.zeros(n, dtype=np.float32)
    masked = np.zeros(n, dtype=np.float32)
    masked_known = np.zeros(n, dtype=bool)
    has = chosen != None  # noqa: E711 (element-wise on an object array)
    failed = np.zeros(n, dtype=bool)
    for brick in sorted(set(chosen[has])):
        rows = np.flatnonzero(chosen == brick)
        try:
            stamps = cut_stamps(brick, bricks[brick], ra[rows], dec[rows], size)
        except InputError as err:
            if skipped is None:
                raise
            skipped[_error_file(err)] = str(err)
            failed[rows] = True
            continue
        images[rows], covered[rows] = stamps.images, stamps.covered
        off_x[rows], off_y[rows] = stamps.offset_x, stamps.offset_y
        if stamps.masked is not None:
            masked[rows], masked_known[rows] = stamps.masked, True
    stamped = has & ~failed
    missing = pa.array(~stamped)
    image = images_to_arrow(images)
    image = pa.ExtensionArray.from_storage(
        image_type(size, size), pa.FixedSizeListArray.from_arrays(
            image.storage.values, 3 * size * size, mask=missing))
    columns = {
        "image": image,
        "stamp_covered_fraction": pa.array(covered, mask=~has),
        "stamp_brick": pa.array(list(chosen), type=pa.string()),
        "stamp_offset_x": pa.array(off_x, mask=~stamped),
        "stamp_offset_y": pa.array(off_y, mask=~stamped),
        "stamp_masked_fraction": pa.array(masked, mask=~masked_known),
    }
    out = catalog.drop_columns([c for c in columns if c in catalog.column_names])
    for name, column in columns.items():
        out = out.append_column(pa.field(name, column.type), column)
    return out
