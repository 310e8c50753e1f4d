"""WidowX 250s through Interbotix's ROS 2 Python API (``interbotix_xs_modules``).

Action semantics are the sim twin's (``theia_ros.robots.sim``): an ``EE_DELTA`` action
``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` moves the fingertip centre
(``ee_gripper_link``) by ``d_xyz`` in the arm base frame and pre-multiplies the delta
rotation in the base frame, starting from the last commanded pose (the measured one once
the arm is more than ``resync_m`` / ``resync_rad`` from it), exactly as ``SimWidowX`` does;
``gripper`` is the open fraction.

Why we solve IK ourselves: Interbotix's ``set_ee_pose_components`` runs a numerical IK
(modern_robotics ``IKinSpace``) from three fixed seeds, which fails for targets more than a
few cm from the seed and composes some rotations in a frame other than ours. Instead,
``theia_ros.control.kinematics.solve_ik`` (the same code the sim uses) is seeded from the measured
joints, and the answer goes out as one non-blocking joint-group command
(``bot.arm.set_joint_positions(q, blocking=False)``), which the servos' time-based profile
(Profile_Velocity = the step period, written and read back at connect) reaches within the
0.2 s step. Interbotix's own joint and velocity limit check in ``set_joint_positions`` stays
as a second net.

Failures never raise out of :meth:`WidowXAdapter.apply`: an IK failure, a joint jump (IK
branch flip) or a command Interbotix refuses means *skip + hold*, counted in
:attr:`WidowXAdapter.counters`; an Interbotix exception or a motor hardware error (read
periodically from the ``Hardware_Error_Status`` registers) sets :attr:`WidowXAdapter.fault`,
after which the adapter only holds (the control loop sees ``fault`` and safe-stops).
The Interbotix objects live on a node and executor of ours (:class:`InterbotixLink`), so
disconnecting never shuts down the host node's rclpy context.

``interbotix_xs_modules`` exists only in a ROS 2 install with the Interbotix workspace
sourced; it is imported in :meth:`WidowXAdapter.connect`, never at module import. The
adapter has no camera: the ROS node feeds images through ``theia_ros.control.ImageCache``.

Example (inside the ROS install, with ``xsarm_control.launch.py robot_model:=wx250s`` up)::

    from theia_ros.robots.widowx import WidowXAdapter, WidowXConfig
    with WidowXAdapter(WidowXConfig()) as arm:   # connect ... safe_stop + disconnect
        loop = ControlLoop(arm, policy, SafetyFilter(SafetyLimits.wx250s()), images=cache)
        loop.run(duration_s=60)
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from theia_ros.control import kinematics as K
from theia_ros.control.observation import JOINTS_KEY
from theia_ros.control.ratelog import RateLimitedLogger
from theia_ros.control.rotations import ee_delta_between
from theia_ros.errors import TheiaError
from theia_ros.robots.joint_state import gripper_fraction, implausible_joints
from theia_ros.types import Action, ActionKind, Observation, RobotAdapter

log = logging.getLogger(__name__)
PROFILE_TIMEOUT_S = 2.0  # bound on each Profile_* register call

@dataclass(frozen=True)
class WidowXConfig:
    """How to reach and drive the arm.

    Args:
        robot_model: Interbotix model name (``wx250s``).
        robot_name: ROS namespace of the xs_sdk node (None: same as ``robot_model``).
        group_name: the arm joint group in the motor config.
        gripper_name: the gripper joint in the motor config.
        control_rate_hz: rate of ``apply`` calls; one step's moving time is its period.
        accel_fraction: accel time as a fraction of the moving time (Interbotix needs <= 0.5).
        gripper_pressure: Interbotix gripper effort fraction in [0, 1].
        gripper_open_above: open fraction at or above which the gripper is opened.
        gripper_close_below: open fraction at or below which it is closed (hysteresis band
            between the two keeps the current state).
        max_joint_step_rad: an IK answer moving any joint further in one step is refused.
        park_moving_time_s: moving time for the home and sleep poses in ``safe_stop``.
        fault_check_period_s: how often the motors' hardware error registers are read
            (0 disables).
        workspace_min_m, workspace_max_m: a last-line box on the target fingertip position
            (the wx250s safety box): the filter judged the step against the tick's
            observation, but the step is applied to joints read now, while the arm may still
            be finishing the previous step.
        resync_m, resync_rad: measured-vs-commanded distance beyond which deltas start
            from the measured pose instead of the last command (``SimWidowX``'s rule).
        register_timeout_s: bound on one register service call.
        max_failed_fault_checks: unanswered register reads in a row that make a fault.
        connect_timeout_s: how long ``connect`` waits for the xs_sdk services.
        node_name: our Interbotix node's name (kept out of the host's global remaps).
    """

    robot_model: str = "wx250s"
    robot_name: str | None = None
    group_name: str = "arm"
    gripper_name: str = "gripper"
    control_rate_hz: float = 5.0
    accel_fraction: float = 0.25
    gripper_pressure: float = 0.5
    gripper_open_above: float = 0.6
    gripper_close_below: float = 0.4
    max_joint_step_rad: float = 0.5
    park_moving_time_s: float = 2.0
    fault_check_period_s: float = 1.0
    workspace_min_m: tuple[float, float, float] = (0.10, -0.40, 0.02)
    workspace_max_m: tuple[float, float, float] = (0.50, 0.40, 0.45)
    resync_m: float = 0.02
    resync_rad: float = 0.2
    register_timeout_s: float = 0.5
    max_failed_fault_checks: int = 3
    connect_timeout_s: float = 10.0
    node_name: str = "theia_widowx_interbotix"

    def __post_init__(self) -> None:
        if self.robot_model != "wx250s":
            raise TheiaError(f"widowx: robot_model {self.robot_model!r} is not supported; our "
                             "kinematics are the wx250s'")
        checks = {
            "control_rate_hz": self.control_rate_hz > 0,
            "accel_fraction": 0 <= self.accel_fraction <= 0.5,
            "gripper_pressure": 0 <= self.gripper_pressure <= 1,
            "gripper_close_below": 0 <= self.gripper_close_below < self.gripper_open_above <= 1,
            "max_joint_step_rad": self.max_joint_step_rad > 0,
            "park_moving_time_s": self.park_moving_time_s > 0,
            "fault_check_period_s": self.fault_check_period_s >= 0,
            "register_timeout_s": self.register_timeout_s > 0,
            "max_failed_fault_checks": self.max_failed_fault_checks >= 1,
            "connect_timeout_s": self.connect_timeout_s > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise TheiaError(f"widowx: invalid {name} = {getattr(self, name)!r}")

    @property
    def moving_time_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def accel_time_s(self) -> float:
        return self.accel_fraction * self.moving_time_s


class InterbotixLink:
    """Interbotix's ``InterbotixManipulatorXS`` on a node and executor thread of our own.

    Why not ``robot_startup()`` / ``robot_shutdown()``: shutdown calls ``rclpy.shutdown()``,
    which also ends the context of the ROS node hosting the adapter (no final diagnostics, a
    park cut short), and upstream's own service waits create a 20 Hz rate they never destroy.
    Our node ignores the process's global ROS arguments, so a launch file's
    ``__node:=policy_node`` remap does not rename it into a duplicate ``/policy_node``.
    Register reads and writes go through our own clients with a bounded wait.
    """

    def __init__(self, config: WidowXConfig) -> None:
        try:
            import rclpy
            from interbotix_common_modules.common_robot.robot import InterbotixRobotNode
            from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS
            from interbotix_xs_msgs.srv import RegisterValues
            from rclpy.executors import SingleThreadedExecutor
        except ImportError as exc:
            raise TheiaError(
                "widowx: cannot import interbotix_xs_modules.xs_robot.arm; the WidowX adapter "
                "runs only inside a ROS 2 install with the Interbotix workspace sourced "
                "(source /opt/ros/$ROS_DISTRO/setup.bash && source ~/interbotix_ws/install/"
                f"setup.bash) ({exc})") from exc
        self._rclpy = rclpy
        self._Req = RegisterValues.Request
        self.owns_rclpy = not rclpy.ok()
        if self.owns_rclpy:  # standalone use; inside a ROS node the node's main owns rclpy
            rclpy.init()
        self.node = InterbotixRobotNode(node_name=config.node_name, use_global_arguments=False)
        self.ns = "/" + (config.robot_name if config.robot_name is not None
                         else config.robot_model)
        self.get_reg = self.node.create_client(RegisterValues, f"{self.ns}/get_motor_registers")
        self.set_reg = self.node.create_client(RegisterValues, f"{self.ns}/set_motor_registers")
        try:
            # a request sent before its server is discovered is lost: wait for both
            for client in (self.get_reg, self.set_reg):
                if not client.wait_for_service(timeout_sec=config.connect_timeout_s):
                    raise TheiaError(f"widowx: no xs_sdk services under {self.ns} after "
                                     f"{config.connect_timeout_s:.0f} s; is xsarm_control "
                                     "running with this robot_name?")
            # moving_time 2 s as upstream's default, so that our own profile write below is
            # what sets the step time (upstream writes only on a change of value)
            self.bot = InterbotixManipulatorXS(
                robot_model=config.robot_model, robot_name=self.ns[1:],
                group_name=config.group_name, gripper_name=config.gripper_name,
                gripper_pressure=config.gripper_pressure, node=self.node)
        except BaseException:
            self.node.destroy_node()
            if self.owns_rclpy:
                rclpy.try_shutdown()
            raise
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="widowx-interbotix",
                                        daemon=True)
        self._thread.start()
        self._wait_for_driver(config.connect_timeout_s)

    def _wait_for_driver(self, timeout_s: float) -> None:
        """Until xs_sdk subscribes to our command topics: commands published before DDS has
        matched the two ends are dropped, and the arm would miss its first steps."""
        core = self.bot.core
        pubs = [core.pub_group, core.pub_single]
        deadline = time.monotonic() + timeout_s
        while any(p.get_subscription_count() == 0 for p in pubs):
            if time.monotonic() > deadline:
                self.close()
                raise TheiaError(f"widowx: xs_sdk under {self.ns} does not subscribe to our "
                                 f"joint commands after {timeout_s:.0f} s")
            time.sleep(0.02)

    def _spin(self) -> None:
        with contextlib.suppress(Exception):  # context shut down under us: nothing to spin
            self.executor.spin()

    def call(self, client: Any, request: Any, timeout_s: float) -> Any:
        """One service call; the response, or TheiaError after ``timeout_s``."""
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            client.remove_pending_request(future)
            raise TheiaError(f"widowx: {client.srv_name} did not answer within {timeout_s} s")
        return future.result()

    def read_registers(self, group: str, reg: str, timeout_s: float) -> list[int]:
        resp = self.call(self.get_reg, self._Req(cmd_type="group", name=group, reg=reg),
                         timeout_s)
        return [int(v) for v in resp.values]

    def write_registers(self, group: str, reg: str, value: int, timeout_s: float) -> None:
        self.call(self.set_reg, self._Req(cmd_type="group", name=group, reg=reg,
                                          value=int(value)), timeout_s)

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def close(self) -> None:
        """Stop our executor and node; shut rclpy down only if we started it."""
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()
        if self.owns_rclpy:
            self._rclpy.try_shutdown()


class WidowXAdapter(RobotAdapter):
    """The real WidowX 250s behind the robot-adapter seam (see the module docstring).

    Args:
        config: connection and stepping options.
        clock: monotonic seconds for observation stamps (the loop's clock).
    """

    action_kind = ActionKind.EE_DELTA
    name = "widowx"

    def __init__(self, config: WidowXConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or WidowXConfig()
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._link: InterbotixLink | None = None
        self._fault: str | None = None
        self._gripper_state: str | None = None  # "open" | "closed" | None (unknown)
        self._profile: tuple[int, int] | None = None  # (Profile_Velocity, _Acceleration) ms
        self._last_fault_check_s = -math.inf
        self._failed_checks = 0
        self._last_js: Any = None
        self._last_js_seen_s = -math.inf
        self._log = RateLimitedLogger(log, 2.0, clock)

    # -- lifecycle -------------------------------------------------------------------------
    def connect(self) -> None:
        """Reach xs_sdk, then put the step's time-based profile on the servos and check it."""
        if self._link is not None:
            return
        self._link = InterbotixLink(self.config)
        self._gripper_state = None
        self._profile = None
        try:
            self._set_profile(self.config.moving_time_s, self.config.accel_time_s)
        except TheiaError:
            self.disconnect()
            raise
        log.info("widowx: connected to %s", self._link.ns)

    def disconnect(self) -> None:
        """Stop our Interbotix node; the host's rclpy context stays up. Safe to call twice."""
        link, self._link = self._link, None
        if link is None:
            return
        try:
            link.close()
        except Exception as exc:
            log.error("widowx: shutdown failed: %r", exc)

    @property
    def link(self) -> InterbotixLink:
        if self._link is None:
            raise TheiaError("widowx: not connected; use the adapter as a context manager or "
                             "call connect() first")
        return self._link

    @property
    def bot(self) -> Any:
        """The upstream ``InterbotixManipulatorXS``."""
        return self.link.bot

    @property
    def fault(self) -> str | None:
        """A motor/driver fault; set, the adapter only holds (the loop safe-stops)."""
        return self._fault

    def clear_fault(self) -> None:
        """After the operator fixed the cause (e.g. rebooted the motors)."""
        self._fault = None
        self._failed_checks = 0

    def recover(self) -> bool:
        """Commandable again when every motor reads back no hardware error: clear the
        fault, take the measured joints as the last command, restore the step profile."""
        if self._link is None:
            return False
        bad = self._hardware_errors()
        if bad is None or bad:
            return False
        self.clear_fault()
        try:
            self.bot.arm.capture_joint_positions()
            self._set_profile(self.config.moving_time_s, self.config.accel_time_s)
        except Exception as exc:
            self._set_fault(f"recover raised {exc!r}")
            return False
        return True

    def _set_fault(self, detail: str) -> None:
        if self._fault is None:
            log.error("widowx: fault: %s; holding, no further motion commands", detail)
        self._fault = self._fault or detail
        self.counters["faults"] += 1

    def _set_profile(self, moving_time_s: float, accel_time_s: float) -> None:
        """Write the arm's Profile_Velocity / Profile_Acceleration (time-based profile, ms)
        when they differ from what the servos hold, and read the velocity back.

        Upstream's ``set_trajectory_time`` writes only when the value differs from the one
        the Python object last stored, which the constructor already set without writing; so
        the servos would keep modes.yaml's 2 s profile while we step every 0.2 s. Keeping
        the upstream object's stored times equal to ours stops it writing on its own.
        """
        want = (int(moving_time_s * 1000), int(accel_time_s * 1000))
        if want == self._profile:
            return
        cfg, link = self.config, self.link
        # profiles change at connect, around a park and once after it, never every tick: a
        # busy driver gets longer here than a periodic fault-check read, rather than a fault
        timeout_s = max(cfg.register_timeout_s, PROFILE_TIMEOUT_S)
        link.write_registers(cfg.group_name, "Profile_Velocity", want[0], timeout_s)
        link.write_registers(cfg.group_name, "Profile_Acceleration", want[1], timeout_s)
        got = link.read_registers(cfg.group_name, "Profile_Velocity", timeout_s)
        if not got or any(v != want[0] for v in got):
            raise TheiaError(f"widowx: the servos' Profile_Velocity reads {got} after writing "
                             f"{want[0]} ms; the arm would not follow the step time")
        self.bot.arm.moving_time, self.bot.arm.accel_time = moving_time_s, accel_time_s
        self._profile = want

    # -- sensing ---------------------------------------------------------------------------
    def _read_joints(self) -> tuple[np.ndarray, float, float] | None:
        """(arm joints [6] rad, gripper open fraction, monotonic capture stamp) or None when
        there is no reading or it cannot be true (counted; the loop holds, nothing moves)."""
        core = self.bot.core
        with core.js_mutex:
            msg = core.joint_states
        if msg is None:
            return None
        index = core.js_index_map
        q = np.array([msg.position[index[n]] for n in K.JOINT_NAMES], dtype=np.float64)
        frac = gripper_fraction(msg.position[index["left_finger"]])
        if implausible_joints(q).any() or math.isnan(frac):
            self.counters["bad_joint_states"] += 1
            self._log.log(logging.WARNING, "bad_joint_state", "widowx: impossible joint state "
                          "(joints %s, gripper %s); holding", q, frac)
            return None
        return q, frac, self._stamp(msg)

    def _stamp(self, msg: Any) -> float:
        """Monotonic capture time of ``msg``: from its header via our node's ROS clock, or,
        for unstamped messages, when this adapter first saw the message object."""
        now = self.clock()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if stamp_ns < 0:
            return -math.inf  # a stamp before 1970 cannot be true: never fresh
        if stamp_ns > 0:
            return now - max(0.0, (self.link.now_ns() - stamp_ns) * 1e-9)
        if msg is not self._last_js:
            self._last_js, self._last_js_seen_s = msg, now
        return self._last_js_seen_s

    def _hardware_errors(self) -> dict[str, int] | None:
        """Hardware_Error_Status per arm motor ({} when all healthy), or None if unread.

        A motor in hardware error ends the driver's register read early, and xs_sdk still
        answers with the shorter list: a short list is itself a fault, named by the first
        motor it does not cover.
        """
        cfg = self.config
        try:
            values = self.link.read_registers(cfg.group_name, "Hardware_Error_Status",
                                              cfg.register_timeout_s)
        except Exception as exc:
            self.counters["fault_check_errors"] += 1
            self._failed_checks += 1
            self._log.log(logging.WARNING, "fault_check", "widowx: reading motor error "
                          "registers failed: %r", exc)
            if self._failed_checks >= cfg.max_failed_fault_checks:
                self._set_fault(f"xs_sdk did not answer {self._failed_checks} register reads "
                                f"in a row ({exc})")
            return None
        self._failed_checks = 0
        names = [str(n) for n in self.bot.arm.group_info.joint_names]
        bad = {n: v for n, v in zip(names, values) if v != 0}
        if len(values) < len(names):
            bad[names[len(values)]] = -1  # unread: the driver stopped at this motor
        return bad

    def _check_motor_faults(self) -> None:
        period = self.config.fault_check_period_s
        now = self.clock()
        if period <= 0 or now - self._last_fault_check_s < period:
            return
        self._last_fault_check_s = now
        bad = self._hardware_errors()
        if bad:
            unread = [n for n, v in bad.items() if v == -1]
            detail = (f"the register read stopped at {unread[0]} (a motor in hardware error)"
                      if unread else "")
            errors = {n: v for n, v in bad.items() if v != -1}
            self._set_fault("motor hardware error " + "; ".join(
                x for x in (f"status {errors}" if errors else "", detail) if x)
                + " (reboot the motors)")

    def observe(self) -> Observation:
        """Joint state, FK pose and gripper; no images (they come from the camera topic)."""
        self._check_motor_faults()
        reading = self._read_joints()
        if reading is None:
            now = self.clock()
            return Observation(images={}, joint_positions=np.zeros(0), ee_pose=np.full(6, np.nan),
                               gripper=0.0, stamp_s=now, stamps_s={})
        q, frac, stamp = reading
        return Observation(images={}, joint_positions=q, ee_pose=K.fk_pose(q), gripper=frac,
                           stamp_s=stamp, stamps_s={JOINTS_KEY: stamp})

    # -- acting ----------------------------------------------------------------------------
    def _zero(self, gripper: float) -> Action:
        return Action(ActionKind.EE_DELTA, np.zeros(3), np.zeros(3), gripper)

    def _gripper_value(self, fallback: float) -> float:
        return {"open": 1.0, "closed": 0.0}.get(self._gripper_state or "", fallback)

    def _skip(self, counter: str, detail: str, gripper_fallback: float) -> Action:
        self.counters[counter] += 1
        self._log.log(logging.WARNING, counter, "widowx: %s; holding", detail)
        self.hold()
        return self._zero(self._gripper_value(gripper_fallback))

    def apply(self, action: Action) -> Action:
        """Send one EE step as a non-blocking joint-group command; skip + hold on failure."""
        self.counters["steps"] += 1
        if self._fault is not None:
            self.hold()
            return self._zero(self._gripper_value(0.0))
        if not action.is_finite():
            return self._skip("bad_actions", "non-finite action", 0.0)
        reading = self._read_joints()
        if reading is None:
            return self._skip("no_joint_state", "no joint state yet", 0.0)
        q, frac, _ = reading
        ref = self._reference_joints(q)
        vec = action.to_vector()
        if action.kind is ActionKind.EE_DELTA:
            target = K.apply_ee_delta(K.fk(ref), vec[:6])
        else:
            target = K.pose_to_matrix(vec[:6])
        clipped = np.clip(target[:3, 3], self.config.workspace_min_m, self.config.workspace_max_m)
        if not np.array_equal(clipped, target[:3, 3]):
            self.counters["workspace_clips"] += 1
            target[:3, 3] = clipped
        self._command_gripper(float(vec[6]))
        q_new = K.solve_ik(target, ref)
        if q_new is None:
            return self._skip("ik_failures", "IK found no joints for the target", frac)
        if float(np.max(np.abs(q_new - ref))) > self.config.max_joint_step_rad:
            return self._skip("joint_jumps", "IK answer jumps a joint too far in one step", frac)
        try:
            self._set_profile(self.config.moving_time_s, self.config.accel_time_s)
            # moving/accel time None: the profile already on the servos (set above)
            ok = self.bot.arm.set_joint_positions([float(v) for v in q_new], blocking=False)
        except Exception as exc:
            self._set_fault(f"set_joint_positions raised {exc!r}")
            return self._zero(self._gripper_value(frac))
        if ok is False:
            return self._skip("rejected_by_interbotix", "Interbotix refused the joint command "
                              "(joint or velocity limit)", frac)
        sent = ee_delta_between(K.fk_pose(ref), K.fk_pose(q_new))
        return Action(ActionKind.EE_DELTA, sent[:3], sent[3:6], self._gripper_value(frac))

    def _reference_joints(self, measured: np.ndarray) -> np.ndarray:
        """Joints the next delta starts from, as in ``SimWidowX``: the last command, so that
        deltas add up exactly while the servos still trail it, or the measured joints once
        the arm is further than ``resync_m`` / ``resync_rad`` from it (blocked, or held)."""
        commanded = np.asarray(self.bot.arm.get_joint_commands(), dtype=np.float64)
        if commanded.shape != measured.shape:
            return measured
        m, c = K.fk(measured), K.fk(commanded)
        pos_gap = float(np.linalg.norm(m[:3, 3] - c[:3, 3]))
        rot_gap = float(np.linalg.norm(K.rotation_log(m[:3, :3] @ c[:3, :3].T)))
        if pos_gap > self.config.resync_m or rot_gap > self.config.resync_rad:
            self.counters["resyncs"] += 1
            return measured
        return commanded

    def _command_gripper(self, open_fraction: float) -> None:
        """Binary PWM gripper with hysteresis; commands only on a change of state."""
        cfg = self.config
        want = None
        if open_fraction >= cfg.gripper_open_above:
            want = "open"
        elif open_fraction <= cfg.gripper_close_below:
            want = "closed"
        if want is None or want == self._gripper_state:
            return
        try:
            if want == "open":
                self.bot.gripper.release(delay=0.0)
            else:
                self.bot.gripper.grasp(delay=0.0)
        except Exception as exc:
            self._set_fault(f"gripper command raised {exc!r}")
            return
        self._gripper_state = want
        self.counters[f"gripper_{want}"] += 1

    def move_joints(self, q: np.ndarray, moving_time_s: float,
                    tolerance_rad: float = 2e-3) -> None:
        """Blocking move to arm joints ``q`` (a start pose) on a ``moving_time_s`` profile,
        until the measured joints are within ``tolerance_rad`` (or 1 s more has passed);
        the step profile is back on the servos afterwards."""
        self._set_profile(moving_time_s, 0.25 * moving_time_s)
        try:
            if not self.bot.arm.set_joint_positions([float(v) for v in q], blocking=True):
                raise TheiaError(f"widowx: Interbotix refused the joints {list(q)} (joint or "
                                 f"velocity limit over {moving_time_s} s)")
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                reading = self._read_joints()
                if reading is not None and np.max(np.abs(reading[0] - q)) <= tolerance_rad:
                    break
                time.sleep(0.02)
        finally:
            self._set_profile(self.config.moving_time_s, self.config.accel_time_s)

    def hold(self) -> None:
        """Command the measured joints (the arm stops where it is), without blocking.

        Published as a joint-group command (the ROS 2 API has no ``publish_positions``),
        clipped into the joint limits so a reading just past a limit still holds, and
        recorded as the arm's last command so upstream's speed check starts from here.
        """
        if self._link is None:
            return
        reading = self._read_joints()
        if reading is None:
            return
        try:
            arm = self.bot.arm
            info = arm.group_info
            q = np.clip(reading[0], info.joint_lower_limits, info.joint_upper_limits)
            arm.joint_commands = [float(v) for v in q]
            self.bot.core.robot_write_commands(self.config.group_name, arm.joint_commands)
            self.counters["holds"] += 1
        except Exception as exc:
            self._set_fault(f"hold raised {exc!r}")

    def safe_stop(self) -> None:
        """Hold, then the Interbotix home pose, then the sleep pose (~2 x 2 s). Each pose is
        sent without blocking and waited for with ``park_wait``, so an e-stop
        (``interrupt_park``) holds the arm where it is at once instead of after the park.

        With a motor fault the arm only holds: moving the other joints next to a motor in
        error is left to the operator (reboot the motors, then park from the Interbotix tools).
        """
        if self._link is None:
            return
        self.hold()
        if self._fault is not None:
            log.error("widowx: not parking because of the fault (%s)", self._fault)
            return
        t = self.config.park_moving_time_s
        try:
            self._set_profile(t, 0.25 * t)
            for go_to_pose in (self.bot.arm.go_to_home_pose, self.bot.arm.go_to_sleep_pose):
                if self.park_interrupted:
                    break
                go_to_pose(blocking=False)
                self.park_wait(t)  # returns at once when interrupted
            if self.park_interrupted:
                self.hold()
                log.warning("widowx: park interrupted; holding where the arm is")
                return
            self.counters["parks"] += 1
        except Exception as exc:
            self._set_fault(f"parking raised {exc!r}")
