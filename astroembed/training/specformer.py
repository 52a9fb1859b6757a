"""AstroCLIP's spectrum backbone, SpecFormer, as astroembed's own torch module: built from the
tensors and hyper-parameters of a published ``specformer.ckpt`` (read with
:func:`astroembed.training.checkpoint.read_checkpoint`), with the model's preprocessing inside
``forward`` so an export carries it.

What the published model does to a spectrum (DESI flux on the 7781-pixel grid, ``(N, L)``):
standardise each spectrum by its mean and its standard deviation (ddof 1, at least 0.2); cut
it into windows of ``slice_section_length`` pixels every ``slice_length - slice_overlap``
pixels, the last window always dropped (the published code discards it whatever its length);
give each window two leading zeros and put a token in front whose first two values are
``(mean - 2) / 2`` and ``(std - 2) / 8``; embed, add learned positions, run post-attention
residual blocks (layer norm, multi-head self-attention, layer norm, GELU MLP of 4x width),
a final layer norm. The zero-shot embedding is the mean over tokens of that output.

:class:`SpecFormerExportForm` is the same embedding laid out for ONNX Runtime (the windows
one gather with constant indices, attention one ONNX ``Attention`` node, as
:mod:`astroembed.training.export_form` lays out astroembed's own encoders); the importer
checks it against :class:`SpecFormerEmbedding`, the module above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from astroembed.errors import InputError
from astroembed.training.export_form import Affine

__all__ = ["SpecFormer", "SpecFormerConfig", "SpecFormerEmbedding", "SpecFormerExportForm",
           "specformer_from_checkpoint"]


@dataclass(frozen=True)
class SpecFormerConfig:
    """The hyper-parameters a ``specformer.ckpt`` records (AstroCLIP's: 22, 768, 6, 6, 800)."""

    input_dim: int = 22
    embed_dim: int = 768
    num_layers: int = 6
    num_heads: int = 6
    max_len: int = 800
    slice_section_length: int = 20
    slice_overlap: int = 10

    def windows(self, length: int) -> int:
        """Windows cut from a spectrum of ``length`` pixels (the last start's is dropped)."""
        step = self.slice_section_length - self.slice_overlap
        starts = len(range(0, length - self.slice_overlap, step))
        return starts - 1

    def check(self, length: int) -> None:
        """ValueError unless spectra of ``length`` pixels make full windows that fit."""
        n = self.windows(length)
        step = self.slice_section_length - self.slice_overlap
        if n < 1 or (n - 1) * step + self.slice_section_length > length:
            raise ValueError(f"spectra of {length} pixels do not cut into whole windows of "
                             f"{self.slice_section_length}")
        if n + 1 > self.max_len:
            raise ValueError(f"{n + 1} tokens for spectra of {length} pixels; the model takes "
                             f"at most {self.max_len}")
        if self.input_dim != self.slice_section_length + 2:
            raise ValueError(f"input_dim {self.input_dim} is not a window of "
                             f"{self.slice_section_length} plus the two statistics")


class _Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)); attribute names as the checkpoint's."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.layernorm1 = nn.LayerNorm(width)
        self.attention = nn.Module()
        self.attention.attention = nn.Linear(width, 3 * width)  # q, k, v side by side
        self.attention.projection = nn.Linear(width, width)
        self.layernorm2 = nn.LayerNorm(width)
        self.mlp = nn.Module()
        self.mlp.encoder = nn.Linear(width, 4 * width)
        self.mlp.decoder = nn.Linear(4 * width, width)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.attention.attention(x).split(c, dim=2)
        shape = (b, t, self.heads, c // self.heads)
        q, k, v = (a.reshape(shape).transpose(1, 2) for a in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c // self.heads), dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(b, t, c)
        return self.attention.projection(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(self.layernorm1(x))
        return x + self.mlp.decoder(F.gelu(self.mlp.encoder(self.layernorm2(x))))


class SpecFormer(nn.Module):
    """SpecFormer with its preprocessing: ``(N, L)`` flux -> ``(N, tokens, embed_dim)``;
    :meth:`embed` gives the zero-shot embedding ``(N, embed_dim)``."""

    def __init__(self, cfg: SpecFormerConfig) -> None:
        super().__init__()
        if cfg.embed_dim % cfg.num_heads:
            raise ValueError(f"embed_dim {cfg.embed_dim} is not a multiple of num_heads "
                             f"{cfg.num_heads}")
        self.cfg = cfg
        self.data_embed = nn.Linear(cfg.input_dim, cfg.embed_dim)
        self.position_embed = nn.Embedding(cfg.max_len, cfg.embed_dim)
        self.blocks = nn.ModuleList(_Block(cfg.embed_dim, cfg.num_heads)
                                    for _ in range(cfg.num_layers))
        self.final_layernorm = nn.LayerNorm(cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, cfg.input_dim)  # reconstruction; not used here

    def tokens(self, flux: torch.Tensor) -> torch.Tensor:
        """The model's input tokens ``(N, windows + 1, input_dim)`` from flux ``(N, L)``."""
        cfg = self.cfg
        mean = flux.mean(dim=1, keepdim=True)
        std = flux.std(dim=1, keepdim=True).clamp(min=0.2)
        x = (flux - mean) / std
        n = cfg.windows(flux.shape[1])
        step = cfg.slice_section_length - cfg.slice_overlap
        span = (n - 1) * step + cfg.slice_section_length
        windows = x[:, :span].unfold(1, cfg.slice_section_length, step)  # (N, n, section)
        windows = F.pad(windows, (2, 0))
        stats = torch.cat([(mean - 2) / 2, (std - 2) / 8], dim=1)  # (N, 2)
        first = F.pad(stats, (0, cfg.input_dim - 2)).unsqueeze(1)
        return torch.cat([first, windows], dim=1)

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        x = self.tokens(flux)
        positions = torch.arange(x.shape[1], device=x.device)
        x = self.data_embed(x) + self.position_embed(positions)
        for block in self.blocks:
            x = block(x)
        return self.final_layernorm(x)

    def embed(self, flux: torch.Tensor) -> torch.Tensor:
        """The zero-shot embedding, as AstroCLIP's evaluation takes it: the mean over tokens."""
        return self.forward(flux).mean(dim=1)


def _config(hyper: Any, where: str) -> SpecFormerConfig:
    if not isinstance(hyper, dict):
        hyper = getattr(hyper, "attributes", lambda: {})() or {}
    names = {f.name for f in fields(SpecFormerConfig)}
    values = {k: hyper[k] for k in names if k in hyper}
    missing = {"input_dim", "embed_dim", "num_layers", "num_heads", "max_len"} - set(values)
    if missing:
        raise InputError(f"{where}: hyper_parameters lack {', '.join(sorted(missing))}; not a "
                         "SpecFormer checkpoint.")
    try:
        return SpecFormerConfig(**{k: int(v) for k, v in values.items()})
    except (TypeError, ValueError) as err:
        raise InputError(f"{where}: hyper_parameters are not whole numbers ({err}).") from None


def specformer_from_checkpoint(checkpoint: dict, where: str = "checkpoint") -> SpecFormer:
    """A :class:`SpecFormer` with the weights of a ``specformer.ckpt`` as
    :func:`~astroembed.training.checkpoint.read_checkpoint` returns it (``hyper_parameters``
    and an unprefixed ``state_dict``). InputError names what does not fit."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"{where}: no state_dict; not a SpecFormer checkpoint.")
    cfg = _config(checkpoint.get("hyper_parameters", {}), where)
    try:
        model = SpecFormer(cfg)
    except (ValueError, RuntimeError) as err:  # torch refuses negative sizes with RuntimeError
        raise InputError(f"{where}: unsupported hyper_parameters ({err}).") from None
    state = {k: v for k, v in checkpoint["state_dict"].items() if isinstance(v, torch.Tensor)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise InputError(f"{where}: no tensor {missing[0]}" + (
            f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; not a SpecFormer checkpoint of this shape.")
    for key, tensor in own.items():
        if state[key].shape != tensor.shape:
            raise InputError(f"{where}: {key} is {tuple(state[key].shape)}, expected "
                             f"{tuple(tensor.shape)} for the recorded hyper-parameters.")
    model.load_state_dict({k: state[k].to(torch.float32) for k in own})
    return model.eval()


class SpecFormerEmbedding(nn.Module):
    """The embedding ``embed`` stores: ``(N, L, 1)`` flux (AstroCLIP's input layout) -> the
    L2-normalised mean token ``(N, embed_dim)``; the torch side of the export parity check."""

    def __init__(self, model: SpecFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.embed(flux[..., 0]), dim=-1)


def _affine(linear: nn.Linear, rows: slice | None = None, bias: bool = True) -> Affine:
    """An export :class:`~astroembed.training.export_form.Affine` of some output rows of
    ``linear`` (with or without their bias)."""
    rows = rows or slice(None)
    return Affine(linear.weight[rows], linear.bias[rows] if bias else None)


class _ExportBlock(nn.Module):
    """A :class:`_Block` laid out for ONNX Runtime as the exporter's own encoders are (one
    ONNX ``Attention`` node, weights stored ``(in, out)``): the key bias is dropped (it
    shifts every score of a query equally, which the softmax ignores) and the value bias
    joins the output bias (attention weights sum to one)."""

    def __init__(self, block: _Block) -> None:
        super().__init__()
        width = block.layernorm1.normalized_shape[0]
        qkv, proj = block.attention.attention, block.attention.projection
        q, k, v = (slice(i * width, (i + 1) * width) for i in range(3))
        self.heads, self.scale = block.heads, (width // block.heads) ** -0.5
        self.norm1, self.norm2 = block.layernorm1, block.layernorm2
        self.q, self.k, self.v = _affine(qkv, q), _affine(qkv, k, bias=False), _affine(qkv, v, False)
        with torch.no_grad():
            out_bias = proj.bias + proj.weight @ qkv.bias[v]
        self.out = Affine(proj.weight, out_bias)
        self.up, self.down = _affine(block.mlp.encoder), _affine(block.mlp.decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        y = torch.ops.astroembed.attention(self.q(h), self.k(h), self.v(h), self.heads,
                                           self.scale)
        x = x + self.out(y)
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class SpecFormerExportForm(nn.Module):
    """:class:`SpecFormerEmbedding` for spectra of ``length`` pixels, laid out for export.

    The windows are one ``Gather`` with constant indices (the grid is fixed by the model's
    contract), and the two leading zeros of each window and the zeros after the statistics
    token's two values are folded into the input embedding: only the columns of
    ``data_embed`` that meet non-zero values are multiplied.
    """

    def __init__(self, model: SpecFormer, length: int) -> None:
        super().__init__()
        cfg = model.cfg
        cfg.check(length)
        n = cfg.windows(length)
        step = cfg.slice_section_length - cfg.slice_overlap
        index = torch.arange(n)[:, None] * step + torch.arange(cfg.slice_section_length)
        self.register_buffer("index", index, persistent=False)
        weight, bias = model.data_embed.weight, model.data_embed.bias
        with torch.no_grad():
            positions = model.position_embed.weight[:n + 1] + bias
        self.windows = Affine(weight[:, 2:])
        self.stats = Affine(weight[:, :2])
        self.positions = nn.Parameter(positions.clone(), requires_grad=False)
        self.blocks = nn.ModuleList(_ExportBlock(b) for b in model.blocks)
        self.norm = model.final_layernorm

    def tokens(self, flux: torch.Tensor) -> torch.Tensor:
        """The final layer's tokens ``(N, windows + 1, embed_dim)`` from ``(N, L, 1)`` flux."""
        x = flux[..., 0]
        mean = x.mean(dim=1, keepdim=True)
        std = x.std(dim=1, keepdim=True).clamp(min=0.2)
        x = (x - mean) / std
        first = self.stats(torch.cat([(mean - 2) / 2, (std - 2) / 8], dim=1))[:, None]
        tokens = torch.cat([first, self.windows(x[:, self.index])], dim=1) + self.positions
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tokens(flux).mean(dim=1), dim=-1)
