"""policy_node with real rclpy (PyPI wheels), a real exported Theia-Tiny bundle on
onnxruntime and the ``dry_run`` robot (observations from the topics this test publishes,
nothing moved): actions at 5 Hz, hold on a stale camera, malformed images survived, services.

One node serves the whole module (building it costs a bundle export and a DDS start-up);
the tests run in file order and each leaves the node running with good sensor data.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from helpers_nodes import (
    SensorFeed,
    Spinner,
    build_tiny_bundle,
    call_trigger,
    ros_context,
    session_domain_id,
    wait_for,
)

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle"))


class Harness:
    def __init__(self, context, bundle) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.parameter import Parameter
        from std_msgs.msg import Float32MultiArray

        from theia_ros.ros.policy_node import PolicyNode

        params = {"bundle": str(bundle), "backend": "onnxruntime", "threads": 1,
                  "autostart": True, "robot": "dry_run", "diagnostics_period_s": 0.25}
        self.node = PolicyNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.peer = rclpy.create_node("policy_test_peer", context=context)
        self.actions: list[tuple[float, list[float]]] = []
        self.diagnostics: list[object] = []
        self.peer.create_subscription(Float32MultiArray, "/policy_node/action",
                                      lambda m: self.actions.append((time.monotonic(),
                                                                     list(m.data))), 50)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.append(m), 50)
        self.feed = SensorFeed(self.peer).start()
        self.spinner = Spinner(context, self.node, self.peer)

    def actions_since(self, t0: float) -> list[float]:
        return [t for t, _ in self.actions if t >= t0]

    def close(self) -> None:
        self.feed.stop()
        self.node.shutdown()
        self.spinner.close()
        self.node.destroy_node()
        self.peer.destroy_node()


@pytest.fixture(scope="module")
def harness(tiny_bundle):
    with ros_context(session_domain_id()) as ctx:
        h = Harness(ctx, tiny_bundle)
        try:
            assert wait_for(lambda: len(h.actions) >= 2, 15.0), "no actions came out"
            yield h
        finally:
            h.close()


def test_actions_come_out_at_5_hz(harness) -> None:
    t0 = time.monotonic()
    time.sleep(2.5)
    stamps = harness.actions_since(t0)
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 4.3 <= rate <= 5.7, f"action rate {rate:.2f} Hz"
    gaps = np.diff(stamps)
    assert gaps.min() > 0.05, "two commands back to back"
    vec = harness.actions[-1][1]
    assert len(vec) == 7 and all(np.isfinite(vec))
    assert np.linalg.norm(vec[:3]) <= 0.03 + 1e-6  # within the wx250s per-step limit
    _, message, values = harness.node.status()
    assert message == "running" and int(values["commands"]) >= 10


def test_stale_camera_holds_and_diagnostics_say_so(harness) -> None:
    harness.feed.mode = "no_image"
    time.sleep(0.5)  # max_image_age_s 0.3 s: the camera is stale from here on
    t0 = time.monotonic()
    time.sleep(1.0)
    assert harness.actions_since(t0) == [], "commands sent while the camera was stale"
    _, message, values = harness.node.status()
    assert message == "holding: stale_image"
    assert int(values["holds.stale_image"]) >= 3
    n_diag = len(harness.diagnostics)
    assert wait_for(lambda: len(harness.diagnostics) > n_diag, 2.0)
    st = harness.diagnostics[-1].status[0]
    assert st.level == st.WARN and "stale_image" in st.message
    harness.feed.mode = "ok"
    t1 = time.monotonic()
    assert wait_for(lambda: len(harness.actions_since(t1)) >= 2, 3.0), "did not resume"


def test_malformed_images_do_not_crash_the_node(harness) -> None:
    errors0 = harness.node.sensors.image_errors
    harness.feed.mode = "bad"
    assert wait_for(lambda: harness.node.sensors.image_errors >= errors0 + 6, 3.0)
    harness.feed.mode = "ok"
    t0 = time.monotonic()
    assert wait_for(lambda: len(harness.actions_since(t0)) >= 2, 3.0)
    assert harness.node.loop.state.value == "running"
    assert harness.node.status()[2]["image_errors"] == str(harness.node.sensors.image_errors)


IMPOSSIBLE_JOINT_STATES = [
    ("left_finger", math.nan), ("left_finger", math.inf), ("left_finger", -math.inf),
    ("left_finger", 0.5), ("waist", math.inf), ("waist", math.nan), ("elbow", -math.inf),
    ("shoulder", 40.0),
]


def _holds_then_resumes(harness, inject, clear, reason: str, grace_s: float = 0.3) -> None:
    """Inject bad sensor data: the node holds (no commands, no fault) and counts it; clear
    it: commands come out again. ``grace_s``: how long data from before the injection may
    still be acted on (a tick already under way: one 0.2 s period plus delivery)."""
    holds0 = int(harness.node.status()[2].get(f"holds.{reason}", 0))
    inject()
    t_bad = time.monotonic()
    time.sleep(grace_s + 0.6)
    t_good = time.monotonic()
    late = [t for t in harness.actions_since(t_bad + grace_s) if t < t_good]
    _, message, values = harness.node.status()
    clear()
    assert late == [], f"commands sent on bad sensor data ({reason})"
    assert harness.node.loop.state.value == "running" and harness.node.loop.last_fault is None
    assert message == f"holding: {reason}"
    assert int(values[f"holds.{reason}"]) >= holds0 + 2
    assert wait_for(lambda: len(harness.actions_since(t_good)) >= 2, 3.0), "did not resume"


@pytest.mark.parametrize("joint, value", IMPOSSIBLE_JOINT_STATES)
def test_impossible_joint_values_hold_until_good_data(harness, joint: str, value: float) -> None:
    errors0 = harness.node.sensors.joint_errors
    _holds_then_resumes(harness, lambda: harness.feed.joint_overrides.update({joint: value}),
                        harness.feed.joint_overrides.clear, "bad_joint_state")
    assert harness.node.sensors.joint_errors >= errors0 + 3  # each bad message counted


def test_negative_header_stamp_is_never_fresh(harness) -> None:
    def inject() -> None:
        harness.feed.stamp_override = (-5, 0)

    def clear() -> None:
        harness.feed.stamp_override = None

    # the last good frame stays fresh for max_image_age_s (0.3 s), then one more period
    _holds_then_resumes(harness, inject, clear, "stale_image", grace_s=0.6)


def test_pause_start_stop_services(harness) -> None:
    res = call_trigger(harness.peer, "/policy_node/pause")
    assert res.success and res.message == "paused"
    time.sleep(0.3)
    t0 = time.monotonic()
    time.sleep(0.8)
    assert harness.actions_since(t0) == []
    assert not call_trigger(harness.peer, "/policy_node/pause").success  # not running
    res = call_trigger(harness.peer, "/policy_node/start")
    assert res.success
    t1 = time.monotonic()
    assert wait_for(lambda: len(harness.actions_since(t1)) >= 2, 3.0)
    stops0 = harness.node.adapter.safe_stops
    res = call_trigger(harness.peer, "/policy_node/stop")
    assert res.success and res.message in ("stopped; parking", "stopped")
    # hold at once, then the park on the control thread's next tick
    assert wait_for(lambda: harness.node.adapter.safe_stops == stops0 + 1, 2.0)
    time.sleep(0.3)
    t2 = time.monotonic()
    time.sleep(0.6)
    assert harness.actions_since(t2) == []
    assert call_trigger(harness.peer, "/policy_node/start").success


def test_estop_latches_and_refuses_start(harness) -> None:
    assert call_trigger(harness.peer, "/policy_node/estop").success
    assert harness.node.loop.state.value == "faulted"
    res = call_trigger(harness.peer, "/policy_node/start")
    assert not res.success and "e-stop" in res.message
    level, message, values = harness.node.status()
    assert level == b"\x02" and message.startswith("e-stop") and values["estop"] == "true"
    assert harness.node.loop.state.value == "faulted"


def test_bad_parameter_is_rejected_at_runtime(harness) -> None:
    from rclpy.parameter import Parameter

    res = harness.node.set_parameters([Parameter("max_image_age_s", value=-1.0)])
    assert not res[0].successful
    res = harness.node.set_parameters([Parameter("max_image_age_s", value=0.5)])
    assert res[0].successful
    assert harness.node.loop.config.freshness.max_image_age_s == 0.5
    res = harness.node.set_parameters([Parameter("rate_hz", value=10.0)])
    assert not res[0].successful  # read-only


def test_ticker_keeps_the_grid_and_survives_a_raising_tick() -> None:
    """``Ticker`` (the nodes' control thread): ticks on a 20 ms grid without bursts, and an
    exception in one tick is counted and logged, not the end of ticking."""
    from theia_ros.ros.common import Ticker

    stamps: list[float] = []

    def tick() -> None:
        stamps.append(time.monotonic())
        if len(stamps) == 3:
            raise RuntimeError("bug in glue code")
        if len(stamps) == 5:
            time.sleep(0.05)  # overrun: the next tick waits for the next grid point

    ticker = Ticker(0.02, tick, "test_ticker").start()
    assert wait_for(lambda: len(stamps) >= 12, 3.0)
    ticker.stop()
    n = len(stamps)
    time.sleep(0.06)
    assert len(stamps) == n, "ticked after stop()"
    assert ticker.errors == 1
    gaps = np.diff(stamps)
    assert gaps.min() > 0.01, "two ticks back to back"
    assert gaps[4] >= 0.05  # the overrun tick, then the next grid point, not a catch-up burst


def test_bundle_runs_at_its_trained_rate_unless_overridden(tiny_bundle) -> None:
    """``rate_hz:=20`` with a 5 Hz bundle runs at 5 Hz; with ``allow_rate_override`` at 20 Hz,
    and then the per-tick steps shrink so the arm is no faster (0.15 m/s either way)."""
    from theia_ros.ros.assembly import build_control
    from theia_ros.ros.params import POLICY_NODE_PARAMS
    from theia_ros.ros.task_config import node_defaults

    base = {"robot": "dry_run", "rate_hz": 20.0, "bundle": str(tiny_bundle),
            "backend": "onnxruntime", "threads": 1}
    for allow, rate in ((False, 5.0), (True, 20.0)):
        p = node_defaults(POLICY_NODE_PARAMS, {**base, "allow_rate_override": allow})
        control = build_control(p, None)
        try:
            assert p["rate_hz"] == rate and control.loop.config.rate_hz == rate
            step_m, _ = control.loop.safety.step_limits()
            assert step_m * rate == pytest.approx(0.15)  # the wx250s speed limit, m/s
        finally:
            control.runtime.close()
