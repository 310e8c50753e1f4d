"""policy_node during a park: ``~/estop`` pre-empts it, and the node stays responsive.

Real rclpy (PyPI wheels), the real ``WidowXAdapter`` and its park code (each pose sent
without blocking, then waited for through ``park_wait``), driven through the Interbotix
STAND-IN of ``test_widowx_adapter`` (Interbotix cannot be installed here; see that module),
which publishes its joint states at 50 Hz like ``xs_sdk``. The park takes 2 x 1 s in real
time. Images arrive over a real topic; the policy is a small callable, so a test can make it
raise (a fault, which parks on the control thread).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers_nodes import (
    IMAGE_HW,
    SensorFeed,
    Spinner,
    call_trigger,
    ros_context,
    session_domain_id,
    wait_for,
)

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")

PARK_POSE_S = 1.0


class Policy:
    """Small steps; raises while ``fail`` is set (a policy fault -> safe stop and park)."""

    def __init__(self) -> None:
        self.fail = False

    def __call__(self, obs) -> np.ndarray:
        if self.fail:
            raise RuntimeError("policy crashed")
        return np.tile([0.002, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], (4, 1))


class Rig:
    def __init__(self, context) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.parameter import Parameter
        from std_msgs.msg import Float32MultiArray
        from test_widowx_adapter import StandInBot

        from theia_ros.control import MonotonicClock, SafetyLimits
        from theia_ros.robots.registry import RobotSetup
        from theia_ros.robots.widowx import WidowXAdapter, WidowXConfig
        from theia_ros.ros.policy_node import PolicyNode

        self.bot = StandInBot(MonotonicClock())  # stamps and "ROS now" from one clock
        self.adapter = WidowXAdapter(
            WidowXConfig(park_moving_time_s=PARK_POSE_S, fault_check_period_s=0.0),
            bot_factory=lambda cfg, node: (self.bot, lambda: None))
        self.policy = Policy()
        setup = RobotSetup(self.adapter, SafetyLimits.wx250s(), None, images_from_topic=True,
                           joints_from_topic=False)
        params = {"autostart": True, "robot": "widowx", "diagnostics_period_s": 0.25}
        self.node = PolicyNode(policy=self.policy, setup=setup, image_hw=IMAGE_HW,
                               context=context, parameter_overrides=[
                                   Parameter(k, value=v) for k, v in params.items()])
        self.peer = rclpy.create_node("park_test_peer", context=context)
        self.actions: list[float] = []
        self.diagnostics: list[float] = []
        self.peer.create_subscription(Float32MultiArray, "/policy_node/action",
                                      lambda m: self.actions.append(time.monotonic()), 50)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.append(time.monotonic()), 50)
        self.feed = SensorFeed(self.peer).start()
        self._stop = threading.Event()
        self._xs_sdk = threading.Thread(target=self._publish_joint_states, daemon=True)
        self._xs_sdk.start()
        self.spinner = Spinner(context, self.node, self.peer)

    def _publish_joint_states(self) -> None:
        while not self._stop.wait(0.02):
            self.bot.publish_joint_state()

    def moves(self) -> list[str]:
        return [n for n in self.bot.names() if n in ("publish_positions", "go_to_home_pose",
                                                     "go_to_sleep_pose", "set_joint_positions")]

    def park_started(self) -> bool:
        return "go_to_home_pose" in self.bot.names()

    def close(self) -> None:
        self._stop.set()
        self.feed.stop()
        self.node.shutdown()
        self.spinner.close()
        self.node.destroy_node()
        self.peer.destroy_node()


@pytest.fixture
def rig():
    with ros_context(session_domain_id()) as ctx:
        r = Rig(ctx)
        try:
            assert wait_for(lambda: len(r.actions) >= 2, 15.0), \
                f"no actions came out: {r.node.status()}"
            yield r
        finally:
            r.close()


def _responsive_during_park(rig: Rig) -> None:
    """While the park runs on the control thread: diagnostics keep coming, camera frames
    keep arriving, the status says so, and ~/start is refused with a reason."""
    diag0, images0 = len(rig.diagnostics), rig.node.sensors.images_received
    time.sleep(0.5)
    assert rig.node.loop.parking, "the park ended before the checks"
    assert len(rig.diagnostics) >= diag0 + 1, "no /diagnostics during the park"
    assert rig.node.sensors.images_received >= images0 + 5, "camera callbacks stalled"
    res = call_trigger(rig.peer, "/policy_node/start", timeout_s=1.0)
    assert not res.success and "parking" in res.message


def _estop_preempts(rig: Rig) -> None:
    t0 = time.monotonic()
    res = call_trigger(rig.peer, "/policy_node/estop", timeout_s=2.0)
    answered_s = time.monotonic() - t0
    assert res.success
    assert answered_s < 0.5, f"~/estop answered after {answered_s:.2f} s (park: 2 x 1 s)"
    assert wait_for(lambda: not rig.node.loop.parking, 1.0)
    time.sleep(PARK_POSE_S + 0.3)  # past the moment the park would have gone on to sleep
    moves = rig.moves()
    assert "go_to_sleep_pose" not in moves and moves[-1] == "publish_positions"
    np.testing.assert_allclose(rig.bot.calls[-1][1]["positions"], rig.bot.q)  # held there
    assert rig.adapter.counters["parks"] == 0
    _, message, values = rig.node.status()
    assert message.startswith("e-stop") and values["parking"] == "false"


def test_estop_preempts_a_stop_park(rig: Rig) -> None:
    t0 = time.monotonic()
    res = call_trigger(rig.peer, "/policy_node/stop", timeout_s=2.0)
    assert res.success and res.message == "stopped; parking"
    assert time.monotonic() - t0 < 0.5  # answered at once, not after the park
    assert wait_for(rig.park_started, 1.0), rig.bot.names()
    _responsive_during_park(rig)
    _estop_preempts(rig)


def test_estop_preempts_a_fault_park(rig: Rig) -> None:
    rig.policy.fail = True
    assert wait_for(rig.park_started, 2.0), rig.node.status()
    assert rig.node.loop.state.value == "faulted"
    _responsive_during_park(rig)
    _estop_preempts(rig)


def test_a_stop_park_without_estop_completes(rig: Rig) -> None:
    assert call_trigger(rig.peer, "/policy_node/stop", timeout_s=2.0).success
    assert wait_for(rig.park_started, 1.0)
    assert wait_for(lambda: rig.adapter.counters["parks"] == 1, 2 * PARK_POSE_S + 2.0)
    assert rig.moves()[-2:] == ["go_to_home_pose", "go_to_sleep_pose"]
    assert not rig.node.loop.parking
    assert call_trigger(rig.peer, "/policy_node/start", timeout_s=2.0).success
