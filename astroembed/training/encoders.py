"""AstroCLIP-style encoders as plain torch modules (no file I/O; configs are dataclasses).

Both encoders end in the same head: one learned query cross-attends to the encoder's tokens,
then a linear map into the shared space, L2-normalised, so image and spectrum embeddings can
be compared by cosine similarity.

- :class:`SpectrumEncoder`: the preprocessed spectrum (z-scored flux and per-pixel trust,
  see :mod:`astroembed.runtime.preprocess`) cut into non-overlapping patches of ``patch`` binned
  pixels, each made into one token (cheap on CPU: the number of tokens sets the cost),
  either linearly or by a small convolutional stem (:class:`ConvStem`) that looks at the
  pixels before they are pooled into tokens, plus a leading token made from the spectrum's
  mean and spread, through a pre-norm transformer. :meth:`SpectrumEncoder.reconstruct` is
  the masked-reconstruction objective of the pretraining stage.
- :class:`ImageEncoder`: a small ResNet over the stretched g, r, z crop; its last feature map
  (8x8 for a 32-pixel crop) is the token set of the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from astroembed.training.recipe import ImageEncoderConfig, SpectrumEncoderConfig

__all__ = ["ImageEncoder", "ImageEncoderConfig", "SpectrumEncoder", "SpectrumEncoderConfig",
           "info_nce"]


class Attention(nn.Module):
    """Multi-head attention of queries ``x`` over ``context`` (self-attention when omitted)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, w = x.shape
        m = context.shape[1]
        h = self.heads
        q = self.q(x).reshape(b, n, h, w // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, m, 2, h, w // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttentionHead(nn.Module):
    """One learned query attends to the tokens; linear map to the shared space; L2 norm."""

    def __init__(self, width: int, heads: int, embed_dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
        self.proj = nn.Linear(width, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.query.expand(tokens.shape[0], -1, -1)
        pooled = self.attn(q, self.norm(tokens))[:, 0]
        pooled = pooled + self.mlp(pooled)
        return F.normalize(self.proj(pooled), dim=-1)


class ConvStem(nn.Module):
    """The spectrum's pixels -> one token per patch, through ``cfg.stem``'s convolutions
    (GELU after each, no normalisation: masked pretraining inputs would skew batch
    statistics). Written as 2-D convolutions of height 1, the form ONNX Runtime's fast CPU
    convolution kernels take."""

    def __init__(self, cfg: SpectrumEncoderConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels = cfg.channels
        for out, kernel, stride in cfg.stem:
            pad = kernel // 2 if stride == 1 else 0
            layers += [nn.Conv2d(channels, out, (1, kernel), (1, stride), (0, pad)), nn.GELU()]
            channels = out
        last = cfg.patch // cfg.stem_pooling
        layers.append(nn.Conv2d(channels, cfg.width, (1, last), (1, last)))
        self.net = nn.Sequential(*layers)

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        """(B, C, tokens * patch) -> (B, tokens, width)."""
        return self.net(spectrum[:, :, None, :]).flatten(2).transpose(1, 2)


class SpectrumEncoder(nn.Module):
    """Transformer over spectrum patches; inputs as :func:`preprocess.spectrum_inputs` makes."""

    def __init__(self, cfg: SpectrumEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.patchify = (ConvStem(cfg) if cfg.stem else
                         nn.Linear(cfg.channels * cfg.patch, cfg.width))
        self.stats = nn.Linear(2, cfg.width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.position = nn.Parameter(torch.randn(1, cfg.tokens + 1, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.decoder = nn.Linear(cfg.width, cfg.patch)
        self.head = CrossAttentionHead(cfg.width, cfg.heads, cfg.embed_dim)

    def patches(self, spectrum: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, T, C * patch), channels of one patch side by side."""
        c, t, p = self.cfg.channels, self.cfg.tokens, self.cfg.patch
        x = spectrum[:, :, :t * p].reshape(spectrum.shape[0], c, t, p)
        return x.permute(0, 2, 1, 3).reshape(spectrum.shape[0], t, c * p)

    def embed_patches(self, spectrum: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
        """One token per patch (B, T, width), before position and context. The stem's
        convolutions reach across patch edges, so hidden patches are blanked (flux and trust
        0, as for pixels without data) before it runs."""
        if not self.cfg.stem:
            return self.patchify(self.patches(spectrum))
        x = spectrum[:, :, :self.cfg.tokens * self.cfg.patch]
        if mask is not None:
            keep = (~mask).repeat_interleave(self.cfg.patch, dim=1)[:, None, :]
            x = x * keep.to(x.dtype)
        return self.patchify(x)

    def tokens(self, spectrum: torch.Tensor, stats: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Contextual tokens (B, T + 1, width); ``mask`` (B, T) True hides a patch."""
        x = self.embed_patches(spectrum, mask)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        x = torch.cat([self.stats(stats)[:, None], x], dim=1) + self.position
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, spectrum: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokens(spectrum, stats))

    def reconstruct(self, spectrum: torch.Tensor, stats: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
        """Masked-reconstruction loss: predict the z-scored flux of hidden patches, weighted
        by each pixel's trust (noisy and masked pixels count less or not at all)."""
        return self.reconstruction_loss(self.tokens(spectrum, stats, mask), spectrum, mask)

    def reconstruction_loss(self, tokens: torch.Tensor, spectrum: torch.Tensor,
                            mask: torch.Tensor) -> torch.Tensor:
        """:meth:`reconstruct` given the masked tokens (so they can feed the head too)."""
        pred = self.decoder(tokens[:, 1:])
        parts = self.patches(spectrum).reshape(spectrum.shape[0], self.cfg.tokens,
                                               self.cfg.channels, self.cfg.patch)
        target, trust = parts[:, :, 0], parts[:, :, 1]
        weight = trust ** 2 * mask[..., None]
        return (weight * (pred - target) ** 2).sum() / weight.sum().clamp_min(1e-6)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip; ``stride`` 2 halves the resolution."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Identity() if cin == cout and stride == 1 else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.bn1(self.conv1(x)))
        return F.gelu(self.bn2(self.conv2(y)) + self.skip(x))


class ImageEncoder(nn.Module):
    """Small ResNet over the stretched (3, crop, crop) image, then the cross-attention head."""

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        w = list(cfg.widths)
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]),
                                  nn.GELU())
        stages = [ResBlock(w[0], w[0], 1)]
        stages += [ResBlock(a, b, 2) for a, b in zip(w[:-1], w[1:])]
        self.stages = nn.Sequential(*stages)
        side = cfg.crop // 2 ** (len(w) - 1)
        self.position = nn.Parameter(torch.randn(1, side * side, w[-1]) * 0.02)
        self.head = CrossAttentionHead(w[-1], cfg.heads, cfg.embed_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(image))
        tokens = x.flatten(2).transpose(1, 2) + self.position
        return self.head(tokens)


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss for L2-normalised pairs ``a[i] <-> b[i]``."""
    logits = logit_scale * a @ b.T
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
