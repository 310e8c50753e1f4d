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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

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
        camera_max_age_s: camera -> its own oldest acceptable image (a wrist camera at a
            lower rate than the scene camera); cameras not named use ``max_image_age_s``.
    """

    cameras: tuple[str, ...] = ("front",)
    max_image_age_s: float = 0.3
    max_joint_age_s: float = 0.2
    max_future_s: float = 0.05
    camera_max_age_s: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("max_image_age_s", "max_joint_age_s", "max_future_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise TheiaError(f"control loop: {name} must be >= 0 s, got {value!r}")
        ages = self.camera_max_age_s
        if not isinstance(ages, Mapping):
            raise TheiaError("control loop: camera_max_age_s must be a mapping camera -> "
                             f"seconds, got {ages!r}")
        unknown = sorted(str(c) for c in set(ages) - set(self.cameras))
        if unknown:
            raise TheiaError(f"control loop: camera_max_age_s names {unknown}, not among the "
                             f"cameras {list(self.cameras)}")
        checked: dict[str, float] = {}
        for cam, value in ages.items():
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not (np.isfinite(value) and value >= 0)):
                raise TheiaError(f"control loop: camera_max_age_s[{cam!r}] must be >= 0 s, "
                                 f"got {value!r}")
            checked[cam] = float(value)
        object.__setattr__(self, "camera_max_age_s", checked)  # a private copy

    def max_age_s(self, camera: str) -> float:
        """The oldest acceptable image of ``camera``."""
        return self.camera_max_age_s.get(camera, self.max_image_age_s)

    def check(self, obs: Observation, now_s: float) -> HoldReason | None:
        """None when ``obs`` may be acted on at ``now_s``, else the reason to hold."""
        return self.assess(obs, now_s)[0]

    def assess(self, obs: Observation, now_s: float) -> tuple[HoldReason | None, str | None]:
        """:meth:`check` with the camera the hold concerns (None: not a camera's).

        Ages are compared so that a NaN or -inf stamp (a stamp that cannot be true) counts
        as stale, never as fresh.
        """
        for cam in self.cameras:
            image = obs.images.get(cam)
            if image is None or getattr(image, "size", 0) == 0:
                return HoldReason.MISSING_IMAGE, cam
            if not _is_rgb8(image):
                return HoldReason.BAD_IMAGE, cam
            age = now_s - obs.stamps_s.get(cam, obs.stamp_s)
            if age < -self.max_future_s:
                return HoldReason.FUTURE_STAMP, cam
            if not age <= self.max_age_s(cam):
                return HoldReason.STALE_IMAGE, cam
        joints = np.asarray(obs.joint_positions, dtype=np.float64)
        if joints.size == 0:
            return HoldReason.MISSING_JOINTS, None
        if not _plausible_state(joints, obs.gripper, obs.ee_pose):
            return HoldReason.BAD_JOINTS, None
        age = now_s - obs.stamps_s.get(JOINTS_KEY, obs.stamp_s)
        if age < -self.max_future_s:
            return HoldReason.FUTURE_STAMP, None
        if not age <= self.max_joint_age_s:
            return HoldReason.STALE_JOINTS, None
        return None, None

    def hold_text(self, reason: str, camera: str | None) -> str:
        """A hold as one line: the camera is named only when there are several to tell
        apart (``stale_image (wrist)``); with one camera it is the bare reason."""
        return f"{reason} ({camera})" if camera and len(self.cameras) > 1 else reason


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
