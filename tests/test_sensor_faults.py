"""An impossible sensor value is a stale sensor: the loop holds, counts it, and acts again as
soon as good data is back; never a fault and park, never a silent clamp.

Paths: the joint-state cache the nodes fill from ``sensor_msgs/JointState`` (``dry_run``),
the WidowX adapter's own reading of Interbotix's joint states (through the Interbotix
STAND-IN of ``test_widowx_adapter``: Interbotix cannot be installed here), Spot's robot
state over real gRPC (the STAND-IN server of ``tests/spot_standin``, not Boston Dynamics'
software), and images an adapter returns (``RecordingArm`` of ``test_control_loop``, a test
double). The node's own JointState path over rclpy is in ``test_nodes_policy``.
"""
# ruff: noqa: F401, F811 - pytest fixtures imported from spot_standin.fixtures

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from spot_standin.fixtures import config_for, robot_env, standin
from test_control_loop import RecordingArm, constant_policy, make_loop
from test_widowx_adapter import StandInBot

from theia_ros.control import (
    ControlLoop,
    Freshness,
    ImageCache,
    LoopConfig,
    LoopState,
    ManualClock,
    SafetyFilter,
    SafetyLimits,
)
from theia_ros.control import kinematics as K
from theia_ros.errors import TheiaError
from theia_ros.robots.dry_run import DryRunRobot
from theia_ros.robots.joint_state import JointStateCache, gripper_fraction
from theia_ros.robots.widowx import WidowXAdapter, WidowXConfig

PERIOD_S = 0.2
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
# (joint, value): every kind of reading that cannot be true
IMPOSSIBLE = [
    ("left_finger", math.nan), ("left_finger", math.inf), ("left_finger", -math.inf),
    ("left_finger", 0.5), ("left_finger", -0.2), ("waist", math.inf), ("waist", math.nan),
    ("elbow", -math.inf), ("shoulder", 40.0), ("wrist_rotate", -1e9),
]
STEP = [0.002, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


class Bench:
    """A running ControlLoop on a ManualClock, ticked by hand: ``tick()`` -> report."""

    def __init__(self, adapter, images: ImageCache | None, clock: ManualClock) -> None:
        self.clock, self.images = clock, images
        safety = SafetyFilter(SafetyLimits.wx250s(), clock=clock.now)
        self.loop = ControlLoop(adapter, constant_policy(STEP, horizon=4), safety,
                                LoopConfig(rate_hz=1.0 / PERIOD_S), clock=clock,
                                images=images)
        self.loop.start()

    def tick(self, before=None):
        self.clock.advance(PERIOD_S)
        if self.images is not None:
            self.images.put("front", np.zeros((8, 8, 3), np.uint8), self.clock.now())
        if before is not None:
            before()
        return self.loop.step()

    def holds(self, reason: str) -> int:
        return self.loop.stats.holds.get(reason, 0)


def _held_then_resumed(bench: Bench, bad, good, reason: str = "bad_joint_state") -> None:
    assert bench.tick(good).status == "acted"
    before = bench.holds(reason)
    for _ in range(3):
        report = bench.tick(bad)
        assert report.status == "held" and report.hold_reason == reason, report
    assert bench.loop.state is LoopState.RUNNING and bench.loop.last_fault is None
    assert bench.holds(reason) == before + 3
    assert bench.tick(good).status == "acted"


# -- the joint-state cache (what the nodes feed from JointState) ----------------------------
@pytest.mark.parametrize("joint, value", IMPOSSIBLE)
def test_dry_run_holds_on_an_impossible_joint_state(joint: str, value: float) -> None:
    clock = ManualClock(10.0)
    cache = JointStateCache(ARM, "left_finger")
    bench = Bench(DryRunRobot(cache, clock=clock.now), ImageCache(), clock)
    names = [*ARM, "left_finger"]
    good = [*map(float, K.HOME_QPOS_RAD), 0.03]
    bad = [value if n == joint else v for n, v in zip(names, good)]

    def put(values):
        def feed() -> None:
            try:
                cache.put(names, values, clock.now())
            except TheiaError as exc:  # the node counts and logs it
                assert "impossible reading" in str(exc) and joint in str(exc)
        return feed

    rejected0 = cache.rejected
    _held_then_resumed(bench, put(bad), put(good))
    assert cache.rejected == rejected0 + 3


def test_finger_overshoot_within_slack_is_clamped_not_refused() -> None:
    assert gripper_fraction(K.FINGER_OPEN_M + 0.002) == 1.0
    assert gripper_fraction(K.FINGER_CLOSED_M - 0.002) == 0.0
    assert math.isnan(gripper_fraction(K.FINGER_OPEN_M + 0.2))


# -- the WidowX adapter reading Interbotix's joint states ----------------------------------
@pytest.mark.parametrize("joint, value", IMPOSSIBLE)
def test_widowx_holds_on_an_impossible_joint_state(joint: str, value: float) -> None:
    clock = ManualClock(50.0)
    bot = StandInBot(clock)
    adapter = WidowXAdapter(WidowXConfig(fault_check_period_s=0.0),
                            bot_factory=lambda cfg, node: (bot, lambda: None), clock=clock.now)
    adapter.connect()
    bench = Bench(adapter, ImageCache(), clock)
    good_q, good_finger = bot.q.copy(), bot.finger_m

    def publish(bad: bool):
        def feed() -> None:
            bot.q, bot.finger_m = good_q.copy(), good_finger
            if bad and joint == "left_finger":
                bot.finger_m = value
            elif bad:
                bot.q[K.JOINT_NAMES.index(joint)] = value
            bot.publish_joint_state()
        return feed

    _held_then_resumed(bench, publish(True), publish(False), reason="missing_joint_state")
    assert adapter.counters["bad_joint_states"] >= 3 and adapter.fault is None
    # nothing impossible ever went to the arm, not even in a hold
    for name, kw in bot.calls:
        if "positions" in kw:
            assert np.all(np.abs(kw["positions"]) < 2 * np.pi), (name, kw)


def test_widowx_negative_stamp_is_never_fresh() -> None:
    clock = ManualClock(50.0)
    bot = StandInBot(clock)
    adapter = WidowXAdapter(WidowXConfig(fault_check_period_s=0.0),
                            bot_factory=lambda cfg, node: (bot, lambda: None), clock=clock.now)
    adapter.connect()
    bench = Bench(adapter, ImageCache(), clock)

    def negative() -> None:
        bot.publish_joint_state()
        bot.core.joint_states.header.stamp.sec = -3

    _held_then_resumed(bench, negative, bot.publish_joint_state, reason="stale_joint_state")


# -- Spot's robot state over gRPC ----------------------------------------------------------
@pytest.mark.parametrize("gripper", [math.inf, math.nan, 2.5, -1.0])
def test_spot_holds_on_an_impossible_gripper_reading(standin, robot_env, gripper) -> None:
    from theia_ros.robots.spot.adapter import SpotAdapter

    with SpotAdapter(config_for(standin)) as spot:
        assert 0.0 <= spot.observe().gripper <= 1.0
        standin.state.gripper_open = gripper
        obs = spot.observe()
        assert math.isnan(obs.gripper)  # not clamped to a plausible value
        fresh = Freshness(cameras=("front",), max_image_age_s=1.0, max_joint_age_s=1.0)
        assert fresh.check(obs, obs.stamp_s).value == "bad_joint_state"
        standin.state.gripper_open = 0.4
        obs = spot.observe()
        assert obs.gripper == pytest.approx(0.4) and fresh.check(obs, obs.stamp_s) is None
        assert spot.fault is None


# -- images and state an adapter returns ---------------------------------------------------
@pytest.mark.parametrize("change, reason", [
    ({"image": np.full((8, 8, 3), np.nan)}, "bad_image"),
    ({"image": np.zeros((8, 8, 4), np.uint8)}, "bad_image"),
    ({"image": np.zeros((8, 8), np.uint8)}, "bad_image"),
    ({"gripper": math.nan}, "bad_joint_state"),
    ({"gripper": 1.7}, "bad_joint_state"),
    ({"ee_pose": np.array([0.3, 0.0, math.inf, 0.0, 0.5, 0.0])}, "bad_joint_state"),
    ({"joint_positions": np.array([0.0, 0.0, math.inf, 0.0, 0.0, 0.0])}, "bad_joint_state"),
    ({"stamp_s": math.nan}, "stale_image"),
])
def test_adapter_observations_with_impossible_values_hold(change: dict, reason: str) -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    calls = {"policy": 0}
    policy = constant_policy(STEP)

    def counting_policy(obs):
        calls["policy"] += 1
        return policy(obs)

    loop = make_loop(arm, counting_policy, clock)
    bad = {"on": False}
    observe = arm.observe

    def patched():
        obs = observe()
        if not bad["on"]:
            return obs
        if "image" in change:
            return replace(obs, images={"front": change["image"]})
        if "stamp_s" in change:
            return replace(obs, stamp_s=math.nan, stamps_s={"front": math.nan,
                                                            "joints": math.nan})
        return replace(obs, **change)

    arm.observe = patched
    loop.run(max_ticks=2)
    bad["on"] = True
    policy_calls = calls["policy"]
    loop.run(max_ticks=3)
    assert loop.stats.holds[reason] == 3 and len(arm.applied) == 2
    assert calls["policy"] == policy_calls  # the policy never saw the bad observation
    assert loop.state is LoopState.RUNNING
    bad["on"] = False
    loop.run(max_ticks=2)
    assert len(arm.applied) == 4
