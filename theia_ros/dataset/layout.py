"""Where things live in a dataset directory, and what ``meta/info.json`` says about them.

The layout is LeRobot's v3.0 one, so LeRobot tools can open our datasets::

    meta/info.json                       schema, fps, path templates, counters
    meta/stats.json                      per-feature min/max/mean/std/count
    meta/tasks.parquet                   task text (pandas index "task") -> task_index
    meta/episodes/chunk-CCC/file-FFF.parquet   one row per episode (lengths, file refs, stats)
    data/chunk-CCC/file-FFF.parquet      one row per frame
    videos/<video_key>/chunk-CCC/file-FFF.mp4  one video per camera

We write one data file, one episode-metadata file and one video per camera per episode
(``file_index = episode % chunks_size``): valid v3.0 with small files, and it makes saving
an episode an append of new files only, which is what keeps earlier episodes safe when a
recorder is killed. Our extras (``action_kind`` in info.json; ``success`` and
``recovered`` per episode) sit in places LeRobot ignores or carries along.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from theia_ros.atomic import atomic_write_json
from theia_ros.errors import TheiaError
from theia_ros.types import ActionKind

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's default)
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 500

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = EPISODES_DIR + "/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
STAGING_DIR = ".staging"  # unfinished episode + pending commit; LeRobot never looks here

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
EE_POSE_KEY = "observation.ee_pose"
ACTION_KEY = "action"
INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
CAPTURE_TIME_KEY = "capture_time_s"

ACTION_NAMES = {
    ActionKind.EE_DELTA: ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
    ActionKind.EE_ABSOLUTE: ["x", "y", "z", "roll", "pitch", "yaw", "gripper"],
}
EE_POSE_NAMES = ["x", "y", "z", "roll", "pitch", "yaw"]


def image_key(camera: str) -> str:
    """``front`` -> ``observation.images.front``."""
    return IMAGE_PREFIX + camera


def chunk_file(episode_index: int, chunks_size: int = CHUNKS_SIZE) -> tuple[int, int]:
    """``(chunk_index, file_index)`` of an episode's files in the one-file-per-episode scheme."""
    return episode_index // chunks_size, episode_index % chunks_size


def build_features(
    cameras: dict[str, tuple[int, int]],
    state_dim: int,
    action_kind: ActionKind,
    state_names: list[str] | None,
    has_ee_pose: bool,
    video_info: dict[str, Any],
    fps: int,
) -> dict[str, dict[str, Any]]:
    """The ``features`` block of info.json (LeRobot spelling: images ``[H, W, 3]``)."""
    features: dict[str, dict[str, Any]] = {}
    for cam, (height, width) in cameras.items():
        features[image_key(cam)] = {
            "dtype": "video",
            "shape": [int(height), int(width), 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": int(height),
                "video.width": int(width),
                "video.fps": int(fps),
                "video.channels": 3,
                "video.is_depth_map": False,
                "has_audio": False,
                **video_info,
            },
        }
    names = state_names or [f"joint_{i}" for i in range(state_dim - 1)] + ["gripper"]
    if len(names) != state_dim:
        raise TheiaError(f"state_names: {len(names)} names for state_dim={state_dim}")
    features[STATE_KEY] = {"dtype": "float32", "shape": [state_dim], "names": list(names)}
    if has_ee_pose:
        features[EE_POSE_KEY] = {"dtype": "float32", "shape": [6], "names": EE_POSE_NAMES}
    features[ACTION_KEY] = {"dtype": "float32", "shape": [7], "names": ACTION_NAMES[action_kind]}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    # extra: measured capture time (s from the episode's first frame). ``timestamp`` stays
    # frame_index / fps because LeRobot maps it to video frames with a 1e-4 s tolerance.
    features[CAPTURE_TIME_KEY] = {"dtype": "float32", "shape": [1], "names": None}
    for key in INDEX_KEYS[1:]:
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    return features


def new_info(
    fps: int, robot_type: str, features: dict[str, dict[str, Any]], action_kind: ActionKind
) -> dict[str, Any]:
    """A fresh info.json for an empty dataset."""
    has_video = any(ft["dtype"] == "video" for ft in features.values())
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "fps": int(fps),
        "splits": {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if has_video else None,
        "features": features,
        # extra (LeRobot ignores unknown top-level keys): what the 7 action numbers mean
        "action_kind": action_kind.value,
    }


def camera_names(info: dict[str, Any]) -> list[str]:
    """Camera names from the video/image features, in info.json order."""
    return [
        key[len(IMAGE_PREFIX):]
        for key, ft in info["features"].items()
        if key.startswith(IMAGE_PREFIX) and ft.get("dtype") in ("video", "image")
    ]


# --------------------------------------------------------------------------- atomic I/O


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort; not all filesystems allow it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """JSON file -> object, with a one-line error naming the file when it is bad."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise TheiaError(f"{path}: missing; not a dataset directory (expected {INFO_PATH})") \
            from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TheiaError(f"{path}: not valid JSON ({exc}); the file is truncated or corrupt") \
            from exc


def to_jsonable(value: Any) -> Any:
    """numpy arrays/scalars inside nested dicts -> plain lists/floats for json.dump."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def validate_info(info: Any, path: Path) -> dict[str, Any]:
    """Check the info.json fields we rely on; one clear error naming the field."""
    if not isinstance(info, dict):
        raise TheiaError(f"{path}: expected a JSON object")
    required = {"codebase_version": str, "fps": int, "total_episodes": int,
                "total_frames": int, "features": dict, "data_path": str}
    for key, typ in required.items():
        if not isinstance(info.get(key), typ):
            raise TheiaError(f"{path}: field {key!r} missing or not {typ.__name__}")
    if not str(info["codebase_version"]).startswith("v3"):
        raise TheiaError(f"{path}: codebase_version {info['codebase_version']!r}; expected a "
                         "LeRobot v3.x dataset (convert a v2.1 one with LeRobot's converter: "
                         "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 "
                         "--repo-id OWNER/NAME)")
    if info["fps"] <= 0:
        raise TheiaError(f"{path}: fps must be positive, got {info['fps']}")
    return info


def write_json_atomic(path: Path, data: Any) -> None:
    """Meta JSON the way LeRobot writes it (indent 4), atomically (``theia_ros.atomic``)."""
    atomic_write_json(path, data, indent=4)
