"""The episode being recorded, kept as raw appended bytes until it is saved.

``.staging/episode/`` holds ``episode.json`` (task, camera sizes, row layout), one
``<camera>.rgb`` file of raw ``[H, W, 3]`` frames per camera and ``numeric.f64`` with one
float64 row per frame (timestamp, state, ee_pose, action). Writes are unbuffered, so
everything ``add_frame`` returned from is in the kernel and survives a killed process;
a frame cut in half by a kill is simply not counted (the complete-frame count is the
minimum over the files). Encoding to MP4 happens only at ``save_episode``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from theia_ros.dataset.layout import write_json_atomic

META_FILE = "episode.json"
NUMERIC_FILE = "numeric.f64"


class EpisodeStage:
    """Append-only store for one unfinished episode. Shapes: frames ``[H, W, 3]`` uint8."""

    def __init__(self, directory: Path, meta: dict[str, Any]) -> None:
        self.directory = directory
        self.meta = meta
        self.cameras: dict[str, tuple[int, int]] = {
            cam: (int(hw[0]), int(hw[1])) for cam, hw in meta["cameras"].items()}
        self.row_dim = int(meta["row_dim"])
        self._files: dict[str, BinaryIO] = {}
        self._count = self._complete_frames()

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, directory: Path, task: str, cameras: dict[str, tuple[int, int]],
               row_dim: int, episode_index: int) -> EpisodeStage:
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        meta = {"task": task, "episode_index": episode_index, "row_dim": row_dim,
                "cameras": {cam: [int(h), int(w)] for cam, (h, w) in cameras.items()}}
        write_json_atomic(directory / META_FILE, meta)
        return cls(directory, meta)

    @classmethod
    def load(cls, directory: Path) -> EpisodeStage | None:
        """The staged episode left by a killed writer, or None if there is nothing usable."""
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            return cls(directory, meta)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ writing
    def _file(self, name: str) -> BinaryIO:
        if name not in self._files:
            self._files[name] = open(self.directory / name, "ab", buffering=0)  # noqa: SIM115
        return self._files[name]

    def append(self, images: dict[str, np.ndarray], row: np.ndarray) -> None:
        """Append one frame: images first, the numeric row last (it marks the frame done)."""
        for cam in self.cameras:
            self._file(f"{cam}.rgb").write(np.ascontiguousarray(images[cam]).tobytes())
        self._file(NUMERIC_FILE).write(np.asarray(row, np.float64).tobytes())
        self._count += 1

    # ------------------------------------------------------------------ reading
    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def num_frames(self) -> int:
        return self._count

    def _size(self, name: str) -> int:
        path = self.directory / name
        return path.stat().st_size if path.exists() else 0

    def _complete_frames(self) -> int:
        counts = [self._size(NUMERIC_FILE) // (8 * self.row_dim)]
        for cam, (h, w) in self.cameras.items():
            counts.append(self._size(f"{cam}.rgb") // (h * w * 3))
        return int(min(counts))

    def rows(self) -> np.ndarray:
        """``[T, row_dim]`` float64 for the complete frames."""
        n = self._count
        if n == 0:
            return np.zeros((0, self.row_dim), np.float64)
        data = np.fromfile(self.directory / NUMERIC_FILE, np.float64, count=n * self.row_dim)
        return data.reshape(n, self.row_dim)

    def frames(self, camera: str) -> np.ndarray:
        """``[T, H, W, 3]`` uint8 (memory-mapped) for the complete frames."""
        h, w = self.cameras[camera]
        n = self._count
        if n == 0:
            return np.zeros((0, h, w, 3), np.uint8)
        return np.memmap(self.directory / f"{camera}.rgb", np.uint8, mode="r",
                         shape=(n, h, w, 3))
