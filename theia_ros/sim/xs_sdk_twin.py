"""A MuJoCo WidowX 250s behind the ``xs_sdk`` ROS interface, for rehearsals without the arm.

THIS IS A SIMULATOR STANDING IN FOR INTERBOTIX'S DRIVER, NOT INTERBOTIX SOFTWARE. It imitates
the C++ driver node of ``interbotix_ros_core``: ``interbotix_ros_xseries/interbotix_xs_sdk/
src/xs_sdk_obj.cpp`` (topics, services, the robot-info answer) and ``interbotix_xs_driver/
src/xs_driver.cpp`` (register reads), with the start-up modes of ``interbotix_ros_xsarms/
interbotix_xsarm_control/config/modes.yaml`` (the project keeps these upstream copies under
``shared/upstream/interbotix/``). Interbotix's own ``xs_sdk_sim`` moves joints kinematically
and models no registers; this node serves the same topics and services as the C++ driver,
under the node's namespace, with the real ``interbotix_xs_msgs`` types:

    sub  commands/joint_group, commands/joint_single   JointGroupCommand / JointSingleCommand
    pub  joint_states                                  sensor_msgs/JointState (100 Hz)
    srv  get_robot_info, set_operating_modes, set_motor_pid_gains, set_motor_registers,
         get_motor_registers, torque_enable, reboot_motors

and, with a ``camera_topic``, the door scene's front camera as ``sensor_msgs/Image`` (rgb8),
so that a rehearsal needs no camera driver either. What the driver does with the commands, on
the MuJoCo arm of ``theia_ros.sim`` (the door scene):

* arm position commands follow the servos' time-based profile: a trapezoid lasting
  Profile_Velocity ms, of which Profile_Acceleration ms accelerate (modes.yaml starts them at
  2000 / 300, as the driver does); the gripper runs in PWM mode (sign of the effort = direction);
* ``get_motor_registers`` stops at the first motor in hardware error and still succeeds with
  the shorter list (``xs_driver.cpp`` returns early from its read loop; ``xs_sdk_obj.cpp``
  ignores that), and a motor in hardware error has no torque and ignores commands;
* :meth:`XsSdkTwin.inject_hardware_error` / the ``~/inject_fault`` topic set a motor's
  ``Hardware_Error_Status``; ``reboot_motors`` clears it;
* :meth:`XsSdkTwin.falsify_readings` makes the published joint states impossible (a failing
  encoder or driver: NaN, a finger beyond its travel, a stamp before 1970) until called again
  without arguments; the motors themselves are untouched.

Physics runs in real time on its own thread (the executor only serves callbacks).

Run: ``xs_sdk_twin --ros-args -r __ns:=/wx250s -p camera_topic:=/camera/image_raw`` (what
``widowx_door.launch.py robot:=widowx use_sim:=true`` starts).
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from theia_ros.control import kinematics as K

ARM = tuple(K.JOINT_NAMES)
GRIPPER = "gripper"
JOINT_ORDER = (*ARM, GRIPPER)  # wx250s.yaml joint_order; then the two finger joints
PUBLISHED_NAMES = (*JOINT_ORDER, "left_finger", "right_finger")
MOTOR_IDS = {"waist": 1, "shoulder": 2, "elbow": 4, "forearm_roll": 6, "wrist_angle": 7,
             "wrist_rotate": 8, "gripper": 9}
VELOCITY_LIMIT_RAD_S = math.pi  # the wx250s URDF's arm joint velocity limits
PUBLISH_PERIOD_S = 0.01  # wx250s.yaml joint_state_publisher update_rate: 100
PWM_FINGER_SPEED_M_S = 0.06  # finger speed at the default 250 PWM gripper effort
SHUTDOWN_GRACE_S = 15.0  # the longest the console script serves its clients after Ctrl-C


def profile_fraction(t: float, moving_s: float, accel_s: float) -> float:
    """How far along a Dynamixel time-based profile (trapezoid) the goal is at time ``t``."""
    if moving_s <= 0 or t >= moving_s:
        return 1.0
    if t <= 0:
        return 0.0
    ta = min(max(accel_s, 0.0), 0.5 * moving_s)
    if ta == 0:
        return t / moving_s
    v = 1.0 / (moving_s - ta)
    if t < ta:
        return 0.5 * v / ta * t * t
    if t <= moving_s - ta:
        return 0.5 * v * ta + v * (t - ta)
    return 1.0 - 0.5 * v / ta * (moving_s - t) ** 2


@dataclass
class _Motor:
    profile_velocity_ms: int = 2000
    profile_acceleration_ms: int = 300
    mode: str = "position"
    torque: bool = True
    hardware_error: int = 0
    start: float = 0.0  # profile segment: goal from start to target over the profile
    target: float = 0.0
    t0: float = 0.0


class XsSdkTwin:
    """The node and its physics thread; ``close()`` stops both (see the module docstring).

    Args:
        namespace: the robot name (``/wx250s`` topics); None: the ROS arguments' ``__ns``.
        seed: door scene seed (None: nominal).
        context: rclpy context (None: the default one).
        start_qpos: initial arm joints (None: the sleep pose, as a powered-down arm lies;
            ``"scene"``: the door scene's start pose, where the demonstrations begin).
        camera_topic: publish the front camera there (None: no camera).
        image_hw: camera size (height, width) in pixels.
        camera_rate_hz: frames per second on ``camera_topic``.
        read_parameters: take these from the node's ROS parameters, with the arguments as
            defaults (the console script): ``seed`` (-1 nominal), ``start_pose`` (``sleep`` |
            ``scene``), ``camera_topic`` (empty: none), ``image_width``, ``image_height``,
            ``camera_rate_hz``.
    """

    def __init__(self, namespace: str | None = "wx250s", *, seed: int | None = None,
                 context: Any = None, start_qpos: np.ndarray | str | None = None,
                 camera_topic: str | None = None, image_hw: tuple[int, int] = (224, 224),
                 camera_rate_hz: float = 15.0, read_parameters: bool = False) -> None:
        from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
        from interbotix_xs_msgs.srv import (
            MotorGains,
            OperatingModes,
            Reboot,
            RegisterValues,
            RobotInfo,
            TorqueEnable,
        )
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from theia_ros.sim.door_env import DoorEnv

        self._JointState = JointState
        kw = {} if namespace is None else {"namespace": namespace}
        self.node = Node("xs_sdk", context=context, **kw)
        n = self.node
        if read_parameters:
            h, w = image_hw
            values = {k: n.declare_parameter(k, v).value for k, v in (
                ("seed", -1 if seed is None else seed), ("camera_topic", camera_topic or ""),
                ("start_pose", start_qpos if isinstance(start_qpos, str) else "sleep"),
                ("image_width", w), ("image_height", h), ("camera_rate_hz", camera_rate_hz))}
            if min(values["image_width"], values["image_height"]) <= 0 \
                    or values["camera_rate_hz"] <= 0 \
                    or values["start_pose"] not in ("sleep", "scene"):
                n.destroy_node()
                raise ValueError(f"xs_sdk_twin: invalid parameters {values} (start_pose: "
                                 "sleep | scene; sizes and rate > 0)")
            start_qpos = None if values["start_pose"] == "sleep" else "scene"
            seed = values["seed"] if values["seed"] >= 0 else None
            camera_topic = values["camera_topic"] or None
            image_hw = (values["image_height"], values["image_width"])
            camera_rate_hz = values["camera_rate_hz"]
        self.camera_topic = camera_topic
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.env = DoorEnv(render=False, image_size=max(self.image_hw))
        if isinstance(start_qpos, str):
            if start_qpos != "scene":
                raise ValueError(f"xs_sdk_twin: start_qpos {start_qpos!r} is not 'scene'")
            self.env.reset(seed)
            q0 = self.env.arm_qpos()
        else:
            q0 = K.SLEEP_QPOS_RAD if start_qpos is None else np.asarray(start_qpos, np.float64)
            self.env.reset(seed, arm_qpos=q0)
        self._lock = threading.Lock()
        now = time.monotonic()
        self.motors = {n: _Motor(start=float(q), target=float(q), t0=now)
                       for n, q in zip(ARM, q0)}
        self.motors[GRIPPER] = _Motor(mode="pwm", profile_velocity_ms=0,
                                      profile_acceleration_ms=0)
        self._finger_goal = K.FINGER_OPEN_M
        self._pwm = 0.0
        self._kp = self.env.model.actuator_gainprm[:6, 0].copy()
        self._bias = self.env.model.actuator_biasprm[:6, :3].copy()
        self.registers_read = 0
        self._last_q = self.env.arm_qpos()
        self._false_positions: dict[str, float] = {}
        self._false_stamp: tuple[int, int] | None = None

        n.create_subscription(JointGroupCommand, "commands/joint_group", self._on_group, 10)
        n.create_subscription(JointSingleCommand, "commands/joint_single", self._on_single, 10)
        n.create_subscription(String, "~/inject_fault", self._on_inject, 10)
        self.pub = n.create_publisher(JointState, "joint_states", 10)
        n.create_service(RobotInfo, "get_robot_info", self._srv_info)
        n.create_service(OperatingModes, "set_operating_modes", self._srv_modes)
        n.create_service(MotorGains, "set_motor_pid_gains", lambda _q, r: r)
        n.create_service(RegisterValues, "set_motor_registers", self._srv_set_reg)
        n.create_service(RegisterValues, "get_motor_registers", self._srv_get_reg)
        n.create_service(TorqueEnable, "torque_enable", self._srv_torque)
        n.create_service(Reboot, "reboot_motors", self._srv_reboot)
        self._running = True
        self._camera: threading.Thread | None = None
        if camera_topic:
            from rclpy.qos import qos_profile_sensor_data
            from sensor_msgs.msg import Image

            self._Image = Image
            self.image_pub = n.create_publisher(Image, camera_topic, qos_profile_sensor_data)
            self.frames_published = 0
            self._camera = threading.Thread(target=self._run_camera, args=(camera_rate_hz,),
                                            name="xs-twin-camera", daemon=True)
        self._physics = threading.Thread(target=self._run_physics, name="xs-twin-physics",
                                         daemon=True)
        self._physics.start()
        if self._camera is not None:
            self._camera.start()
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(n)
        self._spinner = threading.Thread(target=self._spin, name="xs-twin-ros", daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):  # context shut down: nothing left to serve
            self.executor.spin()

    # -- motors ----------------------------------------------------------------------------
    def _names(self, cmd_type: str, name: str) -> list[str]:
        if cmd_type == "group":
            return {"arm": list(ARM), "all": list(JOINT_ORDER)}.get(name, [])
        return [name] if name in self.motors else []

    def _goal(self, m: _Motor, now: float) -> float:
        f = profile_fraction(now - m.t0, m.profile_velocity_ms / 1000.0,
                             m.profile_acceleration_ms / 1000.0)
        return m.start + f * (m.target - m.start)

    def _command(self, name: str, value: float) -> None:
        m = self.motors.get(name)
        if m is None or not m.torque or m.hardware_error:
            return  # a motor in error or torqued off ignores goal writes
        if name == GRIPPER:
            self._pwm = float(value)
            return
        now = time.monotonic()
        lo, hi = K.JOINT_LOWER_RAD[ARM.index(name)], K.JOINT_UPPER_RAD[ARM.index(name)]
        m.start, m.target, m.t0 = self._goal(m, now), float(np.clip(value, lo, hi)), now

    def _on_group(self, msg: Any) -> None:
        with self._lock:
            for name, value in zip(self._names("group", msg.name), msg.cmd):
                self._command(name, value)

    def _on_single(self, msg: Any) -> None:
        with self._lock:
            self._command(msg.name, msg.cmd)

    def inject_hardware_error(self, joint: str, status: int = 4) -> None:
        """Put ``joint``'s servo in hardware error (4 = overheating): no torque, no reads."""
        with self._lock:
            self.motors[joint].hardware_error = int(status)
            self._apply_torque()

    def falsify_readings(self, positions: dict[str, float] | None = None,
                         stamp: tuple[int, int] | None = None) -> None:
        """Publish ``positions`` (joint name -> value, ``left_finger`` included) in place of
        the measured ones, and ``stamp`` (sec, nanosec) in every header, from the next
        ``joint_states`` on; no arguments: honest readings again."""
        unknown = set(positions or {}) - set(PUBLISHED_NAMES)
        if unknown:
            raise ValueError(f"xs_sdk_twin: no joint named {sorted(unknown)} in joint_states")
        with self._lock:
            self._false_positions = dict(positions or {})
            self._false_stamp = stamp

    def _on_inject(self, msg: Any) -> None:
        """``joint[:status]``, e.g. ``elbow:4``."""
        joint, _, status = msg.data.partition(":")
        if joint in self.motors:
            self.inject_hardware_error(joint, int(status or 4))

    def _apply_torque(self) -> None:
        """A motor without torque (off, or in error) gets no actuator force."""
        model = self.env.model
        for i, name in enumerate(ARM):
            m = self.motors[name]
            on = m.torque and not m.hardware_error
            model.actuator_gainprm[i, 0] = self._kp[i] if on else 0.0
            model.actuator_biasprm[i, :3] = self._bias[i] if on else 0.0

    # -- physics ---------------------------------------------------------------------------
    def _run_physics(self) -> None:
        import mujoco

        env = self.env
        dt = env.model.opt.timestep
        n_sub = max(1, round(PUBLISH_PERIOD_S / dt))
        next_t = time.monotonic()
        while self._running:
            with self._lock:
                now = time.monotonic()
                for i in range(n_sub):
                    t = now - PUBLISH_PERIOD_S + (i + 1) * dt
                    goals = [self._goal(self.motors[n], t) for n in ARM]
                    if self._pwm and not self.motors[GRIPPER].hardware_error:
                        step = math.copysign(PWM_FINGER_SPEED_M_S * dt * abs(self._pwm) / 250,
                                             self._pwm)
                        self._finger_goal = float(np.clip(self._finger_goal + step,
                                                          K.FINGER_CLOSED_M, K.FINGER_OPEN_M))
                    env.data.ctrl[:6] = goals
                    env.data.ctrl[6] = self._finger_goal
                    mujoco.mj_step(env.model, env.data)
                msg = self._joint_state()
            with contextlib.suppress(Exception):  # publisher gone while closing
                self.pub.publish(msg)
            next_t += PUBLISH_PERIOD_S
            time.sleep(max(0.0, next_t - time.monotonic()))

    def _run_camera(self, rate_hz: float) -> None:
        """Render the front camera from a copy of the joint state, so that physics waits
        only for the copy, not for the renderer (EGL, this thread's own GL context)."""
        import mujoco

        from theia_ros.ros.image_conversion import rgb_to_image_fields
        from theia_ros.sim.scene import CAMERA_NAME

        model = self.env.model
        view = mujoco.MjData(model)
        renderer = mujoco.Renderer(model, *self.image_hw)
        period = 1.0 / rate_hz
        next_t = time.monotonic()
        try:
            while self._running:
                with self._lock:
                    view.qpos[:] = self.env.data.qpos
                    stamp = self.node.get_clock().now().to_msg()
                mujoco.mj_kinematics(model, view)
                mujoco.mj_camlight(model, view)  # the target-tracking camera's pose
                renderer.update_scene(view, CAMERA_NAME)
                msg = self._Image(**rgb_to_image_fields(renderer.render()))
                msg.header.stamp, msg.header.frame_id = stamp, "camera_color_optical_frame"
                with contextlib.suppress(Exception):  # publisher gone while closing
                    self.image_pub.publish(msg)
                    self.frames_published += 1
                next_t = max(next_t + period, time.monotonic())
                time.sleep(max(0.0, next_t - time.monotonic()))
        finally:
            renderer.close()

    def _joint_state(self) -> Any:
        q = self.env.arm_qpos()
        finger = K.FINGER_CLOSED_M + self.env.gripper_fraction() * (K.FINGER_OPEN_M
                                                                    - K.FINGER_CLOSED_M)
        velocity = (q - self._last_q) / PUBLISH_PERIOD_S
        self._last_q = q
        msg = self._JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = ""
        msg.name = list(PUBLISHED_NAMES)
        gripper_angle = (finger - K.FINGER_CLOSED_M) / (K.FINGER_OPEN_M - K.FINGER_CLOSED_M)
        msg.position = [float(v) for v in q] + [gripper_angle, finger, -finger]
        msg.velocity = [float(v) for v in velocity] + [0.0] * 3
        msg.effort = [0.0] * 9
        for name, value in self._false_positions.items():
            msg.position[msg.name.index(name)] = float(value)
        if self._false_stamp is not None:
            msg.header.stamp.sec, msg.header.stamp.nanosec = self._false_stamp
        return msg

    # -- services --------------------------------------------------------------------------
    def _srv_info(self, req: Any, res: Any) -> Any:
        names = self._names(req.cmd_type, req.name)
        with self._lock:
            first = self.motors[names[0]] if names else _Motor()
        res.mode = first.mode
        res.profile_type = "time"
        res.num_joints = len(names)
        for name in names:
            res.joint_ids.append(MOTOR_IDS[name])
            if name == GRIPPER:
                res.joint_names.append("left_finger")
                res.joint_lower_limits.append(K.FINGER_CLOSED_M)
                res.joint_upper_limits.append(K.FINGER_OPEN_M)
                res.joint_velocity_limits.append(1.0)
                res.joint_sleep_positions.append(K.FINGER_CLOSED_M)
                res.joint_state_indices.append(len(JOINT_ORDER))
            else:
                i = ARM.index(name)
                res.joint_names.append(name)
                res.joint_lower_limits.append(float(K.JOINT_LOWER_RAD[i]))
                res.joint_upper_limits.append(float(K.JOINT_UPPER_RAD[i]))
                res.joint_velocity_limits.append(VELOCITY_LIMIT_RAD_S)
                res.joint_sleep_positions.append(float(K.SLEEP_QPOS_RAD[i]))
                res.joint_state_indices.append(i)
        res.name = ["arm", "all"] if req.name == "all" else [req.name]
        return res

    def _srv_modes(self, req: Any, res: Any) -> Any:
        with self._lock:
            for name in self._names(req.cmd_type, req.name):
                m = self.motors[name]
                m.mode = req.mode
                m.profile_velocity_ms = req.profile_velocity
                m.profile_acceleration_ms = req.profile_acceleration
        return res

    def _srv_set_reg(self, req: Any, res: Any) -> Any:
        field = {"Profile_Velocity": "profile_velocity_ms",
                 "Profile_Acceleration": "profile_acceleration_ms"}.get(req.reg)
        with self._lock:
            for name in self._names(req.cmd_type, req.name):
                m = self.motors[name]
                if field is not None and not m.hardware_error:
                    setattr(m, field, int(req.value))
        return res

    def _register(self, m: _Motor, reg: str, name: str) -> int:
        if reg == "Hardware_Error_Status":
            return m.hardware_error
        if reg == "Profile_Velocity":
            return m.profile_velocity_ms
        if reg == "Profile_Acceleration":
            return m.profile_acceleration_ms
        if reg == "Torque_Enable":
            return int(m.torque)
        if reg == "Present_Position" and name in ARM:
            q = self.env.arm_qpos()[ARM.index(name)]
            return round(2048 + float(q) * 4096 / (2 * math.pi))
        return 0

    def _srv_get_reg(self, req: Any, res: Any) -> Any:
        """Like the driver: the read stops at the first motor in error; still a success."""
        self.registers_read += 1
        with self._lock:
            for name in self._names(req.cmd_type, req.name):
                m = self.motors[name]
                if m.hardware_error:
                    break
                res.values.append(self._register(m, req.reg, name))
        return res

    def _srv_torque(self, req: Any, res: Any) -> Any:
        with self._lock:
            for name in self._names(req.cmd_type, req.name):
                m = self.motors[name]
                m.torque = bool(req.enable)
                if name in ARM:  # the goal restarts from where the joint is
                    q = float(self.env.arm_qpos()[ARM.index(name)])
                    m.start = m.target = q
            self._apply_torque()
        return res

    def _srv_reboot(self, req: Any, res: Any) -> Any:
        with self._lock:
            for name in self._names(req.cmd_type, req.name):
                m = self.motors[name]
                if req.smart_reboot and not m.hardware_error:
                    continue
                m.hardware_error = 0
                m.torque = bool(req.enable)
                if name in ARM:
                    q = float(self.env.arm_qpos()[ARM.index(name)])
                    m.start = m.target = q
            self._apply_torque()
        return res

    def reset_scene(self, seed: int | None) -> None:
        """A new door episode: the scene of ``seed`` with the arm at its start pose, every
        motor healthy and torqued, holding there (no command in flight), gripper open."""
        with self._lock:
            self.env.reset(seed)
            q0 = self.env.arm_qpos()
            now = time.monotonic()
            for name, q in zip(ARM, q0):
                m = self.motors[name]
                m.start = m.target = float(q)
                m.t0, m.torque, m.hardware_error = now, True, 0
            self.motors[GRIPPER].torque, self.motors[GRIPPER].hardware_error = True, 0
            self._finger_goal, self._pwm = K.FINGER_OPEN_M, 0.0
            self._last_q = q0
            self._apply_torque()

    # -- lifecycle -------------------------------------------------------------------------
    def linger(self, timeout_s: float) -> bool:
        """Keep serving while another node still publishes arm commands (at most
        ``timeout_s``); True when they all left.

        A Ctrl-C in the terminal of a launch reaches every process at once. The real
        ``xs_sdk`` then exits at once and the policy node's park goes nowhere; the twin
        instead waits for the nodes commanding it, so a rehearsal shows the park.
        """
        topic = f"{self.node.get_namespace().rstrip('/')}/commands/joint_group"
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.node.count_publishers(topic) == 0:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._running = False
        self._physics.join(timeout=2.0)
        if self._camera is not None:
            self._camera.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=2.0)
        self._spinner.join(timeout=2.0)
        self.node.destroy_node()
        self.env.close()


def main(argv: list[str] | None = None) -> int:
    """Console script ``xs_sdk_twin``; ROS arguments ``-r __ns:=/wx250s`` and the parameters
    ``seed`` (door scene; -1 nominal), ``start_pose`` (``sleep`` | ``scene``),
    ``camera_topic`` (empty: no camera), ``image_width``, ``image_height``,
    ``camera_rate_hz``."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    args = argv if argv is not None else sys.argv
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    twin = None
    try:
        twin = XsSdkTwin(namespace=None, read_parameters=True)
        twin.node.get_logger().info(
            f"xs_sdk twin up under {twin.node.get_namespace()} (camera "
            f"{twin.camera_topic or 'off'} {twin.image_hw[1]}x{twin.image_hw[0]})")
        while rclpy.ok():
            time.sleep(0.2)
    except KeyboardInterrupt:
        if twin is not None:
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: leave now
                twin.linger(SHUTDOWN_GRACE_S)
    finally:
        if twin is not None:
            twin.close()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
