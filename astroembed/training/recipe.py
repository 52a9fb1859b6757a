"""The shape of astroembed's encoders, and the default model's recipe: the one place its
architecture is written down, with the reasons. Plain dataclasses without torch, so configs
(``TrainConfig``, ``astroembed train --config``) can be read and checked where torch is not
installed; :mod:`astroembed.training.encoders` builds the modules from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from astroembed.runtime.preprocess import default_spectrum_preprocessing, spectrum_length

SPECTRUM_BIN = 16  # DESI pixels per bin (see SpectrumEncoderConfig.length)
EMBED_DIM = 128  # the shared embedding space of images and spectra


@dataclass
class SpectrumEncoderShape:
    """The spectrum encoder's shape as a training recipe sets it (a training config's
    ``[spectrum]`` table); defaults are the shipped model's. Tokens = binned length // patch.

    ``stem``: convolution layers ``(channels, kernel, stride)`` run over the binned pixels
    before the tokens are made; empty for a linear map of each patch. A stride-1 layer has an
    odd kernel and keeps the length; a strided layer's kernel equals its stride (it pools
    whole pixels, so every token still sees only its own patch up to the stride-1 layers'
    reach). The strides multiply to a divisor of ``patch``; a last layer with kernel and
    stride ``patch / product(strides)`` makes the tokens."""

    # 24 tokens of 20 bins of the DESI grid: the number of tokens sets the CPU cost of the
    # transformer.
    patch: int = 20
    width: int = 128  # token width of the transformer
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads per block
    mlp_ratio: float = 2.0  # hidden width of each block's MLP, in token widths
    # Two full-resolution layers look at the pixels before a third pools them by 4: better
    # held-out redshifts than linear tokens, and faster in ONNX Runtime (docs/MODEL_CARD.md).
    stem: tuple[tuple[int, ...], ...] = ((32, 5, 1), (32, 5, 1), (64, 4, 4))  # [c, k, s] each

    def __post_init__(self):
        self.stem = tuple(tuple(int(v) for v in layer) for layer in self.stem)
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
    def stem_pooling(self) -> int:
        """Pixels per position after the stem's strided layers (1 without a stem)."""
        return math.prod(stride for _, _, stride in self.stem)


@dataclass
class SpectrumEncoderConfig(SpectrumEncoderShape):
    """The whole spectrum encoder: its shape and what the data and the shared space fix.
    ``length``: binned pixels per channel (the DESI grid binned by ``SPECTRUM_BIN``)."""

    # The DESI grid binned by 16 pixels (12.8 A): z-scoring noisy 4-pixel bins divides by a
    # spread that is mostly noise (4-pixel bins: spectrum k-NN R^2 0.829 against 0.870).
    length: int = spectrum_length(default_spectrum_preprocessing(SPECTRUM_BIN))
    channels: int = 2  # z-scored flux and per-pixel trust
    embed_dim: int = EMBED_DIM

    def __post_init__(self):
        super().__post_init__()
        if self.tokens < 1:
            raise ValueError(f"patch {self.patch} is longer than the spectrum ({self.length}).")

    @property
    def tokens(self) -> int:
        return self.length // self.patch

    @classmethod
    def from_shape(cls, shape: SpectrumEncoderShape, length: int,
                   embed_dim: int) -> SpectrumEncoderConfig:
        return cls(length=length, embed_dim=embed_dim,
                   **{f.name: getattr(shape, f.name) for f in fields(SpectrumEncoderShape)})


@dataclass
class ImageEncoderShape:
    """The image encoder's shape as a training recipe sets it (a training config's
    ``[image]`` table); defaults are the shipped model's. Each stage after the first halves
    the resolution."""

    widths: tuple[int, ...] = (24, 48, 96)  # channels per stage: the shipped model's three
    heads: int = 4  # heads of the cross-attention that pools the pixels into the embedding

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if not self.widths or min(self.widths) < 1 or self.heads < 1:
            raise ValueError("widths must be a non-empty list of positive integers and heads "
                             "a positive integer.")


@dataclass
class ImageEncoderConfig(ImageEncoderShape):
    """The whole image encoder: its shape, the ``crop`` (pixels square, 3 bands) and the
    shared space's width."""

    crop: int = 32  # the centre of a 64-pixel cutout: the galaxy, little sky
    embed_dim: int = EMBED_DIM

    @classmethod
    def from_shape(cls, shape: ImageEncoderShape, crop: int, embed_dim: int) -> ImageEncoderConfig:
        return cls(crop=crop, embed_dim=embed_dim,
                   **{f.name: getattr(shape, f.name) for f in fields(ImageEncoderShape)})
