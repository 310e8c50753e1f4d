"""Evaluate a policy folder or a bundle closed-loop on a sim task: the WidowX door or the Spot
drawer.

The same held-out episodes and report as ``theia demo``'s evaluate stage (``--task door``:
success with 95 % Wilson intervals, per-stage success, control-step latency; ``--task
spot_drawer``: the drawer opening per trial, through ``SpotAdapter`` against the simulated
Spot), an optional rollout video, ``report.json`` and ``report.png``. A policy folder
(``theia train-policy`` output) runs with torch directly, no export needed; a bundle runs on
any runtime backend. The exit status is 1 when any episode ended in a control-loop fault (0
otherwise, whatever the success rate).

Example::

    theia eval runs/door --episodes 20 --fast --out outputs/eval-door
    theia eval bundles/door --backend onnxruntime --episodes 5 --video-episodes 2
    theia eval outputs/spot/bundle --task spot_drawer --episodes 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from theia_ros.errors import TheiaError

TASKS = ("door", "spot_drawer")
# per task: (ticks per episode, replan_every): the demos' settings
TASK_DEFAULTS = {"door": (60, 1), "spot_drawer": (45, 3)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="policy folder (policy.json) or bundle (bundle.yaml)")
    parser.add_argument("--task", choices=TASKS, default="door",
                        help="sim task: door (WidowX) | spot_drawer (Spot, real time only)")
    parser.add_argument("--episodes", type=int, default=20, help="held-out episodes (20)")
    parser.add_argument("--seed", type=int, default=10_000,
                        help="scene seed of the first episode (10000: the demo's held-out "
                             "range)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="ticks per episode (door 60, spot_drawer 45)")
    parser.add_argument("--replan-every", type=int, default=None,
                        help="ticks between plans (door 1, spot_drawer 3 with asynchronous "
                             "planning)")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="execute chunks as planned instead of temporal ensembling")
    parser.add_argument("--fast", action="store_true",
                        help="no real-time pacing (latency then not measured)")
    parser.add_argument("--backend", default="onnxruntime",
                        help="bundle backend: auto | onnxruntime | tensorrt | torch")
    parser.add_argument("--device", default="cpu", help="torch device for a policy folder")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (2)")
    parser.add_argument("--out", default=None,
                        help="report directory (default outputs/eval-<time>)")
    parser.add_argument("--video-episodes", type=int, default=1,
                        help="episodes drawn into rollout.mp4 (0: no video)")


def open_policy(path: str, backend: str, device: str, threads: int):
    """A bundle (``bundle.yaml``) with the runtime, or a policy folder (``policy.json``)."""
    root = Path(path)
    if (root / "bundle.yaml").is_file():
        from theia_ros.runtime import load

        return load(root, backend=backend, threads=threads)
    if (root / "policy.json").is_file():
        from training.policy_runtime import PolicyFolderRuntime

        return PolicyFolderRuntime(root, device=device, threads=threads)
    raise TheiaError(f"{root}: neither a bundle (bundle.yaml) nor a policy folder "
                     "(policy.json)")


def main(args: argparse.Namespace) -> int:
    from theia_ros.atomic import atomic_write_json
    from theia_ros.evaluate.rollout import RunSettings
    from training.demo.pipeline import _preload_torch_stack, evaluate_runtime
    from training.demo.report import format_report, write_plot

    max_steps, replan_every = TASK_DEFAULTS[args.task]
    args.max_steps = max_steps if args.max_steps is None else args.max_steps
    args.replan_every = replan_every if args.replan_every is None else args.replan_every
    if args.episodes < 1 or args.max_steps < 1 or args.video_episodes < 0:
        raise TheiaError("--episodes and --max-steps must be >= 1, --video-episodes >= 0")
    if args.task == "spot_drawer" and (args.fast or args.no_ensemble):
        raise TheiaError("--fast / --no-ensemble: the Spot drawer runs in real time only (the "
                         "simulated robot keeps wall-clock time) and executes chunks as "
                         "planned, with asynchronous planning")
    _preload_torch_stack()
    out = Path(args.out or f"outputs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runtime = open_policy(args.policy, args.backend, args.device, args.threads)
    if args.task == "spot_drawer":
        return _eval_drawer(args, runtime, out, t0)
    try:
        settings = RunSettings(rate_hz=float(runtime.meta.control_rate_hz),
                               max_steps=args.max_steps, replan_every=args.replan_every,
                               temporal_ensemble=not args.no_ensemble, fast=args.fast)
        seeds = list(range(args.seed, args.seed + args.episodes))
        video = out / "rollout.mp4" if args.video_episodes else None
        print(f"[evaluate] {args.episodes} episodes of {args.policy} on the sim {args.task} "
              f"({runtime.backend}, cameras {list(runtime.meta.cameras)}, n_obs_steps "
              f"{runtime.meta.n_obs_steps})")
        evaluation, tick_ms = evaluate_runtime(runtime, settings, seeds, video,
                                               args.video_episodes)
    finally:
        runtime.close()
    is_bundle = (Path(args.policy) / "bundle.yaml").is_file()
    report = {
        "title": f"evaluate {args.policy} on the sim {args.task} (MuJoCo WidowX 250s)",
        "encoder": "see the policy's policy.json",
        "demo_seeds": "n/a",
        "evaluation": evaluation,
        "stages": {"evaluate": {"wall_s": time.perf_counter() - t0, "skipped": False}},
        "total_wall_s": time.perf_counter() - t0,
        "paths": {"dataset": "n/a", "policy": None if is_bundle else args.policy,
                  "bundle": args.policy if is_bundle else None,
                  "video": str(video) if video and video.exists() else None,
                  "report": str(out / "report.json"), "plot": None},
    }
    plot = write_plot(out / "report.png", report, tick_ms)
    report["paths"]["plot"] = str(plot) if plot else None
    atomic_write_json(out / "report.json", report)
    print(format_report(report))
    if evaluation["faulted"]:
        print(f"theia eval: {evaluation['faulted']} episode(s) ended in a control-loop fault")
        return 1
    return 0


def drawer_mismatch(meta, replan_every: int) -> str | None:
    """Why a policy cannot run on the simulated Spot drawer (which serves one camera,
    ``front``, a 7-number state, at 5 Hz), or None. Checked before any robot is started."""
    if meta.action_kind != "ee_absolute":
        return (f"its actions are {meta.action_kind}; the Spot drawer needs a policy of "
                "absolute hand poses (ee_absolute), trained on Spot data")
    if tuple(meta.cameras) != ("front",):
        return f"it looks through {list(meta.cameras)}; the simulated Spot serves only 'front'"
    if meta.state_dim != 7:
        return f"its state has {meta.state_dim} numbers; Spot's has 7 (6 arm joints + claw)"
    if abs(float(meta.control_rate_hz) - 5.0) > 1e-6:
        return f"it was trained at {meta.control_rate_hz} Hz; the drawer runs at 5 Hz"
    if replan_every > meta.horizon:
        return f"--replan-every {replan_every} exceeds its chunk horizon {meta.horizon}"
    return None


def _eval_drawer(args: argparse.Namespace, runtime, out: Path, t0: float) -> int:
    from theia_ros.atomic import atomic_write_json
    from training.demo.spot_pipeline import evaluate_drawer, summary_line

    problem = drawer_mismatch(runtime.meta, args.replan_every)
    if problem:
        runtime.close()
        raise TheiaError(f"{args.policy}: {problem}")
    seeds = list(range(args.seed, args.seed + args.episodes))
    try:
        evaluation = evaluate_drawer(runtime, seeds, out, max_steps=args.max_steps,
                                     replan_every=args.replan_every,
                                     video_episodes=args.video_episodes)
    finally:
        runtime.close()
    report = {"title": f"evaluate {args.policy} on the simulated Spot drawer", **evaluation,
              "total_wall_s": time.perf_counter() - t0}
    atomic_write_json(out / "report.json", report)
    print(summary_line(report) + f"; report {out / 'report.json'}")
    if evaluation["faulted"]:
        print(f"theia eval: {evaluation['faulted']} episode(s) ended in a control-loop fault")
        return 1
    return 0
