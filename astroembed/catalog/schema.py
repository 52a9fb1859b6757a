"""What each column of a catalog means: its unit and a one-line description.

The single source of the column documentation: ``astroembed info --schema`` and ``astroembed
head`` read it, and ``tests/catalog/test_schema_docs.py`` checks the column table of
docs/outputs.md against it and against the schema of a real cross-match, both ways.

A cross-match writes the Legacy Survey (left) columns, then the DESI (right) columns, then
``_dist_arcsec``; a column both sides have gets the suffixes (``_left``/``_right`` unless
``crossmatch --suffixes`` named others), so ``FLUX_R_left`` is the Legacy Survey flux and
``FLUX_R_right`` DESI's targeting flux. The catalog writer adds ``_healpix_29`` and ``ROW_ID``;
``embed`` adds ``embedding_<modality>[_<NAME>]`` and ``predict`` a prediction column, both
described by their field metadata. Columns of the input files not listed here are kept under
their own names and described as such.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import pyarrow as pa


class Column(NamedTuple):
    """A column's unit ("" when it has none) and meaning."""

    unit: str
    meaning: str


#: Legacy Survey catalog columns (the cross-match's left side) and the cutouts.
LEFT = {
    "RA": Column("deg", "right ascension (ICRS) of the Legacy Survey object"),
    "DEC": Column("deg", "declination (ICRS) of the Legacy Survey object"),
    "RELEASE": Column("", "Legacy Survey data release code (e.g. 9010)"),
    "BRICKID": Column("", "Legacy Survey brick number"),
    "OBJID": Column("", "object number within the brick"),
    "BRICKNAME": Column("", "brick name, e.g. 1054p567"),
    "TYPE": Column("", "Tractor model: PSF, REX, EXP, DEV, SER, DUP, COMP"),
    "FLUX_G": Column("nanomaggy", "g-band flux, not extinction-corrected"),
    "FLUX_R": Column("nanomaggy", "r-band flux, not extinction-corrected"),
    "FLUX_Z": Column("nanomaggy", "z-band flux, not extinction-corrected"),
    "FLUX_IVAR_G": Column("nanomaggy^-2", "inverse variance of FLUX_G"),
    "FLUX_IVAR_R": Column("nanomaggy^-2", "inverse variance of FLUX_R"),
    "FLUX_IVAR_Z": Column("nanomaggy^-2", "inverse variance of FLUX_Z"),
    "MW_TRANSMISSION_G": Column("", "Galactic transmission in g (0..1)"),
    "MW_TRANSMISSION_R": Column("", "Galactic transmission in r (0..1)"),
    "MW_TRANSMISSION_Z": Column("", "Galactic transmission in z (0..1)"),
    "SHAPE_R": Column("arcsec", "half-light radius"),
    "EBV": Column("mag", "Galactic E(B-V) (SFD)"),
    "FIBERFLUX_G": Column("nanomaggy", "g-band flux in a 1.5 arcsec fibre"),
    "FIBERFLUX_R": Column("nanomaggy", "r-band flux in a 1.5 arcsec fibre"),
    "FIBERFLUX_Z": Column("nanomaggy", "z-band flux in a 1.5 arcsec fibre"),
    "NOBS_G": Column("", "number of g-band exposures"),
    "NOBS_R": Column("", "number of r-band exposures"),
    "NOBS_Z": Column("", "number of z-band exposures"),
    "SERSIC": Column("", "Sersic index of the Tractor model"),
    "MASKBITS": Column("", "Legacy Survey mask bits (0: unmasked)"),
    "image": Column("nanomaggy", "g, r, z cutout, (3, H, W)"),
    "stamp_brick": Column("", "brick coadd the stamp was cut from (null: no brick holds the "
                              "object)"),
    "stamp_covered_fraction": Column("", "fraction of the stamp's pixels inside the brick "
                                         "(the rest are 0)"),
    "stamp_offset_x": Column("pixel", "object's x (along RA) minus the stamp centre"),
    "stamp_offset_y": Column("pixel", "object's y (along Dec) minus the stamp centre"),
    "stamp_masked_fraction": Column("", "fraction of the stamp's pixels masked (any mask "
                                        "bit, or invvar 0 in a band) or off the brick (null: "
                                        "the brick has no maskbits/invvar files)"),
}

#: DESI spectra and redshift columns (the cross-match's right side).
RIGHT = {
    "TARGETID": Column("", "DESI target ID: the catalog's object key"),
    "TARGET_RA": Column("deg", "right ascension (ICRS) of the DESI target"),
    "TARGET_DEC": Column("deg", "declination (ICRS) of the DESI target"),
    "OBJTYPE": Column("", "fibre's object type: TGT, SKY, ..."),
    "COADD_FIBERSTATUS": Column("", "fibre status of the coadd (0: good)"),
    "FIBERSTATUS": Column("", "fibre status of a per-exposure spectrum (0: good)"),
    "RELEASE": Column("", "Legacy Survey release of the DESI target"),
    "BRICKID": Column("", "Legacy Survey brick of the DESI target"),
    "BRICK_OBJID": Column("", "Legacy Survey OBJID of the DESI target within its brick"),
    "FLUX_G": Column("nanomaggy", "g-band targeting flux"),
    "FLUX_R": Column("nanomaggy", "r-band targeting flux"),
    "FLUX_Z": Column("nanomaggy", "z-band targeting flux"),
    "FLUX_IVAR_G": Column("nanomaggy^-2", "inverse variance of the g-band targeting flux"),
    "FLUX_IVAR_R": Column("nanomaggy^-2", "inverse variance of the r-band targeting flux"),
    "FLUX_IVAR_Z": Column("nanomaggy^-2", "inverse variance of the z-band targeting flux"),
    "EBV": Column("mag", "Galactic E(B-V) (SFD) at the DESI target"),
    "MORPHTYPE": Column("", "Tractor type of the DESI target"),
    "SURVEY": Column("", "DESI survey: main, sv3, ..."),
    "PROGRAM": Column("", "DESI program: bright, dark, ..."),
    "Z": Column("", "redshift (Redrock)"),
    "ZERR": Column("", "redshift uncertainty"),
    "ZWARN": Column("", "redshift warning bits (0: good)"),
    "SPECTYPE": Column("", "spectral type: GALAXY, QSO, STAR"),
    "DELTACHI2": Column("", "chi2 difference to the second-best redshift"),
    "ZCAT_PRIMARY": Column("", "the target's primary spectrum"),
    "HEALPIX": Column("", "DESI HEALPix (nside 64, nested) of the coadd file"),
    "flux": Column("1e-17 erg/s/cm2/Angstrom",
                   "spectrum on 3600..9824 Angstrom in 0.8 Angstrom steps"),
    "ivar": Column("(1e-17 erg/s/cm2/Angstrom)^-2", "inverse variance of flux (0: no "
                   "information)"),
}

#: Columns the cross-match and the catalog writer add.
ADDED = {
    "_dist_arcsec": Column("arcsec", "separation of the Legacy Survey and DESI positions"),
    "_healpix_29": Column("", "nested HEALPix pixel at order 29 of the position; rows are "
                              "sorted by it"),
    "ROW_ID": Column("", "row key, unique in the catalog; joins the pixel extension"),
}

EMBEDDING_PREFIX = "embedding_"
DEFAULT_SUFFIXES = ("_left", "_right")


def describe_field(fld: pa.Field, suffixes: tuple[str, str] = DEFAULT_SUFFIXES) -> Column:
    """The unit and meaning of a catalog column: from the tables above (with the cross-match
    suffixes removed), else from its field metadata (embeddings, predictions)."""
    name = fld.name
    if name in ADDED:
        return ADDED[name]
    for suffix, side, label in ((suffixes[0], LEFT, "Legacy Survey"),
                                (suffixes[1], RIGHT, "DESI")):
        base = name[:-len(suffix)] if suffix and name.endswith(suffix) else None
        if base in side:
            return Column(side[base].unit, f"{side[base].meaning} ({label} side)")
    if name in LEFT:
        return LEFT[name]
    if name in RIGHT:
        return RIGHT[name]
    meta = {k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in (fld.metadata or {}).items()}
    if name.startswith(EMBEDDING_PREFIX) and "model_name" in meta:
        return Column("", f"L2-normalised {meta.get('modality', '')} embedding by "
                          f"{meta['model_name']} {meta.get('model_version', '')}".replace("  ", " "))
    if "astroembed_probe" in meta:
        try:
            probe = json.loads(meta["astroembed_probe"])
        except ValueError:
            probe = None
        if not isinstance(probe, dict):  # written by hand or by another tool
            return Column("", "a probe's prediction")
        features = probe.get("features") or ""
        features = features if isinstance(features, str) else "+".join(features)
        what = (f"{probe.get('method')} probe's prediction of {probe.get('target')} "
                f"from the {features} embedding")
        kind = meta.get("astroembed_prediction", "point")
        if kind == "quantiles":
            return Column("", f"quantiles of the calibrated predictive distribution at levels "
                              f"{meta.get('astroembed_quantile_levels', '')} ({what})")
        if kind in ("lower", "upper"):
            return Column("", f"{kind} end of the central "
                              f"{meta.get('astroembed_interval_level', '')} interval ({what})")
        return Column("", what)
    return Column("", "kept from the input files")


def type_name(t: pa.DataType) -> str:
    """A column type as the documentation writes it: ``float32``, ``int64``,
    ``fixed_size_list<float32>[128]``, ``fixed_shape_tensor<float32>[3, 64, 64]``."""
    if getattr(t, "extension_name", None) == "arrow.fixed_shape_tensor":
        return (f"fixed_shape_tensor<{type_name(t.value_type)}>"
                f"[{', '.join(str(n) for n in t.shape)}]")
    if pa.types.is_fixed_size_list(t):
        return f"fixed_size_list<{type_name(t.value_type)}>[{t.list_size}]"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{type_name(t.value_type)}>"
    return {"float": "float32", "double": "float64", "halffloat": "float16",
            "large_string": "string"}.get(str(t), str(t))


def describe_columns(schema: pa.Schema, pixel_columns: list[str],
                     suffixes: tuple[str, str] = DEFAULT_SUFFIXES) -> list[dict]:
    """Every column with its type, unit, meaning and part (``main`` or ``pixels``)."""
    out = []
    for fld in schema:
        column = describe_field(fld, suffixes)
        out.append({"name": fld.name, "type": type_name(fld.type), "unit": column.unit,
                    "description": column.meaning,
                    "part": "pixels" if fld.name in pixel_columns else "main"})
    return out
