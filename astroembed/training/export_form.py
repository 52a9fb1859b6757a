"""Export-time forms of the encoders: the same maths, laid out for ONNX Runtime.

A form is built from a trained module right before export; its weights are the trained ones,
rearranged, and the exporter checks the ONNX output against the original module
(``export._check_parity``). Why the weights are rearranged (``bench/encoder_bench.py``
times the result against torch eager):

- Multi-head attention is one standard ONNX ``Attention`` node (opset 23) on ``(B, N, width)``
  tensors: the heads are split inside the kernel, so the graph has no ``Transpose`` of the
  token tensors (the torch layout, ``(B, heads, N, d)``, spends much of ONNX Runtime's time
  in transposes; slicing the weights head by head instead leaves many small matrix products).
- Linear maps on tokens are ``MatMul`` + ``Add`` with the weights stored ``(in, out)``:
  ONNX Runtime runs a bias-free ``MatMul`` of these shapes faster than a ``Gemm`` with a
  bias, and fuses the bias of the MLP's first layer into its GELU (``BiasGelu``).
- Biases that cannot change the result are folded away: the key bias adds the same amount
  to every score of a query (softmax ignores it), and the value bias passes through the
  attention weights unchanged (they sum to one), so it joins the output bias.
- The cross-attention head's query is a constant, so its query projection and key
  projection fold into one ``(width, heads)`` matrix, and its value and output projections
  into one ``(heads * width, width)`` matrix applied after pooling: the head no longer
  projects every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from astroembed.training.encoders import Attention, CrossAttentionHead, ImageEncoder, SpectrumEncoder

__all__ = ["export_form", "ONNX_OPSET", "translation_table"]

ONNX_OPSET = 23  # the first opset with a standard Attention operator


@torch.library.custom_op("astroembed::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              scale: float) -> torch.Tensor:
    """Scaled dot-product attention on ``(B, N, heads * d)`` tensors (ONNX ``Attention``)."""
    b, n, w = q.shape
    q, k, v = (t.reshape(b, -1, heads, w // heads).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return y.transpose(1, 2).reshape(b, n, w).contiguous()


@attention.register_fake
def _attention_shape(q, k, v, heads, scale):
    return torch.empty_like(q)


def _attention_onnx(q, k, v, heads: int, scale: float):
    from onnxscript import opset23 as op

    y, _, _, _ = op.Attention(q, k, v, q_num_heads=heads, kv_num_heads=heads, scale=scale)
    return y


def translation_table() -> dict:
    """What the ONNX exporter needs to translate the forms' own operators."""
    return {torch.ops.astroembed.attention.default: _attention_onnx}


class Affine(nn.Module):
    """``x @ weight (+ bias)``, the weight stored ``(in, out)``: ONNX ``MatMul`` (+ ``Add``)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().t().contiguous(), requires_grad=False)
        self.bias = (None if bias is None else
                     nn.Parameter(bias.detach().clone(), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight
        return y if self.bias is None else y + self.bias


def _folded_kv(attn: Attention, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_k, W_v, b_o + W_o b_v)``: the key and value weights without their biases, and the
    output bias that takes the value bias (the key bias drops out of the softmax)."""
    with torch.no_grad():
        return (attn.kv.weight[:width], attn.kv.weight[width:],
                attn.out.bias + attn.out.weight @ attn.kv.bias[width:])


class SelfAttention(nn.Module):
    """:class:`Attention` over its own input, key bias dropped, value bias folded."""

    def __init__(self, attn: Attention, width: int):
        super().__init__()
        self.heads, self.scale = attn.heads, (width // attn.heads) ** -0.5
        w_k, w_v, out_bias = _folded_kv(attn, width)
        self.q = Affine(attn.q.weight, attn.q.bias)
        self.k = Affine(w_k)
        self.v = Affine(w_v)
        self.out = Affine(attn.out.weight, out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.astroembed.attention(self.q(x), self.k(x), self.v(x), self.heads,
                                           self.scale)
        return self.out(y)


class PooledHead(nn.Module):
    """:class:`CrossAttentionHead` with its constant query folded into the weights.

    For head ``h`` the score of token ``t`` is ``scale * q_h . (W_k,h t + b_k,h)``, i.e.
    ``t . u_h`` plus a constant softmax ignores; the head's output is
    ``W_o[:, h] (W_v,h z_h + b_v,h)`` with ``z_h`` the attention-weighted mean token, so
    ``sum_h z_h M_h + c`` with ``M_h = (W_o[:, h] W_v,h)^T`` and ``c = W_o b_v + b_o``.
    """

    def __init__(self, head: CrossAttentionHead, width: int):
        super().__init__()
        attn, heads = head.attn, head.attn.heads
        d = width // heads
        w_k, w_v, out_bias = _folded_kv(attn, width)
        rows = [slice(h * d, (h + 1) * d) for h in range(heads)]
        with torch.no_grad():
            q = attn.q(head.query.reshape(1, width))[0]
            u = torch.stack([q[r] @ w_k[r] for r in rows]) * d ** -0.5        # (heads, width)
            m = torch.cat([attn.out.weight[:, r] @ w_v[r] for r in rows], 1)  # (width, h * w)
        self.scores = Affine(u)
        self.pool = Affine(m, out_bias)
        self.heads, self.width = heads, width
        self.norm, self.mlp, self.proj = head.norm, head.mlp, head.proj

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.norm(tokens)                                    # (B, N, width)
        weights = torch.softmax(self.scores(t), dim=1)           # (B, N, heads)
        z = weights.transpose(1, 2) @ t                          # (B, heads, width)
        pooled = self.pool(z.reshape(z.shape[0], self.heads * self.width))
        pooled = pooled + self.mlp(pooled)
        return F.normalize(self.proj(pooled), dim=-1)


class SpectrumExportForm(nn.Module):
    """:class:`SpectrumEncoder`'s forward pass (embedding only), laid out for export."""

    def __init__(self, encoder: SpectrumEncoder):
        super().__init__()
        self.encoder = encoder
        width = encoder.cfg.width
        self.attention = nn.ModuleList(SelfAttention(b.attn, width) for b in encoder.blocks)
        self.head = PooledHead(encoder.head, width)

    def forward(self, spectrum: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = enc.embed_patches(spectrum)
        x = torch.cat([enc.stats(stats)[:, None], x], dim=1) + enc.position
        for block, attention in zip(enc.blocks, self.attention):
            x = x + attention(block.norm1(x))
            x = x + block.mlp(block.norm2(x))
        return self.head(enc.norm(x))


class ImageExportForm(nn.Module):
    """:class:`ImageEncoder` with the folded head (its convolutions suit ONNX Runtime as
    they are)."""

    def __init__(self, encoder: ImageEncoder):
        super().__init__()
        self.encoder = encoder
        self.head = PooledHead(encoder.head, encoder.cfg.widths[-1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = enc.stages(enc.stem(image))
        return self.head(x.flatten(2).transpose(1, 2) + enc.position)


def export_form(module: nn.Module) -> nn.Module:
    """The module to hand to the ONNX exporter for a trained encoder (other modules as they
    are)."""
    if isinstance(module, SpectrumEncoder):
        return SpectrumExportForm(module).eval()
    if isinstance(module, ImageEncoder):
        return ImageExportForm(module).eval()
    return module
