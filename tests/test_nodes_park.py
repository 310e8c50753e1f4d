"""policy_node during a park: ``~/estop`` pre-empts it, and the node stays responsive.

Real rclpy (PyPI wheels), the real ``WidowXAdapter`` and its park code (each pose sent
without blocking, then waited for through ``park_wait``) through the unmodified upstream
``interbotix_xs_modules`` against our MuJoCo xs_sdk twin, whose servos follow the park's
2 x 1 s in real time. The node runs on a private context (``helpers_nodes.ros_context``);
the adapter's Interbotix node and the twin share the default one (``helpers_xs_twin``), as
the adapter joins whatever default context its host process has. Images arrive over a real
topic; the policy is a small callable, so a test can make it raise (a fault, which parks on
the control thread).
"""
# ruff: noqa: F401, F811 - the twin fixture is imported from helpers_xs_twin

from __future__ import annotations

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
from helpers_xs_twin import (
    HOME_Q,
    CommandLog,
    connect_at_start,
    is_pose,
    make_adapter,
    twin,
)

from theia_ros.control import kinematics as K

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
    def __init__(self, context, twin) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.parameter import Parameter
        from std_msgs.msg import Float32MultiArray

        from theia_ros.control import SafetyLimits
        from theia_ros.robots.registry import RobotSetup
        from theia_ros.ros.policy_node import PolicyNode

        self.sent = CommandLog(twin)  # what the servos are told
        self.adapter = make_adapter(twin, park_moving_time_s=PARK_POSE_S)
        connect_at_start(self.adapter, self.sent)  # the node's own connect() keeps this link
        self.connected_at = len(self.sent)
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
        self.spinner = Spinner(context, self.node, self.peer)

    def measured(self) -> np.ndarray:
        return self.adapter.observe().joint_positions

    def park(self) -> list[np.ndarray]:
        """The servo commands from the park's first pose (home) on."""
        sent = self.sent.since(self.connected_at)
        homes = [i for i, c in enumerate(sent) if is_pose(c, HOME_Q)]
        return sent[homes[0]:] if homes else []

    def park_started(self) -> bool:
        return bool(self.park())

    def close(self) -> None:
        self.feed.stop()
        self.node.shutdown()
        self.spinner.close()
        self.node.destroy_node()
        self.peer.destroy_node()
        self.sent.close()


@pytest.fixture
def rig(twin):
    with ros_context(session_domain_id()) as ctx:
        r = Rig(ctx, twin)
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
    park = rig.park()
    assert not any(is_pose(c, K.SLEEP_QPOS_RAD) for c in park), "the park went on to sleep"
    assert not is_pose(park[-1], HOME_Q)  # the last command is a hold
    q = rig.measured()
    np.testing.assert_allclose(q, park[-1], atol=0.02)  # held there
    assert np.max(np.abs(q - K.SLEEP_QPOS_RAD)) > 0.2
    assert rig.adapter.counters["parks"] == 0
    _, message, values = rig.node.status()
    assert message.startswith("e-stop") and values["parking"] == "false"


def test_estop_preempts_a_stop_park(rig: Rig) -> None:
    t0 = time.monotonic()
    res = call_trigger(rig.peer, "/policy_node/stop", timeout_s=2.0)
    assert res.success and res.message == "stopped; parking"
    assert time.monotonic() - t0 < 0.5  # answered at once, not after the park
    assert wait_for(rig.park_started, 1.0), rig.sent.since(rig.connected_at)
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
    park = rig.park()
    assert len(park) == 2 and is_pose(park[1], K.SLEEP_QPOS_RAD), park
    assert wait_for(lambda: np.allclose(rig.measured(), K.SLEEP_QPOS_RAD, atol=0.02), 1.0)
    assert not rig.node.loop.parking
    assert call_trigger(rig.peer, "/policy_node/start", timeout_s=2.0).success
