"""Batch-1 CPU latency of the Theia encoders, ours vs a ``transformers.ViTModel`` reference.

For each size (Tiny/Small/Base) both models are built with the same configuration (patch 16,
224 x 224, 12 blocks, LayerNorm eps 1e-12, no pooler) and timed in the same process,
interleaved call by call so machine noise hits both alike; the table reports p50/p90 in ms
and the ratio ours / reference (absolute times on a shared machine are noisy, ratios less
so). Also printed: parameter counts (backbone; and + a 1000-class head, as the paper and the
DeiT tables count them) and MACs per image, computed analytically and counted with
``torch.utils.flop_counter`` (MACs = FLOPs / 2), which must agree.

Example::

    python benchmarks/encoder_latency.py --quick          # < 1 min
    python benchmarks/encoder_latency.py --threads 2 --out latency.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from policies.encoder import ENCODERS, EncoderConfig, create_encoder

IMAGENET_CLASSES = 1000


def analytic_macs(cfg: EncoderConfig) -> int:
    """Multiply-accumulates per image of the backbone (no head).

    Patch embedding ``P * 3 * p^2 * C``; per block with N = P + 1 + registers tokens:
    qkv ``3 N C^2``, scores and weighted sum ``2 N^2 C``, projection ``N C^2``, MLP
    ``8 N C^2`` (= 12 N C^2 + 2 N^2 C). LayerNorm, GELU and softmax are not counted.
    """
    c, p = cfg.embed_dim, cfg.num_spatial_tokens
    n = p + 1 + cfg.num_reg_tokens
    patch = p * 3 * cfg.patch_size ** 2 * c
    block = 12 * n * c * c + 2 * n * n * c
    return patch + cfg.depth * block


def counted_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """MACs from torch's FLOP counter (matmuls, convolutions, attention) / 2."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() // 2


def reference_vit(cfg: EncoderConfig) -> torch.nn.Module:
    """``transformers.ViTModel`` with the DeiT config of ``cfg`` (random weights)."""
    from transformers import ViTConfig, ViTModel

    hf_cfg = ViTConfig(hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth,
                       num_attention_heads=cfg.num_heads, intermediate_size=4 * cfg.embed_dim,
                       image_size=cfg.img_size, patch_size=cfg.patch_size,
                       layer_norm_eps=cfg.ln_eps, qkv_bias=True)
    return ViTModel(hf_cfg, add_pooling_layer=False).eval()


def time_pair(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor, warmup: int,
              reps: int) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved timings (seconds) of ``ours(x)`` and ``ref(pixel_values=x)``."""
    t_ours, t_ref = [], []
    with torch.inference_mode():
        for i in range(warmup + reps):
            for model, sink, kwargs in ((ours, t_ours, {}), (ref, t_ref, {"pixel_values": x})):
                start = time.perf_counter()
                model(**kwargs) if kwargs else model(x)
                if i >= warmup:
                    sink.append(time.perf_counter() - start)
    return np.array(t_ours), np.array(t_ref)


def run(sizes: list[str], reps: dict[str, int], warmup: int, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = []
    x = torch.randn(1, 3, 224, 224)
    for name in sizes:
        ours = create_encoder(name)
        cfg = ours.config
        ref = reference_vit(cfg)
        with torch.inference_mode():  # same architecture: identical output shapes
            assert ref(pixel_values=x).last_hidden_state[:, 1:].shape == ours(x).shape
        params = sum(p.numel() for p in ours.parameters())
        head = cfg.embed_dim * IMAGENET_CLASSES + IMAGENET_CLASSES
        t_ours, t_ref = time_pair(ours, ref, x, warmup, reps[name])
        row = {
            "model": name, "threads": threads, "reps": reps[name],
            "params_m": params / 1e6, "params_with_head_m": (params + head) / 1e6,
            "gmacs_analytic": analytic_macs(cfg) / 1e9,
            "gmacs_counted": counted_macs(ours, x) / 1e9,
            "gmacs_counted_ref": counted_macs(ref, x) / 1e9,
            "ours_p50_ms": float(np.percentile(t_ours, 50) * 1e3),
            "ours_p90_ms": float(np.percentile(t_ours, 90) * 1e3),
            "ref_p50_ms": float(np.percentile(t_ref, 50) * 1e3),
            "ref_p90_ms": float(np.percentile(t_ref, 90) * 1e3),
        }
        row["ratio_p50"] = row["ours_p50_ms"] / row["ref_p50_ms"]
        rows.append(row)
        del ours, ref
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'model':<12}{'params M':>9}{'+head M':>9}{'GMACs':>8}{'counted':>9}"
            f"{'ours p50/p90 ms':>18}{'HF ViT p50/p90 ms':>20}{'ours/HF p50':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<12}{r['params_m']:>9.2f}{r['params_with_head_m']:>9.2f}"
            f"{r['gmacs_analytic']:>8.2f}{r['gmacs_counted']:>9.2f}"
            f"{r['ours_p50_ms']:>10.1f} /{r['ours_p90_ms']:>6.1f}"
            f"{r['ref_p50_ms']:>12.1f} /{r['ref_p90_ms']:>6.1f}{r['ratio_p50']:>13.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few repetitions (< 1 min)")
    parser.add_argument("--sizes", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    reps = ({"theia_tiny": 15, "theia_small": 8, "theia_base": 4} if args.quick
            else {"theia_tiny": 100, "theia_small": 50, "theia_base": 20})
    warmup = 1 if args.quick else 5
    rows = run(args.sizes, reps, warmup, args.threads)
    print(f"batch 1, 224x224, CPU, {args.threads} thread(s), torch {torch.__version__}; "
          "reference: transformers.ViTModel (same config, no pooler)")
    print(format_table(rows))
    for r in rows:
        if abs(r["gmacs_analytic"] - r["gmacs_counted"]) > 1e-6 * r["gmacs_analytic"]:
            print(f"WARNING {r['model']}: analytic and counted MACs differ")
    if args.out:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
