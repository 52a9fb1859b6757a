"""The shape of astroembed's encoders, and the default model's recipe: the one place its
architecture is written down, with the reasons. Plain dataclasses without torch, so configs
(``TrainConfig``, ``astroembed train --config``) can be read and checked where torch is not
installed; :mod:`astroembed.training.encoders` builds the modules from them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from astroembed.runtime.preprocess import default_spectrum_preprocessing, spectrum_length

SPECTRUM_BIN = 16  # DESI pixels per bin (see SpectrumEncoderConfig.length)
EMBED_DIM = 128  # the shared embedding space of images and spectra


@dataclass
class SpectrumEncoderConfig:
    """Shape of the spectrum encoder. ``length``: binned pixels per channel (1945 for the
    DESI grid binned by 4); tokens = length // patch.

    ``stem``: convolution layers ``(channels, kernel, stride)`` run over the binned pixels
    before the tokens are made; empty for a linear map of each patch. A stride-1 layer has an
    odd kernel and keeps the length; a strided layer's kernel equals its stride (it pools
    whole pixels, so every token still sees only its own patch up to the stride-1 layers'
    reach). The strides multiply to a divisor of ``patch``; a last layer with kernel and
    stride ``patch / product(strides)`` makes the tokens."""

    # The DESI grid binned by 16 pixels (12.8 A): z-scoring noisy 4-pixel bins divides by a
    # spread that is mostly noise (4-pixel bins: spectrum k-NN R^2 0.829 against 0.870).
    length: int = spectrum_length(default_spectrum_preprocessing(SPECTRUM_BIN))
    channels: int = 2  # z-scored flux and per-pixel trust
    # 24 tokens of 20 bins: the number of tokens sets the CPU cost of the transformer.
    patch: int = 20
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    embed_dim: int = EMBED_DIM
    # Two full-resolution layers look at the pixels before a third pools them by 4: better
    # held-out redshifts than linear tokens, and faster in ONNX Runtime (docs/MODEL_CARD.md).
    stem: tuple[tuple[int, int, int], ...] = ((32, 5, 1), (32, 5, 1), (64, 4, 4))

    def __post_init__(self):
        self.stem = tuple(tuple(int(v) for v in layer) for layer in self.stem)
        if self.tokens < 1:
            raise ValueError(f"patch {self.patch} is longer than the spectrum ({self.length}).")
        for layer in self.stem:
            if len(layer) != 3 or min(layer) < 1:
                raise ValueError(f"stem layer {list(layer)}: expected [channels, kernel, stride] "
                                 "of positive integers.")
            _, kernel, stride = layer
            if stride == 1 and kernel % 2 == 0:
                raise ValueError(f"stem layer {list(layer)}: a stride-1 layer needs an odd kernel.")
            if stride > 1 and kernel != stride:
                raise ValueError(f"stem layer {list(layer)}: a strided layer's kernel must equal "
                                 "its stride.")
        if self.patch % self.stem_pooling:
            raise ValueError(f"the stem's strides multiply to {self.stem_pooling}, which does not "
                             f"divide patch {self.patch}.")

    @property
    def tokens(self) -> int:
        return self.length // self.patch

    @property
    def stem_pooling(self) -> int:
        """Pixels per position after the stem's strided layers (1 without a stem)."""
        return math.prod(stride for _, _, stride in self.stem)


@dataclass
class ImageEncoderConfig:
    """Shape of the image encoder: ``crop`` pixels square, 3 bands; widths per stage (each
    stage after the first halves the resolution)."""

    crop: int = 32  # the centre of a 64-pixel cutout: the galaxy, little sky
    widths: tuple[int, ...] = (24, 48, 96)  # the shipped model's three stages
    heads: int = 4
    embed_dim: int = EMBED_DIM


def recipe_sections() -> dict[str, dict]:
    """The ``[spectrum]`` and ``[image]`` tables of the default recipe, as ``TrainConfig``
    holds them: the encoder configs' defaults, less what the data fixes (length, channels,
    crop, embed_dim are settings of their own)."""
    spectrum = asdict(SpectrumEncoderConfig())
    image = asdict(ImageEncoderConfig())
    for key in ("length", "channels", "embed_dim"):
        spectrum.pop(key)
    for key in ("crop", "embed_dim"):
        image.pop(key)
    spectrum["stem"] = [list(layer) for layer in spectrum["stem"]]
    image["widths"] = list(image["widths"])
    return {"spectrum": spectrum, "image": image}
