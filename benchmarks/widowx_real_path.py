"""Door success of one bundle on two paths: ``SimWidowX`` vs the real WidowX path.

The real path is ``WidowXAdapter`` -> Interbotix's ``interbotix_xs_modules`` -> DDS -> the
MuJoCo xs_sdk twin, with camera frames over a ROS topic (``theia_ros.evaluate.twin_rollout``);
both run the same held-out seeds with the same loop settings, in real time. Prints success with
95 % Wilson intervals per path and, per seed, where they differ.

    python benchmarks/widowx_real_path.py BUNDLE [--episodes 20] [--first-seed 10000]

Needs the test set-up's message workspace (``make test-setup``; THEIA_ROS_TEST_WS to use
another) and the upstream sources in ../shared/upstream.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=10_000)
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--paths", default="sim,twin")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")

    import ros_upstream as ru

    ru.activate()
    os.environ.setdefault("ROS_DOMAIN_ID", str(ru.domain_id()))
    from theia_ros.evaluate.rollout import RunSettings, run_episodes
    from theia_ros.evaluate.twin_rollout import run_twin_episodes
    from theia_ros.runtime import load

    runtime = load(args.bundle, backend="onnxruntime")
    size = runtime.meta.image_hw[0]
    settings = RunSettings(rate_hz=float(runtime.meta.control_rate_hz),
                           max_steps=args.max_steps)
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    runs = {"sim": lambda: run_episodes(runtime, seeds, settings, image_size=size),
            "twin": lambda: run_twin_episodes(runtime, seeds, settings, image_size=size)}
    results = {}
    for name in args.paths.split(","):
        results[name] = runs[name]()
        for ep in results[name].episodes:
            print(f"  {name:4s} seed {ep.seed}: {ep.final_stage:10s} best {ep.best_stage:10s} "
                  f"door {ep.door_angle_deg:5.1f} deg, {ep.steps} steps, {ep.holds} holds",
                  flush=True)
    print(f"\n{'path':36s} {'success':>8s} {'95% interval':>16s} {'reached open':>13s} "
          f"{'tick p50 ms':>12s} {'cmd latency p50 ms':>19s}")
    labels = {"sim": "SimWidowX (in-process MuJoCo)",
              "twin": "WidowXAdapter->Interbotix->twin"}
    for name, res in results.items():
        s = res.summary()
        lo, hi = wilson(s["success"], s["episodes"])
        print(f"{labels[name]:36s} {s['success']:>3d}/{s['episodes']:<4d} "
              f"[{lo:5.2f}, {hi:5.2f}]   {s['reached_open']:>8d}/{s['episodes']:<4d} "
              f"{s['tick_ms']['p50'] or float('nan'):12.1f} "
              f"{s['command_latency_ms']['p50'] or float('nan'):19.1f}")
    if len(results) == 2:
        a, b = (results[k].episodes for k in ("sim", "twin"))
        differ = [(x.seed, x.final_stage, y.final_stage) for x, y in zip(a, b)
                  if x.success != y.success]
        print(f"seeds where the paths disagree: {differ or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
