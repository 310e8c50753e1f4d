"""Arm joint state fed from ``sensor_msgs/JointState``, for robots whose adapter cannot read
joints itself (ROS-free: the nodes convert messages to plain arrays first)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from theia_ros.control import kinematics as K
from theia_ros.errors import TheiaError


def gripper_fraction(finger_m: float) -> float:
    """wx250s left-finger position (m) -> open fraction in [0, 1]."""
    frac = (finger_m - K.FINGER_CLOSED_M) / (K.FINGER_OPEN_M - K.FINGER_CLOSED_M)
    return float(np.clip(frac, 0.0, 1.0))


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
        """Store one message; raises :class:`TheiaError` when a configured joint is missing."""
        index = {n: i for i, n in enumerate(names)}
        if len(positions) < len(names):
            self.rejected += 1
            raise TheiaError(f"joint state: {len(names)} names but {len(positions)} positions")
        missing = [n for n in self.arm_joints if n not in index]
        if missing:
            self.rejected += 1
            raise TheiaError(f"joint state: joints {missing} missing (message has "
                             f"{list(names)[:10]})")
        q = np.array([positions[index[n]] for n in self.arm_joints], dtype=np.float64)
        grip = 0.0
        if self.gripper_joint is not None and self.gripper_joint in index:
            grip = gripper_fraction(float(positions[index[self.gripper_joint]]))
        with self._lock:
            self._q, self._gripper, self._stamp_s = q, grip, float(stamp_s)

    def latest(self) -> tuple[np.ndarray, float, float] | None:
        """(joints [J] rad, gripper fraction, monotonic stamp) or None before the first message."""
        with self._lock:
            if self._q is None:
                return None
            return self._q.copy(), self._gripper, self._stamp_s
