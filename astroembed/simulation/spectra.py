"""DESI-like spectra on the three spectrograph arms, with BGS-like noise and masked pixels.

The noise model is a sky- and read-noise floor per arm, shaped by throughput and by sky
emission lines, plus the source's own photon noise, scaled by each target's effective
exposure time. Its level is set so that the median S/N per 0.8 A pixel in the R arm is about
3 for galaxies at r ~ 19 (DESI BGS; docs/architecture.md), not to flatter any model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# DESI arm grids (A): start, end, number of pixels, 0.8 A steps.
ARMS = {"B": (3600.0, 5800.0, 2751), "R": (5760.0, 7620.0, 2326), "Z": (7520.0, 9824.0, 2881)}
FLUX_UNIT = 1e-17  # erg/s/cm2/A
NOISE_FLOOR = {"B": 0.35, "R": 0.29, "Z": 0.32}  # 1e-17 erg/s/cm2/A per pixel at nominal depth
SOURCE_GAIN = 0.02  # variance added per unit of source flux (1e-17 units), photon noise
MASK_RATE = 0.002  # fraction of pixels hit by cosmic rays / bad columns
SKY_LINES = np.array([5578.9, 5891.6, 5897.6, 6302.0, 6365.5, 6865.0, 7247.2, 7276.4, 7316.3,
                      7340.9, 7369.2, 7401.7, 7750.6, 7794.1, 7821.5, 7853.3, 7913.7, 7964.6,
                      8344.6, 8399.2, 8430.2, 8465.4, 8505.1, 8827.1, 8885.8, 8919.6, 8958.1,
                      9001.1, 9037.0, 9311.0, 9376.0, 9440.0, 9520.0, 9570.0, 9620.0, 9702.0,
                      9740.0, 9792.0])  # strong night-sky lines (OH, O I, Na D), air ~ vacuum here


def arm_wavelength(arm: str) -> np.ndarray:
    start, _, n = ARMS[arm]
    return start + 0.8 * np.arange(n)


def _noise_shape(wave: np.ndarray, arm: str) -> np.ndarray:
    """Relative noise per pixel: throughput falls at the arm ends; sky lines add variance."""
    start, end, _ = ARMS[arm]
    edge = 1.0 + 1.5 * np.exp(-(wave - start) / 60.0) + 1.5 * np.exp(-(end - wave) / 60.0)
    blue = 1.0 + 0.8 * np.clip((4200.0 - wave) / 600.0, 0, None)  # UV throughput loss
    sky = np.zeros_like(wave)
    for lam in SKY_LINES:
        sky += 6.0 * np.exp(-0.5 * ((wave - lam) / 1.2) ** 2)
    return edge * blue * np.sqrt(1.0 + sky)


@dataclass
class ArmData:
    wave: np.ndarray  # (L,)
    flux: np.ndarray  # (N, L) float32, 1e-17 erg/s/cm2/A
    ivar: np.ndarray  # (N, L) float32
    mask: np.ndarray  # (N, L) int32, non-zero = bad


def observe_arms(model: callable, depth: np.ndarray, rng: np.random.Generator) -> dict[str, ArmData]:
    """Noisy spectra on each arm.

    ``model(wave)`` returns the noiseless fibre f_lambda (N, L) in 1e-17 units on a 1-D grid;
    ``depth`` (N,) scales the effective exposure time (noise variance goes as 1/depth).
    """
    out = {}
    for arm in ARMS:
        wave = arm_wavelength(arm)
        true = model(wave)
        var = (NOISE_FLOOR[arm] * _noise_shape(wave, arm)) ** 2 + SOURCE_GAIN * np.clip(true, 0, None)
        var = var / depth[:, None]
        flux = true + rng.normal(size=true.shape) * np.sqrt(var)
        ivar = 1.0 / var
        mask = np.zeros(true.shape, dtype=np.int32)
        hit = rng.random(true.shape) < MASK_RATE
        mask[hit] = 1  # desispec BADPIX-like bit; ivar is zeroed as desispec does
        ivar[hit] = 0.0
        out[arm] = ArmData(wave=wave, flux=flux.astype(np.float32), ivar=ivar.astype(np.float32),
                           mask=mask)
    return out
