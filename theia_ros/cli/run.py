"""``theia run``: run a policy bundle closed-loop on the MuJoCo twin through the control core.

Each episode resets the sim to a randomised scene (``--seed``, ``--seed + 1``, ...), then
the real control core drives it: ``ControlLoop`` at the bundle's control rate (real-time
pacing on the monotonic clock), action chunking (re-plan every ``--replan-every`` ticks, optional
temporal ensembling), the wx250s ``SafetyFilter``, and the ``SimWidowX`` adapter. An episode
ends when the door is fully open (the success detector) or after ``--max-steps`` ticks. The
door's best stage per episode gives the per-stage success (open / fully open); tick timings
give the control-step latency. ``--fast`` swaps the clock for a manual one, so episodes run
as fast as the machine allows (same decisions, but latency numbers then mean nothing).
Torch-free with the onnxruntime backend. The bundle is checked first (robot, action kind,
camera, ``--replan-every`` <= horizon); the exit status is 1 when any episode faulted.

Example::

    theia run --bundle outputs/demo/bundle --robot sim --episodes 5 --seed 10000 \\
        --video rollout.mp4 --json run.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from theia_ros.atomic import atomic_write_json
from theia_ros.errors import TheiaError
from theia_ros.evaluate.rollout import EpisodeResult, RunSettings, check_sim_bundle, run_bundle
from theia_ros.robots.robot_types import check_policy_robot
from theia_ros.runtime.bundle import BundleMeta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="policy bundle (theia export)")
    parser.add_argument("--robot", choices=["sim"], default="sim",
                        help="robot to drive (default sim, the MuJoCo twin; the real arms run "
                             "through the ROS nodes)")
    parser.add_argument("--backend", default="auto",
                        help="auto | onnxruntime | tensorrt | torch (default auto)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to run (1)")
    parser.add_argument("--seed", type=int, default=10_000,
                        help="scene seed of the first episode (default 10000: the demo's "
                             "held-out range)")
    parser.add_argument("--max-steps", type=int, default=60, help="ticks per episode (60)")
    parser.add_argument("--replan-every", type=int, default=1,
                        help="ticks between policy calls (1)")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="execute chunks as planned instead of temporal ensembling")
    parser.add_argument("--fast", action="store_true",
                        help="no real-time pacing (evaluation only; latencies meaningless)")
    parser.add_argument("--video", default=None, help="MP4 of the first --video-episodes")
    parser.add_argument("--video-episodes", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results as JSON here")


def check_bundle(meta: BundleMeta, args: argparse.Namespace) -> None:
    """Refuse, before any episode, a bundle this robot cannot run as asked (one line)."""
    check_policy_robot(args.robot, meta.robot_type, meta.action_kind, args.bundle)
    check_sim_bundle(meta, args.bundle)
    if args.replan_every > meta.horizon:
        raise TheiaError(f"--replan-every {args.replan_every} exceeds the bundle's chunk horizon "
                         f"{meta.horizon} (each plan holds {meta.horizon} actions)")


def main(args: argparse.Namespace) -> int:
    from theia_ros.runtime import load, read_bundle

    if args.episodes < 1 or args.max_steps < 1 or args.replan_every < 1:
        raise TheiaError("--episodes, --max-steps and --replan-every must be >= 1")
    check_bundle(read_bundle(args.bundle, verify=False), args)  # cheap: before loading graphs
    runtime = load(args.bundle, backend=args.backend)
    meta = runtime.meta
    settings = RunSettings(rate_hz=float(meta.control_rate_hz), max_steps=args.max_steps,
                           replan_every=args.replan_every,
                           temporal_ensemble=not args.no_ensemble, fast=args.fast)
    seeds = list(range(args.seed, args.seed + args.episodes))

    def show(ep: EpisodeResult) -> None:
        fault = f"; FAULT: {ep.fault}" if ep.fault else ""
        print(f"seed {ep.seed}: {ep.final_stage.lower()} (best {ep.best_stage.lower()}, door "
              f"{ep.door_angle_deg:.0f} deg) in {ep.steps} steps, {ep.wall_s:.1f} s{fault}")

    result = run_bundle(runtime, seeds, settings, video=args.video,
                        video_episodes=args.video_episodes, on_episode=show)
    summary = result.summary()
    tick = summary["tick_ms"]
    print(f"success {summary['success']}/{summary['episodes']} (fully open at the end); "
          f"reached open {summary['reached_open']}, fully open {summary['reached_fully_open']}")
    if not settings.fast and tick["p50"] is not None:
        print(f"control step p50 {tick['p50']:.1f} ms, p90 {tick['p90']:.1f} ms, p99 "
              f"{tick['p99']:.1f} ms at {settings.rate_hz:g} Hz ({runtime.backend}); "
              f"overruns {summary['overruns']}")
    if args.video:
        print(f"video: {args.video}")
    if args.json:
        doc = {"settings": asdict(settings), "summary": summary,
               "episodes": [asdict(e) for e in result.episodes]}
        atomic_write_json(args.json, doc)
    runtime.close()
    faulted = [e for e in result.episodes if e.fault is not None]
    if faulted:
        print(f"theia run: {len(faulted)}/{len(result.episodes)} episodes faulted; first "
              f"(seed {faulted[0].seed}): {faulted[0].fault}", file=sys.stderr)
        return 1
    return 0
