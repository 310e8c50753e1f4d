"""Observation assembly: merge the latest camera frames into the robot's observation and
decide whether it is fresh enough to act on (stale or missing sensor -> hold, not act).

Stamps are monotonic seconds (the loop's clock). ``Observation.stamps_s`` keys: the camera
name for each image (``"front"``) and :data:`JOINTS_KEY` for the joint state. A ROS node
converts header stamps first: ``stamp_mono = now_mono - (now_ros - header.stamp)``.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, replace

import numpy as np

from theia_ros.errors import TheiaError
from theia_ros.types import Observation

JOINTS_KEY = "joints"  # stamps_s key of the joint-state capture time


class HoldReason(str, enum.Enum):
    """Why a tick did not act (other than a safety-filter hold)."""

    PAUSED = "paused"
    MISSING_IMAGE = "missing_image"
    STALE_IMAGE = "stale_image"
    MISSING_JOINTS = "missing_joint_state"
    STALE_JOINTS = "stale_joint_state"
    FUTURE_STAMP = "stamp_in_future"  # a stamp from another clock, most likely
    STALE_HISTORY = "stale_history_frame"  # a camera repeated its frame: history not T ticks
    HISTORY_GAP = "history_gap"  # refilling the observation history after a gap
    NO_PLAN = "no_plan"  # async planning: the first plan is not there yet
    CHUNK_EXHAUSTED = "chunk_exhausted"  # no chunk row for this tick


@dataclass(frozen=True)
class Freshness:
    """Staleness bounds.

    Args:
        cameras: camera names that must be present.
        max_image_age_s: oldest acceptable image, seconds before the tick.
        max_joint_age_s: oldest acceptable joint state.
        max_future_s: how far in the future a stamp may be (clock jitter) before it is
            treated as coming from the wrong clock.
    """

    cameras: tuple[str, ...] = ("front",)
    max_image_age_s: float = 0.3
    max_joint_age_s: float = 0.2
    max_future_s: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_image_age_s", "max_joint_age_s", "max_future_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise TheiaError(f"control loop: {name} must be >= 0 s, got {value!r}")

    def check(self, obs: Observation, now_s: float) -> HoldReason | None:
        """None when ``obs`` may be acted on at ``now_s``, else the reason to hold."""
        for cam in self.cameras:
            image = obs.images.get(cam)
            if image is None or getattr(image, "size", 0) == 0:
                return HoldReason.MISSING_IMAGE
            age = now_s - obs.stamps_s.get(cam, obs.stamp_s)
            if age < -self.max_future_s:
                return HoldReason.FUTURE_STAMP
            if age > self.max_image_age_s:
                return HoldReason.STALE_IMAGE
        joints = np.asarray(obs.joint_positions, dtype=np.float64)
        if joints.size == 0 or not np.all(np.isfinite(joints)):
            return HoldReason.MISSING_JOINTS
        age = now_s - obs.stamps_s.get(JOINTS_KEY, obs.stamp_s)
        if age < -self.max_future_s:
            return HoldReason.FUTURE_STAMP
        if age > self.max_joint_age_s:
            return HoldReason.STALE_JOINTS
        return None


class ImageCache:
    """Latest frame per camera with its capture stamp; written by camera callbacks.

    For robots whose adapter has no camera of its own (the WidowX: images come from a ROS
    camera driver), the loop merges these frames into each observation.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: dict[str, np.ndarray] = {}
        self._stamps: dict[str, float] = {}

    def put(self, camera: str, image_u8: np.ndarray, stamp_s: float) -> None:
        """Store ``image_u8`` ``[H, W, 3]`` uint8 RGB captured at monotonic ``stamp_s``."""
        image_u8 = np.asarray(image_u8)
        if image_u8.dtype != np.uint8 or image_u8.ndim != 3 or image_u8.shape[2] != 3:
            raise TheiaError(f"image cache: camera {camera!r} needs uint8 [H, W, 3], got "
                             f"{image_u8.dtype} {list(image_u8.shape)}")
        with self._lock:
            self._images[camera] = image_u8
            self._stamps[camera] = float(stamp_s)

    def merge_into(self, obs: Observation) -> Observation:
        """``obs`` with the cached frames added (cached ones win) and ``stamp_s`` updated."""
        with self._lock:
            images = dict(self._images)
            stamps = dict(self._stamps)
        if not images:
            return obs
        all_stamps = {**obs.stamps_s, **stamps}
        oldest = min(all_stamps.values()) if all_stamps else obs.stamp_s
        return replace(obs, images={**obs.images, **images}, stamps_s=all_stamps,
                       stamp_s=oldest)
