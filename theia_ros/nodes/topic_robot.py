"""Robot state fed from ROS topics, and the ``dry_run`` robot built on it (ROS-free).

:class:`JointStateCache` keeps the newest ``sensor_msgs/JointState`` (as plain arrays with a
monotonic capture stamp) for robots whose adapter cannot read joints itself.
:class:`DryRunRobot` is a real adapter, not a test double: observations come entirely from
topics (joints here, images through :class:`~theia_ros.control.ImageCache`), ``apply``
moves nothing and returns the action, so the node only publishes what it *would* send. Use
it to shadow a policy on a robot driven by something else, or to record teleop deltas while
another node moves the arm.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from theia_ros import kinematics as K
from theia_ros.control.observation import JOINTS_KEY
from theia_ros.errors import TheiaError
from theia_ros.types import Action, ActionKind, Observation, RobotAdapter


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


class DryRunRobot(RobotAdapter):
    """Observes through topics, moves nothing (see the module docstring).

    Args:
        joints: the joint-state cache the node's subscription fills.
        action_kind: what the policy's actions mean (the bundle's).
        forward_kinematics: joints ``[J]`` -> EE pose ``[6]`` (default: the wx250s'); the safety
            filter needs the measured pose.
        clock: monotonic seconds, for observations before the first joint state.
    """

    name = "dry_run"

    def __init__(self, joints: JointStateCache, action_kind: ActionKind = ActionKind.EE_DELTA,
                 forward_kinematics: Callable[[np.ndarray], np.ndarray] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.joints = joints
        self.action_kind = ActionKind(action_kind)
        self._fk = forward_kinematics or _wx250s_fk
        self._clock = clock
        self.applied = 0
        self.holds = 0
        self.safe_stops = 0

    def observe(self) -> Observation:
        reading = self.joints.latest()
        if reading is None:
            return Observation(images={}, joint_positions=np.zeros(0), ee_pose=np.full(6, np.nan),
                               gripper=0.0, stamp_s=self._clock(), stamps_s={})
        q, grip, stamp = reading
        return Observation(images={}, joint_positions=q, ee_pose=self._fk(q), gripper=grip,
                           stamp_s=stamp, stamps_s={JOINTS_KEY: stamp})

    def apply(self, action: Action) -> Action:
        self.applied += 1
        return action

    def hold(self) -> None:
        self.holds += 1

    def safe_stop(self) -> None:
        self.safe_stops += 1


def _wx250s_fk(q: np.ndarray) -> np.ndarray:
    if q.shape != (K.NUM_JOINTS,):
        return np.full(6, np.nan)  # unknown arm: no pose, the safety filter holds
    return K.fk_pose(q)
