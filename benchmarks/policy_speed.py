"""Policy speed on CPU: training throughput with cached vs recomputed features, head latency.

Training: samples/s of one optimiser step (batch 16, CNN-MLP; batch 32, diffusion) when the
frozen encoder's features come from the cache, against recomputing them from uint8 images
every step (preprocess + ViT forward) - the ratio is why ``train-policy`` caches.
Inference: latency of each head for one observation (features -> action chunk); the
diffusion head runs its 10 DDIM steps (target <= 100 ms on 2 cores for the default Spot
configuration); the encoder's own latency is the reference row.

Example::

    python benchmarks/policy_speed.py --quick --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable

import numpy as np
import torch

from policies.cnn_mlp import CnnMlpConfig
from policies.diffusion import DiffusionConfig
from policies.encoder import create_encoder
from policies.normalize import Normalizer
from policies.policy import PolicyConfig, build_policy
from policies.preprocess import preprocess
from theia_ros.runtime.bench import time_calls_ms

DIFFUSION_TARGET_MS = 100.0


def _time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Seconds per call."""
    return [t * 1e-3 for t in time_calls_ms(fn, repeats, warmup)]


def _policy(kind: str, encoder_name: str, state_dim: int = 7):
    encoder = create_encoder(encoder_name, seed=0)
    c = encoder.embed_dim
    head = (CnnMlpConfig(feature_dim=c, state_dim=state_dim, horizon=10) if kind == "cnn_mlp"
            else DiffusionConfig(feature_dim=c, state_dim=state_dim))
    norm = Normalizer.identity(state_dim, 7)
    cfg = PolicyConfig(kind, "ee_delta", state_dim, head.horizon)
    return build_policy(cfg, encoder, head, norm)


def training_throughput(kind: str, batch: int, repeats: int, encoder_name: str
                        ) -> dict[str, float]:
    """Samples/s of a training step from cached features and from images."""
    policy = _policy(kind, encoder_name)
    policy.encoder.requires_grad_(False).eval()
    opt = torch.optim.AdamW(policy.head.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    c, h = policy.encoder.embed_dim, policy.config.horizon
    cached = torch.from_numpy(rng.normal(size=(batch, 196, c)).astype(np.float16))
    images = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    state = torch.randn(batch, 7)
    actions = torch.randn(batch, h, 7)

    def step(features: torch.Tensor) -> None:
        loss = policy.compute_loss(features, state, actions)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def from_cache() -> None:
        step(cached.float())

    def from_images() -> None:
        with torch.no_grad():
            cfg = policy.encoder.config
            feats = policy.encoder.forward_features(preprocess(images, resize=cfg.resize))
        step(feats)

    # Interleaved, so both sides see the same background load of a shared machine.
    from_cache()
    from_images()
    cache_s, image_s = [], []
    for i in range(repeats):
        cache_s += _time(from_cache, 1, warmup=0)
        if i < max(2, repeats // 3):
            image_s += _time(from_images, 1, warmup=0)
    t_cache, t_img = statistics.median(cache_s), statistics.median(image_s)
    return {"cached_sps": batch / t_cache, "recompute_sps": batch / t_img,
            "ratio": t_img / t_cache}


def inference_latency(repeats: int, encoder_name: str) -> dict[str, list[float]]:
    """Seconds per single observation: encoder, CNN-MLP head, diffusion head (10 DDIM)."""
    out: dict[str, list[float]] = {}
    image = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    state = torch.zeros(1, 7)
    for kind in ("cnn_mlp", "diffusion"):
        policy = _policy(kind, encoder_name).eval()
        with torch.no_grad():
            fmap = policy.encode(image)
        if kind == "cnn_mlp":
            out["encoder"] = _time(lambda p=policy: p.encode(image), repeats)
        gen = torch.Generator().manual_seed(0)
        out[kind] = _time(lambda p=policy, f=fmap, g=gen: p.predict_from_features(f, state, g),
                          repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sub-minute run")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--encoder", default="theia_tiny")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reps = 3 if args.quick else 30

    results: dict[str, object] = {"threads": args.threads, "encoder": args.encoder}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"policy_speed: {args.threads} CPU threads, encoder {args.encoder}, "
          f"{'quick' if args.quick else 'full'} run, load average {load:.1f} "
          f"on {os.cpu_count()} CPUs\n")
    print(f"{'training step':<24} {'batch':>5} {'cached samples/s':>17} "
          f"{'recompute samples/s':>20} {'ratio':>7}")
    for kind, batch in (("cnn_mlp", 16), ("diffusion", 32)):
        r = training_throughput(kind, batch, reps, args.encoder)
        results[f"train_{kind}"] = r
        print(f"{kind:<24} {batch:>5} {r['cached_sps']:>17.1f} {r['recompute_sps']:>20.1f} "
              f"{r['ratio']:>6.1f}x")

    lat = inference_latency(reps * 2, args.encoder)
    print(f"\n{'inference (B=1)':<24} {'min ms':>8} {'median ms':>10} {'p90 ms':>8}  note")
    for name, times in lat.items():
        ms = sorted(t * 1e3 for t in times)
        med, p90 = statistics.median(ms), ms[min(len(ms) - 1, int(0.9 * len(ms)))]
        best = ms[0]
        note = "reference"
        if name == "diffusion":
            ok = "OK" if med <= DIFFUSION_TARGET_MS else (
                "OVER (min OK: machine busy?)" if best <= DIFFUSION_TARGET_MS else "OVER")
            note = f"10 DDIM steps, target <= {DIFFUSION_TARGET_MS:.0f} ms: {ok}"
        elif name == "cnn_mlp":
            note = f"{med / statistics.median(lat['encoder']) / 1e3:.2f}x encoder"
        results[f"latency_{name}_ms"] = {"min": best, "median": med, "p90": p90}
        print(f"{name:<24} {best:>8.1f} {med:>10.1f} {p90:>8.1f}  {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
