"""The ``dry_run`` robot: observes through topics, moves nothing (ROS-free).

:class:`DryRunRobot` is a real adapter, not a test double: observations come entirely from
topics (joints here, images through :class:`~theia_ros.control.ImageCache`), ``apply``
moves nothing and returns the action, so the node only publishes what it *would* send. Use
it to shadow a policy on a robot driven by something else, or to record teleop deltas while
another node moves the arm.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from theia_ros.control import kinematics as K
from theia_ros.control.observation import JOINTS_KEY
from theia_ros.robots.joint_state import JointStateCache
from theia_ros.types import Action, ActionKind, Observation, RobotAdapter


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
    if q.shape != (K.NUM_JOINTS,) or not np.all(np.isfinite(q)):
        return np.full(6, np.nan)  # unknown arm or a bad reading: no pose, the loop holds
    return K.fk_pose(q)
