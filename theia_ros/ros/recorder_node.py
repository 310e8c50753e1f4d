"""``recorder_node``: teleoperated demonstrations recorded into the dataset format.

The teleop command (SpaceMouse ``Twist`` + its button ``Joy``, or a gamepad ``Joy``) becomes
one end-effector delta per control step (``teleop_mapping``). That delta drives the robot
through the same control core as a policy (safety filter included), and each step that
commanded the robot is recorded: the observation the step acted on (camera frame, joint state,
EE pose) and the action *as sent* (after safety clipping), so the dataset's actions are what
the robot was really told to do. ``robot: dry_run`` records while another node moves the arm
(the deltas are then what the operator asked for, clipped by the same limits).

Robots taking absolute hand poses (Spot: ``ee_absolute``) get the deltas integrated into a
target pose (``teleop_mapping.PoseIntegrator``: from the measured hand pose at start and after
a hold, then from the pose last sent); the dataset's ``action_kind`` is the adapter's, and each
recorded action is the absolute pose + gripper that went out in the RobotCommand.

Services (``std_srvs/Trigger``, under the node's name)::

    ~/start          begin an episode (task text: the ``task`` parameter)
    ~/save_success   save it with success = true      ~/save_failure   ... success = false
    ~/save           save it with the ``success`` parameter
    ~/discard        throw the episode away            ~/rerecord       discard + start again

Example::

    recorder_node --ros-args -p config_file:=config/teleop_record.yaml \\
        -p dataset:=data/door_demos -p task:="open the fridge door"
    keyboard_teleop        # s: start, y/n: save success/failure, d: discard, r: re-record
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Float32MultiArray, MultiArrayDimension
from std_srvs.srv import Trigger

from theia_ros.control import (
    ChunkingConfig,
    ControlLoop,
    Freshness,
    ImageCache,
    LoopConfig,
    SafetyFilter,
    TickReport,
)
from theia_ros.dataset.layout import INFO_PATH
from theia_ros.errors import TheiaError
from theia_ros.robots.joint_state import JointStateCache
from theia_ros.robots.registry import RobotContext, RobotSetup, build_robot, robot_action_kind
from theia_ros.ros import common as rc
from theia_ros.ros.params import RECORDER_NODE_PARAMS
from theia_ros.ros.task_config import (
    TaskConfig,
    load_task_config,
    node_defaults,
    recorder_node_parameters,
    resolve_path,
)
from theia_ros.ros.teleop_mapping import PoseIntegrator, TeleopMapper, TeleopScales
from theia_ros.types import ActionKind, Observation

SCALE_PARAMS = ("scale_linear_m", "scale_angular_rad", "deadzone", "teleop_timeout_s",
                "joy_axes", "joy_axis_signs", "gripper_open_button", "gripper_close_button")


def scales_from(p: dict[str, Any]) -> TeleopScales:
    return TeleopScales(scale_linear_m=p["scale_linear_m"],
                        scale_angular_rad=p["scale_angular_rad"], deadzone=p["deadzone"],
                        timeout_s=p["teleop_timeout_s"], joy_axes=tuple(p["joy_axes"]),
                        joy_axis_signs=tuple(p["joy_axis_signs"]),
                        open_button=p["gripper_open_button"],
                        close_button=p["gripper_close_button"])


class RecorderNode(Node):
    """See the module docstring. ``setup`` injects a ready robot (None: the ``robot``
    parameter's); ``node_kwargs`` go to ``rclpy.node.Node``."""

    def __init__(self, *, setup: RobotSetup | None = None, node_name: str = "recorder_node",
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._log_handler = rc.attach_logging(self)
        self._closed = False
        specs = RECORDER_NODE_PARAMS
        cfg_file = self.declare_parameter("config_file", "", rc.descriptor(
            specs["config_file"])).value
        self.task_cfg: TaskConfig | None = load_task_config(cfg_file) if cfg_file else None
        yaml_values = recorder_node_parameters(self.task_cfg) if self.task_cfg else {}
        p = rc.declare_all(self, specs, node_defaults(specs, yaml_values), skip=("config_file",))
        p["config_file"] = cfg_file
        self.params = p
        if not p["dataset"]:
            raise TheiaError("recorder_node: parameter 'dataset' (the dataset root) is required")
        self.dataset_root = resolve_path(p["dataset"], self.task_cfg)
        self.mapper = TeleopMapper(scales_from(p))
        self.add_on_set_parameters_callback(rc.parameter_guard(specs, self._on_param))

        self.joints = JointStateCache(p["arm_joints"], p["gripper_joint"] or None)
        self.robot_type = p["robot"]
        if setup is None:
            ctx = RobotContext(self.task_cfg, robot_action_kind(p["robot"]), p["rate_hz"],
                               self.joints, sim_seed=p["sim_seed"])
            setup = build_robot(p["robot"], ctx)
        elif setup.adapter.name != "dry_run":
            self.robot_type = setup.adapter.name
        self.setup, self.adapter = setup, setup.adapter
        self.action_kind = ActionKind(self.adapter.action_kind)
        # absolute-pose robots: teleop deltas are integrated into the target sent each tick
        self.integrator = (PoseIntegrator() if self.action_kind is ActionKind.EE_ABSOLUTE
                           else None)
        self.images = ImageCache() if setup.images_from_topic else None
        freshness = Freshness(cameras=(p["camera"],), max_image_age_s=p["max_image_age_s"],
                              max_joint_age_s=p["max_joint_age_s"])
        self._last_obs: Observation | None = None
        self.loop = ControlLoop(self.adapter, self._teleop_policy,
                                SafetyFilter(setup.limits, setup.joint_solver),
                                LoopConfig(rate_hz=p["rate_hz"], freshness=freshness,
                                           min_command_gap_fraction=p[
                                               "min_command_gap_fraction"]),
                                ChunkingConfig(replan_every=1), images=self.images,
                                on_tick=self._on_tick)

        self._rec_lock = threading.Lock()
        self.writer = None
        self.recording = False
        self._busy = False  # a save is encoding video
        self.frames = 0
        self.saved_episodes: list[int] = []
        self.frame_errors = 0

        sensors = MutuallyExclusiveCallbackGroup()
        admin = MutuallyExclusiveCallbackGroup()
        self.sensors = rc.SensorIntake(self, p, self.images, self.joints,
                                       subscribe_images=setup.images_from_topic,
                                       subscribe_joints=setup.joints_from_topic,
                                       callback_group=sensors)
        if p["teleop_type"] == "Twist":
            self.create_subscription(Twist, p["teleop_topic"], self._on_twist, rc.SENSOR_QOS,
                                     callback_group=sensors)
            self.create_subscription(Joy, p["buttons_topic"], self._on_buttons, rc.SENSOR_QOS,
                                     callback_group=sensors)
        else:
            self.create_subscription(Joy, p["teleop_topic"], self._on_joy, rc.SENSOR_QOS,
                                     callback_group=sensors)
        self.action_pub = self.create_publisher(Float32MultiArray, "~/action", rc.COMMAND_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        services: dict[str, Callable[[], str]] = {
            "start": self.start_episode, "save": lambda: self.save(self.params["success"]),
            "save_success": lambda: self.save(True), "save_failure": lambda: self.save(False),
            "discard": self.discard, "rerecord": self.rerecord,
        }
        for name, fn in services.items():
            self.create_service(Trigger, f"~/{name}", self._trigger(fn), callback_group=admin)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.adapter.connect()
        self.ticker = rc.Ticker(1.0 / p["rate_hz"], self._tick, f"{self.get_name()}_control")
        self.diag_timer = self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics,
                                            callback_group=admin, clock=steady)
        self.loop.start()  # teleop moves the arm between episodes too
        self.ticker.start()
        self.get_logger().info(f"recorder_node ready: robot {p['robot']}, dataset "
                               f"{self.dataset_root}, teleop {p['teleop_type']} on "
                               f"{p['teleop_topic']}")

    # -- parameters / sensors --------------------------------------------------------------
    def _on_param(self, name: str, value: Any) -> None:
        self.params[name] = value
        if name in SCALE_PARAMS:
            self.mapper.scales = scales_from(self.params)

    def _on_twist(self, msg: Twist) -> None:
        self.mapper.on_twist((msg.linear.x, msg.linear.y, msg.linear.z),
                             (msg.angular.x, msg.angular.y, msg.angular.z), time.monotonic())

    def _on_buttons(self, msg: Joy) -> None:
        self.mapper.on_joy(msg.axes, msg.buttons, time.monotonic(), use_axes=False)

    def _on_joy(self, msg: Joy) -> None:
        self.mapper.on_joy(msg.axes, msg.buttons, time.monotonic())

    # -- control + recording -----------------------------------------------------------------
    def _teleop_policy(self, obs: Observation) -> np.ndarray:
        """The control core's policy: this step's teleop delta ``[1, 7]`` (``ee_absolute``
        robots: the integrated target pose); keeps ``obs`` so the frame recorded is the one
        the step acted on."""
        self._last_obs = obs
        action = self.mapper.action(time.monotonic())
        if self.integrator is not None:
            action = self.integrator.target(action, obs.ee_pose)
        return action[None]

    def _tick(self) -> None:
        if not self._closed:
            self.loop.step()

    def _on_tick(self, report: TickReport) -> None:
        if self.integrator is not None:
            if report.sent is not None:
                self.integrator.commit(report.sent.to_vector())
            elif report.status in ("held", "fault", "paused"):
                self.integrator.reset()
        if report.sent is None:
            return
        vec = report.sent.to_vector()
        msg = Float32MultiArray(data=[float(v) for v in vec])
        msg.layout.dim = [MultiArrayDimension(label=f"action:{report.sent.kind.value}", size=7,
                                              stride=7)]
        self.action_pub.publish(msg)
        obs = self._last_obs
        with self._rec_lock:
            if not self.recording or obs is None:
                return
            cam = self.params["camera"]
            try:
                self.writer.add_frame({cam: obs.images[cam]}, obs.state_vector(), obs.ee_pose,
                                      vec, timestamp=obs.stamps_s.get(cam, obs.stamp_s))
                self.frames += 1
            except (TheiaError, KeyError) as exc:
                self.frame_errors += 1
                self.get_logger().warning(f"frame not recorded: {exc}",
                                          throttle_duration_sec=2.0)

    # -- episode control (service bodies; raise TheiaError to refuse) ------------------------
    def _open_writer(self) -> None:
        if self.writer is not None:
            return
        from theia_ros.dataset import DatasetWriter

        root = self.dataset_root
        if (root / INFO_PATH).exists():
            writer = DatasetWriter.open(root)
            if writer.action_kind is not self.action_kind:
                writer.close()
                raise TheiaError(f"{root}: dataset holds {writer.action_kind.value} actions; "
                                 f"robot {self.robot_type!r} records {self.action_kind.value}")
            self.writer = writer
            return
        # the tick's latest observation (camera already merged in): the adapter belongs to
        # the control thread, so a service callback must not call observe() itself
        obs = self._last_obs
        if obs is None:
            raise TheiaError("no observation from the control loop yet (sensors stale or the "
                             "robot not ready); try again in a moment")
        cam = self.params["camera"]
        if cam not in obs.images or obs.joint_positions.size == 0:
            raise TheiaError(f"no camera frame on {cam!r} or no joint state yet; cannot size "
                             "the dataset")
        h, w = obs.images[cam].shape[:2]
        rate = self.params["rate_hz"]
        if abs(rate - round(rate)) > 1e-9:
            raise TheiaError(f"dataset fps must be an integer; rate_hz is {rate}")
        joint_names = list(self.setup.joint_names or self.joints.arm_joints)
        if len(joint_names) != obs.joint_positions.size:
            joint_names = [f"joint_{i}" for i in range(obs.joint_positions.size)]
        self.writer = DatasetWriter.create(root, fps=round(rate), robot_type=self.robot_type,
                                           cameras={cam: (h, w)},
                                           state_dim=obs.joint_positions.size + 1,
                                           action_kind=self.action_kind,
                                           state_names=[*joint_names, "gripper"])

    def start_episode(self) -> str:
        with self._rec_lock:
            if self._busy:
                raise TheiaError("still saving the previous episode")
            if self.recording:
                raise TheiaError("already recording; save, discard or rerecord first")
            task = self.params["task"] or (self.task_cfg.task if self.task_cfg else "")
            if not task:
                raise TheiaError("set the 'task' parameter (the episode's task text) first")
            self._open_writer()
            self.writer.start_episode(task)
            self.frames = 0
            self.recording = True
        return f"recording episode {self.writer.num_episodes} ({task!r})"

    def save(self, success: bool) -> str:
        with self._rec_lock:
            if not self.recording:
                raise TheiaError("not recording")
            self.recording, self._busy = False, True
        try:
            index = self.writer.save_episode(success)  # encodes video: outside the lock
        except TheiaError:
            self.writer.discard_episode()
            raise
        finally:
            self._busy = False
        self.saved_episodes.append(index)
        return f"saved episode {index} ({self.frames} frames, success={success})"

    def discard(self) -> str:
        with self._rec_lock:
            if not self.recording:
                raise TheiaError("not recording")
            self.recording = False
            self.writer.discard_episode()
        return "episode discarded"

    def rerecord(self) -> str:
        with self._rec_lock:
            if self.recording:
                self.recording = False
                self.writer.discard_episode()
        return self.start_episode()

    def _trigger(self, fn: Callable[[], str]) -> Callable[[Any, Any], Any]:
        def handler(_req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
            try:
                resp.message, resp.success = fn(), True
                self.get_logger().info(resp.message)
            except TheiaError as exc:
                resp.message, resp.success = str(exc), False
                self.get_logger().warning(resp.message)
            return resp

        return handler

    def publish_diagnostics(self) -> None:
        values = {"recording": str(self.recording).lower(), "frames": str(self.frames),
                  "saved_episodes": str(len(self.saved_episodes)),
                  "frame_errors": str(self.frame_errors),
                  "image_errors": str(self.sensors.image_errors),
                  "dataset": str(self.dataset_root), "state": self.loop.state.value}
        values.update(self.loop.stats.diagnostics())
        st = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"theia_ros: {self.get_name()}",
                              message="recording" if self.recording else "idle",
                              hardware_id=str(self.adapter.name))
        st.values = [KeyValue(key=k, value=v) for k, v in sorted(values.items())]
        self.diag_pub.publish(DiagnosticArray(status=[st]))

    def shutdown(self) -> None:
        """Stop the robot safely; an unsaved episode is left for ``DatasetWriter.open`` to
        drop (never half-written); close the dataset. Safe to call twice."""
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
                with self._rec_lock:
                    if self.writer is not None:
                        if self.recording:
                            self.writer.discard_episode()
                            self.recording = False
                        self.writer.close()
                logging.getLogger("theia_ros").removeHandler(self._log_handler)


def main(argv: list[str] | None = None) -> int:
    """Console script ``recorder_node``."""
    return rc.spin_node(RecorderNode, argv if argv is not None else sys.argv, "recorder_node")


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["RecorderNode", "main"]
