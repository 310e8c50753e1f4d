"""Arm joint state fed from ``sensor_msgs/JointState``, for robots whose adapter cannot read
joints itself (ROS-free: the nodes convert messages to plain arrays first).

A reading that cannot be true (NaN, inf, a joint beyond a full turn, a finger far outside
its travel) is a broken sensor sample, not a position: it is stored as NaN, so the control
loop holds (``bad_joint_state``) until a good reading replaces it, and it is reported to the
caller to count. It is never clamped into range, which would make garbage look plausible.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np

from theia_ros.control import kinematics as K
from theia_ros.control.observation import MAX_ABS_JOINT_RAD
from theia_ros.errors import TheiaError

FINGER_SLACK_M = 0.01  # finger readings this far past closed / open are still believed


def gripper_fraction(finger_m: float) -> float:
    """wx250s left-finger position (m) -> open fraction in [0, 1]; NaN for a reading that
    cannot be true (non-finite, or more than ``FINGER_SLACK_M`` outside the finger travel).
    Small overshoots (calibration) are clamped."""
    finger_m = float(finger_m)
    if not (K.FINGER_CLOSED_M - FINGER_SLACK_M <= finger_m <= K.FINGER_OPEN_M + FINGER_SLACK_M):
        return math.nan  # also false for NaN
    frac = (finger_m - K.FINGER_CLOSED_M) / (K.FINGER_OPEN_M - K.FINGER_CLOSED_M)
    return float(np.clip(frac, 0.0, 1.0))


def implausible_joints(q_rad: np.ndarray) -> np.ndarray:
    """Mask of joint readings that cannot be true (non-finite or beyond a full turn)."""
    q = np.asarray(q_rad, dtype=np.float64)
    return ~(np.abs(q) <= MAX_ABS_JOINT_RAD)  # NaN compares false: it is flagged too


class JointStateCache:
    """Newest arm joints ``[J]`` (rad, in ``arm_joints`` order) + gripper fraction + stamp.

    Args:
        arm_joints: joint names in policy-state order.
        gripper_joint: finger joint name (None: gripper reported as 0).
    """

    def __init__(self, arm_joints: Sequence[str], gripper_joint: str | None) -> None:
        if not arm_joints:
            raise TheiaError("joint state: arm_joints must name at least one joint")
        self.arm_joints = tuple(arm_joints)
        self.gripper_joint = gripper_joint
        self._lock = threading.Lock()
        self._q: np.ndarray | None = None
        self._gripper = 0.0
        self._stamp_s = -np.inf
        self.rejected = 0

    def put(self, names: Sequence[str], positions: Sequence[float], stamp_s: float) -> None:
        """Store one message. Raises :class:`TheiaError` when a configured joint is missing
        (nothing stored) or a value cannot be true (stored as NaN: the loop holds on it)."""
        index = {n: i for i, n in enumerate(names)}
        if len(positions) < len(names):
            self.rejected += 1
            raise TheiaError(f"joint state: {len(names)} names but {len(positions)} positions")
        missing = [n for n in self.arm_joints if n not in index]
        if missing:
            self.rejected += 1
            raise TheiaError(f"joint state: joints {missing} missing (message has "
                             f"{list(names)[:10]})")
        try:
            q = np.array([positions[index[n]] for n in self.arm_joints], dtype=np.float64)
            finger = None
            if self.gripper_joint is not None and self.gripper_joint in index:
                finger = float(positions[index[self.gripper_joint]])
        except (TypeError, ValueError) as exc:
            self.rejected += 1
            raise TheiaError(f"joint state: positions are not numbers ({exc})") from exc
        bad = implausible_joints(q)
        grip = 0.0 if finger is None else gripper_fraction(finger)
        q[bad] = np.nan
        with self._lock:
            self._q, self._gripper, self._stamp_s = q, grip, float(stamp_s)
        if bad.any() or math.isnan(grip):
            self.rejected += 1
            what = [f"{n}={float(positions[index[n]])!r}"
                    for n, b in zip(self.arm_joints, bad) if b]
            if math.isnan(grip):
                what.append(f"{self.gripper_joint}={finger!r}")
            raise TheiaError(f"joint state: impossible reading {', '.join(what)}; holding "
                             "until a valid one arrives")

    def latest(self) -> tuple[np.ndarray, float, float] | None:
        """(joints [J] rad, gripper fraction, monotonic stamp) or None before the first message."""
        with self._lock:
            if self._q is None:
                return None
            return self._q.copy(), self._gripper, self._stamp_s

