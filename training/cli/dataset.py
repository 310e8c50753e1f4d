"""Demonstration datasets (LeRobot v3.0 layout): import rosbag2 recordings, inspect, view.

Examples::

    theia dataset import-bag recordings/door_01 recordings/door_02 --out demos/door \\
        --config config/bag_map_widowx.yaml
    theia dataset info demos/door
    theia dataset view demos/door --episode 3 --out ep3.mp4 --camera front

``info`` and ``view`` also take a Hugging Face dataset id (``theia dataset info lerobot/pusht``):
when no such local folder exists it is downloaded with ``huggingface_hub`` (``info`` fetches
only ``meta/``), or taken from the local Hugging Face cache when offline.

``import-bag`` takes one or more rosbag2 directories (MCAP or sqlite3); the map file names
topics, cameras, joints, fps, skew bound, action mapping and episode split (see
``training/bags/bag_config.py``). Later bags append to the dataset the first one made.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from theia_ros.dataset import EpisodeDataset
from theia_ros.errors import TheiaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{import-bag,info,view}")
    imp = sub.add_parser("import-bag", help="rosbag2 (MCAP/sqlite3) -> episodes")
    imp.add_argument("bags", nargs="+", type=Path, help="rosbag2 directories or files")
    imp.add_argument("--out", type=Path, required=True, help="dataset directory")
    imp.add_argument("--config", type=Path, required=True, help="topic map (YAML)")
    imp.add_argument("--append", action="store_true",
                     help="append to an existing dataset instead of requiring a new one")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    info = sub.add_parser("info", help="episodes, frames, fps, success rate, stats")
    info.add_argument("dataset", help="dataset directory or Hugging Face dataset id")
    info.add_argument("--json", action="store_true", help="machine-readable summary")
    view = sub.add_parser("view", help="render an episode with its actions to MP4")
    view.add_argument("dataset", help="dataset directory or Hugging Face dataset id")
    view.add_argument("--episode", type=int, required=True)
    view.add_argument("--out", type=Path, required=True, help="output .mp4")
    view.add_argument("--camera", default=None, help="camera name (default: the first)")


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def resolve_dataset(arg: str, meta_only: bool = False) -> Path:
    """A local dataset folder, or a Hugging Face dataset id fetched into the hub cache.

    Offline (one connection check, :func:`training.hub.hub_online`), a dataset already in
    the local cache is used; otherwise the error says what is missing and why.
    """
    path = Path(arg)
    if path.exists() or not HUB_ID.fullmatch(arg):
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    from training.hub import hub_online

    patterns = ["meta/**"] if meta_only else None
    online = hub_online()
    try:
        return Path(snapshot_download(arg, repo_type="dataset", allow_patterns=patterns,
                                      local_files_only=not online))
    except LocalEntryNotFoundError:
        raise TheiaError(f"{arg}: no such folder, and as a Hugging Face dataset id it cannot be "
                         "fetched: the hub is unreachable (offline) and the dataset is not in "
                         "the local cache") from None
    except RepositoryNotFoundError:
        raise TheiaError(f"{arg}: no such folder, nor a dataset on the Hugging Face Hub") \
            from None


def summarize(ds: EpisodeDataset) -> dict[str, Any]:
    """Everything ``info`` prints, as plain data."""
    lengths = [ep.length for ep in ds.episodes]
    flags = [ep.success for ep in ds.episodes if ep.success is not None]
    tasks: dict[str, int] = {}
    for ep in ds.episodes:
        tasks[ep.task] = tasks.get(ep.task, 0) + 1
    stats = {}
    for key in ("observation.state", "observation.ee_pose", "action"):
        if key in ds.stats:
            st = ds.stats[key]
            names = ds.meta["features"].get(key, {}).get("names") or []
            stats[key] = {"names": list(names),
                          **{s: np.asarray(st[s]).reshape(-1).tolist()
                             for s in ("mean", "std", "min", "max") if s in st}}
    return {
        "root": str(ds.root),
        "codebase_version": ds.meta.get("codebase_version"),
        "robot_type": ds.robot_type,
        "episodes": ds.num_episodes,
        "frames": ds.num_frames,
        "fps": ds.fps,
        "duration_s": ds.num_frames / ds.fps,
        "episode_length": {"min": min(lengths, default=0), "max": max(lengths, default=0),
                           "mean": float(np.mean(lengths)) if lengths else 0.0},
        "successes": int(sum(flags)),
        "success_rate": ds.success_rate,
        "recovered": sum(ep.recovered for ep in ds.episodes),
        "action_kind": ds.action_kind.value if ds.action_kind else None,
        "cameras": {c: ds.meta["features"][f"observation.images.{c}"]["shape"][:2]
                    for c in ds.cameras},
        "state_dim": ds.state_dim,
        "tasks": tasks,
        "stats": stats,
    }


def format_summary(s: dict[str, Any]) -> str:
    rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.1f}%"
    cams = ", ".join(f"{c} [{h}x{w}]" for c, (h, w) in s["cameras"].items()) or "none"
    lines = [
        f"dataset   {s['root']}  (LeRobot {s['codebase_version']}, robot {s['robot_type']})",
        f"episodes  {s['episodes']}   frames {s['frames']}   fps {s['fps']}   "
        f"duration {s['duration_s']:.1f} s   length {s['episode_length']['min']}.."
        f"{s['episode_length']['max']} (mean {s['episode_length']['mean']:.1f})",
        f"success   {s['successes']}/{s['episodes']} ({rate})   recovered {s['recovered']}",
        f"action    {s['action_kind']}   state_dim {s['state_dim']}   cameras {cams}",
        "tasks     " + "; ".join(f"{t!r} x{n}" for t, n in s["tasks"].items()),
        "stats     mean +- std [min, max]",
    ]
    for key, st in s["stats"].items():
        for i, name in enumerate(st["names"] or [str(i) for i in range(len(st["mean"]))]):
            lines.append(f"  {key:<20} {name:<14} {st['mean'][i]:+10.4f} +- {st['std'][i]:9.4f}"
                         f"  [{st['min'][i]:+.4f}, {st['max'][i]:+.4f}]")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.action == "import-bag":
        from training.bags.bag_config import load_bag_config
        from training.bags.bag_import import import_bag

        config = load_bag_config(args.config)
        for k, bag in enumerate(args.bags):
            report = import_bag(bag, args.out, config, append=args.append or k > 0,
                                progress=not args.no_progress)
            print(f"{bag}: {report.summary()}")
        return 0
    if args.action == "info":
        summary = summarize(EpisodeDataset(resolve_dataset(args.dataset, meta_only=True)))
        print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
        return 0
    if args.action == "view":
        from training.dataset_view import render_episode

        if args.out.suffix.lower() != ".mp4":
            raise TheiaError(f"--out {args.out}: expected a .mp4 file name")
        n = render_episode(resolve_dataset(args.dataset), args.episode, args.out, args.camera)
        print(f"wrote {args.out} ({n} frames)")
        return 0
    raise TheiaError(f"unknown action {args.action!r}")
