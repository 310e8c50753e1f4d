"""An e-stop pre-empts a park on every robot: the arm holds where it is, nothing parks after.

Each robot's own ``safe_stop`` is run and interrupted the way the control loop does it
(``RobotAdapter.interrupt_park`` from the e-stop, before the loop lock is taken):

- ``sim``: the real MuJoCo twin; its park simulates periods as fast as it can, so the
  e-stop arrives from inside the third period (a thread calling ``ControlLoop.estop``).
- ``widowx``: the adapter's real park code (non-blocking pose commands + ``park_wait``)
  through the unmodified upstream ``interbotix_xs_modules`` against our MuJoCo xs_sdk twin
  (``theia_ros.sim.xs_sdk_twin``), whose servos follow a 1 s per pose park in real time;
  what the servos were told is heard on the twin's command topic.
- ``spot``: the real bosdyn client over loopback gRPC against the STAND-IN server
  (``tests/spot_standin``, not Boston Dynamics' software), whose stow takes 3 s.
- ``dry_run``: moves nothing; after an e-stop its park is not even called.
"""
# ruff: noqa: F401, F811 - pytest fixtures imported from spot_standin / helpers_xs_twin

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers_xs_twin import (
    HOME_Q,
    START_Q,
    CommandLog,
    connect_at_start,
    is_pose,
    make_adapter,
    twin,
)
from spot_standin.fixtures import config_for, pose_action, robot_env, standin, wait_until

from theia_ros.control import (
    ControlLoop,
    Freshness,
    LoopConfig,
    LoopState,
    SafetyFilter,
    SafetyLimits,
)
from theia_ros.control import kinematics as K
from theia_ros.robots.dry_run import DryRunRobot
from theia_ros.robots.joint_state import JointStateCache
from theia_ros.robots.widowx import WidowXAdapter


def _still(obs) -> np.ndarray:
    return np.tile([0.0, 0, 0, 0, 0, 0, 1.0], (2, 1))


def test_sim_park_stops_where_the_estop_finds_it() -> None:
    pytest.importorskip("mujoco")
    from theia_ros.robots.sim import PARK_STEPS, SETTLE_STEPS, SimWidowX

    # uninterrupted, the park reaches the sleep pose
    with SimWidowX(seed=0, render=False) as sim:
        sim.safe_stop()
        np.testing.assert_allclose(sim.env.arm_qpos(), K.SLEEP_QPOS_RAD, atol=0.05)

    sim = SimWidowX(seed=0, render=False)
    sim.connect()
    loop = ControlLoop(sim, _still, SafetyFilter(SafetyLimits.wx250s()),
                       LoopConfig(rate_hz=5.0, freshness=Freshness(cameras=())))
    loop.start()
    real_step = sim.env.step_joints
    periods: list[int] = []
    estop = threading.Thread(target=loop.estop, args=("big red button",))

    def step_joints(*args, **kwargs):
        periods.append(1)
        if len(periods) == 4:  # hold + 2 park periods done: the button is pressed now
            estop.start()
            assert wait_until(lambda: sim.park_interrupted, 2.0)
        return real_step(*args, **kwargs)

    sim.env.step_joints = step_joints
    try:
        loop.stop()  # parks in this thread, as the control thread would
        estop.join(timeout=5.0)
        assert len(periods) < 1 + PARK_STEPS + SETTLE_STEPS  # the park was cut short
        q = sim.env.arm_qpos()
        assert np.max(np.abs(q - K.SLEEP_QPOS_RAD)) > 0.2  # not parked: held mid-way
        assert loop.safety.estopped and loop.state is LoopState.STOPPED
        n = len(periods)
        q = sim.env.arm_qpos()
        sim.safe_stop()  # e.g. the adapter's context manager on exit: it only holds
        assert len(periods) == n + 2
        np.testing.assert_allclose(sim.env.arm_qpos(), q, atol=0.02)
    finally:
        sim.disconnect()


@pytest.fixture
def widowx(twin):
    log = CommandLog(twin)
    adapter = make_adapter(twin, park_moving_time_s=1.0)
    try:
        connect_at_start(adapter, log)
        yield adapter, log
    finally:
        adapter.disconnect()
        log.close()


def _measured(adapter: WidowXAdapter) -> np.ndarray:
    return adapter.observe().joint_positions


def test_widowx_park_stops_within_a_tick_of_the_estop(twin, widowx) -> None:
    adapter, sent = widowx
    n0 = len(sent)
    parker = threading.Thread(target=adapter.safe_stop)
    parker.start()
    assert wait_until(lambda: is_pose(sent.last(), HOME_Q), 2.0), sent.since(n0)
    t0 = time.monotonic()
    adapter.interrupt_park()
    parker.join(timeout=3.0)
    assert not parker.is_alive() and time.monotonic() - t0 < 0.5  # the pose takes 1 s
    # the servos were told: hold, home on the 1 s park profile, hold where the arm is
    assert adapter.link.read_registers("arm", "Profile_Velocity", 1.0) == [1000] * 6
    assert wait_until(lambda: len(sent) >= n0 + 3, 1.0)
    hold0, home, hold = sent.since(n0)
    np.testing.assert_allclose(hold0, START_Q, atol=0.01)
    assert is_pose(home, HOME_Q) and not is_pose(hold, HOME_Q, atol=0.05)
    time.sleep(1.2)  # past the end of the interrupted home move
    q = _measured(adapter)
    np.testing.assert_allclose(q, hold, atol=0.02)  # held at the joints measured then
    assert np.max(np.abs(q - K.SLEEP_QPOS_RAD)) > 0.2 and np.max(np.abs(q - HOME_Q)) > 0.05
    assert adapter.counters["parks"] == 0 and len(sent) == n0 + 3
    n1 = len(sent)
    adapter.safe_stop()  # while interrupted: a hold only, no park
    time.sleep(0.3)
    assert sent.since(n1), "no hold was sent"
    for cmd in sent.since(n1):
        np.testing.assert_allclose(cmd, q, atol=0.02)
    assert adapter.counters["parks"] == 0
    adapter.allow_park()
    adapter.safe_stop()
    assert adapter.counters["parks"] == 1
    assert is_pose(sent.since(n1)[-2], HOME_Q)
    assert is_pose(sent.last(), K.SLEEP_QPOS_RAD)
    assert wait_until(lambda: np.allclose(_measured(adapter), K.SLEEP_QPOS_RAD, atol=0.02), 1.0), \
        _measured(adapter)


def test_spot_stow_stops_within_a_tick_of_the_estop(standin, robot_env) -> None:
    from theia_ros.robots.spot.adapter import SpotAdapter

    standin.state.arm.joint_speed_rad_s = 0.4  # a slow stow: several seconds
    with SpotAdapter(config_for(standin)) as spot:
        loop = ControlLoop(spot, lambda obs: np.tile(pose_action(0.7, 0.0, 0.3).to_vector(),
                                                     (2, 1)),
                           SafetyFilter(spot.config.safety_limits()),
                           LoopConfig(rate_hz=20.0, freshness=Freshness(
                               cameras=("front",), max_image_age_s=0.5, max_joint_age_s=0.5)))
        loop.run(max_ticks=3)
        parker = threading.Thread(target=loop.stop)
        parker.start()
        assert wait_until(lambda: "stow" in standin.events(), 3.0)
        t0 = time.monotonic()
        loop.estop("big red button")
        answered_s = time.monotonic() - t0
        parker.join(timeout=5.0)
        assert answered_s < 0.5, f"e-stop answered after {answered_s:.2f} s (stow: 3 s)"
        tail = standin.events()[standin.events().index("stow"):]
        assert "arm_stop" in tail and "safe_power_off" not in tail
    # leaving the context manager after the e-stop does not stow or power off either
    tail = standin.events()[standin.events().index("stow"):]
    assert tail.count("stow") == 1 and "safe_power_off" not in tail


def test_dry_run_is_not_parked_after_an_estop() -> None:
    robot = DryRunRobot(JointStateCache(["a"], None))
    loop = ControlLoop(robot, _still, SafetyFilter(SafetyLimits.wx250s()),
                       LoopConfig(rate_hz=5.0, freshness=Freshness(cameras=())))
    loop.start()
    loop.estop()
    loop.stop()
    assert robot.safe_stops == 0 and robot.holds >= 1 and robot.park_interrupted
    loop.safety.reset_estop()
    loop.clear_fault()
    loop.start()  # the e-stop was reset: parking is allowed again
    loop.stop()
    assert robot.safe_stops == 1
