"""Observation assembly: merge the latest camera frames into the robot's observation and
decide whether it is fresh and sane enough to act on (a stale, missing or impossible sensor
value -> hold, not act; the loop acts again as soon as good data is back).

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
MAX_ABS_JOINT_RAD = 2 * np.pi  # a revolute reading beyond a full turn is a broken sensor


class HoldReason(str, enum.Enum):
    """Why a tick did not act (other than a safety-filter hold)."""

    PAUSED = "paused"
    MISSING_IMAGE = "missing_image"
    BAD_IMAGE = "bad_image"  # not uint8 [H, W, 3]
    STALE_IMAGE = "stale_image"
    MISSING_JOINTS = "missing_joint_state"
    BAD_JOINTS = "bad_joint_state"  # joints, gripper or EE pose non-finite or impossible
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
        """None when ``obs`` may be acted on at ``now_s``, else the reason to hold.

        Ages are compared so that a NaN or -inf stamp (a stamp that cannot be true) counts
        as stale, never as fresh.
        """
        for cam in self.cameras:
            image = obs.images.get(cam)
            if image is None or getattr(image, "size", 0) == 0:
                return HoldReason.MISSING_IMAGE
            if not _is_rgb8(image):
                return HoldReason.BAD_IMAGE
            age = now_s - obs.stamps_s.get(cam, obs.stamp_s)
            if age < -self.max_future_s:
                return HoldReason.FUTURE_STAMP
            if not age <= self.max_image_age_s:
                return HoldReason.STALE_IMAGE
        joints = np.asarray(obs.joint_positions, dtype=np.float64)
        if joints.size == 0:
            return HoldReason.MISSING_JOINTS
        if not _plausible_state(joints, obs.gripper, obs.ee_pose):
            return HoldReason.BAD_JOINTS
        age = now_s - obs.stamps_s.get(JOINTS_KEY, obs.stamp_s)
        if age < -self.max_future_s:
            return HoldReason.FUTURE_STAMP
        if not age <= self.max_joint_age_s:
            return HoldReason.STALE_JOINTS
        return None


def _is_rgb8(image: object) -> bool:
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3)


def _plausible_state(joints: np.ndarray, gripper: float, ee_pose: np.ndarray) -> bool:
    """Joints within a turn, gripper fraction in [0, 1], EE pose 6 finite numbers (NaN fails
    every comparison, so it is never plausible)."""
    try:
        grip = float(gripper)
        pose = np.asarray(ee_pose, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return False
    return bool(np.all(np.abs(joints) <= MAX_ABS_JOINT_RAD) and 0.0 <= grip <= 1.0
                and pose.shape == (6,) and np.all(np.isfinite(pose)))


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
