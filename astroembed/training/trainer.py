"""Training the encoder pair from a cross-matched catalog (torch; used by `train` only).

Two stages, as AstroCLIP does:

1. **Spectrum pretraining** on spectra alone, two self-supervised objectives at once:
   masked reconstruction (hide runs of patches, predict their z-scored flux from the rest),
   and agreement between two *independent* views of each spectrum: the even and the odd
   pixels of the coadd grid, which carry the same galaxy under independent noise (InfoNCE
   between their embeddings, with the scalar shortcuts of depth and flux level jittered
   away). Redshift is what makes one part of a spectrum predictable from another and what
   tells one galaxy's spectrum from another's, so the encoder learns it here; contrastive
   alignment with images alone would not reward it directly (images know redshift only
   roughly).
2. **Alignment**: symmetric InfoNCE between image and spectrum embeddings with a fixed logit
   scale (AstroCLIP: 15.5). The pretrained spectrum encoder is locked (as in LiT, Zhai et
   al. 2022: its embeddings are computed once), so alignment trains the image encoder to
   land where its spectrum is; images get random flips, quarter turns and extra noise.

Every epoch uses AdamW with linear warm-up and cosine decay, its randomness drawn from
``numpy.random.default_rng([seed, stage, epoch])``, and ends with an atomic checkpoint that
carries the config; ``resume`` continues from the last one and gives the same model as an
uninterrupted run. Checkpoints are loaded with ``weights_only=True`` (no unpickling).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from astroembed.errors import ConfigError, InputError, InterruptedRun, OutputError
from astroembed.catalog.atomic import atomic_path
from astroembed.training.recipe import (EMBED_DIM, SPECTRUM_BIN, ImageEncoderConfig,
                                        ImageEncoderShape, SpectrumEncoderConfig,
                                        SpectrumEncoderShape)
from astroembed.runtime.preprocess import (default_image_preprocessing, default_spectrum_preprocessing,
                                   image_inputs, spectrum_inputs, spectrum_length)

log = logging.getLogger("astroembed")

CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"
SUMMARY = "training.json"
Progress = Callable[[str, int, int, dict], None]  # (stage, step, total, metrics)


@dataclass
class TrainConfig:
    """What ``astroembed train`` does; the defaults are the shipped model's recipe
    (``pipelines/default-model.toml`` writes them out, and a test keeps the two equal)."""

    catalog: str = ""  # the cross-matched catalog to learn from
    out: str = ""  # the training directory (checkpoints, model.pt, training.json)
    seed: int = 0
    max_rows: int = 0  # 0 = all rows of the catalog
    val_fraction: float = 0.1  # rows held out (by a hash of the ID) for validation
    batch_size: int = 256
    # Stage 1, the spectrum encoder alone: masked reconstruction + two-view InfoNCE. The view
    # loss was still falling at 20 epochs; see docs/MODEL_CARD.md for each step to 50.
    pretrain_epochs: int = 50
    pretrain_lr: float = 1e-3
    mask_fraction: float = 0.3  # fraction of the tokens hidden per spectrum
    mask_span: int = 2  # tokens (40 bins) per masked span: longer than the continuum interpolates
    view_weight: float = 0.2  # weight of the two-view InfoNCE against masked reconstruction
    view_jitter: float = 0.25  # relative jitter of trust and flux level between the two views
    # Stage 2, the image encoder aligned to the locked spectrum encoder (symmetric InfoNCE).
    align_epochs: int = 16
    align_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05  # of each stage's steps, linear warm-up before cosine decay
    logit_scale: float = 15.5  # InfoNCE logit scale (1 / temperature), not learnt
    image_noise: float = 0.02  # largest sigma of the noise added to stretched images
    threads: int = 0  # 0 = torch's default (all cores)
    model_name: str = "astroembed-sim"
    model_version: str = "1.4.0"
    crop: int = ImageEncoderConfig.crop  # image pixels square the encoder sees
    spectrum_bin: int = SPECTRUM_BIN  # DESI pixels per spectrum bin
    embed_dim: int = EMBED_DIM  # width of the shared embedding space
    # The encoders' shapes (the [spectrum] and [image] tables of a config file; a table
    # overrides single keys): training/recipe.py holds the defaults with their reasons.
    spectrum: SpectrumEncoderShape = field(default_factory=SpectrumEncoderShape)
    image: ImageEncoderShape = field(default_factory=ImageEncoderShape)

    def __post_init__(self):
        from astroembed.config import from_mapping

        # Tables given as plain dicts (Python callers, stored checkpoints) are read as a
        # config file's tables are: unknown keys refused, defaults for the keys left out.
        if isinstance(self.spectrum, dict):
            self.spectrum = from_mapping(SpectrumEncoderShape, self.spectrum, "[spectrum]")
        if isinstance(self.image, dict):
            self.image = from_mapping(ImageEncoderShape, self.image, "[image]")

    def validate(self) -> None:
        if not self.catalog:
            raise ConfigError("train: --catalog is required.")
        if not self.out:
            raise ConfigError("train: --out is required.")
        if self.batch_size < 2:
            raise ConfigError(f"--batch-size must be at least 2 (got {self.batch_size}).")
        if not 0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5) (got {self.val_fraction}).")
        if self.pretrain_epochs < 0 or self.align_epochs < 1:
            raise ConfigError("pretrain_epochs must be >= 0 and align_epochs >= 1.")
        if not 0 < self.mask_fraction < 1:
            raise ConfigError(f"mask_fraction must be in (0, 1) (got {self.mask_fraction}).")
        for section in ("spectrum", "image"):
            try:
                self.encoder_config(section)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"[{section}]: {err}") from None

    def preprocessing(self) -> tuple[dict, dict]:
        """(image, spectrum) preprocessing dicts, as the exported metadata will declare."""
        return (default_image_preprocessing(self.crop),
                default_spectrum_preprocessing(self.spectrum_bin))

    def encoder_config(self, modality: str):
        """The ImageEncoderConfig or SpectrumEncoderConfig built from this config."""
        if modality == "image":
            return ImageEncoderConfig.from_shape(self.image, self.crop, self.embed_dim)
        length = spectrum_length(default_spectrum_preprocessing(self.spectrum_bin))
        return SpectrumEncoderConfig.from_shape(self.spectrum, length, self.embed_dim)

    def encoder_configs(self):
        """(ImageEncoderConfig, SpectrumEncoderConfig) built from this config."""
        return self.encoder_config("image"), self.encoder_config("spectrum")


# ----------------------------------------------------------------------------- data

@dataclass
class TrainingData:
    """Preprocessed encoder inputs of the usable rows, in catalog order."""

    image: np.ndarray      # (N, 3, crop, crop)
    spectrum: np.ndarray   # (N, 2, L)
    stats: np.ndarray      # (N, 2)
    views: np.ndarray      # (N, 2, 2, L): even-pixel and odd-pixel views of each spectrum
    view_stats: np.ndarray  # (N, 2, 2)
    redshift: np.ndarray   # (N,) for diagnostics only; never a training signal
    ids: np.ndarray        # (N,) int64
    dropped: dict
    digest: str            # sha256 of the rows used (IDs + inputs)
    source: str

    def __len__(self) -> int:
        return len(self.ids)


def _column_array(table, name: str, width: int) -> np.ndarray:
    column = table[name].combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), width)


def load_training_data(catalog: str | Path, cfg: TrainConfig,
                       id_column: str = "TARGETID") -> TrainingData:
    """Read image, flux, ivar (and Z, IDs) tile by tile, preprocess with the model's declared
    preprocessing, keep rows usable in both modalities."""
    from astroembed.catalog.reader import image_array, read_catalog_info, tile_batches

    info = read_catalog_info(catalog)
    needed = ["image", "flux", "ivar", id_column]
    missing = [c for c in needed if c not in info.schema.names]
    if missing:
        raise InputError(f"{catalog}: no column {', '.join(missing)}; training needs a "
                         "cross-matched catalog with images and spectra (astroembed crossmatch "
                         "of Legacy Survey cutouts with DESI coadds).")
    img_prep, spec_prep = cfg.preprocessing()
    parts: dict[str, list] = {k: [] for k in ("image", "spectrum", "stats", "views",
                                              "view_stats", "z", "ids")}
    dropped = {"image": 0, "spectrum": 0}
    digest = hashlib.sha256()
    n_wave = int(spec_prep["n_wave"])
    columns = needed + (["Z"] if "Z" in info.schema.names else [])
    total = 0
    for tile in info.tiles:
        for batch in tile_batches(catalog, *tile, columns, batch_size=2048):
            import pyarrow as pa

            table = pa.Table.from_batches([batch])
            table = table.filter(pa.compute.and_(pa.compute.is_valid(table["image"]),
                                                 pa.compute.is_valid(table["flux"])))
            if len(table) == 0:
                continue
            images = image_array(table["image"], (3, *table["image"].type.shape[1:])
                                 if hasattr(table["image"].type, "shape") else None)
            img, ok_img = image_inputs(images, img_prep)
            flux = _column_array(table, "flux", n_wave)
            ivar = _column_array(table, "ivar", n_wave)
            spec, ok_spec = spectrum_inputs(flux, ivar, spec_prep)
            views = []
            for parity in (0, 1):
                keep = (np.arange(n_wave) % 2 == parity)[None, :]
                view, ok_view = spectrum_inputs(flux, np.where(keep, ivar, 0.0), spec_prep)
                views.append(view)
                ok_spec = ok_spec & ok_view
            ok = ok_img & ok_spec
            dropped["image"] += int((~ok_img).sum())
            dropped["spectrum"] += int((ok_img & ~ok_spec).sum())
            ids = table[id_column].to_numpy()[ok].astype(np.int64)
            parts["image"].append(img["image"][ok])
            parts["spectrum"].append(spec["spectrum"][ok])
            parts["stats"].append(spec["stats"][ok])
            parts["views"].append(np.stack([v["spectrum"][ok] for v in views], axis=1))
            parts["view_stats"].append(np.stack([v["stats"][ok] for v in views], axis=1))
            parts["z"].append(table["Z"].to_numpy()[ok] if "Z" in columns
                              else np.full(ok.sum(), np.nan))
            parts["ids"].append(ids)
            for arr in (ids, spec["spectrum"][ok], img["image"][ok]):
                digest.update(np.ascontiguousarray(arr).tobytes())
            total += int(ok.sum())
            if cfg.max_rows and total >= cfg.max_rows:
                break
        if cfg.max_rows and total >= cfg.max_rows:
            break
    if total < 2 * cfg.batch_size:
        raise InputError(f"{catalog}: only {total} rows with a usable image and spectrum; "
                         f"training needs at least {2 * cfg.batch_size} (twice --batch-size).")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    n = cfg.max_rows or total
    return TrainingData(image=cat["image"][:n], spectrum=cat["spectrum"][:n],
                        stats=cat["stats"][:n], views=cat["views"][:n],
                        view_stats=cat["view_stats"][:n], redshift=cat["z"][:n], ids=cat["ids"][:n],
                        dropped=dropped, digest=digest.hexdigest(), source=str(catalog))


def path_name(path: str | Path) -> str:
    """The last component of ``path`` (of its absolute form, so ``.`` names the directory)."""
    return Path(path).absolute().name


def portable_summary(summary: dict) -> dict:
    """``summary`` with its catalog and output directories by name instead of by path.

    A trained model travels to other machines, where a path of the machine that trained it
    means nothing (and tells things about that machine); the catalog's name together with
    ``data_digest`` (a hash of the rows used) identifies the training data.
    """
    result = dict(summary)
    if result.get("catalog"):
        result["catalog"] = path_name(result["catalog"])
    if isinstance(result.get("config"), dict):
        result["config"] = {k: path_name(v) if k in ("catalog", "out") and v else v
                            for k, v in result["config"].items()}
    return result


def validation_mask(ids: np.ndarray, fraction: float) -> np.ndarray:
    """Rows held out for validation, chosen by a hash of the ID (stable across runs and row
    orders)."""
    x = ids.astype(np.uint64)
    with np.errstate(over="ignore"):  # splitmix64 wraps by design
        x = (x + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
    return (x % np.uint64(10_000)) < np.uint64(round(fraction * 10_000))


# ----------------------------------------------------------------------------- schedule

def lr_at(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up to ``peak``, then cosine decay to zero."""
    warm = max(1, int(total * warmup_fraction))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def _batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled epoch in full batches (the last partial batch is dropped; InfoNCE wants
    equal-size batches)."""
    order = rng.permutation(n)
    return [order[i:i + size] for i in range(0, n - size + 1, size)]


def span_mask(rng: np.random.Generator, n: int, tokens: int, fraction: float,
              span: int) -> np.ndarray:
    """(n, tokens) bool: about ``fraction`` of each row hidden in runs of ``span`` tokens, so
    a hidden patch cannot be filled in from its neighbours alone."""
    starts = rng.random((n, tokens)) < fraction / span
    mask = np.zeros((n, tokens), dtype=bool)
    for offset in range(span):
        mask[:, offset:] |= starts[:, :tokens - offset]
    return mask


def augment_images(x: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Random flips, quarter turns and Gaussian noise (sky orientation carries no meaning)."""
    out = np.empty_like(x)
    turns = rng.integers(0, 4, len(x))
    flips = rng.random(len(x)) < 0.5
    for k in range(4):
        for f in (False, True):
            sel = (turns == k) & (flips == f)
            if sel.any():
                y = np.rot90(x[sel], k, axes=(2, 3))
                out[sel] = y[:, :, :, ::-1] if f else y
    if noise > 0:
        sigma = rng.uniform(0, noise, (len(x), 1, 1, 1)).astype(np.float32)
        out = out + sigma * rng.standard_normal(out.shape, dtype=np.float32)
    return out


# ----------------------------------------------------------------------------- checkpoints

def _save(path: Path, payload: dict) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint or final model, without unpickling arbitrary objects."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint.") from None
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise InputError(f"{path}: not a readable astroembed checkpoint ({err}).") from None


def build_models(cfg: TrainConfig):
    """(image_encoder, spectrum_encoder), initialised from ``cfg.seed``."""
    import torch

    from astroembed.training.encoders import ImageEncoder, SpectrumEncoder

    torch.manual_seed(cfg.seed)
    image_cfg, spectrum_cfg = cfg.encoder_configs()
    return ImageEncoder(image_cfg), SpectrumEncoder(spectrum_cfg)


def config_from_checkpoint(payload: dict) -> TrainConfig:
    """The TrainConfig stored in a checkpoint."""
    from astroembed.config import from_mapping

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return from_mapping(TrainConfig, {k: v for k, v in payload["config"].items() if k in names},
                        source="the checkpoint's config")


# ----------------------------------------------------------------------------- training

def _tensor(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x))


def _jittered_view(data: TrainingData, idx: np.ndarray, view: int, rng: np.random.Generator,
                   jitter: float):
    """One view of rows ``idx`` with its trust channel and flux-level stats jittered, so the
    views can only be matched through the spectrum itself, not through the target's depth
    or brightness (which both views share exactly)."""
    x = data.views[idx, view].copy()
    stats = data.view_stats[idx, view].copy()
    if jitter > 0:
        scale = rng.uniform(1 - jitter, 1 + jitter, (len(idx), 1)).astype(np.float32)
        x[:, 1] = np.clip(x[:, 1] * scale, 0, 1)
        stats += rng.normal(0, jitter, stats.shape).astype(np.float32)
    return _tensor(x), _tensor(stats)


def _pretrain_loss(model, data: TrainingData, idx: np.ndarray, cfg: TrainConfig,
                   rng: np.random.Generator):
    """Masked reconstruction of one view + InfoNCE between the two views' embeddings."""
    from astroembed.training.encoders import info_nce

    order = rng.random(len(idx)) < 0.5  # which view is masked, per row
    xa, sa = _jittered_view(data, idx, 0, rng, cfg.view_jitter)
    xb, sb = _jittered_view(data, idx, 1, rng, cfg.view_jitter)
    first_x = _tensor(np.where(order[:, None, None], xa.numpy(), xb.numpy()))
    first_s = _tensor(np.where(order[:, None], sa.numpy(), sb.numpy()))
    second_x = _tensor(np.where(order[:, None, None], xb.numpy(), xa.numpy()))
    second_s = _tensor(np.where(order[:, None], sb.numpy(), sa.numpy()))
    mask = _tensor(span_mask(rng, len(idx), model.cfg.tokens, cfg.mask_fraction, cfg.mask_span))
    tokens = model.tokens(first_x, first_s, mask)
    recon = model.reconstruction_loss(tokens, first_x, mask)
    if cfg.view_weight <= 0:
        return recon, recon, recon * 0
    contrast = info_nce(model.head(tokens), model(second_x, second_s), cfg.logit_scale)
    return recon + cfg.view_weight * contrast, recon, contrast


def _pretrain_epoch(model, opt, data: TrainingData, train_idx, cfg: TrainConfig, epoch: int,
                    step0: int, total_steps: int, progress: Progress | None) -> dict:
    import torch

    rng = np.random.default_rng([cfg.seed, 1, epoch])
    model.train()
    losses = []
    for i, b in enumerate(_batches(len(train_idx), cfg.batch_size, rng)):
        idx = np.sort(train_idx[b])
        for group in opt.param_groups:
            group["lr"] = lr_at(step0 + i, total_steps, cfg.pretrain_lr, cfg.warmup_fraction)
        loss, recon, contrast = _pretrain_loss(model, data, idx, cfg, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append((loss.item(), recon.item(), contrast.item()))
        if progress:
            progress("pretrain", step0 + i + 1, total_steps,
                     {"loss": float(np.mean([x[0] for x in losses[-20:]]))})
    mean = np.mean(losses, axis=0)
    return {"loss": float(mean[0]), "reconstruction": float(mean[1]), "views": float(mean[2])}


def _pretrain_val(model, data: TrainingData, val_idx, cfg: TrainConfig) -> dict:
    """Validation losses and how often a view finds its other view in the top 1%."""
    import torch

    rng = np.random.default_rng([cfg.seed, 99])
    model.eval()
    sums, n = np.zeros(3), 0
    za, zb = [], []
    with torch.no_grad():
        for i in range(0, len(val_idx) - 1, cfg.batch_size):
            idx = val_idx[i:i + cfg.batch_size]
            if len(idx) < 2:
                break
            losses = _pretrain_loss(model, data, idx, cfg, rng)
            sums += np.array([x.item() for x in losses]) * len(idx)
            n += len(idx)
            za.append(model(*_jittered_view(data, idx, 0, rng, 0)).numpy())
            zb.append(model(*_jittered_view(data, idx, 1, rng, 0)).numpy())
    sums /= max(n, 1)
    return {"val_loss": float(sums[0]), "val_reconstruction": float(sums[1]),
            "val_views": float(sums[2]),
            "val_top1pct_view_to_view": retrieval_top_fraction(np.concatenate(za),
                                                               np.concatenate(zb))}


def _spectrum_embeddings(model, data: TrainingData, batch: int) -> np.ndarray:
    """Embeddings of the locked spectrum encoder for every row (computed once for alignment)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(data), batch):
            out.append(model(_tensor(data.spectrum[i:i + batch]),
                             _tensor(data.stats[i:i + batch])).numpy())
    return np.concatenate(out)


def _align_epoch(image_model, opt, params, data, spectra, train_idx,
                 cfg: TrainConfig, epoch: int, step0: int, total_steps: int,
                 progress: Progress | None) -> float:
    import torch

    from astroembed.training.encoders import info_nce

    rng = np.random.default_rng([cfg.seed, 2, epoch])
    image_model.train()
    losses = []
    for i, b in enumerate(_batches(len(train_idx), cfg.batch_size, rng)):
        idx = np.sort(train_idx[b])
        images = augment_images(data.image[idx], rng, cfg.image_noise)
        for group in opt.param_groups:
            group["lr"] = lr_at(step0 + i, total_steps, cfg.align_lr, cfg.warmup_fraction)
        zi = image_model(_tensor(images))
        zs = _tensor(spectra[idx])
        loss = info_nce(zi, zs, cfg.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if progress:
            progress("align", step0 + i + 1, total_steps, {"loss": float(np.mean(losses[-20:]))})
    return float(np.mean(losses))


def embed_arrays(image_model, spectrum_model, data: TrainingData, idx: np.ndarray,
                 batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(image, spectrum) embeddings of rows ``idx`` with the torch models (eval mode)."""
    import torch

    image_model.eval()
    spectrum_model.eval()
    zi, zs = [], []
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            j = idx[i:i + batch]
            zi.append(image_model(_tensor(data.image[j])).numpy())
            zs.append(spectrum_model(_tensor(data.spectrum[j]), _tensor(data.stats[j])).numpy())
    return np.concatenate(zi), np.concatenate(zs)


def retrieval_top_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Share of queries ``a[i]`` whose partner ``b[i]`` ranks in the top 1% by cosine
    similarity (the retrieval report's ``top1pct``)."""
    from astroembed.similarity import normalise, partner_ranks, retrieval_rates

    return retrieval_rates(partner_ranks(a, normalise(b)), len(b))["top1pct"]


def train(cfg: TrainConfig, resume: bool = False, progress: Progress | None = None) -> dict:
    """Train the encoder pair; writes ``checkpoint.pt`` each epoch and ``model.pt`` +
    ``training.json`` at the end. Returns the summary. Interrupted (SIGINT, SIGTERM), it
    raises :class:`InterruptedRun` saying which checkpoint it kept."""
    out = Path(cfg.out)
    existed = out.exists()
    try:
        return _train(cfg, resume, progress)
    except KeyboardInterrupt as err:
        raise _interrupted(err, out, existed) from None


def _interrupted(err: KeyboardInterrupt, out: Path, existed: bool) -> InterruptedRun:
    """What an interrupted training kept: the checkpoint of its last finished epoch."""
    from astroembed.catalog.outputs import human_bytes

    signal_name = getattr(err, "signal_name", "SIGINT")
    ckpt = out / CHECKPOINT
    if ckpt.is_file() and not (out / FINAL).exists():
        return InterruptedRun(
            f"{signal_name}: kept {ckpt} ({human_bytes(ckpt.stat().st_size)}), the checkpoint "
            "of the last finished epoch. Run the same command with --resume to continue from "
            f"it, or remove it with: rm {shlex.quote(str(ckpt))}")
    if not existed and out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    return InterruptedRun(f"{signal_name} before the first epoch finished; nothing was kept.")


def _train(cfg: TrainConfig, resume: bool, progress: Progress | None) -> dict:
    """:func:`train`'s work."""
    import torch

    cfg.validate()
    out = Path(cfg.out)
    ckpt_file = out / CHECKPOINT
    state = None
    if resume:
        if not ckpt_file.is_file():
            raise InputError(f"{ckpt_file}: nothing to resume (no checkpoint); run without "
                             "--resume to start.")
        state = load_checkpoint(ckpt_file)
        stored = config_from_checkpoint(state)
        if asdict(stored) != asdict(cfg):
            diff = [k for k in asdict(cfg) if asdict(cfg)[k] != asdict(stored).get(k)]
            raise ConfigError(f"--resume: the checkpoint in {out} was made with different "
                              f"settings ({', '.join(diff)}); use the same ones or a new --out.")
    elif (out / FINAL).exists() or ckpt_file.exists():
        raise OutputError(f"{out}: already holds a model or checkpoint; use --resume to "
                          "continue it or choose a new --out.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    started = time.time()

    data = load_training_data(cfg.catalog, cfg)
    out.mkdir(parents=True, exist_ok=True)  # after the catalog is read: a bad one leaves nothing
    val = validation_mask(data.ids, cfg.val_fraction)
    train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    log.info("training on %d rows, validating on %d (%s)", len(train_idx), len(val_idx),
             data.digest[:12])
    image_model, spectrum_model = build_models(cfg)
    history: list[dict] = []
    stage, epoch = "pretrain", 0
    if state is not None:
        if state.get("data_digest") != data.digest:
            raise ConfigError(f"--resume: the catalog's rows differ from those the checkpoint "
                              f"was trained on ({cfg.catalog}); resume needs the same data.")
        image_model.load_state_dict(state["image"])
        spectrum_model.load_state_dict(state["spectrum"])
        history = json.loads(state["history"])
        stage, epoch = state["stage"], int(state["epoch"])

    def checkpoint(stage_: str, epoch_: int, opt) -> None:
        _save(ckpt_file, {"config": asdict(cfg), "stage": stage_, "epoch": epoch_,
                          "image": image_model.state_dict(),
                          "spectrum": spectrum_model.state_dict(),
                          "optimizer": opt.state_dict(), "history": json.dumps(history),
                          "data_digest": data.digest})

    steps_per_epoch = len(train_idx) // cfg.batch_size
    # ---- stage 1: spectrum pretraining
    if stage == "pretrain" and cfg.pretrain_epochs:
        opt = torch.optim.AdamW(spectrum_model.parameters(), lr=cfg.pretrain_lr,
                                weight_decay=cfg.weight_decay)
        if state is not None and state["stage"] == "pretrain" and epoch > 0:
            opt.load_state_dict(state["optimizer"])
        total = steps_per_epoch * cfg.pretrain_epochs
        for e in range(epoch, cfg.pretrain_epochs):
            loss = _pretrain_epoch(spectrum_model, opt, data, train_idx, cfg, e,
                                   e * steps_per_epoch, total, progress)
            history.append({"stage": "pretrain", "epoch": e + 1, **loss,
                            **_pretrain_val(spectrum_model, data, val_idx, cfg)})
            log.info("pretrain epoch %d: %s", e + 1, history[-1])
            checkpoint("pretrain", e + 1, opt)
        stage, epoch = "align", 0
    elif stage == "pretrain":
        stage, epoch = "align", 0

    # ---- stage 2: alignment (spectrum encoder locked)
    for p in spectrum_model.parameters():
        p.requires_grad_(False)
    spectra = _spectrum_embeddings(spectrum_model, data, 512)
    params = list(image_model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.align_lr, weight_decay=cfg.weight_decay)
    if state is not None and state["stage"] == "align" and epoch > 0:
        opt.load_state_dict(state["optimizer"])
    total = steps_per_epoch * cfg.align_epochs
    for e in range(epoch, cfg.align_epochs):
        loss = _align_epoch(image_model, opt, params, data, spectra, train_idx,
                            cfg, e, e * steps_per_epoch, total, progress)
        zi, zs = embed_arrays(image_model, spectrum_model, data, val_idx)
        history.append({"stage": "align", "epoch": e + 1, "loss": loss,
                        "val_top1pct_image_to_spectrum": retrieval_top_fraction(zi, zs)})
        log.info("align epoch %d: %s", e + 1, history[-1])
        checkpoint("align", e + 1, opt)

    summary = portable_summary({"rows": len(data), "train_rows": int(len(train_idx)),
                                "val_rows": int(len(val_idx)), "dropped": data.dropped,
                                "data_digest": data.digest, "catalog": data.source,
                                "seconds": round(time.time() - started, 1),
                                "history": history, "config": asdict(cfg)})
    _save(out / FINAL, {"config": asdict(cfg), "stage": "done",
                        "image": image_model.state_dict(),
                        "spectrum": spectrum_model.state_dict(),
                        "data_digest": data.digest, "val_ids": _tensor(data.ids[val_idx]),
                        # a real batch for export's torch-vs-ONNX parity check
                        "parity_image": _tensor(data.image[val_idx[:64]]),
                        "parity_spectrum": _tensor(data.spectrum[val_idx[:64]]),
                        "parity_stats": _tensor(data.stats[val_idx[:64]]),
                        "summary": json.dumps({k: v for k, v in summary.items()
                                               if k != "history"})})
    with atomic_path(out / SUMMARY) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
