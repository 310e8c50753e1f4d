"""Closed-loop check: the sim door task with a wrist camera and a 2-step history vs one camera.

One dataset of scripted demonstrations is recorded with both sim cameras (``front`` and
``wrist``); from it two CNN-MLP policies are trained with the demo's settings (same encoder,
seed, epochs, batch, lr, horizon): A looks through ``front`` with 1 observation step (the
demo's policy), B through ``front`` + ``wrist`` with 2 steps. Both are exported and run on the
same held-out seeds through the real control core (onnxruntime, the deploy path, B with its
observation history). The table gives success and per-stage rates with 95 % Wilson intervals.
The question is whether B still reaches A's success rate (it sees more, but has more inputs
to fit from the same demonstrations).

Example::

    python benchmarks/door_cameras_history.py --out outputs/cams-check     # 40 demos, 20 seeds
    python benchmarks/door_cameras_history.py --quick --out /tmp/cams-smoke    # minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {"A_front_T1": (("front",), 1), "B_front_wrist_T2": (("front", "wrist"), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--demos", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--episodes", type=int, default=20, help="held-out seeds per variant")
    ap.add_argument("--eval-seed", type=int, default=10_000)
    ap.add_argument("--encoder", default="theia_tiny")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 demos, 2 epochs, 2 episodes")
    args = ap.parse_args()
    if args.quick:
        args.demos, args.epochs, args.episodes = 4, 2, 2

    from training.demo.pipeline import _preload_torch_stack

    _preload_torch_stack()
    import torch

    from theia_ros.evaluate.rollout import RunSettings
    from theia_ros.runtime import load
    from training.bc.config import TrainConfig
    from training.bc.trainer import train_policy
    from training.demo.config import DemoConfig
    from training.demo.pipeline import evaluate_runtime
    from training.demo.record import record_demos
    from training.demo.report import wilson_interval
    from training.export import ExportOptions, export_bundle

    torch.set_num_threads(args.threads)
    demo = DemoConfig()  # the demo's training settings
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = out / "dataset"
    t0 = time.perf_counter()
    rec = record_demos(dataset, args.demos, first_seed=demo.demo_seed, noise=demo.noise,
                       cameras=("front", "wrist"))
    print(f"recorded {rec.episodes} demos ({rec.frames} frames) in "
          f"{time.perf_counter() - t0:.0f} s")
    seeds = list(range(args.eval_seed, args.eval_seed + args.episodes))
    rows = []
    for name, (cameras, steps) in VARIANTS.items():
        root = out / name
        t1 = time.perf_counter()
        res = train_policy(TrainConfig(
            dataset=str(dataset), out=str(root / "policy"), policy="cnn_mlp",
            encoder=args.encoder, cameras=cameras, n_obs_steps=steps, horizon=demo.horizon,
            epochs=args.epochs, batch_size=demo.batch_size, lr=demo.lr, seed=demo.train_seed,
            cache_dir=str(out / "cache"), checkpoint_every=0, tensorboard=False,
            device="cpu"), show_progress=False)
        train_s = time.perf_counter() - t1
        export_bundle(root / "policy", root / "bundle",
                      ExportOptions(dataset=str(dataset), overwrite=True), log=lambda _m: None)
        rt = load(root / "bundle", backend="onnxruntime", threads=args.threads)
        settings = RunSettings(rate_hz=float(rt.meta.control_rate_hz),
                               max_steps=demo.max_steps, replan_every=demo.replan_every,
                               temporal_ensemble=demo.temporal_ensemble,
                               ensemble_m=demo.ensemble_m, fast=True)
        try:
            ev, _ = evaluate_runtime(rt, settings, seeds, None, 0, log=print)
        finally:
            rt.close()
        rows.append({"variant": name, "cameras": list(cameras), "n_obs_steps": steps,
                     "val_loss": res.val_loss, "train_s": train_s,
                     "success": ev["success"], "open": ev["stages"]["open"],
                     "faulted": ev["faulted"]})
    print()
    print(f"{'variant':<18} {'cameras':<14} {'T':>2} {'val loss':>9} {'success':>22} "
          f"{'reached open':>14} {'train s':>8}")
    for r in rows:
        s, o = r["success"], r["open"]
        lo, hi = wilson_interval(s["successes"], s["n"])
        print(f"{r['variant']:<18} {'+'.join(r['cameras']):<14} {r['n_obs_steps']:>2} "
              f"{r['val_loss']:>9.4f} {s['successes']:>3}/{s['n']:<3}"
              f" ({100 * lo:3.0f}-{100 * hi:3.0f} %)   {o['successes']:>3}/{o['n']:<3}"
              f"        {r['train_s']:>8.0f}")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
