"""An impossible sensor value is a stale sensor: the loop holds, counts it, and acts again as
soon as good data is back; never a fault and park, never a silent clamp.

Paths: the joint-state cache the nodes fill from ``sensor_msgs/JointState`` (``dry_run``),
the WidowX adapter's own reading of joint states through the unmodified upstream
``interbotix_xs_modules`` (our MuJoCo xs_sdk twin publishes the impossible values over real
DDS, as a failing encoder or driver would), Spot's robot state over real gRPC (the STAND-IN
server of ``tests/spot_standin``, not Boston Dynamics' software), and images an adapter
returns (``RecordingArm`` of ``test_control_loop``, a test double). The node's own
JointState path over rclpy is in ``test_nodes_policy``.
"""
# ruff: noqa: F401, F811 - pytest fixtures imported from spot_standin / helpers_xs_twin

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest
import ros_upstream as ru
from helpers_xs_twin import START_Q, CommandLog, connect_at_start, make_adapter, twin
from spot_standin.fixtures import config_for, robot_env, standin
from test_control_loop import RecordingArm, constant_policy, make_loop

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
from theia_ros.robots.joint_state import JointStateCache, gripper_fraction, implausible_joints

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


# -- the WidowX adapter reading xs_sdk's joint states -------------------------------------
@pytest.fixture(scope="module")
def widowx_rig(twin):
    """One adapter on a ManualClock for the module (connecting takes about a second)."""
    clock = ManualClock(50.0)
    log = CommandLog(twin)
    adapter = make_adapter(twin, clock=clock.now)
    try:
        connect_at_start(adapter, log)
        yield adapter, clock, log
    finally:
        twin.falsify_readings()
        adapter.disconnect()
        log.close()


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _driver_says(twin, adapter, positions: dict[str, float] | None = None,
                 stamp: tuple[int, int] | None = None):
    """A tick's ``before``: the twin publishes ``positions`` in place of the measured joints
    and ``stamp`` in the header (None, None: honest readings); it returns once Interbotix's
    joint-state subscriber holds such a message."""
    core = adapter.bot.core

    def received() -> bool:
        with core.js_mutex:
            msg = core.joint_states
        got = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp is not None and got != stamp:
            return False
        if stamp is None and got[0] <= 0:  # still the false stamp
            return False
        if positions:
            return all(_same(msg.position[core.js_index_map[j]], v)
                       for j, v in positions.items())
        finger = msg.position[core.js_index_map["left_finger"]]
        return not (implausible_joints(np.asarray(msg.position[:6])).any()
                    or math.isnan(gripper_fraction(finger)))

    def feed() -> None:
        twin.falsify_readings(positions, stamp)
        assert ru.wait_for(received, 2.0), "the twin's joint states did not arrive"
    return feed


@pytest.mark.parametrize("joint, value", IMPOSSIBLE)
def test_widowx_holds_on_an_impossible_joint_state(twin, widowx_rig, joint: str,
                                                   value: float) -> None:
    adapter, clock, sent = widowx_rig
    bench = Bench(adapter, ImageCache(), clock)
    bad0 = adapter.counters["bad_joint_states"]
    _held_then_resumed(bench, _driver_says(twin, adapter, {joint: value}),
                       _driver_says(twin, adapter), reason="missing_joint_state")
    assert adapter.counters["bad_joint_states"] >= bad0 + 3 and adapter.fault is None
    time.sleep(0.1)  # the last commands reach the log
    assert sent.all_plausible(), "an impossible value went to the arm"
    assert np.all(np.abs(_measured(adapter) - START_Q) < 0.2)  # the arm did not jump


def test_widowx_negative_stamp_is_never_fresh(twin, widowx_rig) -> None:
    adapter, clock, _ = widowx_rig
    bench = Bench(adapter, ImageCache(), clock)
    _held_then_resumed(bench, _driver_says(twin, adapter, stamp=(-3, 0)),
                       _driver_says(twin, adapter), reason="stale_joint_state")


def _measured(adapter) -> np.ndarray:
    return adapter.observe().joint_positions


# -- Spot's robot state over gRPC ----------------------------------------------------------
@pytest.mark.parametrize("gripper", [math.inf, math.nan, 2.5, -1.0])
def test_spot_holds_on_an_impossible_gripper_reading(standin, robot_env, gripper) -> None:
    from theia_ros.robots.spot.adapter import SpotAdapter

    with SpotAdapter(config_for(standin)) as spot:
        assert 0.0 <= spot.observe().gripper <= 1.0
        standin.state.false_gripper_reading = gripper
        obs = spot.observe()
        assert math.isnan(obs.gripper)  # not clamped to a plausible value
        fresh = Freshness(cameras=("front",), max_image_age_s=1.0, max_joint_age_s=1.0)
        assert fresh.check(obs, obs.stamp_s).value == "bad_joint_state"
        standin.state.false_gripper_reading = None
        obs = spot.observe()
        assert obs.gripper == pytest.approx(standin.state.gripper_open)
        assert fresh.check(obs, obs.stamp_s) is None
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
