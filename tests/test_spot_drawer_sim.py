"""The simulated Spot's drawer world: stance per seed, grip, pull, slip, success, camera.

The robot here is the simulator (``theia_ros.sim.spot``, a stand-in, not Boston Dynamics'
software); these tests step its world by hand, without the gRPC server.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("bosdyn.api")

from theia_ros.sim.spot import StandInRobot
from theia_ros.sim.spot import kinematics as kin
from theia_ros.sim.spot.drawer import (
    HANDLE_WIDTH,
    POSE_JITTER_M,
    SUCCESS_OPEN_M,
    YAW_JITTER_RAD,
    DrawerWorld,
    body_pose_for_seed,
)

DT = 0.01


@pytest.fixture
def world_robot():
    world = DrawerWorld(sources=(), seed=3)
    robot = StandInRobot(username="u", password="p", world=world)
    robot.motors_on = True
    return world, robot


def _put_hand(robot, world, offset_body: np.ndarray, steps: int = 5) -> None:
    xyz, rpy = world.handle_pose_in_body()
    q = kin.inverse(xyz + offset_body, kin.rot_z(rpy[2]), robot.arm.q
                    if kin.within_limits(robot.arm.q) else kin.READY_Q)
    assert q is not None, "test pose out of the arm's reach"
    robot.arm.q = q
    for _ in range(steps):
        robot.step(DT)


def _grip_handle(robot, world) -> None:
    """Open jaws onto the handle, then close them (0.6 s)."""
    robot.arm.claw = robot.arm.claw_target = 1.0
    _put_hand(robot, world, np.zeros(3))
    robot.arm.claw_target = 0.0
    for _ in range(60):
        robot.step(DT)


def _pull_axis(world) -> np.ndarray:
    return world.to_body(world.handle_closed_world + world.pull_dir_world) - \
        world.to_body(world.handle_closed_world)


def test_stance_per_seed_is_bounded_deterministic_and_varied():
    poses = np.array([body_pose_for_seed(s) for s in range(200)])
    assert np.all(np.abs(poses[:, :2]) <= POSE_JITTER_M)
    assert np.all(np.abs(poses[:, 2]) <= YAW_JITTER_RAD)
    assert body_pose_for_seed(7) == body_pose_for_seed(7)
    assert poses[:, 2].std() > 0.05 and poses[:, 0].std() > 0.01


def test_handle_pose_follows_the_stance(world_robot):
    world, _ = world_robot
    world.reset(1)
    a, yaw_a = world.handle_pose_in_body()
    world.reset(2)
    b, yaw_b = world.handle_pose_in_body()
    assert np.linalg.norm(a - b) > 0.005 and abs(yaw_a[2] - yaw_b[2]) > 0.01
    # back to the world frame: the handle itself did not move
    assert np.allclose(world.to_world(b), world.handle_closed_world)


def test_gripped_pull_opens_the_drawer_and_counts_as_success(world_robot):
    world, robot = world_robot
    _grip_handle(robot, world)
    assert robot.arm.gripping and robot.arm.claw == pytest.approx(HANDLE_WIDTH)
    axis = _pull_axis(world)
    for d in np.linspace(0.0, 0.15, 16):
        _put_hand(robot, world, d * axis, steps=2)
    assert world.opening_m == pytest.approx(0.15, abs=0.01)
    assert world.success and SUCCESS_OPEN_M == 0.10


def test_open_claw_pulls_nothing(world_robot):
    world, robot = world_robot
    robot.arm.claw = robot.arm.claw_target = 1.0
    axis = _pull_axis(world)
    for d in np.linspace(0.0, 0.15, 16):
        _put_hand(robot, world, d * axis, steps=2)
    assert world.opening_m < 0.005 and not world.success


def test_pulling_off_the_slide_line_slips(world_robot):
    world, robot = world_robot
    _grip_handle(robot, world)
    assert robot.arm.gripping
    sideways = np.array([0.0, 0.0, 1.0])  # straight up, across the slide
    for d in np.linspace(0.0, 0.08, 9):
        _put_hand(robot, world, d * sideways, steps=2)
    assert not robot.arm.gripping
    assert world.opening_m < 0.02


def test_camera_sees_the_drawer_open():
    world = DrawerWorld(96, 96, sources=("front_color",), seed=0)
    try:
        closed = world.render(kin.READY_Q, 1.0, 0.0, world.body_xy_yaw)["front_color"]
        opened = world.render(kin.READY_Q, 1.0, 0.2, world.body_xy_yaw)["front_color"]
    finally:
        world.close()
    assert closed.shape == (96, 96, 3) and closed.dtype == np.uint8
    assert np.abs(closed.astype(int) - opened.astype(int)).mean() > 2.0


def test_demo_starts_from_one_body_pose_and_every_plan_is_reachable():
    """The scripted demo starts from the same body-frame hand pose whatever the stance (so
    the handle's place must be seen, as on the paper's robot), and every pose of its plan on
    30 stances is inside the arm's reach and wrist limits."""
    from theia_ros.control.rotations import rpy_to_matrix
    from theia_ros.record.spot_script import plan_demo, plan_reset
    from theia_ros.sim.spot.drawer_task import script_for_stance

    world = DrawerWorld(sources=(), seed=0)
    starts, handles = [], []
    ready = np.r_[kin.forward(kin.READY_Q)[0], 0.0, 0.0, 0.0]
    for seed in range(30):
        world.reset(seed)
        script = script_for_stance(world)
        start = script.start_pose(np.random.default_rng(seed))
        starts.append(script.start_pose())
        handles.append(script.handle_pose)
        poses = np.vstack([ready, plan_reset(script, ready, start, 0.2).waypoints[:, :6],
                           plan_demo(script, start, 0.2).waypoints[:, :6]])
        q = kin.READY_Q
        for pose in poses:
            q = kin.inverse(pose[:3], rpy_to_matrix(pose[3:6]), q)
            assert q is not None and abs(q[4]) < kin.LIMITS_RAD[4, 1] - 0.1, (seed, pose)
    assert np.ptp(np.array(starts), axis=0).max() < 1e-9
    spread = np.ptp(np.array(handles), axis=0)
    assert spread[:2].min() > 0.05 and spread[5] > 0.2  # x, y and yaw of the handle vary
