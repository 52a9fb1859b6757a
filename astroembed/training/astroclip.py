"""AstroCLIP's two encoders as astroembed's own torch modules, built from the tensors and the
inert hyper-parameters of a published ``astroclip.ckpt`` (read with
:func:`astroembed.training.checkpoint.read_checkpoint`).

The image encoder is AstroCLIP's use of a DINOv2 vision transformer: the patch embedding
(a convolution with stride = patch), then the blocks (pre-norm attention and MLP, each
scaled by its LayerScale), then the final norm, with no class token and no positional
embedding (AstroCLIP's image head skips both). The spectrum encoder is SpecFormer
(:mod:`astroembed.training.specformer`), its output tokens unpooled. Each is followed by
AstroCLIP's head: one learned query attends to the tokens (multi-head attention with
separate key/value widths allowed), a layer norm, then a GELU MLP of 4x width; the spectrum
head adds the MLP's output to its input, the image head does not. The embedding is the head's
output, L2-normalised (eps 1e-3, as AstroCLIP's contrastive loss normalises it).

:func:`export_form` gives the same maths laid out for ONNX Runtime (one ONNX ``Attention``
node per attention, weights stored ``(in, out)``, LayerScale folded into the weights it
scales, the constant query projected once); the importer checks its ONNX output against
:class:`AstroClipEncoder`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from astroembed.errors import InputError
from astroembed.training.checkpoint import Inert
from astroembed.training.export_form import Affine
from astroembed.training.specformer import SpecFormer, SpecFormerConfig, SpecFormerExportForm

__all__ = ["AstroClipEncoder", "HeadConfig", "ViTConfig", "astroclip_from_checkpoint",
           "export_form", "NORM_EPS", "parameter_count"]

#: The eps AstroCLIP normalises embeddings with.
NORM_EPS = 1e-3


@dataclass(frozen=True)
class ViTConfig:
    """A DINOv2 ViT as AstroCLIP uses it (the published one: 1024, 24, 16, patch 12, 144)."""

    width: int = 1024
    depth: int = 24
    heads: int = 16
    patch: int = 12
    img_size: int = 144
    mlp_hidden: int = 4096
    layerscale: bool = True
    in_chans: int = 3


@dataclass(frozen=True)
class HeadConfig:
    """AstroCLIP's cross-attention head and MLP: output width, heads, token width, residual."""

    embed_dim: int = 1024
    heads: int = 4
    token_dim: int = 1024
    residual: bool = False


# ----------------------------------------------------------------------------- image backbone

def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention on ``(B, N, heads * d)`` tensors, scaled by ``d ** -0.5``."""
    b, n, w = q.shape
    d = w // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax((q * d ** -0.5) @ k.transpose(-2, -1), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(b, n, w)


class _ViTBlock(nn.Module):
    """x + ls1 * attn(norm1(x)), then x + ls2 * mlp(norm2(x)); names as the checkpoint's."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(w, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(w, 3 * w)
        self.attn.proj = nn.Linear(w, w)
        self.norm2 = nn.LayerNorm(w, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(w, cfg.mlp_hidden)
        self.mlp.fc2 = nn.Linear(cfg.mlp_hidden, w)
        if cfg.layerscale:
            self.ls1, self.ls2 = nn.Module(), nn.Module()
            self.ls1.gamma = nn.Parameter(torch.ones(w))
            self.ls2.gamma = nn.Parameter(torch.ones(w))

    def _scale(self, name: str, x: torch.Tensor) -> torch.Tensor:
        ls = getattr(self, name, None)
        return x if ls is None else x * ls.gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.attn.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self._scale("ls1", self.attn.proj(_attend(q, k, v, self.heads)))
        return x + self._scale("ls2", self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x)))))


class ViTBackbone(nn.Module):
    """``(N, 3, S, S)`` image -> ``(N, (S / patch)^2, width)`` tokens: patch_embed, blocks,
    norm (AstroCLIP's image head: no class token, no positional embedding)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(cfg.in_chans, cfg.width, cfg.patch, stride=cfg.patch)
        self.blocks = nn.ModuleList(_ViTBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(image).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ----------------------------------------------------------------------------- the head

class CrossAttentionHead(nn.Module):
    """One learned query attends to the tokens; layer norm; MLP (residual for spectra)."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        e, t = cfg.embed_dim, cfg.token_dim
        self.cfg = cfg
        self.query = nn.Parameter(torch.zeros(1, 1, e))
        self.q = nn.Linear(e, e)
        self.k = nn.Linear(t, e)
        self.v = nn.Linear(t, e)
        self.out = nn.Linear(e, e)
        self.layernorm = nn.LayerNorm(e)
        self.mlp = nn.Module()
        self.mlp.encoder = nn.Linear(e, 4 * e)
        self.mlp.decoder = nn.Linear(4 * e, e)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.q(self.query).expand(tokens.shape[0], -1, -1)
        x = self.out(_attend(q, self.k(tokens), self.v(tokens), self.cfg.heads))
        x = self.layernorm(x)
        y = self.mlp.decoder(F.gelu(self.mlp.encoder(x)))
        x = x + y if self.cfg.residual else y
        return F.normalize(x[:, 0], dim=-1, eps=NORM_EPS)


class _SpecFormerTokens(nn.Module):
    """SpecFormer's output tokens from AstroCLIP's spectrum input ``(N, L, 1)``."""

    def __init__(self, model: SpecFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        return self.model(flux[..., 0])


class AstroClipEncoder(nn.Module):
    """Backbone tokens -> head: the L2-normalised AstroCLIP embedding ``(N, embed_dim)``."""

    def __init__(self, backbone: nn.Module, head: CrossAttentionHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# ----------------------------------------------------------------------------- export forms

class _ExportViTBlock(nn.Module):
    """A :class:`_ViTBlock` for ONNX Runtime: the key bias dropped (the softmax ignores it),
    the value bias in the output bias (attention weights sum to one), LayerScale folded into
    the projection and the MLP's second layer."""

    def __init__(self, block: _ViTBlock) -> None:
        super().__init__()
        w = block.norm1.normalized_shape[0]
        qkv, proj, fc2 = block.attn.qkv, block.attn.proj, block.mlp.fc2
        g1 = block.ls1.gamma if hasattr(block, "ls1") else torch.ones(w)
        g2 = block.ls2.gamma if hasattr(block, "ls2") else torch.ones(w)
        self.heads, self.scale = block.heads, (w // block.heads) ** -0.5
        self.norm1, self.norm2 = block.norm1, block.norm2
        with torch.no_grad():
            self.q = Affine(qkv.weight[:w], qkv.bias[:w])
            self.k = Affine(qkv.weight[w:2 * w])
            self.v = Affine(qkv.weight[2 * w:])
            out_bias = proj.bias + proj.weight @ qkv.bias[2 * w:]
            self.out = Affine(g1[:, None] * proj.weight, g1 * out_bias)
            self.up = Affine(block.mlp.fc1.weight, block.mlp.fc1.bias)
            self.down = Affine(g2[:, None] * fc2.weight, g2 * fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        y = torch.ops.astroembed.attention(self.q(h), self.k(h), self.v(h), self.heads,
                                           self.scale)
        x = x + self.out(y)
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class _ExportViT(nn.Module):
    def __init__(self, vit: ViTBackbone) -> None:
        super().__init__()
        self.proj = vit.patch_embed.proj
        self.blocks = nn.ModuleList(_ExportViTBlock(b) for b in vit.blocks)
        self.norm = vit.norm

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.proj(image).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class _ExportSpecFormer(nn.Module):
    """SpecFormer's tokens, laid out as :class:`SpecFormerExportForm` lays out its embedding."""

    def __init__(self, model: SpecFormer, length: int) -> None:
        super().__init__()
        self.form = SpecFormerExportForm(model, length)

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        return self.form.tokens(flux)


class _ExportHead(nn.Module):
    """:class:`CrossAttentionHead` with its constant query projected once."""

    def __init__(self, head: CrossAttentionHead) -> None:
        super().__init__()
        e = head.cfg.embed_dim
        self.heads, self.residual = head.cfg.heads, head.cfg.residual
        self.scale = (e // head.cfg.heads) ** -0.5
        with torch.no_grad():
            self.query = nn.Parameter(head.q(head.query).clone(), requires_grad=False)
            out_bias = head.out.bias + head.out.weight @ head.v.bias
        self.k = Affine(head.k.weight)
        self.v = Affine(head.v.weight)
        self.out = Affine(head.out.weight, out_bias)
        self.layernorm = head.layernorm
        self.up = Affine(head.mlp.encoder.weight, head.mlp.encoder.bias)
        self.down = Affine(head.mlp.decoder.weight, head.mlp.decoder.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.query.expand(tokens.shape[0], -1, -1)
        y = torch.ops.astroembed.attention(q, self.k(tokens), self.v(tokens), self.heads,
                                           self.scale)
        x = self.layernorm(self.out(y))
        z = self.down(F.gelu(self.up(x)))
        x = x + z if self.residual else z
        return F.normalize(x[:, 0], dim=-1, eps=NORM_EPS)


class _ExportImage(nn.Module):
    """The image encoder for export (its argument is named as the graph input)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image))


class _ExportSpectrum(_ExportImage):
    """The spectrum encoder for export (its argument is named as the graph input)."""

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(flux))


def export_form(encoder: AstroClipEncoder, length: int | None = None) -> nn.Module:
    """The module handed to the ONNX exporter for ``encoder`` (spectra of ``length`` pixels)."""
    backbone = encoder.backbone
    head = _ExportHead(encoder.head)
    if isinstance(backbone, ViTBackbone):
        return _ExportImage(_ExportViT(backbone), head).eval()
    return _ExportSpectrum(_ExportSpecFormer(backbone.model, int(length)), head).eval()


# ----------------------------------------------------------------------------- from a checkpoint

def _get(obj: Any, name: str) -> Any:
    """``name`` of a dict, or of an inert object's attributes, submodules or items."""
    if isinstance(obj, Inert):
        attrs = obj.attributes()
        for where in (attrs, attrs.get("_modules") or {}, attrs.get("_hparams") or {},
                      attrs.get("hparams") or {}):
            where = where.attributes() if isinstance(where, Inert) else where
            if isinstance(where, dict) and name in where:
                return where[name]
        return None
    return obj.get(name) if isinstance(obj, dict) else None


def _setting(hyper: Any, *path: str) -> Any:
    obj = hyper
    for name in path:
        obj = _get(obj, name)
    return obj


def _int_setting(hyper: Any, where: str, what: str, *paths: tuple[str, ...]) -> int:
    """The first whole number found at one of ``paths`` in the hyper-parameters."""
    for path in paths:
        value = _setting(hyper, *path)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(
                value).is_integer():
            return int(value)
    raise InputError(f"{where}: hyper_parameters do not record {what} "
                     f"({'.'.join(paths[0])}); not an AstroCLIP checkpoint astroembed reads.")


def _tensors(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items()
            if isinstance(k, str) and k.startswith(prefix) and isinstance(v, torch.Tensor)}


def _need(tensors: dict, key: str, where: str, prefix: str) -> torch.Tensor:
    if key not in tensors:
        raise InputError(f"{where}: no tensor {prefix}{key}; not an AstroCLIP checkpoint of "
                         "the published layout.")
    return tensors[key]


_BLOCK = re.compile(r"blocks\.(?:\d+\.)?(\d+)\.(.+)$")
#: The tensors of one DINOv2 block (how a missing one is named as the checkpoint would).
_BLOCK_TENSORS = [f"{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1",
                                       "mlp.fc2") for p in ("weight", "bias")] + [
    "ls1.gamma", "ls2.gamma"]


def _vit_tensors(tensors: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The backbone's tensors named as :class:`ViTBackbone`'s (DINOv2's chunked
    ``blocks.<chunk>.<i>.`` become ``blocks.<i>.``; unused ones, cls_token, pos_embed and
    mask_token, are left out) and each one's name in the checkpoint."""
    out, names, chunked = {}, {}, {}
    for key, tensor in tensors.items():
        match = _BLOCK.match(key)
        own = f"blocks.{match.group(1)}.{match.group(2)}" if match else key
        if match:
            chunked[match.group(1)] = key[:-len(match.group(2)) - 1]
        if match or key.startswith(("patch_embed.proj.", "norm.")):
            out[own], names[own] = tensor, key
    for own in [f"blocks.{i}.{rest}" for i in chunked for rest in _BLOCK_TENSORS]:
        names.setdefault(own, f"{chunked[own.split('.')[1]]}.{own.split('.', 2)[2]}")
    return out, names


def _vit_config(tensors: dict, hyper: Any, where: str) -> ViTConfig:
    prefix = "image_encoder.backbone."
    proj = _need(tensors, "patch_embed.proj.weight", where, prefix)
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3] or proj.shape[1] != 3:
        raise InputError(f"{where}: {prefix}patch_embed.proj.weight is {tuple(proj.shape)}; "
                         "expected a square patch convolution of the 3 colour planes.")
    depth = len({k.split(".")[1] for k in tensors if k.startswith("blocks.")})
    fc1 = _need(tensors, "blocks.0.mlp.fc1.weight", where, prefix)
    heads = _int_setting(hyper, where, "the image backbone's number of heads",
                         ("image_encoder", "backbone", "num_heads"))
    if int(proj.shape[0]) % heads:
        raise InputError(f"{where}: unsupported architecture: image width {proj.shape[0]} is "
                         f"not a multiple of its {heads} heads.")
    patch = int(proj.shape[2])
    grid = _setting(hyper, "image_encoder", "backbone", "patch_embed", "patches_resolution")
    img = int(grid[0]) * patch if isinstance(grid, (tuple, list)) and grid else 144
    return ViTConfig(width=int(proj.shape[0]), depth=depth, heads=heads, patch=patch,
                     img_size=img, mlp_hidden=int(fc1.shape[0]),
                     layerscale="blocks.0.ls1.gamma" in tensors, in_chans=int(proj.shape[1]))


def _head_config(tensors: dict, hyper: Any, modality: str, where: str) -> HeadConfig:
    prefix = f"{modality}_encoder."
    query = _need(tensors, "cross_attention.query", where, prefix)
    key = tensors.get("cross_attention.multihead_attn.k_proj_weight",
                      tensors.get("cross_attention.multihead_attn.in_proj_weight"))
    if key is None or query.ndim != 3 or key.ndim != 2:
        raise InputError(f"{where}: no tensor {prefix}cross_attention.multihead_attn."
                         "in_proj_weight; not an AstroCLIP checkpoint of the published layout.")
    heads = _int_setting(hyper, where, f"the {modality} head's number of heads",
                         (f"{modality}_encoder", "cross_attention", "multihead_attn",
                          "num_heads"), (f"{modality}_encoder", "n_head"))
    return HeadConfig(embed_dim=int(query.shape[-1]), heads=heads, token_dim=int(key.shape[1]),
                      residual=modality == "spectrum")


def _head_state(tensors: dict, cfg: HeadConfig
                ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The head's tensors named as :class:`CrossAttentionHead`'s, and the checkpoint name
    each comes from (MultiheadAttention keeps q, k, v in one matrix when the widths agree,
    in three when they differ). KeyError names a checkpoint tensor that is missing."""
    e = cfg.embed_dim
    mha = "cross_attention.multihead_attn."
    names = {"query": "cross_attention.query", "out.weight": mha + "out_proj.weight",
             "out.bias": mha + "out_proj.bias",
             "layernorm.weight": "cross_attention.layernorm.weight",
             "layernorm.bias": "cross_attention.layernorm.bias"}
    names.update({f"mlp.{k}": f"mlp.{k}" for k in ("encoder.weight", "encoder.bias",
                                                   "decoder.weight", "decoder.bias")})
    state = {own: tensors[key] for own, key in names.items()}
    joint = mha + "in_proj_weight" in tensors
    for i, n in enumerate("qkv"):
        key = mha + ("in_proj_weight" if joint else f"{n}_proj_weight")
        w = tensors[key]
        state[f"{n}.weight"], names[f"{n}.weight"] = (w[i * e:(i + 1) * e] if joint else w), key
        state[f"{n}.bias"] = tensors[mha + "in_proj_bias"][i * e:(i + 1) * e]
        names[f"{n}.bias"] = mha + "in_proj_bias"
    return state, names


def _load(module: nn.Module, state: dict, where: str, prefix: str,
          names: dict[str, str] | None = None) -> None:
    """Load ``state`` into ``module``; InputError naming (as the checkpoint names it) the
    first missing or misshapen tensor."""
    own = module.state_dict()
    names = names or {}
    missing = sorted(set(own) - set(state))
    if missing:
        raise InputError(f"{where}: no tensor {prefix}{names.get(missing[0], missing[0])}" + (
            f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; not an AstroCLIP checkpoint of this shape.")
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise InputError(f"{where}: {prefix}{names.get(key, key)} is "
                             f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)} for "
                             "the architecture the others give.")
    module.load_state_dict({k: state[k].to(torch.float32) for k in own})


def _spec_config(tensors: dict, hyper: Any, where: str) -> SpecFormerConfig:
    prefix = "spectrum_encoder.backbone."
    embed = _need(tensors, "data_embed.weight", where, prefix)
    positions = _need(tensors, "position_embed.weight", where, prefix)
    layers = len({k.split(".")[1] for k in tensors if k.startswith("blocks.")})
    path = ("spectrum_encoder", "backbone")
    heads = _int_setting(hyper, where, "SpecFormer's number of heads", (*path, "num_heads"))
    overlap = _setting(hyper, *path, "slice_overlap")
    return SpecFormerConfig(
        input_dim=int(embed.shape[1]), embed_dim=int(embed.shape[0]), num_layers=layers,
        num_heads=heads, max_len=int(positions.shape[0]),
        slice_section_length=int(embed.shape[1]) - 2,
        slice_overlap=int(overlap) if isinstance(overlap, int) else 10)


def _build(make, cfg, where: str) -> nn.Module:
    try:
        return make(cfg)
    except (ValueError, RuntimeError) as err:  # torch refuses impossible sizes with these
        raise InputError(f"{where}: unsupported architecture {cfg} ({err}).") from None


def astroclip_from_checkpoint(checkpoint: Any, where: str = "checkpoint"
                              ) -> dict[str, AstroClipEncoder]:
    """``{"image": ..., "spectrum": ...}``: the two encoders of an ``astroclip.ckpt`` as
    :func:`~astroembed.training.checkpoint.read_checkpoint` returns it. The architecture
    comes from the tensor shapes, the numbers of heads from the pickled modules'
    attributes. InputError names what does not fit."""
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{where}: no state_dict; not an AstroCLIP checkpoint.")
    hyper = checkpoint.get("hyper_parameters", {})
    if not any(str(k).startswith("image_encoder.") for k in state) or not any(
            str(k).startswith("spectrum_encoder.") for k in state):
        raise InputError(f"{where}: no image_encoder.* and spectrum_encoder.* tensors; not an "
                         "AstroCLIP checkpoint (a SpecFormer one imports as kind specformer).")
    vit_t, vit_names = _vit_tensors(_tensors(state, "image_encoder.backbone."))
    vit_cfg = _vit_config(vit_t, hyper, where)
    spec_t = _tensors(state, "spectrum_encoder.backbone.")
    spec_cfg = _spec_config(spec_t, hyper, where)
    encoders = {}
    for modality, backbone, tensors, names in (
            ("image", _build(ViTBackbone, vit_cfg, where), vit_t, vit_names),
            ("spectrum", _build(SpecFormer, spec_cfg, where), spec_t, {})):
        _load(backbone, tensors, where, f"{modality}_encoder.backbone.", names)
        head_t = _tensors(state, f"{modality}_encoder.")
        head_cfg = _head_config(head_t, hyper, modality, where)
        if head_cfg.embed_dim % head_cfg.heads:
            raise InputError(f"{where}: unsupported architecture: the {modality} head's width "
                             f"{head_cfg.embed_dim} is not a multiple of its {head_cfg.heads} "
                             "heads.")
        head = CrossAttentionHead(head_cfg)
        try:
            head_state, head_names = _head_state(head_t, head_cfg)
        except KeyError as err:
            raise InputError(f"{where}: no tensor {modality}_encoder.{err.args[0]}; not an "
                             "AstroCLIP checkpoint of the published layout.") from None
        _load(head, head_state, where, f"{modality}_encoder.", head_names)
        if modality == "spectrum":
            backbone = _SpecFormerTokens(backbone)
        encoders[modality] = AstroClipEncoder(backbone, head).eval()
    if encoders["image"].head.cfg.embed_dim != encoders["spectrum"].head.cfg.embed_dim:
        raise InputError(f"{where}: the image and spectrum heads give embeddings of different "
                         "widths; not an AstroCLIP pair.")
    return encoders


def parameter_count(module: nn.Module) -> int:
    """Parameters of a module (what the card and the benchmark report)."""
    return sum(int(p.numel()) for p in module.parameters())
