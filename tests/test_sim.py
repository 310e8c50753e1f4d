"""The MuJoCo door-opening twin: scene, rendering, success detector, adapter, scripted expert.

Everything here runs the real simulator (MuJoCo, EGL rendering); physics-only tests use
``render=False`` because a 224x224 frame costs tens of milliseconds on these machines.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from theia_ros.control import kinematics as K
from theia_ros.robots.sim import SimWidowX
from theia_ros.sim import scene as S
from theia_ros.sim.door_env import DoorEnv
from theia_ros.sim.expert import DoorExpert, run_expert_episode
from theia_ros.sim.success import (
    FULLY_OPEN_ANGLE_RAD,
    OPEN_ANGLE_RAD,
    DoorStage,
    door_stage,
    stage_flags,
)
from theia_ros.types import Action, ActionKind


def _delta(xyz=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0), gripper: float = 1.0) -> Action:
    return Action(ActionKind.EE_DELTA, np.array(xyz, float), np.array(rpy, float), gripper)


@pytest.fixture(scope="module")
def env() -> DoorEnv:
    e = DoorEnv(render=False)
    yield e
    e.close()


@pytest.fixture(scope="module")
def robot() -> SimWidowX:
    r = SimWidowX(seed=0, render=False)
    r.connect()
    yield r
    r.disconnect()


def test_scene_params_deterministic_and_in_range() -> None:
    a, b = S.sample_scene_params(7), S.sample_scene_params(7)
    assert a == b
    assert S.sample_scene_params(8) != a
    for seed in range(30):
        p = S.sample_scene_params(seed)
        assert S.ROBOT_BASE_Z_RANGE_M[0] <= p.base_xyz_m[2] <= S.ROBOT_BASE_Z_RANGE_M[1]
        assert S.ROBOT_BASE_Y_RANGE_M[0] <= p.base_xyz_m[1] <= S.ROBOT_BASE_Y_RANGE_M[1]
        assert 0.0 <= p.door_angle0_rad < OPEN_ANGLE_RAD


def test_reset_applies_randomisation(env: DoorEnv) -> None:
    env.reset(3)
    p = env.params
    base, _ = env.base_pose_world()
    np.testing.assert_allclose(base, p.base_xyz_m, atol=1e-9)
    assert env.door_angle_rad() == pytest.approx(p.door_angle0_rad)
    np.testing.assert_allclose(env.arm_qpos(), p.arm_qpos0_rad, atol=1e-9)
    handle_3 = env.handle_centre_base()
    env.reset(4)
    assert np.linalg.norm(env.handle_centre_base() - handle_3) > 1e-3


def test_mujoco_chain_matches_kinematics(env: DoorEnv) -> None:
    """The sim's fingertip site sits exactly where ``kinematics.fk`` puts ee_gripper_link."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.uniform(K.JOINT_LOWER_RAD * 0.6, K.JOINT_UPPER_RAD * 0.6)
        env.reset(1, arm_qpos=q)
        np.testing.assert_allclose(env.ee_site_base(), K.fk(q)[:3, 3], atol=1e-9)


def test_scene_renders_224_rgb() -> None:
    e = DoorEnv(render=True)
    try:
        e.reset(0)
        img = e.render()
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8
        assert float(img.std()) > 10.0  # a real scene, not a blank frame
        e.reset(1)
        other = e.render()
        assert float(np.abs(img.astype(int) - other.astype(int)).mean()) > 1.0  # randomised
    finally:
        e.close()


def test_success_stages_thresholds() -> None:
    assert door_stage(0.0) is DoorStage.CLOSED
    assert door_stage(OPEN_ANGLE_RAD - 1e-6) is DoorStage.CLOSED
    assert door_stage(OPEN_ANGLE_RAD) is DoorStage.OPEN
    assert door_stage(FULLY_OPEN_ANGLE_RAD) is DoorStage.FULLY_OPEN
    assert stage_flags(DoorStage.OPEN) == {"open": True, "fully_open": False}


def test_success_detector_door_forced_open(env: DoorEnv) -> None:
    env.reset(2, arm_qpos=K.SLEEP_QPOS_RAD)  # arm folded, out of the door's sweep
    env.set_door_angle(math.radians(80.0))
    for _ in range(5):  # the arm holds still; the door must stay where it was put
        env.hold()
    assert env.stage() is DoorStage.FULLY_OPEN
    env.set_door_angle(math.radians(45.0))
    env.hold()
    assert env.stage() is DoorStage.OPEN


def test_success_detector_door_stays_shut(env: DoorEnv) -> None:
    env.reset(5)
    angle0 = env.door_angle_rad()
    for _ in range(10):
        env.hold()
    assert abs(env.door_angle_rad() - angle0) < math.radians(1.0)
    assert env.stage() is DoorStage.CLOSED


def test_adapter_translation_delta_moves_fingertip(robot: SimWidowX) -> None:
    robot.reset(0)
    before = robot.observe()
    sent = robot.apply(_delta(xyz=(0.015, -0.01, 0.01)))
    np.testing.assert_allclose(sent.xyz_m, [0.015, -0.01, 0.01])
    for _ in range(2):  # let the servos settle
        robot.apply(_delta())
    after = robot.observe()
    moved = after.ee_pose[:3] - before.ee_pose[:3]
    np.testing.assert_allclose(moved, [0.015, -0.01, 0.01], atol=0.004)
    np.testing.assert_allclose(after.ee_pose[3:], before.ee_pose[3:], atol=0.03)
    assert robot.stats.ik_failures == 0
    # The sim's own fingertip agrees with the adapter's reported pose (MuJoCo's site position
    # is from the start of the last physics step, hence the small tolerance).
    np.testing.assert_allclose(robot.env.ee_site_base(), after.ee_pose[:3], atol=1e-4)


def test_adapter_yaw_delta_pivots_about_fingertip(robot: SimWidowX) -> None:
    robot.reset(0)
    before = robot.observe()
    robot.apply(_delta(rpy=(0.0, 0.0, 0.1)))
    robot.apply(_delta())
    robot.apply(_delta())
    after = robot.observe()
    np.testing.assert_allclose(after.ee_pose[:3], before.ee_pose[:3], atol=0.004)
    rot_b = K.rpy_to_matrix(before.ee_pose[3:])
    rot_a = K.rpy_to_matrix(after.ee_pose[3:])
    w = K.rotation_log(rot_a @ rot_b.T)  # base-frame rotation actually performed
    np.testing.assert_allclose(w, [0.0, 0.0, 0.1], atol=0.02)


def test_adapter_gripper_and_bad_actions(robot: SimWidowX) -> None:
    robot.reset(0)
    assert robot.best_stage() is DoorStage.CLOSED
    robot.apply(_delta(gripper=0.0))
    robot.apply(_delta(gripper=0.0))
    assert robot.observe().gripper < 0.1
    q = robot.observe().joint_positions
    sent = robot.apply(_delta(xyz=(0.6, 0.0, 0.0)))  # far out of reach: IK fails, hold
    assert robot.stats.ik_failures == 1
    assert np.all(sent.xyz_m == 0.0)
    np.testing.assert_allclose(robot.observe().joint_positions, q, atol=0.01)
    sent = robot.apply(_delta(xyz=(float("nan"), 0.0, 0.0)))
    assert robot.stats.bad_actions == 1 and np.all(sent.xyz_m == 0.0)
    robot.apply(_delta(gripper=2.0))
    robot.apply(_delta(gripper=2.0))
    assert robot.observe().gripper > 0.9  # clipped to fully open


def test_adapter_observation_layout() -> None:
    times = iter(np.arange(100.0, 200.0, 0.5))
    with SimWidowX(seed=1, clock=lambda: float(next(times))) as robot:
        obs = robot.observe()
        assert obs.images["front"].shape == (224, 224, 3)
        assert obs.joint_positions.shape == (6,)
        assert obs.state_vector().shape == (7,)
        assert obs.ee_pose.shape == (6,)
        assert 0.0 <= obs.gripper <= 1.0
        assert obs.stamp_s == 100.0 and set(obs.stamps_s) == {"front", "joints"}
        robot.safe_stop()
        np.testing.assert_allclose(robot.env.arm_qpos(), K.SLEEP_QPOS_RAD, atol=0.05)


def test_expert_actions_are_teleop_sized(robot: SimWidowX) -> None:
    robot.reset(11)
    expert = DoorExpert()
    for _ in range(60):
        vec = expert.act(robot.env)
        assert np.linalg.norm(vec[:3]) <= 0.02 + 1e-9
        assert np.all(np.abs(vec[3:6]) <= 0.1 + 1e-6)
        assert 0.0 <= vec[6] <= 1.0
        robot.apply(Action.from_vector(ActionKind.EE_DELTA, vec))
        if expert.done:
            break
    assert expert.done


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_expert_opens_door(robot: SimWidowX, seed: int) -> None:
    result = run_expert_episode(robot, seed)
    assert result["stage"] is DoorStage.FULLY_OPEN, result
    assert robot.best_stage() is DoorStage.FULLY_OPEN
    assert robot.env.door_angle_rad() > FULLY_OPEN_ANGLE_RAD


def test_expert_with_command_noise_opens_door(robot: SimWidowX) -> None:
    result = run_expert_episode(robot, 21, rng_seed=5)
    assert result["stage"] is DoorStage.FULLY_OPEN, result


@pytest.mark.slow
def test_expert_success_rate_over_seeds(robot: SimWidowX) -> None:
    seeds = range(100, 150)
    stages = [run_expert_episode(robot, s, rng_seed=s)["stage"] for s in seeds]
    rate = sum(st is DoorStage.FULLY_OPEN for st in stages) / len(stages)
    assert rate >= 0.95, stages


def test_closed_loop_through_control_core() -> None:
    """The real control core (safety filter + fixed-rate loop, manual clock) drives the sim:
    first a few rendered ticks of a constant policy, then the expert as the policy."""
    control = pytest.importorskip("theia_ros.control")
    clock = control.ManualClock(1000.0)
    safety = control.SafetyFilter(control.SafetyLimits.wx250s())
    with SimWidowX(seed=4, clock=clock.now) as robot:
        start = robot.observe().ee_pose

        def forward(_obs) -> np.ndarray:
            return np.array([[0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]] * 4)

        loop = control.ControlLoop(robot, forward, safety, control.LoopConfig(rate_hz=5.0),
                                   control.ChunkingConfig(replan_every=4), clock=clock)
        loop.run(max_ticks=4)
        assert loop.stats.commands == 4
        moved = robot.observe().ee_pose[:3] - start[:3]
        assert 0.025 < moved[0] < 0.045 and abs(moved[1]) < 0.005

    robot = SimWidowX(seed=6, render=False, clock=clock.now)
    robot.connect()
    expert = DoorExpert()

    def expert_policy(_obs) -> np.ndarray:
        return expert.act(robot.env)[None, :]

    config = control.LoopConfig(rate_hz=5.0, freshness=control.Freshness(cameras=()))
    loop = control.ControlLoop(robot, expert_policy, control.SafetyFilter(
        control.SafetyLimits.wx250s()), config, clock=clock)
    loop.start()
    for _ in range(70):
        loop.step()
        clock.advance(0.2)
        if expert.done:
            break
    assert expert.done and robot.success() is DoorStage.FULLY_OPEN
    assert loop.stats.commands >= 30
    robot.disconnect()


def test_observe_on_another_thread_than_connect() -> None:
    """ROS nodes connect on the main thread and tick (render) on their control thread; the
    EGL context must follow (it failed with EGL_BAD_ACCESS before the renderer released it)."""
    import threading

    sim = SimWidowX(seed=3, image_size=64)
    sim.connect()
    try:
        first = sim.observe().images["front"]
        seen: list[np.ndarray] = []
        errors: list[str] = []

        def tick() -> None:
            try:
                seen.append(sim.observe().images["front"])
            except Exception as exc:
                errors.append(repr(exc))

        for _ in range(2):
            t = threading.Thread(target=tick)
            t.start()
            t.join()
        assert errors == []
        assert len(seen) == 2 and seen[0].shape == first.shape == (64, 64, 3)
        np.testing.assert_array_equal(seen[0], first)  # nothing moved: the same view
    finally:
        sim.disconnect()
