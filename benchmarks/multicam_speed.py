"""Cost of more views: training samples/s (1 vs 2 cameras, 1 vs 2 observation steps) and
the control-step latency of a 2-camera, 2-step policy on onnxruntime CPU.

Training: one CNN-MLP optimiser step (batch 16, Theia-Tiny width 192) on cached features,
including the sampler (history rows, padding, fancy indexing of the float16 cache); the
1-camera, 1-step row is the reference of the ratio column.
Control step: a Theia-Tiny bundle (random weights; speed does not depend on them) exported
for 1 camera x 1 step and for 2 cameras x 2 steps, run closed-loop on the MuJoCo twin
through the real control core (real-time 5 Hz loop, onnxruntime CPU, the history encoding
each new frame once) - the tick's observe -> encode -> head -> safety -> apply time against
the 200 ms period. Rendering the second camera is part of the tick, as on the sim.

Example::

    python benchmarks/multicam_speed.py --threads 2 --ticks 40
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = [(("front",), 1), (("front", "wrist"), 1), (("front",), 2), (("front", "wrist"), 2)]


def _policy(cameras: tuple[str, ...], steps: int):
    import torch

    from policies.cnn_mlp import CnnMlpConfig
    from policies.encoder import create_encoder
    from policies.normalize import Normalizer
    from policies.policy import PolicyConfig, build_policy

    torch.manual_seed(0)
    enc = create_encoder("theia_tiny")
    rng = np.random.default_rng(0)
    norm = Normalizer.from_data("mean_std", rng.normal(size=(64, 7)), rng.normal(size=(64, 7)))
    head = CnnMlpConfig(feature_dim=enc.embed_dim, state_dim=7, horizon=10,
                        num_views=len(cameras) * steps, n_obs_steps=steps)
    cfg = PolicyConfig("cnn_mlp", "ee_delta", 7, 10, cameras=cameras, n_obs_steps=steps)
    return build_policy(cfg, enc, head, norm)


def train_rows(frames: int, repeats: int, rounds: int = 3) -> list[dict]:
    """Median step time per variant, best of ``rounds`` interleaved rounds (a shared machine's
    load spikes then hit every variant alike, and the best round is the least disturbed)."""
    import torch

    from theia_ros.runtime.bench import time_calls_ms
    from training.bc.data import ChunkDataset, Demos

    steps_fns = []
    rng = np.random.default_rng(0)
    lengths = [40] * (frames // 40)
    n = sum(lengths)
    ends = np.repeat(np.cumsum(lengths), lengths)
    for cameras, steps in VARIANTS:
        policy = _policy(cameras, steps)
        demos = Demos(states=rng.normal(size=(n, 7)).astype(np.float32),
                      actions=rng.normal(size=(n, 7)).astype(np.float32), episode_end=ends,
                      images=None, lengths=lengths, cameras=list(cameras))
        feats = rng.normal(size=(n, len(cameras), 196, 192)).astype(np.float16)
        data = ChunkDataset(demos, 10, feats, deltas=True, n_obs_steps=steps)
        opt = torch.optim.AdamW(policy.head.parameters(), lr=1e-4)
        batch = 16

        def step(data=data, policy=policy, opt=opt, batch=batch) -> None:
            b = data.batch(rng.integers(0, n, batch))
            x = policy.as_map(torch.from_numpy(b["obs"]).float())
            loss = policy.compute_loss(x, torch.from_numpy(b["state"]),
                                       torch.from_numpy(b["action"]))
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps_fns.append((cameras, steps, step))
    best = [float("inf")] * len(steps_fns)
    for _ in range(rounds):
        for i, (_, _, step) in enumerate(steps_fns):
            best[i] = min(best[i], float(np.median(time_calls_ms(step, repeats, warmup=3))))
    return [{"cameras": "+".join(c), "steps": t, "samples_s": 16 / (ms * 1e-3), "step_ms": ms}
            for (c, t, _), ms in zip(steps_fns, best)]


def latency_rows(ticks: int, threads: int, tmp: Path) -> list[dict]:
    from policies.policy import save_policy
    from theia_ros.evaluate.rollout import RunSettings, run_bundle
    from theia_ros.runtime import load
    from training.export import ExportOptions, export_bundle

    rows = []
    for cameras, steps in (VARIANTS[0], VARIANTS[3]):
        name = f"{len(cameras)}cam_T{steps}"
        pdir = save_policy(_policy(cameras, steps).eval(), tmp / name / "policy")
        export_bundle(pdir, tmp / name / "bundle", ExportOptions(image_hw=(224, 224)),
                      log=lambda _m: None)
        rt = load(tmp / name / "bundle", backend="onnxruntime", threads=threads)
        settings = RunSettings(rate_hz=5.0, max_steps=ticks, stop_on_success=False)
        try:
            res = run_bundle(rt, [10_000], settings)
        finally:
            rt.close()
        tick = np.asarray(res.tick_s) * 1e3
        pol = np.asarray(res.policy_s) * 1e3
        rows.append({"cameras": "+".join(cameras), "steps": steps, "ticks": len(tick),
                     "p50": np.percentile(tick, 50), "p90": np.percentile(tick, 90),
                     "p99": np.percentile(tick, 99), "policy_p50": np.percentile(pol, 50),
                     "overruns": res.overruns})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=1600)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--ticks", type=int, default=40)
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()

    from training.demo.pipeline import _preload_torch_stack

    _preload_torch_stack()
    import torch

    torch.set_num_threads(args.threads)
    rows = train_rows(args.frames, args.repeats)
    ref = rows[0]["samples_s"]
    print(f"\ntraining, CNN-MLP, cached features, batch 16, {args.threads} threads")
    print(f"{'cameras':<12} {'T':>2} {'samples/s':>10} {'step ms':>8} {'vs 1 cam T1':>12}")
    for r in rows:
        print(f"{r['cameras']:<12} {r['steps']:>2} {r['samples_s']:>10.0f} {r['step_ms']:>8.1f} "
              f"{r['samples_s'] / ref:>11.2f}x")
    if args.skip_latency:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        lat = latency_rows(args.ticks, args.threads, Path(tmp))
    ref = lat[0]["p50"]
    print(f"\ncontrol step on the sim, Theia-Tiny, onnxruntime CPU {args.threads} threads, "
          f"5 Hz (period 200 ms)")
    print(f"{'cameras':<12} {'T':>2} {'ticks':>5} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
          f"{'policy p50':>10} {'p99/period':>10} {'p50 vs 1cam':>11} {'overruns':>8}")
    for r in lat:
        print(f"{r['cameras']:<12} {r['steps']:>2} {r['ticks']:>5} {r['p50']:>7.1f} "
              f"{r['p90']:>7.1f} {r['p99']:>7.1f} {r['policy_p50']:>10.1f} "
              f"{r['p99'] / 200:>10.2f} {r['p50'] / ref:>10.2f}x {r['overruns']:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
