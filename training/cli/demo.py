"""The simulated demo, end to end: record -> train -> export -> run at 5 Hz -> report.

Records scripted door-opening demonstrations in the MuJoCo WidowX 250s twin (through the
same DatasetWriter as ``theia record``), trains the CNN-MLP policy on Theia encoder features
(default: a randomly initialised Theia-Tiny, since no weights can be downloaded; pass
``--encoder`` with any checkpoint, e.g. a published Theia model or one from ``theia
distill``), exports the policy bundle, runs it closed-loop through the control core at 5 Hz
on held-out randomised scenes, and prints success with 95 % Wilson intervals, per-stage
success (open / fully open), control-step latency, wall time per stage and the paths of the
rollout video, dataset, policy and bundle. Finished stages are skipped on a re-run with the
same settings and ``--out``.

Example::

    theia demo                    # default: about 6-8 min on 2 free CPU cores
    theia demo --quick            # smoke test: about 1 min (both longer on busy cores)
    theia demo --out outputs/demo-frozen --eval-episodes 50
    theia demo --encoder path/to/theia_checkpoint --finetune --iters 300
"""

from __future__ import annotations

import argparse
import time

from training.demo.config import DemoConfig

# CLI flag -> DemoConfig field; None on the command line = the preset's value
_OVERRIDES = ("demos", "encoder", "epochs", "iters", "batch_size", "lr", "horizon",
              "eval_episodes", "eval_seed", "max_steps", "replan_every", "backend",
              "video_episodes", "threads", "train_seed", "cameras", "n_obs_steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None,
                        help="output directory (default outputs/demo-<timestamp>; re-use one "
                             "to resume or to re-evaluate)")
    parser.add_argument("--task", choices=["door", "spot_drawer"], default="door",
                        help="door: WidowX door (CNN-MLP); spot_drawer: simulated Spot through "
                             "bosdyn-client, diffusion policy (Table 10)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 8 demos, 8 epochs, 3 held-out episodes (about 1 min on "
                             "2 free cores; spot_drawer: 6 demos, 150 steps, about 2 min)")
    parser.add_argument("--demos", type=int, default=None,
                        help="scripted demonstrations (door 40, spot_drawer 50)")
    parser.add_argument("--encoder", default=None,
                        help="theia_tiny|theia_small|theia_base (random init) or a checkpoint "
                             "directory / hub id (default theia_tiny)")
    parser.add_argument("--finetune", action="store_true",
                        help="fine-tune the encoder too (slow on a CPU; see docs/demo.md)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (30)")
    parser.add_argument("--iters", type=int, default=None,
                        help="optimiser steps instead of epochs (spot_drawer: 3000)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (32)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (3e-4)")
    parser.add_argument("--horizon", type=int, default=None,
                        help="action chunk length (door 10, spot_drawer 4)")
    parser.add_argument("--train-seed", type=int, default=None, help="training seed (0)")
    parser.add_argument("--eval-episodes", type=int, default=None,
                        help="held-out episodes (20; 50 takes ~5 min at 5 Hz)")
    parser.add_argument("--eval-seed", type=int, default=None,
                        help="first held-out scene seed (10000)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="ticks per held-out episode (door 60 = 12 s, spot_drawer 45)")
    parser.add_argument("--replan-every", type=int, default=None,
                        help="ticks between policy calls (door 1, spot_drawer 3)")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="execute chunks as planned (no temporal ensembling)")
    parser.add_argument("--fast", action="store_true",
                        help="evaluate without real-time pacing (no latency numbers); writes "
                             "report-fast.json/.png and rollout-fast.mp4, leaving the "
                             "real-time report as it was")
    parser.add_argument("--backend", default=None,
                        help="runtime backend for the evaluation (onnxruntime)")
    parser.add_argument("--video-episodes", type=int, default=None,
                        help="held-out episodes in the rollout video (2)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--camera", dest="cameras", action="append", default=None,
                        help="sim camera to record and look through (front | wrist); repeat "
                             "for several (default front)")
    parser.add_argument("--n-obs-steps", type=int, default=None,
                        help="observation steps the policy conditions on (1)")


def build_config(args: argparse.Namespace) -> DemoConfig:
    """Preset (default or ``--quick``) with the command line's overrides."""
    overrides = {name: getattr(args, name, None) for name in _OVERRIDES}
    if overrides["cameras"] is not None:
        overrides["cameras"] = tuple(overrides["cameras"])
    if args.finetune:
        overrides["finetune"] = True
    if args.no_ensemble:
        overrides["temporal_ensemble"] = False
    if args.fast:
        overrides["fast"] = True
    base = DemoConfig.quick() if args.quick else DemoConfig()
    return base.with_overrides(**overrides)


DOOR_ONLY = {"finetune": "--finetune", "no_ensemble": "--no-ensemble", "fast": "--fast",
             "cameras": "--camera", "n_obs_steps": "--n-obs-steps", "epochs": "--epochs",
             "train_seed": "--train-seed"}


def main_spot(args: argparse.Namespace) -> int:
    from theia_ros.errors import TheiaError
    from training.demo.spot_pipeline import SpotDemoConfig, run_spot_demo

    given = [flag for name, flag in DOOR_ONLY.items() if getattr(args, name, None)]
    if given:
        raise TheiaError(f"theia demo --task spot_drawer: {', '.join(given)} only apply to the "
                         "door demo (the Spot drawer trains a diffusion policy for --iters "
                         "steps on one camera and runs in real time)")

    names = ("demos", "encoder", "iters", "batch_size", "lr", "horizon", "eval_episodes",
             "eval_seed", "max_steps", "replan_every", "backend", "video_episodes", "threads")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    config = SpotDemoConfig.quick(**overrides) if args.quick else SpotDemoConfig(**overrides)
    out = args.out or f"outputs/demo-spot-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"theia demo --task spot_drawer -> {out}")
    report = run_spot_demo(config, out, show_progress=not args.no_progress)
    return 0 if report["per_episode"] else 1


def main(args: argparse.Namespace) -> int:
    from training.demo.pipeline import run_demo

    if getattr(args, "task", "door") == "spot_drawer":
        return main_spot(args)

    config = build_config(args)
    out = args.out or f"outputs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"theia demo -> {out}")
    report = run_demo(config, out, show_progress=not args.no_progress)
    return 0 if report["evaluation"]["episodes"] else 1
