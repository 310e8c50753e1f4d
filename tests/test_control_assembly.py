"""The policy node's control core, assembled from parameters without rclpy."""

from __future__ import annotations

import time

import numpy as np

from theia_ros.control import LoopState
from theia_ros.robots.dry_run import DryRunRobot
from theia_ros.ros.assembly import build_control
from theia_ros.ros.params import POLICY_NODE_PARAMS
from theia_ros.ros.task_config import node_defaults
from theia_ros.types import Observation


def _policy(obs: Observation) -> np.ndarray:
    return np.array([[0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]] * 4)


def test_build_control_from_parameters_runs_a_dry_run_tick_from_topic_data() -> None:
    p = node_defaults(POLICY_NODE_PARAMS, {"robot": "dry_run", "rate_hz": 5.0})
    control = build_control(p, None, policy=_policy, image_hw=(224, 224))
    assert isinstance(control.adapter, DryRunRobot)
    assert control.images is not None  # dry_run observes cameras through topics
    assert control.runtime is None and control.image_hw == (224, 224)

    loop = control.loop
    loop.start()
    held = loop.step()
    assert held.status == "held" and held.sent is None  # no frame, no joints yet

    now = time.monotonic()
    control.images.put(p["camera"], np.zeros((224, 224, 3), np.uint8), now)
    q = np.array([0.0, -0.5, 0.5, 0.0, 0.3, 0.0])
    control.joints.put([*p["arm_joints"], p["gripper_joint"]], [*q, 0.03], now)
    report = loop.step()
    assert loop.state is LoopState.RUNNING
    assert report.status == "acted", report
    assert report.sent is not None and report.sent.xyz_m[0] > 0  # the policy's +x step
