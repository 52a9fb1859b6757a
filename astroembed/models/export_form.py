"""Export-time forms of the encoders: the same maths, laid out for ONNX Runtime.

Torch runs multi-head attention fastest as one ``(B, heads, N, d)`` tensor through
``scaled_dot_product_attention``. Exported as is, that layout becomes 26 ``Transpose`` nodes
in the spectrum encoder, which took a fifth of ONNX Runtime's time. Here every linear map
runs on ``(B * N, width)`` rows (ONNX ``Gemm`` with the bias fused) and attention runs head
by head on column slices of the weights, so the only transpose left is ``K^T``, which ONNX
Runtime folds into its matrix product. Measured on the default spectrum encoder at batch 256
on 2 cores: 125 ms -> 104 ms per batch. The weights are the trained ones, split by head, not
copies to keep in sync: a form is built from a trained module right before export, and the
exporter checks its ONNX output against the original module (``export._check_parity``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import Attention, SpectrumEncoder

__all__ = ["export_form"]


def _rows(linear: nn.Linear, start: int, stop: int) -> nn.Linear:
    """Output features ``start:stop`` of ``linear`` as a linear map of their own."""
    part = nn.Linear(linear.in_features, stop - start)
    with torch.no_grad():
        part.weight.copy_(linear.weight[start:stop])
        part.bias.copy_(linear.bias[start:stop])
    return part


class RowAttention(nn.Module):
    """:class:`Attention` on ``(B * N, width)`` rows, one head at a time."""

    def __init__(self, attention: Attention, width: int):
        super().__init__()
        heads = attention.heads
        self.d = width // heads
        self.scale = self.d ** -0.5  # scaled_dot_product_attention's default
        self.q = nn.ModuleList(_rows(attention.q, h * self.d, (h + 1) * self.d)
                               for h in range(heads))
        self.k = nn.ModuleList(_rows(attention.kv, h * self.d, (h + 1) * self.d)
                               for h in range(heads))
        self.v = nn.ModuleList(_rows(attention.kv, width + h * self.d, width + (h + 1) * self.d)
                               for h in range(heads))
        self.out = attention.out

    def forward(self, x: torch.Tensor, context: torch.Tensor, batch: int, n: int,
                m: int) -> torch.Tensor:
        heads = []
        for q_map, k_map, v_map in zip(self.q, self.k, self.v):
            q = q_map(x).reshape(batch, n, self.d)
            k = k_map(context).reshape(batch, m, self.d)
            v = v_map(context).reshape(batch, m, self.d)
            weights = torch.softmax((q @ k.transpose(1, 2)) * self.scale, dim=-1)
            heads.append((weights @ v).reshape(batch * n, self.d))
        return self.out(torch.cat(heads, dim=-1))


class SpectrumExportForm(nn.Module):
    """:class:`SpectrumEncoder`'s forward pass (embedding only) in the row layout."""

    def __init__(self, encoder: SpectrumEncoder):
        super().__init__()
        self.encoder = encoder
        width = encoder.cfg.width
        self.attention = nn.ModuleList(RowAttention(b.attn, width) for b in encoder.blocks)
        self.head_attention = RowAttention(encoder.head.attn, width)

    def forward(self, spectrum: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        enc, width = self.encoder, self.encoder.cfg.width
        batch, n = spectrum.shape[0], enc.cfg.tokens + 1
        x = enc.patchify(enc.patches(spectrum))
        x = (torch.cat([enc.stats(stats)[:, None], x], dim=1) + enc.position).reshape(-1, width)
        for block, attention in zip(enc.blocks, self.attention):
            h = block.norm1(x)
            x = x + attention(h, h, batch, n, n)
            x = x + block.mlp(block.norm2(x))
        tokens = enc.norm(x)
        head = enc.head
        query = head.query.reshape(1, width).expand(batch, width)
        pooled = self.head_attention(query, head.norm(tokens), batch, 1, n)
        pooled = pooled + head.mlp(pooled)
        return F.normalize(head.proj(pooled), dim=-1)


def export_form(module: nn.Module) -> nn.Module:
    """The module to hand to the ONNX exporter: the row form of a spectrum encoder; other
    encoders as they are (the image encoder's convolutions already suit ONNX Runtime)."""
    if isinstance(module, SpectrumEncoder):
        return SpectrumExportForm(module).eval()
    return module
