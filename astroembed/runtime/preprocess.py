"""Encoder inputs from catalog columns, in NumPy, exactly as a model's metadata declares.

Training and ``embed`` both go through these functions, so a model sees at inference what it
saw in training. Every constant comes from the ``preprocessing`` dict stored in the ONNX
metadata (:mod:`astroembed.runtime.modelfile`); nothing here is tied to one model.

Images (``kind = "legacysurvey_rgb"``): the g, r, z cutout in nanomaggies, centre crop of
``crop`` pixels, then the asinh colour stretch AstroCLIP uses for Legacy Survey images
(legacypipe's ``dr2_rgb``): per band ``s_b = max(0, x_b * scale_b + m)``, ``I = mean_b s_b``,
output ``clip(s_b * asinh(Q I) / (sqrt(Q) I), 0, 1)`` with ``I = 1e-6`` where it is 0.

AstroCLIP images (``kind = "astroclip_rgb"``): the input AstroCLIP was trained on, reproduced
operation for operation (same order, same NumPy dtypes) so the values are bit-identical. The
cutouts must be ``stamp`` pixels (152) or larger; larger ones are centre-cropped to ``stamp``
first (offset ``(H - stamp) // 2``). Then the Legacy Survey viewer's colour map: per band
``v_b = x_b * scale_b + m`` (g x6.0, r x3.4, z x2.2, m = 0.03), ``I = (max(0, v_g) + max(0, v_r)
+ max(0, v_z)) / 3`` in float32, ``f = arcsinh(Q I) / sqrt(Q)`` with Q = 20 (float64, since
``sqrt(Q)`` is a float64 scalar), ``I = 1e-6`` where it is 0, and ``clip(v_b f / I, 0, 1)``
stored in float32 on the plane of band b: z on plane 0, r on 1, g on 2 (the viewer's red,
green, blue). The planes are then transposed (height and width swap places, as AstroCLIP's
``permute(0, 3, 2, 1)`` does) and centre-cropped to ``crop`` (144) pixels. The crop is taken
before the colour map here: every step is per pixel, so the values are the same.

Spectra (``kind = "desi_zscore"``): flux and ivar on the DESI coadd grid (``wave_start``,
``wave_step``, ``n_wave``). Bad pixels (ivar <= 0 or not finite) get weight 0; blocks of
``bin`` pixels are combined with inverse-variance weights (trailing pixels that do not fill a
block are dropped); the flux is z-scored with the mean and standard deviation of the good
binned pixels, and bad binned pixels are set to 0 after z-scoring. Two channels go in:
the z-scored flux and ``clip(sqrt(ivar_binned) * std / snr_scale, 0, 1)`` (how much each pixel
can be trusted, in z-score units); ``stats = [asinh(mean), log(std)]`` feeds the leading token.
A spectrum with fewer than ``min_valid_fraction`` good binned pixels, or zero spread, is
unusable: its row gets ``ok = False`` (``embed`` writes a null) and zeros as input.

Raw spectra (``kind = "desi_flux"``): the flux alone, as the catalog stores it on the DESI
coadd grid, shaped ``(N, n_wave, 1)`` for models that carry their own spectrum preprocessing
inside the graph (AstroCLIP's SpecFormer standardises and windows the flux itself, ignoring
ivar). A spectrum with a non-finite pixel, or all zeros (no coverage), is unusable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ASTROCLIP_IMAGE_KIND", "FLUX_KIND", "IMAGE_KIND", "IMAGE_KINDS", "SPECTRUM_KIND",
           "SPECTRUM_KINDS", "astroclip_image_preprocessing", "default_image_preprocessing",
           "default_spectrum_preprocessing", "flux_inputs", "flux_preprocessing",
           "image_inputs", "minimum_cutout", "rgb_inputs", "spectrum_inputs", "spectrum_length"]

IMAGE_KIND = "legacysurvey_rgb"
ASTROCLIP_IMAGE_KIND = "astroclip_rgb"
#: The image preprocessing kinds this astroembed runs.
IMAGE_KINDS = (IMAGE_KIND, ASTROCLIP_IMAGE_KIND)
SPECTRUM_KIND = "desi_zscore"
FLUX_KIND = "desi_flux"
#: The spectrum preprocessing kinds this astroembed runs.
SPECTRUM_KINDS = (SPECTRUM_KIND, FLUX_KIND)


def default_image_preprocessing(crop: int = 32) -> dict:
    """AstroCLIP's Legacy Survey stretch constants (g x6.0, r x3.4, z x2.2, Q = 20, m = 0.03)."""
    return {"kind": IMAGE_KIND, "bands": "grz", "crop": int(crop), "scales": [6.0, 3.4, 2.2],
            "Q": 20.0, "m": 0.03, "unit": "nanomaggy", "pixscale": 0.262}


def astroclip_image_preprocessing(crop: int = 144, stamp: int = 152) -> dict:
    """AstroCLIP's image input: ``stamp``-pixel g, r, z cutouts, the viewer's colour map
    (band -> plane, scale), m = 0.03 and Q = 20, transposed, centre crop of ``crop``."""
    return {"kind": ASTROCLIP_IMAGE_KIND, "bands": "grz", "stamp": int(stamp),
            "crop": int(crop), "planes": [2, 1, 0], "scales": [6.0, 3.4, 2.2], "Q": 20,
            "m": 0.03, "transpose": True, "unit": "nanomaggy", "pixscale": 0.262}


def minimum_cutout(spec: dict) -> int:
    """The smallest cutout (pixels a side) an image encoder with this preprocessing takes."""
    return int(spec.get("stamp", spec["crop"]))


def default_spectrum_preprocessing(bin: int = 4) -> dict:  # noqa: A002 - the metadata key
    """The DESI coadd grid (3600-9824 A, 0.8 A, 7781 pixels) binned by ``bin``."""
    return {"kind": SPECTRUM_KIND, "wave_start": 3600.0, "wave_step": 0.8, "n_wave": 7781,
            "bin": int(bin), "min_valid_fraction": 0.5, "snr_scale": 10.0,
            "flux_unit": "1e-17 erg / (s cm2 Angstrom)"}


def flux_preprocessing() -> dict:
    """Raw flux on the DESI coadd grid (3600-9824 A, 0.8 A, 7781 pixels), no binning."""
    return {"kind": FLUX_KIND, "wave_start": 3600.0, "wave_step": 0.8, "n_wave": 7781,
            "flux_unit": "1e-17 erg / (s cm2 Angstrom)"}


def spectrum_length(spec: dict) -> int:
    """Pixels per channel after binning."""
    return int(spec["n_wave"]) // int(spec["bin"])


def image_inputs(images: np.ndarray, spec: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({"image": (N, 3, crop, crop) float32}, ok)`` from ``(N, 3, H, W)`` g, r, z cutouts.

    ``ok`` is False for rows whose crop has non-finite pixels or is all zero (no coverage).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) g, r, z; got shape {images.shape}")
    crop = int(spec["crop"])
    h, w = images.shape[2:]
    if h < crop or w < crop:
        raise ValueError(f"cutouts are {h}x{w} pixels; the model needs at least {crop}x{crop}")
    top, left = (h - crop) // 2, (w - crop) // 2
    # One contiguous copy of the crop, then every step in place: the same float32 operations
    # in the same order as the formula, with a third of the passes over memory (this runs
    # for every row `embed` reads, beside the model).
    s = images[:, :, top:top + crop, left:left + crop].copy()
    ok = np.isfinite(s).all(axis=(1, 2, 3))
    ok &= (s != 0).any(axis=(1, 2, 3))  # finite rows: some pixel has coverage
    bad = not ok.all()
    if bad:
        s[~ok] = 0.0
    s *= np.asarray(spec["scales"], dtype=np.float32)[None, :, None, None]
    q = np.float32(spec["Q"])
    s += np.float32(spec["m"])
    np.maximum(np.float32(0), s, out=s)
    intensity = s.mean(axis=1, keepdims=True)
    stretch = np.arcsinh(q * intensity) / np.sqrt(q)
    intensity[intensity == 0] = np.float32(1e-6)
    s *= stretch
    s /= intensity
    np.clip(s, np.float32(0), np.float32(1), out=s)
    if bad:
        s[~ok] = 0.0
    return {"image": s}, ok


def _centre(images: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` pixels of ``(N, C, H, W)`` (offset ``(H - size) // 2``)."""
    h, w = images.shape[2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[:, :, top:top + size, left:left + size]


def rgb_inputs(images: np.ndarray, spec: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({"image": (N, 3, crop, crop) float32}, ok)`` from ``(N, 3, H, W)`` g, r, z cutouts
    of at least ``stamp`` pixels, as AstroCLIP fed its image encoder (module docstring).
    ``ok`` is False for rows whose crop has non-finite pixels or is all zero (no coverage);
    their input is zeros. ValueError for cutouts smaller than ``stamp``."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) g, r, z; got shape {images.shape}")
    stamp, crop = int(spec["stamp"]), int(spec["crop"])
    h, w = images.shape[2:]
    if h < stamp or w < stamp:
        raise ValueError(f"cutouts are {h}x{w} pixels; the model needs {stamp}x{stamp}")
    x = _centre(_centre(images, stamp), crop)
    finite = np.isfinite(x).all(axis=(1, 2, 3))
    ok = finite & (np.abs(np.where(np.isfinite(x), x, 0)) > 0).any(axis=(1, 2, 3))
    x = np.ascontiguousarray(np.where(ok[:, None, None, None], x, np.float32(0)))
    # Python scalars and operation order as the reference colour map has them: the float32
    # band sums, the float64 stretch (a float64 sqrt(Q)), the float32 store.
    q = int(spec["Q"]) if float(spec["Q"]).is_integer() else float(spec["Q"])
    m = float(spec["m"])
    scales = [float(v) for v in spec["scales"]]
    total = 0
    for b in range(3):
        total = total + np.maximum(0, x[:, b] * scales[b] + m)
    total /= 3
    stretch = np.arcsinh(q * total) / np.sqrt(q)
    total += (total == 0.0) * 1e-6
    rgb = np.zeros_like(x)
    for b, plane in enumerate(spec["planes"]):
        rgb[:, int(plane)] = (x[:, b] * scales[b] + m) * stretch / total
    rgb = np.clip(rgb, 0, 1)
    if spec.get("transpose", False):
        rgb = rgb.transpose(0, 1, 3, 2)
    out = np.ascontiguousarray(rgb, dtype=np.float32)
    out[~ok] = 0.0
    return {"image": out}, ok


def _bin_sums(x: np.ndarray, length: int, nbin: int) -> np.ndarray:
    """Float64 sums over consecutive ``nbin``-pixel bins: (N, length * nbin) -> (N, length).
    For short bins, adding the ``nbin`` strided slices gives the same sums as
    ``reshape(...).sum(axis=2)`` three times faster (NumPy reduces a short inner axis
    slowly); from 8 pixels on, the reduction is the faster (2.5x at 16)."""
    parts = x.reshape(len(x), length, nbin)
    if nbin >= 8:
        return parts.sum(axis=2, dtype=np.float64)
    out = parts[:, :, 0].astype(np.float64)
    for k in range(1, nbin):
        out += parts[:, :, k]
    return out


def spectrum_inputs(flux: np.ndarray, ivar: np.ndarray,
                    spec: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({"spectrum": (N, 2, L) float32, "stats": (N, 2) float32}, ok)`` from flux and ivar
    ``(N, n_wave)`` on the grid ``spec`` declares (see the module docstring)."""
    # The wide (N, n_wave) steps run in float32 (half the memory traffic: this is the main
    # per-row cost of `embed` after the model); per-spectrum sums below are in float64.
    flux = np.asarray(flux, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    n_wave, nbin = int(spec["n_wave"]), int(spec["bin"])
    if flux.ndim != 2 or flux.shape != ivar.shape or flux.shape[1] != n_wave:
        raise ValueError(f"flux and ivar must both be (N, {n_wave}); got {flux.shape} and "
                         f"{ivar.shape}")
    n, length = len(flux), n_wave // nbin
    f, w = flux[:, :length * nbin], ivar[:, :length * nbin]
    with np.errstate(invalid="ignore", over="ignore"):
        good = w > 0  # in place from here on: each full-size temporary costs a pass
        good &= w < np.inf
        good &= np.isfinite(f)
        w = np.where(good, w, np.float32(0))
        fw = np.multiply(f, w, where=good, out=np.zeros_like(w))
    wsum, fwsum = _bin_sums(w, length, nbin), _bin_sums(fw, length, nbin)
    valid = wsum > 0
    binned = np.divide(fwsum, wsum, out=np.zeros_like(wsum), where=valid)  # 0 where invalid
    nvalid = valid.sum(axis=1)
    mean = np.divide(binned.sum(axis=1), nvalid, out=np.zeros(n), where=nvalid > 0)
    resid = binned
    resid -= mean[:, None]
    resid[~valid] = 0.0
    std = np.sqrt(np.divide(np.einsum("ij,ij->i", resid, resid), nvalid, out=np.zeros(n),
                            where=nvalid > 0))
    ok = (nvalid >= float(spec["min_valid_fraction"]) * length) & (std > 0)
    safe_std = np.where(ok, std, 1.0)
    # Computed in float64, stored straight into the float32 input (resid is 0 where invalid).
    x = np.empty((n, 2, length), dtype=np.float32)
    np.divide(resid, safe_std[:, None], out=x[:, 0], casting="same_kind")
    trust = np.sqrt(wsum, out=wsum)
    trust *= safe_std[:, None] / float(spec["snr_scale"])
    np.clip(trust, 0.0, 1.0, out=x[:, 1], casting="same_kind")
    stats = np.stack([np.arcsinh(mean), np.log(safe_std)], axis=1)
    x[~ok] = 0.0
    stats[~ok] = 0.0
    return {"spectrum": x, "stats": stats.astype(np.float32)}, ok


def flux_inputs(flux: np.ndarray, spec: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({"flux": (N, n_wave, 1) float32}, ok)`` from flux ``(N, n_wave)`` on the grid
    ``spec`` declares; unusable rows (a non-finite pixel, or no non-zero pixel) are zeros."""
    flux = np.asarray(flux, dtype=np.float32)
    n_wave = int(spec["n_wave"])
    if flux.ndim != 2 or flux.shape[1] != n_wave:
        raise ValueError(f"flux must be (N, {n_wave}); got {flux.shape}")
    ok = np.isfinite(flux).all(axis=1)
    ok &= (np.where(ok[:, None], flux, 0) != 0).any(axis=1)
    x = np.where(ok[:, None], flux, np.float32(0)).astype(np.float32)
    return {"flux": x[:, :, None]}, ok
