#!/usr/bin/env python
"""Import benchmark: ``import-model astroclip`` on a checkpoint of the full published architecture.

Usage (from the repository root):

    python bench/import_bench.py [--rows 16] [--batch-size 8] [--work DIR]
        [--out bench/results/import.json] [--keep]

The published ``astroclip.ckpt`` cannot be downloaded here, so the script builds one of the
same architecture with random weights, from astroembed's own modules
(:mod:`astroembed.training.astroclip`): the image backbone a DINOv2 ViT-L/12 (width 1024,
24 blocks, 16 heads, 144-pixel input, LayerScale initialised to 1e-5, blocks stored in 4
chunks with the unused class token, positional embedding and mask token beside them), the
spectrum backbone SpecFormer (768 wide, 6 layers, 6 heads, 800 positions), each with
AstroCLIP's head (one query, 4 heads, 1024-d, MLP 4096). The tensors are saved under the
published names (``image_encoder.backbone.blocks.<chunk>.<i>.``, ``multihead_attn.*``, ...),
and the numbers of heads as hyper-parameters (plain dicts here, the encoder modules
themselves in the published file: the reader takes either).

Then it times ``astroembed.import_model("astroclip", ...)`` (read, build, ONNX export,
parity, card), simulates ``--rows`` galaxies with 152-pixel cutouts, cross-matches them and
runs ``astroembed.embed`` once per encoder on the CPU, timing each. It writes ``--out`` (JSON)
and the same numbers as Markdown beside it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchpaths import cpu_name, portable

HERE = Path(__file__).resolve().parent
SEED = 20240601


def build_modules():
    """Random-weight encoders of the published architecture (astroembed's modules)."""
    import torch

    from astroembed.training.astroclip import CrossAttentionHead, HeadConfig, ViTBackbone, ViTConfig
    from astroembed.training.specformer import SpecFormer, SpecFormerConfig

    torch.manual_seed(SEED)
    vit = ViTBackbone(ViTConfig())
    with torch.no_grad():
        for block in vit.blocks:
            block.ls1.gamma.fill_(1e-5)
            block.ls2.gamma.fill_(1e-5)
    image_head = CrossAttentionHead(HeadConfig(embed_dim=1024, heads=4, token_dim=1024))
    spectrum = SpecFormer(SpecFormerConfig())
    spectrum_head = CrossAttentionHead(HeadConfig(embed_dim=1024, heads=4, token_dim=768,
                                                  residual=True))
    with torch.no_grad():
        for head in (image_head, spectrum_head):
            head.query.normal_()
    return vit, image_head, spectrum, spectrum_head


def _head_tensors(head, prefix: str) -> dict:
    """A head's tensors under nn.MultiheadAttention's and AstroCLIP's names."""
    import torch

    cfg, mha = head.cfg, f"{prefix}cross_attention.multihead_attn."
    out = {f"{prefix}cross_attention.query": head.query}
    if cfg.token_dim == cfg.embed_dim:
        out[mha + "in_proj_weight"] = torch.cat([head.q.weight, head.k.weight, head.v.weight])
    else:
        for n in "qkv":
            out[mha + f"{n}_proj_weight"] = getattr(head, n).weight
    out[mha + "in_proj_bias"] = torch.cat([head.q.bias, head.k.bias, head.v.bias])
    out[mha + "out_proj.weight"], out[mha + "out_proj.bias"] = head.out.weight, head.out.bias
    for p in ("weight", "bias"):
        out[f"{prefix}cross_attention.layernorm.{p}"] = getattr(head.layernorm, p)
        out[f"{prefix}mlp.encoder.{p}"] = getattr(head.mlp.encoder, p)
        out[f"{prefix}mlp.decoder.{p}"] = getattr(head.mlp.decoder, p)
    return out


def published_checkpoint(path: Path, chunks: int = 4) -> dict:
    """Save the full-size random model as ``astroclip.ckpt`` is laid out; its counts."""
    import torch

    vit, image_head, spectrum, spectrum_head = build_modules()
    cfg = vit.cfg
    per_chunk = cfg.depth // chunks
    state = {}
    for key, t in vit.state_dict().items():
        if key.startswith("blocks."):
            i, rest = key.split(".", 2)[1:]
            key = f"blocks.{int(i) // per_chunk}.{i}.{rest}"
        state[f"image_encoder.backbone.{key}"] = t
    tokens = (cfg.img_size // cfg.patch) ** 2
    state["image_encoder.backbone.cls_token"] = torch.zeros(1, 1, cfg.width)
    state["image_encoder.backbone.pos_embed"] = torch.randn(1, tokens + 1, cfg.width) * 0.02
    state["image_encoder.backbone.mask_token"] = torch.zeros(1, cfg.width)
    state.update(_head_tensors(image_head, "image_encoder."))
    state.update({f"spectrum_encoder.backbone.{k}": t for k, t in spectrum.state_dict().items()})
    state.update(_head_tensors(spectrum_head, "spectrum_encoder."))
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    hyper = {"image_encoder": {"backbone": {"num_heads": cfg.heads},
                               "cross_attention": {"multihead_attn": {"num_heads": 4}}},
             "spectrum_encoder": {"backbone": {"num_heads": spectrum.cfg.num_heads,
                                               "slice_overlap": spectrum.cfg.slice_overlap},
                                  "cross_attention": {"multihead_attn": {"num_heads": 4}}},
             "temperature": 15.5, "lr": 1e-4, "logit_scale": 15.5}
    torch.save({"state_dict": state, "hyper_parameters": hyper, "epoch": 0, "global_step": 0,
                "pytorch-lightning_version": "2.1.3", "optimizer_states": [],
                "lr_schedulers": [], "callbacks": {}, "loops": {}}, path)

    def count(prefix: str) -> int:
        return sum(int(v.numel()) for k, v in state.items() if k.startswith(prefix))

    return {"image_backbone": count("image_encoder.backbone."),
            "image_head": count("image_encoder.") - count("image_encoder.backbone."),
            "spectrum_backbone": count("spectrum_encoder.backbone."),
            "spectrum_head": count("spectrum_encoder.") - count("spectrum_encoder.backbone."),
            "total": count("")}


def machine() -> dict:
    import onnxruntime
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "load_avg_start": os.getloadavg()}


def embed_speed(model: Path, work: Path, rows: int, batch_size: int) -> dict:
    """CPU rows/s of ``embed`` per encoder on a simulated catalog of 152-pixel cutouts."""
    import astroembed

    survey, catalog = work / "survey", work / "matched"
    astroembed.simulate(survey, n_galaxies=rows, seed=1, cutout_size=152)
    astroembed.crossmatch(survey / "legacysurvey", survey / "desi", catalog)
    out = {}
    for modality in ("image", "spectrum"):
        start = time.perf_counter()
        summary = astroembed.embed(catalog, model=model, modality=modality, device="cpu",
                                   batch_size=batch_size)
        wall = time.perf_counter() - start
        done = summary["columns"][f"embedding_{modality}"]["embedded"]
        out[modality] = {"rows": done, "seconds": round(wall, 2),
                         "rows_per_second": round(done / wall, 3)}
    return out


def markdown(report: dict) -> str:
    p, m = report["parameters"], report["machine"]
    lines = [f"Run {report['date']} on {m['cpu']}, {m['cores']} cores (load average at start "
             f"{', '.join(f'{x:.1f}' for x in m['load_avg_start'])}).", "",
             f"`{report['command']}`", "",
             "| part | parameters |", "|---|---:|"]
    lines += [f"| {k.replace('_', ' ')} | {v:,} |" for k, v in p.items()]
    lines += ["", f"Checkpoint: {report['checkpoint_bytes'] / 1e9:.2f} GB; import "
              f"{report['import_seconds']:.0f} s; peak memory of the process up to then "
              f"{report['import_peak_rss_mb'] / 1024:.1f} GB.", "",
              "| encoder | ONNX size | parity max abs diff | import-time CPU rows/s (batch of 4) "
              "| `embed` CPU rows/s |", "|---|---:|---:|---:|---:|"]
    for modality, e in report["encoders"].items():
        s = report["embed"][modality]
        lines.append(f"| {modality} | {e['bytes'] / 1e6:.0f} MB | {e['parity_max_abs_diff']:.1e} "
                     f"| {e['cpu_rows_per_second']:.3g} | {s['rows_per_second']:.3g} "
                     f"({s['rows']} rows in {s['seconds']:.1f} s) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=16, help="simulated galaxies to embed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "import.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    import astroembed

    work = args.work or Path(tempfile.mkdtemp(prefix="astroembed-import-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "command": " ".join(["bench/import_bench.py", *sys.argv[1:]])}
    try:
        ckpt = work / "astroclip.ckpt"
        start = time.perf_counter()
        report["parameters"] = published_checkpoint(ckpt)
        report["build_seconds"] = round(time.perf_counter() - start, 1)
        report["checkpoint_bytes"] = ckpt.stat().st_size
        start = time.perf_counter()
        result = astroembed.import_model("astroclip", ckpt, work / "model", overwrite=True)
        report["import_seconds"] = round(time.perf_counter() - start, 1)
        # the process's high-water mark so far: building, saving and importing the model
        report["import_peak_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        report["embedding_dim"] = result["embedding_dim"]
        report["encoders"] = {m: {k: e[k] for k in ("bytes", "parity_max_abs_diff",
                                                     "cpu_rows_per_second")}
                              for m, e in result["encoders"].items()}
        ckpt.unlink()  # 1.5 GB not needed any more
        report["embed"] = embed_speed(work / "model", work, args.rows, args.batch_size)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = portable(report, work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
