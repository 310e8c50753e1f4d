"""``EpisodeDataset``: read a LeRobot-v3 dataset episode by episode into numpy arrays.

Only episodes below ``info.json``'s ``total_episodes`` are visible, so a reader opened
while a writer is saving (or after a writer was killed) sees a consistent dataset. Reads
the general v3.0 layout (several episodes per file, video offsets), not only ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from theia_ros.dataset import layout
from theia_ros.dataset.layout import ACTION_KEY, EE_POSE_KEY, STATE_KEY, image_key
from theia_ros.dataset.stats import Stats, stats_from_json
from theia_ros.dataset.tables import column_to_numpy, read_parquet, read_tasks
from theia_ros.dataset.video import decode_video
from theia_ros.errors import TheiaError
from theia_ros.types import ActionKind


@dataclass(frozen=True)
class EpisodeInfo:
    """One row of ``meta/episodes``: where an episode's frames live and how it went."""

    index: int
    length: int
    task: str
    success: bool | None  # None when the dataset does not record it (non-theia datasets)
    recovered: bool
    from_index: int
    data_file: Path
    # camera -> (mp4 path, from_timestamp s, to_timestamp s)
    videos: dict[str, tuple[Path, float, float]] = field(default_factory=dict)


class EpisodeDataset:
    """Read-only view of a dataset directory.

    ``episode(i)`` returns ``{"observation.images.<cam>": [T, H, W, 3] uint8,
    "observation.state": [T, S] float32, "observation.ee_pose": [T, 6], "action": [T, 7],
    "timestamp"/"capture_time_s": [T] float32,
    "frame_index"/"episode_index"/"index"/"task_index": [T] int64}``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / layout.INFO_PATH
        self.meta: dict[str, Any] = layout.validate_info(layout.read_json(info_path), info_path)
        self.fps = int(self.meta["fps"])
        kind = self.meta.get("action_kind")
        self.action_kind: ActionKind | None = ActionKind(kind) if kind else None
        self.cameras: list[str] = layout.camera_names(self.meta)
        features = self.meta["features"]
        self.state_dim = int(features[STATE_KEY]["shape"][0]) if STATE_KEY in features else 0
        stats_path = self.root / layout.STATS_PATH
        self.stats: Stats = (stats_from_json(layout.read_json(stats_path))
                             if stats_path.exists() else {})
        tasks_path = self.root / layout.TASKS_PATH
        self.tasks: dict[str, int] = read_tasks(tasks_path) if tasks_path.exists() else {}
        self.episodes: list[EpisodeInfo] = self._load_episodes()

    # ------------------------------------------------------------------ metadata
    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return int(sum(ep.length for ep in self.episodes))

    @property
    def robot_type(self) -> str | None:
        return self.meta.get("robot_type")

    @property
    def success_rate(self) -> float | None:
        """Fraction of episodes marked successful (None if unrecorded or no episodes)."""
        flags = [ep.success for ep in self.episodes if ep.success is not None]
        return float(np.mean(flags)) if flags else None

    def __len__(self) -> int:
        return self.num_episodes

    def _load_episodes(self) -> list[EpisodeInfo]:
        total = int(self.meta["total_episodes"])
        episodes_dir = self.root / layout.EPISODES_DIR
        rows: dict[int, dict[str, Any]] = {}
        for path in sorted(episodes_dir.glob("*/*.parquet")):
            table = read_parquet(path)
            keep = [c for c in table.column_names if not c.startswith("stats/")]
            for row in table.select(keep).to_pylist():
                try:
                    idx = int(row["episode_index"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise TheiaError(f"{path}: episode row without 'episode_index'") from exc
                if idx < total:  # higher ones belong to a save that has not committed
                    rows[idx] = row
        missing = [i for i in range(total) if i not in rows]
        if missing:
            chunks = int(self.meta.get("chunks_size", layout.CHUNKS_SIZE))
            chunk, file = layout.chunk_file(missing[0], chunks)
            expected = self.root / layout.EPISODES_PATH.format(chunk_index=chunk,
                                                               file_index=file)
            raise TheiaError(f"{self.root}: info.json says {total} episodes but episode "
                             f"{missing[0]} has no metadata row (expected in {expected})")
        return [self._episode_info(rows[i]) for i in range(total)]

    def _episode_info(self, row: dict[str, Any]) -> EpisodeInfo:
        try:
            idx = int(row["episode_index"])
            data_file = self.root / self.meta["data_path"].format(
                chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"]))
            videos = {}
            for cam in self.cameras:
                key = image_key(cam)
                path = self.root / self.meta["video_path"].format(
                    video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                    file_index=int(row[f"videos/{key}/file_index"]))
                videos[cam] = (path, float(row[f"videos/{key}/from_timestamp"]),
                               float(row[f"videos/{key}/to_timestamp"]))
            tasks = row.get("tasks") or [""]
            success = row.get("success")
            return EpisodeInfo(
                index=idx, length=int(row["length"]), task=str(tasks[0]),
                success=None if success is None else bool(success),
                recovered=bool(row.get("recovered", False)),
                from_index=int(row["dataset_from_index"]), data_file=data_file, videos=videos)
        except (KeyError, TypeError, ValueError) as exc:
            raise TheiaError(f"{self.root / layout.EPISODES_DIR}: episode row "
                             f"{row.get('episode_index')} lacks field {exc}") from exc

    # ------------------------------------------------------------------ frames
    def episode(self, i: int, images: bool = True) -> dict[str, np.ndarray]:
        """All frames of episode ``i`` (images decoded unless ``images=False``)."""
        if not 0 <= i < self.num_episodes:
            raise TheiaError(f"episode {i}: out of range (dataset has {self.num_episodes})")
        ep = self.episodes[i]
        table = read_parquet(ep.data_file, filters=[("episode_index", "=", i)])
        if table.num_rows != ep.length:
            raise TheiaError(f"{ep.data_file}: {table.num_rows} rows for episode {i}, "
                             f"expected {ep.length}; truncated or corrupt")
        order = np.argsort(column_to_numpy(table, "frame_index"), kind="stable")
        out: dict[str, np.ndarray] = {}
        for name in table.column_names:
            values = column_to_numpy(table, name)[order]
            if name in (STATE_KEY, EE_POSE_KEY, ACTION_KEY) or values.ndim == 2:
                values = values.astype(np.float32)
            out[name] = values
        if images:
            for cam, (path, from_s, to_s) in ep.videos.items():
                frames = decode_video(path, self.fps, from_s, to_s)
                if frames.shape[0] != ep.length:
                    raise TheiaError(f"{path}: decoded {frames.shape[0]} frames for episode "
                                     f"{i}, expected {ep.length}; truncated or corrupt")
                out[image_key(cam)] = frames
        return out
