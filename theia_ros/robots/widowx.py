"""WidowX 250s through Interbotix's ROS 2 Python API (``interbotix_xs_modules``).

Action semantics are the sim twin's (``theia_ros.robots.sim``): an ``EE_DELTA`` action
``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` moves the fingertip centre
(``ee_gripper_link``) by ``d_xyz`` in the arm base frame and pre-multiplies the delta
rotation in the base frame, starting from the *measured* pose; ``gripper`` is the open
fraction.

Why we solve IK ourselves: Interbotix's ``set_ee_pose_components`` runs a numerical IK
(modern_robotics ``IKinSpace``) from three fixed seeds, which fails for targets more than a
few cm from the seed and composes some rotations in a frame other than ours. Instead,
``theia_ros.control.kinematics.solve_ik`` (the same code the sim uses) is seeded from the measured
joints, and the answer goes out as one non-blocking joint-group command
(``bot.arm.set_joint_positions(q, moving_time=period, blocking=False)``), which the servos'
time-based profile reaches within the 0.2 s step. Interbotix's own joint and velocity limit
check in ``set_joint_positions`` stays as a second net.

Failures never raise out of :meth:`WidowXAdapter.apply`: an IK failure, a joint jump (IK
branch flip) or a command Interbotix refuses means *skip + hold*, counted in
:attr:`WidowXAdapter.counters`; an Interbotix exception or a motor hardware error (read
periodically from the ``Hardware_Error_Status`` registers) sets :attr:`WidowXAdapter.fault`,
after which the adapter only holds (the control loop sees ``fault`` and safe-stops).

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

import logging
import math
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

# (config, node or None) -> (bot: InterbotixManipulatorXS-like, shutdown: () -> None)
BotFactory = Callable[["WidowXConfig", Any], tuple[Any, Callable[[], None]]]


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
            (each read is a service call of up to 0.1 s; 0 disables).
        workspace_min_m, workspace_max_m: a last-line box on the target fingertip position
            (the wx250s safety box): the filter judged the step against the tick's
            observation, but the step is applied to joints read now, while the arm may still
            be finishing the previous step.
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


def interbotix_factory(config: WidowXConfig, node: Any = None) -> tuple[Any, Callable[[], None]]:
    """Build the real ``InterbotixManipulatorXS`` and start its executor (ROS install only)."""
    try:
        from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS
    except ImportError as exc:
        raise TheiaError(
            "widowx: cannot import interbotix_xs_modules.xs_robot.arm; the WidowX adapter runs "
            "only inside a ROS 2 install with the Interbotix workspace sourced "
            "(source /opt/ros/$ROS_DISTRO/setup.bash && source ~/interbotix_ws/install/"
            f"setup.bash) ({exc})") from exc
    kwargs: dict[str, Any] = {
        "robot_model": config.robot_model,
        "group_name": config.group_name,
        "gripper_name": config.gripper_name,
        "moving_time": config.moving_time_s,
        "accel_time": config.accel_time_s,
        "gripper_pressure": config.gripper_pressure,
    }
    if config.robot_name is not None:
        kwargs["robot_name"] = config.robot_name
    if node is not None:
        kwargs["node"] = node  # newer API: share the caller's InterbotixRobotNode
    try:  # the current API starts the executor separately
        from interbotix_common_modules.common_robot.robot import robot_shutdown, robot_startup
    except ImportError:  # older releases spin in the constructor and shut down via the bot
        bot = InterbotixManipulatorXS(**kwargs)
        return bot, bot.shutdown
    bot = InterbotixManipulatorXS(**kwargs)
    if node is None:
        robot_startup()
        return bot, robot_shutdown
    robot_startup(node)
    return bot, lambda: robot_shutdown(node)


class WidowXAdapter(RobotAdapter):
    """The real WidowX 250s behind the robot-adapter seam (see the module docstring).

    Args:
        config: connection and stepping options.
        bot_factory: builds the Interbotix object; the default imports Interbotix. Tests
            pass a stand-in with the same attributes (``arm``, ``gripper``, ``core``).
        node: optional ``InterbotixRobotNode`` to share (newer Interbotix API).
        clock: monotonic seconds for observation stamps (the loop's clock).
    """

    action_kind = ActionKind.EE_DELTA
    name = "widowx"

    def __init__(self, config: WidowXConfig | None = None, *,
                 bot_factory: BotFactory | None = None, node: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or WidowXConfig()
        self._factory = bot_factory or interbotix_factory
        self._node = node
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._bot: Any = None
        self._shutdown: Callable[[], None] | None = None
        self._fault: str | None = None
        self._gripper_state: str | None = None  # "open" | "closed" | None (unknown)
        self._last_fault_check_s = -math.inf
        self._last_js: Any = None
        self._last_js_seen_s = -math.inf
        self._log = RateLimitedLogger(log, 2.0, clock)

    # -- lifecycle -------------------------------------------------------------------------
    def connect(self) -> None:
        if self._bot is None:
            self._bot, self._shutdown = self._factory(self.config, self._node)
            self._gripper_state = None
            log.info("widowx: connected to %s", self.config.robot_name or self.config.robot_model)

    def disconnect(self) -> None:
        """``robot_shutdown()``: stops Interbotix's executor and rclpy. Safe to call twice."""
        if self._bot is None:
            return
        shutdown, self._bot, self._shutdown = self._shutdown, None, None
        try:
            if shutdown is not None:
                shutdown()
        except Exception as exc:
            log.error("widowx: shutdown failed: %r", exc)

    @property
    def bot(self) -> Any:
        if self._bot is None:
            raise TheiaError("widowx: not connected; use the adapter as a context manager or "
                             "call connect() first")
        return self._bot

    @property
    def fault(self) -> str | None:
        """A motor/driver fault; set, the adapter only holds (the loop safe-stops)."""
        return self._fault

    def clear_fault(self) -> None:
        """After the operator fixed the cause (e.g. rebooted the motors)."""
        self._fault = None

    def _set_fault(self, detail: str) -> None:
        if self._fault is None:
            log.error("widowx: fault: %s; holding, no further motion commands", detail)
        self._fault = self._fault or detail
        self.counters["faults"] += 1

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
        return q, frac, self._stamp(core, msg)

    def _stamp(self, core: Any, msg: Any) -> float:
        """Monotonic capture time of ``msg``: from its header via the node's ROS clock, or,
        for unstamped messages, when this adapter first saw the message object."""
        now = self.clock()
        try:
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            now_ns = core.get_clock().now().nanoseconds
        except AttributeError:
            stamp_ns = 0
        if stamp_ns < 0:
            return -math.inf  # a stamp before 1970 cannot be true: never fresh
        if stamp_ns > 0:
            return now - max(0.0, (now_ns - stamp_ns) * 1e-9)
        if msg is not self._last_js:
            self._last_js, self._last_js_seen_s = msg, now
        return self._last_js_seen_s

    def _check_motor_faults(self) -> None:
        period = self.config.fault_check_period_s
        now = self.clock()
        if period <= 0 or now - self._last_fault_check_s < period:
            return
        self._last_fault_check_s = now
        try:
            values = self.bot.core.robot_get_motor_registers(
                "group", self.config.group_name, "Hardware_Error_Status")
            values = list(values)
        except Exception as exc:
            self.counters["fault_check_errors"] += 1
            self._log.log(logging.WARNING, "fault_check", "widowx: reading motor error "
                          "registers failed: %r", exc)
            return
        names = getattr(getattr(self.bot.arm, "group_info", None), "joint_names", None) \
            or K.JOINT_NAMES
        bad = {str(n): int(v) for n, v in zip(names, values) if int(v) != 0}
        if bad:
            self._set_fault(f"motor hardware error status {bad} (reboot the motors)")

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
        current = K.fk(q)
        vec = action.to_vector()
        if action.kind is ActionKind.EE_DELTA:
            target = K.apply_ee_delta(current, vec[:6])
        else:
            target = K.pose_to_matrix(vec[:6])
        clipped = np.clip(target[:3, 3], self.config.workspace_min_m, self.config.workspace_max_m)
        if not np.array_equal(clipped, target[:3, 3]):
            self.counters["workspace_clips"] += 1
            target[:3, 3] = clipped
        self._command_gripper(float(vec[6]))
        q_new = K.solve_ik(target, q)
        if q_new is None:
            return self._skip("ik_failures", "IK found no joints for the target", frac)
        if float(np.max(np.abs(q_new - q))) > self.config.max_joint_step_rad:
            return self._skip("joint_jumps", "IK answer jumps a joint too far in one step", frac)
        try:
            ok = self.bot.arm.set_joint_positions(
                [float(v) for v in q_new], moving_time=self.config.moving_time_s,
                accel_time=self.config.accel_time_s, blocking=False)
        except Exception as exc:
            self._set_fault(f"set_joint_positions raised {exc!r}")
            return self._zero(self._gripper_value(frac))
        if ok is False:
            return self._skip("rejected_by_interbotix", "Interbotix refused the joint command "
                              "(joint or velocity limit)", frac)
        sent = ee_delta_between(K.fk_pose(q), K.fk_pose(q_new))
        return Action(ActionKind.EE_DELTA, sent[:3], sent[3:6], self._gripper_value(frac))

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

    def hold(self) -> None:
        """Command the measured joints (the arm stops where it is), without blocking."""
        if self._bot is None:
            return
        reading = self._read_joints()
        if reading is None:
            return
        try:
            self.bot.arm.publish_positions([float(v) for v in reading[0]],
                                           moving_time=self.config.moving_time_s,
                                           accel_time=self.config.accel_time_s, blocking=False)
            self.counters["holds"] += 1
        except Exception as exc:
            self._set_fault(f"hold (publish_positions) raised {exc!r}")

    def safe_stop(self) -> None:
        """Hold, then the Interbotix home pose, then the sleep pose (~2 x 2 s). Each pose is
        sent without blocking and waited for with ``park_wait``, so an e-stop
        (``interrupt_park``) holds the arm where it is at once instead of after the park.

        With a motor fault the arm only holds: moving the other joints next to a motor in
        error is left to the operator (reboot the motors, then park from the Interbotix tools).
        """
        if self._bot is None:
            return
        self.hold()
        if self._fault is not None:
            log.error("widowx: not parking because of the fault (%s)", self._fault)
            return
        t = self.config.park_moving_time_s
        try:
            for go_to_pose in (self.bot.arm.go_to_home_pose, self.bot.arm.go_to_sleep_pose):
                if self.park_interrupted:
                    break
                go_to_pose(moving_time=t, accel_time=0.25 * t, blocking=False)
                self.park_wait(t)  # returns at once when interrupted
            if self.park_interrupted:
                self.hold()
                log.warning("widowx: park interrupted; holding where the arm is")
                return
            self.counters["parks"] += 1
        except Exception as exc:
            self._set_fault(f"parking raised {exc!r}")
