"""Probe features: the catalog's usable rows as arrays (:class:`ProbeData`).

The feature sets are the image, spectrum or both embeddings, and two baselines that need no
model: g, r, z photometry and the raw spectra rebinned to unit norm (a PCA of them is fitted
inside the estimator, see :mod:`astroembed.probes.estimators`). Every feature set keeps the
same rows, so their metrics compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from astroembed.config import ProbeConfig
from astroembed.catalog.columns import (
    MODALITIES,
    embedding_columns,
    model_fingerprint,
    read_arrays,
    resolve_embeddings,
    resolve_id_column,
    resolve_target,
    scalars,
    vectors,
)
from astroembed.catalog.reader import CatalogInfo, read_catalog_info

BASELINES = ("photometry", "spectrum_pca")
#: Raw spectra are averaged (ivar-weighted) over this many 0.8 A pixels: 7781 -> 243 values.
SPECTRUM_BIN = 32
#: Photometry: fluxes below this (nanomaggies, i.e. fainter than 27.5 mag) are clipped to it.
FLUX_FLOOR = 0.01


def _spectype_column(names: list[str]) -> str | None:
    """DESI's ``SPECTYPE`` or, after a cross-match that suffixed it, ``SPECTYPE_right``."""
    return next((c for c in ("SPECTYPE", "SPECTYPE_right") if c in names), None)


def star_mask(column) -> np.ndarray:
    """True where the spectral type is ``STAR`` (any case, padded as FITS strings are);
    False for other types and nulls."""
    values = column.to_pylist()
    return np.array([isinstance(v, (str, bytes)) and
                     (v.decode() if isinstance(v, bytes) else v).strip().upper() == "STAR"
                     for v in values], bool)


def _band_column(names: list[str], stem: str) -> str | None:
    """``FLUX_G`` or, when both cross-match sides had it, the Legacy Survey ``FLUX_G_left``."""
    return next((c for c in (stem, f"{stem}_left") if c in names), None)


def photometry_columns(info: CatalogInfo) -> dict[str, str] | None:
    """Columns for the photometry baseline: ``{"FLUX_G": col, ..., "MW_TRANSMISSION_G": col}``
    (transmissions only where present); None without all three fluxes."""
    names = info.schema.names
    cols = {}
    for band in "GRZ":
        flux = _band_column(names, f"FLUX_{band}")
        if flux is None:
            return None
        cols[f"FLUX_{band}"] = flux
        mw = _band_column(names, f"MW_TRANSMISSION_{band}")
        if mw is not None:
            cols[f"MW_TRANSMISSION_{band}"] = mw
    return cols


def photometry_features(table, cols: dict[str, str]) -> np.ndarray:
    """g, r, z magnitudes and g-r, r-z colours, ``(N, 5)``.

    Fluxes (nanomaggies) are divided by MW_TRANSMISSION where the catalog has it (dereddened),
    clipped at :data:`FLUX_FLOOR` so faint or negative fluxes give a finite, faint magnitude;
    a missing flux stays NaN (imputed by the median of the training folds).
    """
    mags = []
    for band in "GRZ":
        flux = scalars(table.column(cols[f"FLUX_{band}"]))
        if f"MW_TRANSMISSION_{band}" in cols:
            mw = scalars(table.column(cols[f"MW_TRANSMISSION_{band}"]))
            flux = np.where(mw > 0, flux / np.where(mw > 0, mw, 1.0), flux)
        with np.errstate(invalid="ignore"):
            mags.append(22.5 - 2.5 * np.log10(np.maximum(flux, FLUX_FLOOR)))
    g, r, z = mags
    return np.stack([g, r, z, g - r, r - z], axis=1).astype(np.float32)


def rebin_spectra(flux: np.ndarray, ivar: np.ndarray | None,
                  width: int = SPECTRUM_BIN) -> np.ndarray:
    """Spectra averaged over ``width``-pixel bins (ivar-weighted) and scaled to unit norm.

    Unit norm leaves the shape (continuum slope, breaks, lines: what says redshift) and
    removes brightness, which would otherwise dominate the PCA.
    """
    n, m = flux.shape
    m = (m // width) * width
    f = flux[:, :m].reshape(n, -1, width).astype(np.float64)
    if ivar is None:
        binned = f.mean(axis=2)
    else:
        w = np.clip(ivar[:, :m].reshape(n, -1, width).astype(np.float64), 0, None)
        wsum = w.sum(axis=2)
        binned = np.where(wsum > 0, (f * w).sum(axis=2) / np.where(wsum > 0, wsum, 1), 0.0)
    norm = np.linalg.norm(binned, axis=1, keepdims=True)
    return (binned / np.where(norm > 0, norm, 1.0)).astype(np.float32)


@dataclass
class ProbeData:
    """The usable rows of a catalog as arrays, ready for cross-validation."""

    target: str  # the catalog column
    redshift: bool
    id_column: str
    ids: np.ndarray
    y: np.ndarray
    features: dict[str, np.ndarray]  # image, spectrum, both, photometry, spectrum_pca
    embedding_columns: dict[str, str]  # modality -> column
    fingerprints: dict[str, dict[str, str]]  # column -> model metadata
    excluded: dict[str, int]
    n_catalog_rows: int
    notes: list[str] = field(default_factory=list)


def _wanted_features(cfg: ProbeConfig, present: list[str], name: str | None) -> list[str]:
    """Embedding feature sets to probe: as asked, or every one the catalog has."""
    if cfg.embedding:
        return list(dict.fromkeys(cfg.embedding))
    from astroembed.catalog.columns import embedding_column

    have = [m for m in MODALITIES if embedding_column(m, name) in present]
    return have + (["both"] if len(have) == 2 else [])


def load_probe_data(cfg: ProbeConfig, info: CatalogInfo | None = None) -> ProbeData:
    """Read the target, IDs, embeddings and baseline features; drop and count unusable rows.

    Rows are excluded when ZWARN != 0 or the spectral type is STAR (a redshift target only;
    a star's redshift is zero whatever its image or spectrum looks like, and ``keep_stars``
    keeps them), when the target is NaN or null, or when an embedding used is null; every feature set is then probed on the same
    rows and folds, so their metrics compare like with like.
    """
    info = info or read_catalog_info(cfg.catalog)
    target = resolve_target(info, cfg.target)
    redshift = target in ("Z", "Z_right")
    features = _wanted_features(cfg, embedding_columns(info), cfg.name)
    modalities = [m for m in MODALITIES if m in features or "both" in features]
    if not modalities:
        resolve_embeddings(info, MODALITIES, cfg.name)  # raises: names what there is
    emb = resolve_embeddings(info, modalities, cfg.name)
    idc = resolve_id_column(info, cfg.id_column)
    zwarn = "ZWARN" if redshift and "ZWARN" in info.schema.names else None
    spectype = (_spectype_column(info.schema.names)
                if redshift and not cfg.keep_stars else None)
    phot = photometry_columns(info) if cfg.baselines else None
    spectra = "flux" if cfg.baselines and "flux" in info.schema.names else None
    ivar = "ivar" if spectra and "ivar" in info.schema.names else None
    columns = list(dict.fromkeys([idc, target, *([zwarn] if zwarn else []),
                                  *([spectype] if spectype else []), *emb.values(),
                                  *(phot.values() if phot else []),
                                  *([spectra] if spectra else []), *([ivar] if ivar else [])]))

    def convert(table) -> dict[str, np.ndarray]:
        out = {"ids": table.column(idc).to_numpy(zero_copy_only=False),
               "y": scalars(table.column(target))}
        if zwarn:
            zw = scalars(table.column(zwarn))
            out["zwarn_bad"] = ~(zw == 0)
        if spectype:
            out["star"] = star_mask(table.column(spectype))
        for modality, column in emb.items():
            out[modality], out[f"{modality}_valid"] = vectors(table.column(column))
        if phot:
            out["photometry"] = photometry_features(table, phot)
        if spectra:
            f, fvalid = vectors(table.column(spectra))
            iv = vectors(table.column(ivar))[0] if ivar else None
            s = rebin_spectra(f, iv)
            s[~fvalid] = np.nan
            out["spectrum_pca"] = s
        return out

    arrays = read_arrays(info, columns, convert)
    n = len(arrays["y"])
    keep = np.ones(n, bool)
    excluded = {"ZWARN": 0, "star": 0, "nan": 0, "no_embedding": 0}
    if zwarn:
        excluded["ZWARN"] = int(arrays["zwarn_bad"].sum())
        keep &= ~arrays["zwarn_bad"]
    if spectype:
        excluded["star"] = int((keep & arrays["star"]).sum())
        keep &= ~arrays["star"]
    bad_y = ~np.isfinite(arrays["y"])
    excluded["nan"] = int((keep & bad_y).sum())
    keep &= ~bad_y
    no_emb = np.zeros(n, bool)
    for modality in emb:
        no_emb |= ~arrays[f"{modality}_valid"]
    excluded["no_embedding"] = int((keep & no_emb).sum())
    keep &= ~no_emb
    feats: dict[str, np.ndarray] = {}
    for name in features:
        if name == "both":
            feats[name] = np.hstack([arrays["image"][keep], arrays["spectrum"][keep]])
        else:
            feats[name] = arrays[name][keep]
    notes = []
    if cfg.baselines:
        for name in BASELINES:
            if name in arrays:
                feats[name] = arrays[name][keep]
        if phot is None:
            notes.append("photometry baseline skipped: no FLUX_G/FLUX_R/FLUX_Z columns")
        if spectra is None:
            notes.append("spectrum_pca baseline skipped: no flux column")
    return ProbeData(target=target, redshift=redshift, id_column=idc, ids=arrays["ids"][keep],
                     y=arrays["y"][keep], features=feats, embedding_columns=emb,
                     fingerprints={c: model_fingerprint(info, c) for c in emb.values()},
                     excluded=excluded, n_catalog_rows=n, notes=notes)


__all__ = ["BASELINES", "ProbeData", "load_probe_data", "photometry_columns",
           "photometry_features", "rebin_spectra", "star_mask"]
