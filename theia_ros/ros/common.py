"""rclpy plumbing shared by the nodes: parameters from the plain tables, QoS, stamps, images.

Only this module and the ``*_node.py`` files import rclpy; everything they call is ROS-free.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from theia_ros.control.schedule import Deadlines
from theia_ros.errors import TheiaError
from theia_ros.ros.image_conversion import compressed_to_rgb, image_to_rgb
from theia_ros.ros.params import ParamSpec, validate

SENSOR_QOS = qos_profile_sensor_data  # best effort, keep last 5: drop, never queue, old frames
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)

_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "int": ParameterType.PARAMETER_INTEGER,
    "float": ParameterType.PARAMETER_DOUBLE,
    "str": ParameterType.PARAMETER_STRING,
    "float_list": ParameterType.PARAMETER_DOUBLE_ARRAY,
    "int_list": ParameterType.PARAMETER_INTEGER_ARRAY,
    "str_list": ParameterType.PARAMETER_STRING_ARRAY,
}

_EMPTY_LIST_TYPES = {
    "float_list": Parameter.Type.DOUBLE_ARRAY,
    "int_list": Parameter.Type.INTEGER_ARRAY,
    "str_list": Parameter.Type.STRING_ARRAY,
}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of one table entry (description, range, read-only)."""
    desc = spec.description
    if spec.choices:
        desc += f" (one of: {', '.join(spec.choices)})"
    d = ParameterDescriptor(name=spec.name, type=_TYPES[spec.kind], description=desc,
                            read_only=spec.read_only)
    if spec.kind in ("int", "int_list") and spec.low is not None and spec.high is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                        step=0)]
    elif spec.kind in ("float", "float_list") and spec.low is not None \
            and spec.high is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                     to_value=float(spec.high), step=0.0)]
    return d


def declare_all(node: Node, specs: Mapping[str, ParamSpec], defaults: Mapping[str, Any],
                skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Declare every parameter of ``specs`` (defaults from ``defaults``) and return the values.

    Values given at start-up (launch, ``--ros-args -p``) are validated against the table;
    a bad one raises :class:`TheiaError` naming it, before the node does anything.
    """
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in skip:
            continue
        default = defaults.get(name, spec.default)
        try:
            if spec.kind.endswith("_list") and not default:
                # an empty list has no type of its own: declare the type explicitly
                param = node.declare_parameter(name, _EMPTY_LIST_TYPES[spec.kind],
                                               descriptor(spec))
                value = param.value if param.value is not None else []
            else:
                param = node.declare_parameter(name, default, descriptor(spec))
                value = param.value
        except (ParameterException, InvalidParameterTypeException) as exc:
            raise TheiaError(f"{node.get_name()} parameter {name!r}: {exc}") from exc
        if isinstance(value, (tuple, np.ndarray)) or type(value).__name__ == "array":
            value = list(value)
        values[name] = validate(specs, name, value, f"{node.get_name()} parameter")
    return values


def parameter_guard(specs: Mapping[str, ParamSpec],
                    on_change: Callable[[str, Any], None] | None = None
                    ) -> Callable[[list[Parameter]], SetParametersResult]:
    """A set-parameters callback validating every change against the table."""

    def callback(params: list[Parameter]) -> SetParametersResult:
        checked: list[tuple[str, Any]] = []
        for p in params:
            if p.name not in specs:
                continue  # use_sim_time and other rclpy-owned parameters
            value = p.value
            if isinstance(value, (tuple, np.ndarray)) or type(value).__name__ == "array":
                value = list(value)
            try:
                checked.append((p.name, validate(specs, p.name, value)))
            except TheiaError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        if on_change is not None:
            for name, value in checked:
                on_change(name, value)
        return SetParametersResult(successful=True)

    return callback


def stamp_to_monotonic(node: Node, stamp: Any) -> float:
    """A header stamp (ROS time) -> monotonic seconds: ``now_mono - (now_ros - stamp)``.

    A zero stamp (drivers that do not stamp) is taken as "received now".
    """
    now_mono = time.monotonic()
    stamp_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    if stamp_ns <= 0:
        return now_mono
    now_ns = node.get_clock().now().nanoseconds
    return now_mono - (now_ns - stamp_ns) * 1e-9


def monotonic_to_stamp(node: Node, mono_s: float) -> Any:
    """Inverse of :func:`stamp_to_monotonic`, for stamping outgoing messages."""
    now_ns = node.get_clock().now().nanoseconds
    ns = now_ns - int((time.monotonic() - mono_s) * 1e9)
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_message_type(image_type: str) -> type:
    """``Image`` | ``CompressedImage`` -> the message class."""
    from sensor_msgs.msg import CompressedImage, Image

    return {"Image": Image, "CompressedImage": CompressedImage}[image_type]


def message_to_rgb(msg: Any) -> np.ndarray:
    """Either image message -> uint8 RGB ``[H, W, 3]`` (raises ImageConversionError)."""
    if hasattr(msg, "encoding"):
        return image_to_rgb(msg)
    return compressed_to_rgb(msg)


class RosLogHandler(logging.Handler):
    """Forward the ROS-free modules' ``logging`` records to the node's ROS logger, so the
    control core's rate-limited warnings reach ``/rosout``."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            if record.levelno >= logging.ERROR:
                self._logger.error(msg)
            elif record.levelno >= logging.WARNING:
                self._logger.warning(msg)
            elif record.levelno >= logging.INFO:
                self._logger.info(msg)
            else:
                self._logger.debug(msg)
        except Exception:  # a shut-down context must not break the control core
            pass


def attach_logging(node: Node) -> RosLogHandler:
    """Route ``theia_ros.*`` log records to ``node``'s logger; returns the handler to remove."""
    handler = RosLogHandler(node)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger("theia_ros")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


class Ticker:
    """Calls ``fn`` every ``period_s`` on its own thread, on a fixed grid of deadlines.

    Why not a ROS timer: rclpy's Python ``MultiThreadedExecutor`` busy-waits, holding the GIL,
    while a ready entity's callback group is busy; with inference inside a timer callback that
    starved the ticks and the camera callbacks for over a second (measured in
    ``tests/test_nodes_policy.py``). The control tick runs here instead, and the executor
    (single-threaded) only runs the cheap sensor, service and diagnostics callbacks.
    A late tick is not caught up (:class:`~theia_ros.control.schedule.Deadlines`). An
    exception escaping ``fn`` is logged and counted (``errors``) and ticking goes on: the
    control loop turns policy and robot errors into safe stops itself, so what reaches here
    is a bug in glue code (publishing, diagnostics) that must not silently end the ticks.
    """

    def __init__(self, period_s: float, fn: Callable[[], None], name: str) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.period_s = period_s
        self._fn = fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.errors = 0

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def _run(self) -> None:
        deadlines = Deadlines(self.period_s)
        while not self._stop.is_set():
            try:
                self._fn()
            except Exception:
                self.errors += 1
                logging.getLogger(__name__).exception("control tick raised; still ticking")
            deadlines.advance()
            deadlines.wait(self._stop.wait)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop ticking and wait for a tick in progress to finish. Safe to call twice."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)


class SensorIntake:
    """Camera and joint-state subscriptions feeding the control core's caches; both nodes use
    it, so image checks (encoding, ``step``, the size the policy takes) are the same in each.

    A bad message is dropped with a throttled warning and counted; the node keeps running.
    """

    def __init__(self, node: Node, params: Mapping[str, Any], images: Any, joints: Any, *,
                 subscribe_images: bool, subscribe_joints: bool,
                 image_hw: tuple[int, int] | None = None, callback_group: Any = None) -> None:
        from sensor_msgs.msg import JointState

        self._node, self._images, self._joints = node, images, joints
        self._camera, self._image_topic = params["camera"], params["image_topic"]
        self._image_hw = tuple(image_hw) if image_hw else None
        self.image_errors = 0
        self.joint_errors = 0
        self.images_received = 0
        if subscribe_images:
            node.create_subscription(image_message_type(params["image_type"]),
                                     params["image_topic"], self._on_image, SENSOR_QOS,
                                     callback_group=callback_group)
        if subscribe_joints:
            node.create_subscription(JointState, params["joint_states_topic"], self._on_joints,
                                     SENSOR_QOS, callback_group=callback_group)

    def _on_image(self, msg: Any) -> None:
        try:
            rgb = message_to_rgb(msg)
            if self._image_hw is not None and rgb.shape[:2] != self._image_hw:
                raise TheiaError(
                    f"the camera sends {rgb.shape[1]}x{rgb.shape[0]} (width x height) but the "
                    f"policy bundle takes {self._image_hw[1]}x{self._image_hw[0]}: a V4L2 "
                    "driver answers a size it lacks with its nearest mode; set the config's "
                    "camera_driver width/height to a mode the camera has (v4l2-ctl "
                    "--list-formats-ext) and export the bundle for it (theia export "
                    "--image-size HxW; the bundle resizes to the encoder)")
            self._images.put(self._camera, rgb, stamp_to_monotonic(self._node, msg.header.stamp))
            self.images_received += 1
        except TheiaError as exc:
            self.image_errors += 1
            self._node.get_logger().warning(f"dropped image on {self._image_topic}: {exc}",
                                            throttle_duration_sec=2.0)

    def _on_joints(self, msg: Any) -> None:
        try:
            self._joints.put(msg.name, msg.position,
                             stamp_to_monotonic(self._node, msg.header.stamp))
        except TheiaError as exc:
            self.joint_errors += 1
            self._node.get_logger().warning(f"dropped joint state: {exc}",
                                            throttle_duration_sec=2.0)


def spin_node(make_node: Any, argv: list[str] | None, name: str) -> int:
    """Shared ``main``: init without rclpy's signal handlers (so Ctrl-C / SIGTERM reach us
    while the context is still alive and the safe stop can use it), spin, clean up."""
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)

    def _term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    node = None
    rc_ = 0
    try:
        node = make_node()
        executor = SingleThreadedExecutor()  # the control tick has its own thread
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except TheiaError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        rc_ = 2
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return rc_
