"""An e-stop pre-empts a park on every robot: the arm holds where it is, nothing parks after.

Each robot's own ``safe_stop`` is run and interrupted the way the control loop does it
(``RobotAdapter.interrupt_park`` from the e-stop, before the loop lock is taken):

- ``sim``: the real MuJoCo twin; its park simulates periods as fast as it can, so the
  e-stop arrives from inside the third period (a thread calling ``ControlLoop.estop``).
- ``widowx``: the adapter's real park code (non-blocking pose commands + ``park_wait``),
  through the Interbotix STAND-IN of ``test_widowx_adapter`` (Interbotix cannot be
  installed here; see that module), with a 1 s per pose park in real time.
- ``spot``: the real bosdyn client over loopback gRPC against the STAND-IN server
  (``tests/spot_standin``, not Boston Dynamics' software), whose stow takes 3 s.
- ``dry_run``: moves nothing; after an e-stop its park is not even called.
"""
# ruff: noqa: F401, F811 - pytest fixtures imported from spot_standin.fixtures

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from spot_standin.fixtures import config_for, pose_action, robot_env, standin, wait_until
from test_widowx_adapter import StandInBot

from theia_ros.control import (
    ControlLoop,
    Freshness,
    LoopConfig,
    LoopState,
    ManualClock,
    SafetyFilter,
    SafetyLimits,
)
from theia_ros.control import kinematics as K
from theia_ros.robots.dry_run import DryRunRobot
from theia_ros.robots.joint_state import JointStateCache
from theia_ros.robots.widowx import WidowXAdapter, WidowXConfig


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
def widowx() -> tuple[WidowXAdapter, StandInBot]:
    bot = StandInBot(ManualClock(50.0))
    adapter = WidowXAdapter(WidowXConfig(park_moving_time_s=1.0, fault_check_period_s=0.0),
                            bot_factory=lambda cfg, node: (bot, lambda: None))
    adapter.connect()
    return adapter, bot


def test_widowx_park_stops_within_a_tick_of_the_estop(widowx) -> None:
    adapter, bot = widowx
    parker = threading.Thread(target=adapter.safe_stop)
    parker.start()
    assert wait_until(lambda: "go_to_home_pose" in bot.names(), 2.0)
    t0 = time.monotonic()
    adapter.interrupt_park()
    parker.join(timeout=3.0)
    assert not parker.is_alive() and time.monotonic() - t0 < 0.5  # the pose takes 1 s
    names = [n for n in bot.names() if n != "release"]
    assert names == ["publish_positions", "go_to_home_pose", "publish_positions"]
    home = dict(bot.calls)["go_to_home_pose"]
    assert home["blocking"] is False and home["moving_time"] == pytest.approx(1.0)
    hold = bot.calls[-1][1]["positions"]
    np.testing.assert_allclose(hold, bot.q)  # held at the measured joints
    assert adapter.counters["parks"] == 0
    adapter.safe_stop()  # while interrupted: a hold only, no park
    assert "go_to_sleep_pose" not in bot.names() and bot.names()[-1] == "publish_positions"
    adapter.allow_park()
    adapter.safe_stop()
    assert bot.names()[-1] == "go_to_sleep_pose" and adapter.counters["parks"] == 1


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
