"""Import a published model checkpoint as an astroembed model directory (torch needed).

A foreign checkpoint becomes what ``astroembed export`` writes for astroembed's own models:
ONNX encoders with the contract in their metadata (:mod:`astroembed.runtime.modelfile`),
``model.json`` and a generated ``MODEL_CARD.md``, all in one directory that appears complete
or not at all, after a parity check of ONNX Runtime against the torch module built from the
checkpoint. The checkpoint is read without running its pickle
(:func:`astroembed.training.checkpoint.read_checkpoint`).

Kinds (:data:`IMPORT_KINDS`):

- ``specformer``, AstroCLIP's spectrum backbone (``specformer.ckpt``), whose zero-shot
  embedding (the mean over its output tokens) fills the spectrum column from the raw catalog
  flux (preprocessing kind ``desi_flux``);
- ``astroclip``, the joint model (``astroclip.ckpt``): an image encoder fed AstroCLIP's
  colour-mapped 144-pixel crops of 152-pixel cutouts (preprocessing kind ``astroclip_rgb``,
  run in NumPy by ``embed``) and a spectrum encoder fed the raw flux (``desi_flux``), both
  giving embeddings in one shared space (:mod:`astroembed.training.astroclip`).

Each kind is one function of :data:`_IMPORTERS` returning the encoders to write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astroembed.errors import ConfigError, InputError, did_you_mean
from astroembed.catalog.atomic import atomic_directory
from astroembed.catalog.outputs import MODEL, claim_directory, may_replace
from astroembed.runtime.modelfile import CONTRACT_VERSION, open_encoder
from astroembed.runtime.preprocess import (astroclip_image_preprocessing, flux_preprocessing,
                                           rgb_inputs)
from astroembed.stamps import utc_now

__all__ = ["IMPORT_KINDS", "import_model"]

log = logging.getLogger("astroembed")

IMPORT_KINDS = ("specformer", "astroclip")
#: Rows of the parity batch, which is also the batch the CPU speed is measured on.
PARITY_ROWS = 4
LICENCE = "MIT"


@dataclass
class Imported:
    """One encoder of an imported model, ready to export: the export module, the torch
    module the ONNX output is checked against, and its contract."""

    modality: str
    export_module: object
    reference_module: object
    example: tuple
    input_names: list[str]
    inputs: list[dict]
    preprocessing: dict
    model_hash: str


@dataclass
class ImportPlan:
    """What an importer made of a checkpoint: the encoders and what the card says."""

    model_name: str
    embedding_dim: int
    encoders: list[Imported]
    architecture: dict
    description: str
    training_data: str
    parity_inputs: str = "synthetic DESI-like spectra"
    card_notes: list[str] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (what a download's published checksum is compared with)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parity_spectra(rows: int, n_wave: int) -> np.ndarray:
    """Deterministic DESI-like test spectra ``(rows, n_wave)``: a sloped continuum of varied
    brightness (one faint enough for SpecFormer's clipped spread), emission lines and noise.
    No data ship with astroembed, and the check needs spectra the model can tell apart."""
    rng = np.random.default_rng(20240501)
    wave = np.linspace(0.0, 1.0, n_wave)
    level = np.geomspace(0.05, 30.0, rows)[:, None]
    flux = level * (1.5 - 0.8 * wave) * (1 + 0.2 * rng.normal(size=(rows, 1)) * wave)
    for centre in rng.uniform(0.05, 0.95, (3,)):
        flux += level * rng.uniform(0.5, 3.0, (rows, 1)) * np.exp(
            -0.5 * ((wave - centre) / 4e-4) ** 2)
    flux += rng.normal(0, 1, flux.shape) * np.sqrt(level) * 0.3
    return flux.astype(np.float32)


# ----------------------------------------------------------------------------- SpecFormer

def _is_astroclip(state: dict) -> bool:
    return any(str(k).startswith(("image_encoder.", "spectrum_encoder.")) for k in state)


def _plan_specformer(checkpoint: dict, where: str) -> ImportPlan:
    """AstroCLIP's SpecFormer: the raw flux in, the L2-normalised mean token out."""
    import torch

    from astroembed.training.export import weights_hash
    from astroembed.training.specformer import (SpecFormerEmbedding, SpecFormerExportForm,
                                                specformer_from_checkpoint)

    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if isinstance(state, dict) and _is_astroclip(state):
        raise InputError(f"{where}: an AstroCLIP checkpoint (image and spectrum encoders), not "
                         "a SpecFormer one; import it as kind astroclip.")
    model = specformer_from_checkpoint(checkpoint, where)
    prep = flux_preprocessing()
    n_wave = int(prep["n_wave"])
    try:
        form = SpecFormerExportForm(model, n_wave).eval()
    except ValueError as err:
        raise InputError(f"{where}: unsupported SpecFormer: {err} (the DESI coadd grid has "
                         f"{n_wave} pixels).") from None
    cfg = model.cfg
    example = (torch.from_numpy(parity_spectra(PARITY_ROWS, n_wave))[..., None],)
    params = sum(int(t.numel()) for t in model.state_dict().values())
    return ImportPlan(
        model_name="astroclip-specformer", embedding_dim=cfg.embed_dim,
        encoders=[Imported(
            modality="spectrum", export_module=form,
            reference_module=SpecFormerEmbedding(model).eval(), example=example,
            input_names=["flux"], inputs=[{"name": "flux", "shape": ["batch", n_wave, 1]}],
            preprocessing=prep, model_hash=weights_hash(model))],
        architecture={"embed_dim": cfg.embed_dim, "num_layers": cfg.num_layers,
                      "num_heads": cfg.num_heads, "max_len": cfg.max_len,
                      "input_dim": cfg.input_dim,
                      "slice_section_length": cfg.slice_section_length,
                      "slice_overlap": cfg.slice_overlap, "tokens": cfg.windows(n_wave) + 1,
                      "parameters": params},
        description=(
            f"AstroCLIP's spectrum backbone SpecFormer (Parker et al. 2024, MNRAS 531, 4990): "
            f"a transformer of {cfg.num_layers} layers, width {cfg.embed_dim}, "
            f"{cfg.num_heads} heads, {params:,} parameters. The embedding is the mean over "
            "the final layer's tokens (how AstroCLIP's evaluation embeds spectra with "
            "SpecFormer alone), L2-normalised."),
        training_data=("as published with the checkpoint (AstroCLIP: self-supervised on DESI "
                       "spectra); astroembed did not train it"),
        card_notes=[
            "Inside the graph, as in the published model: each spectrum is standardised by "
            "its mean and standard deviation (ddof 1, at least 0.2), cut into windows of "
            f"{cfg.slice_section_length} pixels every "
            f"{cfg.slice_section_length - cfg.slice_overlap} (the last window dropped), and "
            "a leading token carries (mean - 2) / 2 and (std - 2) / 8.",
            "The model reads the flux only (no ivar), as AstroCLIP fed it: masked pixels "
            "enter as the catalog stores them. A spectrum with a non-finite pixel, or all "
            "zeros, gets a null embedding.",
            "This encoder fills the spectrum column only: run `astroembed embed --modality "
            "spectrum`."])


# ----------------------------------------------------------------------------- AstroCLIP

def parity_cutouts(rows: int, size: int) -> np.ndarray:
    """Deterministic Legacy-Survey-like g, r, z cutouts ``(rows, 3, size, size)`` in
    nanomaggies: an elliptical galaxy of varied brightness, size and colour on sky noise, with
    a star off centre, so the check sees images the model can tell apart."""
    rng = np.random.default_rng(20240502)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((rows, 3, size, size), np.float32)
    for i in range(rows):
        q, angle, scale = rng.uniform(0.3, 1), rng.uniform(0, np.pi), rng.uniform(3, 15)
        u = x * np.cos(angle) + y * np.sin(angle)
        v = (-x * np.sin(angle) + y * np.cos(angle)) / q
        galaxy = np.exp(-np.hypot(u, v) / scale)
        star = np.exp(-0.5 * ((x - rng.uniform(-50, 50)) ** 2 + (y - rng.uniform(-50, 50)) ** 2)
                      / 1.5 ** 2)
        colour = np.array([0.4, 1.0, 1.8]) * rng.uniform(0.7, 1.3, 3)
        level = 10 ** rng.uniform(-1, 1.5)
        for b in range(3):
            noise = rng.normal(0, (0.005, 0.008, 0.02)[b], (size, size))
            out[i, b] = level * colour[b] * galaxy + 5 * star + noise
    return out


def _plan_astroclip(checkpoint: dict, where: str) -> ImportPlan:
    """AstroCLIP: both encoders, each L2-normalised into the shared 1024-d space."""
    import torch

    from astroembed.training.astroclip import (astroclip_from_checkpoint, export_form,
                                               parameter_count)
    from astroembed.training.export import weights_hash

    encoders = astroclip_from_checkpoint(checkpoint, where)
    img_prep, spec_prep = astroclip_image_preprocessing(), flux_preprocessing()
    crop, n_wave = int(img_prep["crop"]), int(spec_prep["n_wave"])
    image, spectrum = encoders["image"], encoders["spectrum"]
    vit, spec_cfg = image.backbone.cfg, spectrum.backbone.model.cfg
    if crop % vit.patch:
        raise InputError(f"{where}: unsupported architecture: patches of {vit.patch} pixels do "
                         f"not tile AstroCLIP's {crop}-pixel crops.")
    try:
        spectrum_form = export_form(spectrum, n_wave)
    except ValueError as err:
        raise InputError(f"{where}: unsupported SpecFormer: {err} (the DESI coadd grid has "
                         f"{n_wave} pixels).") from None
    pictures = rgb_inputs(parity_cutouts(PARITY_ROWS, int(img_prep["stamp"])), img_prep)[0]["image"]
    flux = parity_spectra(PARITY_ROWS, n_wave)[..., None]
    dim = image.head.cfg.embed_dim
    counts = {"image": parameter_count(image), "spectrum": parameter_count(spectrum)}
    parts = [
        Imported(modality="image", export_module=export_form(image), reference_module=image,
                 example=(torch.from_numpy(pictures),), input_names=["image"],
                 inputs=[{"name": "image", "shape": ["batch", 3, crop, crop]}],
                 preprocessing=img_prep, model_hash=weights_hash(image)),
        Imported(modality="spectrum", export_module=spectrum_form, reference_module=spectrum,
                 example=(torch.from_numpy(flux),), input_names=["flux"],
                 inputs=[{"name": "flux", "shape": ["batch", n_wave, 1]}],
                 preprocessing=spec_prep, model_hash=weights_hash(spectrum))]
    head = image.head.cfg
    architecture = {
        "image": {"backbone": "vit", "width": vit.width, "depth": vit.depth,
                  "heads": vit.heads, "patch": vit.patch, "mlp_hidden": vit.mlp_hidden,
                  "layerscale": vit.layerscale, "tokens": (crop // vit.patch) ** 2,
                  "head_heads": head.heads, "parameters": counts["image"]},
        "spectrum": {"backbone": "specformer", "width": spec_cfg.embed_dim,
                     "layers": spec_cfg.num_layers, "heads": spec_cfg.num_heads,
                     "max_len": spec_cfg.max_len, "tokens": spec_cfg.windows(n_wave) + 1,
                     "head_heads": spectrum.head.cfg.heads, "parameters": counts["spectrum"]},
        "embedding_dim": dim, "normalisation_eps": 1e-3}
    return ImportPlan(
        model_name="astroclip", embedding_dim=dim, encoders=parts, architecture=architecture,
        description=(
            "AstroCLIP (Parker et al. 2024, MNRAS 531, 4990): images and spectra embedded "
            f"into one {dim}-d space, aligned contrastively. Image encoder: a DINOv2 vision "
            f"transformer (width {vit.width}, {vit.depth} blocks, {vit.heads} heads, "
            f"{vit.patch}-pixel patches; {counts['image']:,} parameters with its head). "
            f"Spectrum encoder: SpecFormer (width {spec_cfg.embed_dim}, "
            f"{spec_cfg.num_layers} layers, {spec_cfg.num_heads} heads; "
            f"{counts['spectrum']:,} parameters with its head). Each ends in a learned query "
            "attending to the tokens and an MLP; the embedding is L2-normalised."),
        training_data=("as published with the checkpoint (AstroCLIP: DESI EDR spectra "
                       "cross-matched with Legacy Survey DR9 g, r, z cutouts); astroembed did "
                       "not train it"),
        parity_inputs="synthetic galaxy cutouts (image) and DESI-like spectra (spectrum)",
        card_notes=[
            f"Images: g, r, z cutouts in nanomaggies of {img_prep['stamp']}x"
            f"{img_prep['stamp']} pixels (larger ones are centre-cropped to "
            f"{img_prep['stamp']} first; smaller ones are refused). `embed` maps them to "
            "colour as AstroCLIP did (the Legacy Survey viewer's arcsinh map: z, r, g on "
            "planes 0, 1, 2, scales 2.2, 3.4, 6.0, m = 0.03, Q = 20), swaps height and width "
            f"as AstroCLIP's data loader does, and keeps the central {crop}x{crop} pixels. "
            "A cutout with a non-finite pixel, or all zeros, gets a null embedding.",
            "Spectra: the flux alone on the DESI coadd grid (7781 pixels); SpecFormer "
            "standardises and windows it inside the graph, as in the published model. A "
            "spectrum with a non-finite pixel, or all zeros, gets a null embedding.",
            "Both encoders write to one space: `astroembed embed` fills embedding_image and "
            "embedding_spectrum, and `astroembed search --from image --to spectrum` compares "
            "them directly."])


_IMPORTERS: dict[str, Callable[[dict, str], ImportPlan]] = {
    "specformer": _plan_specformer, "astroclip": _plan_astroclip}


# ----------------------------------------------------------------------------- writing

def _metadata(plan: ImportPlan, enc: Imported, version: str, source: dict) -> dict:
    return {
        "astroembed_contract": CONTRACT_VERSION, "modality": enc.modality,
        "model_name": plan.model_name, "model_version": version,
        "model_hash": enc.model_hash, "embedding_dim": plan.embedding_dim,
        "inputs": json.dumps(enc.inputs), "output": "embedding",
        "preprocessing": json.dumps(enc.preprocessing),
        "training_data": (f"{plan.training_data}; imported from {source['file']} (sha256 "
                          f"{source['sha256']})"),
        "training_data_hash": "unknown", "licence": LICENCE,
        "source_file": source["file"], "source_sha256": source["sha256"],
        "created": utc_now(),
    }


def _rows_per_second(path: Path, enc: Imported) -> float:
    """CPU rows/s of the written encoder on the parity batch (one warm-up run first), with
    the session ``embed`` would open."""
    encoder = open_encoder(path, device="cpu")
    feeds = {n: t.numpy() for n, t in zip(enc.input_names, enc.example)}
    encoder.run(feeds)
    start = time.perf_counter()
    encoder.run(feeds)
    return len(enc.example[0]) / max(time.perf_counter() - start, 1e-9)


def _card(plan: ImportPlan, kind: str, source: dict, version: str, encoders: dict) -> str:
    """``MODEL_CARD.md`` of an imported model: where it came from and how it is fed."""
    lines = [f"# Model card: {plan.model_name} {version} (imported)", "",
             plan.description, "",
             "## Source", "",
             f"- Imported with `astroembed import-model {kind}` from `{source['file']}` "
             f"({source['bytes']:,} bytes).",
             f"- SHA-256 of that file: `{source['sha256']}`.",
             f"- Licence: {LICENCE}, as AstroCLIP publishes its code and weights.",
             f"- Training data: {plan.training_data}.", "",
             "## Encoders", "",
             "| file | modality | inputs | preprocessing | embedding | parity | CPU rows/s |",
             "|---|---|---|---|---|---|---:|"]
    for enc in plan.encoders:
        e = encoders[enc.modality]
        shapes = "; ".join(f"`{i['name']}` ({', '.join(map(str, i['shape']))}) float32"
                           for i in enc.inputs)
        prep = ", ".join(f"{k}={v}" for k, v in enc.preprocessing.items())
        lines.append(f"| `{e['file']}` | {enc.modality} | {shapes} | {prep} | "
                     f"{plan.embedding_dim}-d, L2-normalised | "
                     f"max abs {e['parity_max_abs_diff']:.1e} | "
                     f"{e['cpu_rows_per_second']:.3g} |")
    lines += ["", "## Inputs and preprocessing", ""]
    lines += [f"- {note}" for note in plan.card_notes]
    lines += ["", "## Checks at import", "",
              f"- Parity: ONNX Runtime against the torch module built from the checkpoint on "
              f"{PARITY_ROWS} {plan.parity_inputs} (max |difference| of the "
              "L2-normalised embeddings at most 1e-4, else nothing is written).",
              f"- CPU rows/s: ONNX Runtime on this machine ({os.cpu_count()} cores), the "
              f"second run of a batch of {PARITY_ROWS} rows.",
              f"- Architecture: {json.dumps(plan.architecture)}.", ""]
    return "\n".join(lines)


def import_model(kind: str, checkpoint: str | os.PathLike, out: str | os.PathLike,
                 overwrite: bool = False) -> dict:
    """Write the model directory ``out`` (ONNX encoders, ``model.json``, ``MODEL_CARD.md``)
    for the published checkpoint ``checkpoint`` of ``kind``; returns what was written.
    ConfigError for an unknown kind, InputError for a checkpoint that is not one of ``kind``
    (nothing is written), OutputError for an ``out`` that may not be replaced."""
    from astroembed.training.checkpoint import read_checkpoint
    from astroembed.training.export import _check_parity, _export_one

    if kind not in _IMPORTERS:
        raise ConfigError(f"kind {kind!r}: astroembed imports {', '.join(IMPORT_KINDS)}."
                          + did_you_mean(str(kind), IMPORT_KINDS))
    checkpoint, out = Path(checkpoint), Path(out)
    if checkpoint.is_dir():
        raise InputError(f"{checkpoint}: a directory; CHECKPOINT is the {kind} checkpoint "
                         "file.")
    claim_directory(out, MODEL, overwrite=overwrite, option="--out")
    payload = read_checkpoint(checkpoint)
    plan = _IMPORTERS[kind](payload, str(checkpoint))
    sha = file_sha256(checkpoint)
    source = {"kind": kind, "file": checkpoint.name, "sha256": sha,
              "bytes": checkpoint.stat().st_size}
    version = f"sha256-{sha[:12]}"
    result = {"out": str(out), "model_name": plan.model_name, "model_version": version,
              "embedding_dim": plan.embedding_dim, "source": source, "licence": LICENCE,
              "encoders": {}}
    with atomic_directory(out, lambda p: may_replace(p, MODEL, "--out")) as tmp:
        tmp = Path(tmp)
        for enc in plan.encoders:
            file = tmp / f"{enc.modality}.onnx"
            _export_one(enc.export_module, enc.example, enc.input_names, file,
                        _metadata(plan, enc, version, source))
            diff = _check_parity(file, enc.reference_module, enc.example, enc.input_names)
            rate = _rows_per_second(file, enc)
            result["encoders"][enc.modality] = {
                "file": file.name, "model_hash": enc.model_hash, "parity_max_abs_diff": diff,
                "cpu_rows_per_second": rate, "bytes": file.stat().st_size,
                "preprocessing": enc.preprocessing, "inputs": enc.inputs}
            log.info("%s encoder: parity %.2e, %.3g rows/s on CPU", enc.modality, diff, rate)
        manifest = {k: result[k] for k in ("model_name", "model_version", "embedding_dim",
                                           "source", "licence", "encoders")}
        manifest["architecture"] = plan.architecture
        (tmp / "model.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text(_card(plan, kind, source, version,
                                                 result["encoders"]), encoding="utf-8")
    return result
