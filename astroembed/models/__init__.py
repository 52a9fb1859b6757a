"""Torch encoders (training and export only; ``embed`` runs their ONNX exports)."""

from .encoders import (ImageEncoder, ImageEncoderConfig, SpectrumEncoder,  # noqa: F401
                       SpectrumEncoderConfig, info_nce)
