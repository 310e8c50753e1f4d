"""``policy_node``: a policy bundle driving a robot through the control core at a fixed rate.

Thin rclpy around ROS-free parts: parameters (``params.POLICY_NODE_PARAMS``, defaults from
``config_file``), camera / joint-state subscriptions feeding the control core's observation
caches, one ``ControlLoop.step()`` per tick of a steady-clock timer, the applied action and
diagnostics out, and start / pause / stop / estop services.

Topics and services (relative names live under the node's name)::

    sub  <image_topic>          sensor_msgs/Image | CompressedImage   sensor QoS (best effort)
                                (several cameras: one topic each, ``camera_topics``)
    sub  <joint_states_topic>   sensor_msgs/JointState                sensor QoS (dry_run)
    pub  ~/action               std_msgs/Float32MultiArray [7]        reliable, one per command
    pub  /diagnostics           diagnostic_msgs/DiagnosticArray       every diagnostics_period_s
    srv  ~/start ~/pause ~/stop ~/estop                               std_srvs/Trigger

``~/action`` holds what the adapter reports it sent (after the safety filter):
``[x, y, z, roll, pitch, yaw, gripper]`` in the robot's base frame, m / rad / open fraction;
``ee_delta`` (WidowX: a step from the current pose) or ``ee_absolute`` (Spot: a hand pose), as
named in the layout's dimension label ``action:<kind>``. A plain array rather than a Twist:
the absolute poses Spot takes are not velocities, and one layout serves both kinds.

Threading: the control tick runs on its own thread (``ros_common.Ticker``, a fixed grid of
deadlines); a ``SingleThreadedExecutor`` runs only the cheap sensor, service and diagnostics
callbacks, so inference never delays the camera callback and a ``~/stop`` is served while a
tick runs (the loop serialises them on its lock). rclpy's Python ``MultiThreadedExecutor``
busy-waits while a callback group is busy and starved the ticks for over a second.

Parks (seconds) never run on the executor: ``~/stop`` holds at once and leaves the park to
the control thread's next tick, a fault parks on the control thread, and ``~/estop``
interrupts a park in progress (the arm holds where it is) before it waits for the loop. So
``/diagnostics``, the sensor callbacks and the services keep running during a park;
``~/start`` is refused until the park is over.

Example::

    policy_node --ros-args -p config_file:=config/widowx_door.yaml -p bundle:=bundles/door \\
        -p autostart:=true
    ros2 service call /policy_node/pause std_srvs/srv/Trigger
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, MultiArrayDimension
from std_srvs.srv import Trigger

from theia_ros.control import LoopState, Policy, TickReport
from theia_ros.errors import TheiaError
from theia_ros.robots.registry import RobotSetup
from theia_ros.ros import common as rc
from theia_ros.ros.assembly import build_control
from theia_ros.ros.params import POLICY_NODE_PARAMS
from theia_ros.ros.task_config import (
    TaskConfig,
    load_task_config,
    node_defaults,
    policy_node_parameters,
)
from theia_ros.types import ActionKind

DYNAMIC = ("max_image_age_s", "max_joint_age_s")


class PolicyNode(Node):
    """See the module docstring.

    Args:
        policy: ``Observation -> [H, 7]``; None loads the ``bundle`` parameter with the
            runtime. Given, ``action_kind`` and ``image_hw`` describe it.
        setup: a ready robot (adapter + limits); None builds the ``robot`` parameter's.
        node_name: ROS node name.
        **node_kwargs: passed to ``rclpy.node.Node`` (``parameter_overrides``, ``context``).
    """

    def __init__(self, *, policy: Policy | None = None, setup: RobotSetup | None = None,
                 action_kind: ActionKind = ActionKind.EE_DELTA,
                 image_hw: tuple[int, int] | None = None, node_name: str = "policy_node",
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._log_handler = rc.attach_logging(self)
        self._closed = False
        specs = POLICY_NODE_PARAMS
        cfg_file = self.declare_parameter("config_file", "", rc.descriptor(
            specs["config_file"])).value
        self.task: TaskConfig | None = load_task_config(cfg_file) if cfg_file else None
        yaml_values = policy_node_parameters(self.task) if self.task else {}
        p = rc.declare_all(self, specs, node_defaults(specs, yaml_values), skip=("config_file",))
        p["config_file"] = cfg_file
        self.params = p
        self.add_on_set_parameters_callback(rc.parameter_guard(specs, self._on_param))

        control = build_control(p, self.task, policy=policy, setup=setup,
                                action_kind=action_kind, image_hw=image_hw,
                                on_tick=self._on_tick)
        self.runtime, self.image_hw = control.runtime, control.image_hw
        self.joints, self.images, self.loop = control.joints, control.images, control.loop
        self.setup, self.adapter = control.setup, control.adapter

        # -- status shared with diagnostics ----------------------------------------------
        self._status_lock = threading.Lock()
        self._last_report: TickReport | None = None
        self._command_starts: deque[float] = deque(maxlen=64)

        # -- ROS interfaces --------------------------------------------------------------
        sensors = MutuallyExclusiveCallbackGroup()
        admin = MutuallyExclusiveCallbackGroup()
        self.sensors = rc.SensorIntake(self, p, self.images, self.joints,
                                       subscribe_images=self.setup.images_from_topic,
                                       subscribe_joints=self.setup.joints_from_topic,
                                       image_hw=self.image_hw, callback_group=sensors,
                                       camera_topics=control.camera_topics)
        self.action_pub = self.create_publisher(Float32MultiArray, p["action_topic"],
                                                rc.COMMAND_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for name, handler in (("start", self._srv_start), ("pause", self._srv_pause),
                              ("stop", self._srv_stop), ("estop", self._srv_estop)):
            self.create_service(Trigger, f"~/{name}", handler, callback_group=admin)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.adapter.connect()
        self.ticker = rc.Ticker(1.0 / p["rate_hz"], self._tick, f"{self.get_name()}_control")
        self.diag_timer = self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics,
                                            callback_group=admin, clock=steady)
        if p["autostart"]:
            self.loop.start()
        self.ticker.start()
        self.get_logger().info(f"policy_node ready: robot {p['robot']} "
                               f"({self.adapter.name}) at {p['rate_hz']} Hz, state "
                               f"{self.loop.state.value}")

    # -- parameters ----------------------------------------------------------------------
    def _on_param(self, name: str, value: Any) -> None:
        if name in DYNAMIC:
            self.params[name] = value
            fresh = replace(self.loop.config.freshness, **{name: value})
            self.loop.config = replace(self.loop.config, freshness=fresh)

    # -- sensors -------------------------------------------------------------------------
    # -- control -------------------------------------------------------------------------
    def _tick(self) -> None:
        if not self._closed:
            self.loop.step()

    def _on_tick(self, report: TickReport) -> None:
        with self._status_lock:
            if report.status != "inactive":
                self._last_report = report
            if report.sent is not None:
                self._command_starts.append(report.start_s)
        if report.sent is None:
            return
        msg = Float32MultiArray()
        msg.layout.dim = [MultiArrayDimension(label=f"action:{report.sent.kind.value}",
                                              size=7, stride=7)]
        msg.data = [float(v) for v in report.sent.to_vector()]
        self.action_pub.publish(msg)

    def measured_rate_hz(self) -> float:
        """Commands per second over the recent command window (0 when fewer than two)."""
        with self._status_lock:
            starts = list(self._command_starts)
        if len(starts) < 2 or time.monotonic() - starts[-1] > 2.0 * self.loop.period_s:
            return 0.0
        return (len(starts) - 1) / (starts[-1] - starts[0])

    def status(self) -> tuple[int, str, dict[str, str]]:
        """(DiagnosticStatus level, one-line message, key/values) of the node right now."""
        state = self.loop.state
        with self._status_lock:
            last = self._last_report
        values = self.loop.stats.diagnostics()
        values.update({
            "state": state.value,
            "robot": self.params["robot"],
            "rate_target_hz": f"{self.params['rate_hz']:.2f}",
            "rate_hz": f"{self.measured_rate_hz():.2f}",
            "image_errors": str(self.sensors.image_errors),
            "joint_errors": str(self.sensors.joint_errors),
            "images_received": str(self.sensors.images_received),
            "estop": str(self.loop.safety.estopped).lower(),
            "parking": str(self.loop.parking).lower(),
        })
        fault = self.adapter.fault
        if fault is not None:
            values["adapter_fault.kind"] = str(getattr(fault, "kind", "fault"))
            values["adapter_fault.detail"] = str(getattr(fault, "detail", fault))
        if self.loop.last_fault:
            values["loop_fault"] = self.loop.last_fault
        if self.loop.safety.estopped:
            return DiagnosticStatus.ERROR, f"e-stop: {self.loop.safety.estop_reason}", values
        if state is LoopState.FAULTED or fault is not None:
            return DiagnosticStatus.ERROR, f"faulted: {self.loop.last_fault or fault}", values
        if self.loop.parking:
            return DiagnosticStatus.OK, "parking", values
        if state is LoopState.RUNNING and last is not None and last.status == "held":
            values["hold_reason"] = str(last.hold_reason)
            if last.hold_camera:
                values["hold_camera"] = last.hold_camera
            text = self.loop.config.freshness.hold_text(str(last.hold_reason), last.hold_camera)
            return DiagnosticStatus.WARN, f"holding: {text}", values
        if state is LoopState.RUNNING:
            return DiagnosticStatus.OK, "running", values
        return DiagnosticStatus.OK, state.value, values

    def publish_diagnostics(self) -> None:
        level, message, values = self.status()
        st = DiagnosticStatus(level=level, name=f"theia_ros: {self.get_name()}",
                              message=message, hardware_id=str(self.adapter.name))
        st.values = [KeyValue(key=k, value=v) for k, v in sorted(values.items())]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    # -- services ------------------------------------------------------------------------
    def _srv_start(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        try:
            if self.loop.safety.estopped:
                raise TheiaError(f"e-stop is latched ({self.loop.safety.estop_reason}); "
                                 "restart the node to reset it")
            if self.loop.parking:  # the robot is busy on the control thread
                raise TheiaError("parking; call ~/start again when the park is over")
            if self.loop.state is LoopState.FAULTED:
                self._recover()
            self.loop.start()
            resp.success, resp.message = True, "running"
        except TheiaError as exc:
            resp.success, resp.message = False, str(exc)
        return resp

    def _recover(self) -> None:
        """The adapter's ``recover()`` (Spot: lease, power, stand; WidowX: the operator fixed
        the motors), then the loop's fault is cleared."""
        if not self.adapter.recover():
            raise TheiaError(f"cannot recover from {self.adapter.fault}; fix it and restart "
                             "the node")
        self.loop.clear_fault()

    def _srv_pause(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        was = self.loop.state
        self.loop.pause()
        resp.success = was is LoopState.RUNNING
        resp.message = self.loop.state.value if resp.success else f"not running ({was.value})"
        return resp

    def _srv_stop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.loop.request_stop()  # holds now; the control thread parks on its next tick
        resp.success = True
        resp.message = "stopped; parking" if self.loop.parking else self.loop.state.value
        return resp

    def _srv_estop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.loop.estop("~/estop service")
        resp.success, resp.message = True, "e-stop latched; restart the node to reset it"
        return resp

    # -- shutdown ------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Safe stop (hold, park), release the robot and the runtime. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.ticker.stop()
        with contextlib.suppress(Exception):  # the context may already be gone
            self.diag_timer.cancel()
        try:
            self.loop.close()
        finally:
            try:
                self.adapter.disconnect()
            finally:
                if self.runtime is not None:
                    self.runtime.close()
                logging.getLogger("theia_ros").removeHandler(self._log_handler)


def main(argv: list[str] | None = None) -> int:
    """Console script ``policy_node`` (ROS arguments: ``--ros-args -p name:=value``)."""
    return rc.spin_node(PolicyNode, argv if argv is not None else sys.argv, "policy_node")


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PolicyNode", "main"]
