"""WidowX adapter logic, tested against a STAND-IN for Interbotix (read this first).

``interbotix_xs_modules`` exists only inside a ROS 2 install with the Interbotix workspace,
and cannot be installed here. These tests therefore drive :class:`WidowXAdapter` through
:class:`StandInBot`, a plain-Python object with the attributes of
``InterbotixManipulatorXS`` that the adapter uses (``core.joint_states``, ``core.js_index_map``,
``core.js_mutex``, ``core.get_clock()``, ``core.robot_get_motor_registers``,
``arm.set_joint_positions``, ``arm.publish_positions``, ``arm.go_to_home_pose``,
``arm.go_to_sleep_pose``, ``gripper.grasp``, ``gripper.release``). It records every call,
moves its joints to the last command at once (ideal servos), and can refuse commands, raise,
or report a motor hardware error on demand. What is real: our IK/FK
(``theia_ros.control.kinematics``), the action semantics, the control loop and safety filter in the
integration test. The same action semantics run against physics in the MuJoCo twin tests.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from theia_ros.control import (
    ControlLoop,
    Freshness,
    HoldReason,
    ImageCache,
    LoopConfig,
    LoopState,
    ManualClock,
    SafetyFilter,
    SafetyLimits,
)
from theia_ros.control import kinematics as K
from theia_ros.control.rotations import apply_ee_delta, rotation_angle, rpy_to_matrix
from theia_ros.errors import TheiaError
from theia_ros.robots.widowx import WidowXAdapter, WidowXConfig, interbotix_factory
from theia_ros.types import Action, ActionKind

START_Q = np.array([0.0, -0.5, 0.6, 0.0, 0.4, 0.0])  # fingertip ~0.35 m ahead, 0.25 m up
# joint_states order of the real xs_sdk differs from ours on purpose: the adapter maps by name
JS_NAMES = ["gripper", "left_finger", "right_finger", "waist", "shoulder", "elbow",
            "forearm_roll", "wrist_angle", "wrist_rotate"]


class StandInBot:
    """Stand-in for ``InterbotixManipulatorXS`` (see the module docstring)."""

    def __init__(self, clock: ManualClock, q: np.ndarray = START_Q) -> None:
        self.clock = clock
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refuse_commands = False
        self.raise_on_command: Exception | None = None
        self.motor_errors = [0] * 6
        self.ros_offset_s = 1_700_000_000.0  # ROS (system) time = monotonic + offset
        self.js_age_s = 0.0
        self.q = np.asarray(q, dtype=np.float64).copy()
        self.finger_m = K.FINGER_OPEN_M
        self.core = SimpleNamespace(
            joint_states=None, js_index_map={n: i for i, n in enumerate(JS_NAMES)},
            js_mutex=threading.Lock(), get_clock=self._get_clock,
            robot_get_motor_registers=self._registers)
        self.arm = SimpleNamespace(
            set_joint_positions=self._set_joint_positions, publish_positions=self._publish,
            go_to_home_pose=self._home, go_to_sleep_pose=self._sleep,
            group_info=SimpleNamespace(joint_names=list(K.JOINT_NAMES)))
        self.gripper = SimpleNamespace(grasp=self._grasp, release=self._release)
        self.publish_joint_state()

    # joint state topic
    def publish_joint_state(self) -> None:
        stamp = self.clock.now() + self.ros_offset_s - self.js_age_s
        sec = int(stamp)
        positions = [0.0, self.finger_m, -self.finger_m, *self.q]
        self.core.joint_states = SimpleNamespace(
            name=list(JS_NAMES), position=positions,
            header=SimpleNamespace(stamp=SimpleNamespace(sec=sec,
                                                         nanosec=int((stamp - sec) * 1e9))))

    def _get_clock(self) -> Any:
        now_ns = int((self.clock.now() + self.ros_offset_s) * 1e9)
        return SimpleNamespace(now=lambda: SimpleNamespace(nanoseconds=now_ns))

    def _registers(self, cmd_type: str, name: str, reg: str) -> list[int]:
        self.calls.append(("robot_get_motor_registers", {"name": name, "reg": reg}))
        return list(self.motor_errors)

    # arm
    def _move(self, kind: str, positions: list[float], **kw: Any) -> None:
        self.calls.append((kind, {"positions": list(positions), **kw}))
        if self.raise_on_command is not None:
            raise self.raise_on_command
        self.q = np.asarray(positions, dtype=np.float64)
        self.publish_joint_state()

    def _set_joint_positions(self, positions: list[float], moving_time: float | None = None,
                             accel_time: float | None = None, blocking: bool = True) -> bool:
        if self.refuse_commands:
            self.calls.append(("set_joint_positions_refused", {}))
            return False
        self._move("set_joint_positions", positions, moving_time=moving_time,
                   accel_time=accel_time, blocking=blocking)
        return True

    def _publish(self, positions: list[float], moving_time: float | None = None,
                 accel_time: float | None = None, blocking: bool = True) -> None:
        self._move("publish_positions", positions, moving_time=moving_time, blocking=blocking)

    def _home(self, moving_time=None, accel_time=None, blocking=True) -> None:
        self._move("go_to_home_pose", [0.0] * 6, moving_time=moving_time, blocking=blocking)

    def _sleep(self, moving_time=None, accel_time=None, blocking=True) -> None:
        self._move("go_to_sleep_pose", list(K.SLEEP_QPOS_RAD), moving_time=moving_time,
                   blocking=blocking)

    # gripper
    def _grasp(self, delay: float = 1.0) -> None:
        self.calls.append(("grasp", {"delay": delay}))
        self.finger_m = K.FINGER_CLOSED_M
        self.publish_joint_state()

    def _release(self, delay: float = 1.0) -> None:
        self.calls.append(("release", {"delay": delay}))
        self.finger_m = K.FINGER_OPEN_M
        self.publish_joint_state()

    def names(self) -> list[str]:
        return [name for name, _ in self.calls if name != "robot_get_motor_registers"]


@pytest.fixture
def rig() -> tuple[WidowXAdapter, StandInBot, ManualClock]:
    clock = ManualClock(50.0)
    bot = StandInBot(clock)
    shutdowns: list[int] = []
    bot.shutdowns = shutdowns  # type: ignore[attr-defined]

    def factory(config: WidowXConfig, node: Any) -> tuple[StandInBot, Any]:
        return bot, lambda: shutdowns.append(1)

    # a short park: the stand-in's servos are ideal, and the park waits in real time
    adapter = WidowXAdapter(WidowXConfig(park_moving_time_s=0.05), bot_factory=factory,
                            clock=clock.now)
    adapter.connect()
    return adapter, bot, clock


def step(vec: list[float]) -> Action:
    return Action.from_vector(ActionKind.EE_DELTA, np.asarray(vec, dtype=np.float64))


# -- import and connection -----------------------------------------------------------------
def test_real_factory_without_ros_install_says_so() -> None:
    with pytest.raises(TheiaError, match="only inside a ROS 2 install"):
        interbotix_factory(WidowXConfig())
    with pytest.raises(TheiaError, match="not connected"):
        WidowXAdapter().observe()


@pytest.mark.parametrize("bad", [{"robot_model": "wx200"}, {"accel_fraction": 0.8},
                                 {"gripper_close_below": 0.7}, {"control_rate_hz": 0.0}])
def test_invalid_config(bad: dict) -> None:
    with pytest.raises(TheiaError, match="widowx"):
        WidowXConfig(**bad)


# -- observing -----------------------------------------------------------------------------
def test_observe_maps_joints_by_name_and_stamps_from_header(rig) -> None:
    adapter, bot, clock = rig
    bot.js_age_s = 0.08
    bot.finger_m = 0.5 * (K.FINGER_OPEN_M + K.FINGER_CLOSED_M)
    bot.publish_joint_state()
    obs = adapter.observe()
    np.testing.assert_allclose(obs.joint_positions, START_Q)
    np.testing.assert_allclose(obs.ee_pose, K.fk_pose(START_Q))
    assert obs.gripper == pytest.approx(0.5)
    assert obs.stamps_s["joints"] == pytest.approx(clock.now() - 0.08, abs=1e-6)
    assert obs.images == {}


def test_missing_joint_state_makes_the_loop_hold(rig) -> None:
    adapter, bot, clock = rig
    bot.core.joint_states = None
    obs = adapter.observe()
    assert Freshness(cameras=()).check(obs, clock.now()) is HoldReason.MISSING_JOINTS


# -- acting --------------------------------------------------------------------------------
def test_small_delta_becomes_one_non_blocking_joint_command(rig) -> None:
    adapter, bot, _ = rig
    vec = [0.01, -0.005, 0.008, 0.03, 0.0, -0.02, 1.0]
    sent = adapter.apply(step(vec))
    cmds = [kw for name, kw in bot.calls if name == "set_joint_positions"]
    assert len(cmds) == 1
    assert cmds[0]["blocking"] is False
    assert cmds[0]["moving_time"] == pytest.approx(0.2)
    assert cmds[0]["accel_time"] == pytest.approx(0.05)
    reached = K.fk_pose(np.asarray(cmds[0]["positions"]))
    wanted = apply_ee_delta(K.fk_pose(START_Q), np.asarray(vec[:6]))
    np.testing.assert_allclose(reached[:3], wanted[:3], atol=2e-4)
    assert rotation_angle(rpy_to_matrix(reached[3:]) @ rpy_to_matrix(wanted[3:]).T) < 2e-3
    np.testing.assert_allclose(sent.xyz_m, vec[:3], atol=2e-4)
    assert adapter.counters["ik_failures"] == 0


def test_many_small_steps_cover_more_than_the_interbotix_ik_range(rig) -> None:
    adapter, bot, _ = rig
    start = K.fk_pose(bot.q)
    for _ in range(12):  # 12 cm in 1 cm steps, each IK seeded from the measured joints
        adapter.apply(step([0.01, 0, 0, 0, 0, 0, 1.0]))
    end = K.fk_pose(bot.q)
    np.testing.assert_allclose(end[:3] - start[:3], [0.12, 0.0, 0.0], atol=1e-3)
    assert rotation_angle(rpy_to_matrix(end[3:]) @ rpy_to_matrix(start[3:]).T) < 5e-3
    assert adapter.counters["ik_failures"] == 0


def test_ik_failure_skips_and_holds(rig) -> None:
    adapter, bot, _ = rig
    adapter.config = WidowXConfig(workspace_min_m=(-5.0, -5.0, -5.0),
                                  workspace_max_m=(5.0, 5.0, 5.0))  # no last-line box here
    sent = adapter.apply(step([1.0, 0, 0, 0, 0, 0, 1.0]))  # 1 m further: out of reach
    assert "set_joint_positions" not in bot.names()
    assert bot.names()[-1] == "publish_positions"  # hold at the measured joints
    np.testing.assert_allclose(bot.q, START_Q)
    assert adapter.counters["ik_failures"] == 1
    np.testing.assert_allclose(sent.to_vector()[:6], 0.0)
    assert adapter.fault is None


def test_targets_are_clipped_to_the_workspace_box_last(rig) -> None:
    adapter, bot, _ = rig
    adapter.config = WidowXConfig(max_joint_step_rad=3.0)
    adapter.apply(step([0.0, 0, -1.0, 0, 0, 0, 1.0]))  # 1 m down: through the table
    assert adapter.counters["workspace_clips"] == 1
    assert "set_joint_positions" in bot.names()
    z = float(K.fk(np.asarray(bot.q))[2, 3])
    assert z >= adapter.config.workspace_min_m[2] - 1e-3


def test_joint_jump_is_refused(rig) -> None:
    adapter, bot, _ = rig
    adapter.config = WidowXConfig(max_joint_step_rad=0.01)
    adapter.apply(step([0.03, 0, 0, 0, 0, 0, 1.0]))
    assert "set_joint_positions" not in bot.names()
    assert adapter.counters["joint_jumps"] == 1


def test_refused_command_is_counted_and_held(rig) -> None:
    adapter, bot, _ = rig
    bot.refuse_commands = True
    adapter.apply(step([0.01, 0, 0, 0, 0, 0, 1.0]))
    assert adapter.counters["rejected_by_interbotix"] == 1
    assert bot.names()[-1] == "publish_positions"


def test_non_finite_action_never_reaches_the_arm(rig) -> None:
    adapter, bot, _ = rig
    adapter.apply(step([float("nan"), 0, 0, 0, 0, 0, 1.0]))
    assert "set_joint_positions" not in bot.names()
    assert adapter.counters["bad_actions"] == 1


def test_gripper_hysteresis_and_non_blocking_calls(rig) -> None:
    adapter, bot, _ = rig
    for g in (1.0, 0.5, 0.2, 0.3, 0.45, 0.9, 0.95):
        adapter.apply(step([0, 0, 0, 0, 0, 0, g]))
    grip = [(name, kw["delay"]) for name, kw in bot.calls if name in ("grasp", "release")]
    assert grip == [("release", 0.0), ("grasp", 0.0), ("release", 0.0)]
    assert adapter.observe().gripper == pytest.approx(1.0)


# -- faults, stop, disconnect --------------------------------------------------------------
def test_motor_fault_is_reported_and_only_holds(rig) -> None:
    adapter, bot, clock = rig
    adapter.observe()
    bot.motor_errors[2] = 4  # elbow: overheating
    clock.advance(1.5)
    adapter.observe()
    assert adapter.fault is not None and "elbow" in adapter.fault
    adapter.apply(step([0.01, 0, 0, 0, 0, 0, 1.0]))
    assert "set_joint_positions" not in bot.names()
    adapter.safe_stop()
    assert "go_to_home_pose" not in bot.names()  # no parking next to a motor in error


def test_interbotix_exception_sets_fault(rig) -> None:
    adapter, bot, _ = rig
    bot.raise_on_command = RuntimeError("rclpy context shut down")
    adapter.apply(step([0.01, 0, 0, 0, 0, 0, 1.0]))
    assert adapter.fault is not None and "rclpy context" in adapter.fault


def test_safe_stop_holds_then_goes_home_then_sleeps(rig) -> None:
    adapter, bot, _ = rig
    adapter.safe_stop()
    moves = [(n, kw) for n, kw in bot.calls if n in ("publish_positions", "go_to_home_pose",
                                                     "go_to_sleep_pose")]
    assert [n for n, _ in moves] == ["publish_positions", "go_to_home_pose", "go_to_sleep_pose"]
    # sent without blocking, then waited for (so an e-stop can interrupt the wait)
    assert moves[1][1]["blocking"] is False and moves[1][1]["moving_time"] == pytest.approx(0.05)
    np.testing.assert_allclose(bot.q, K.SLEEP_QPOS_RAD)


def test_context_manager_parks_and_shuts_down_once(rig) -> None:
    adapter, bot, _ = rig
    with adapter:
        adapter.apply(step([0.01, 0, 0, 0, 0, 0, 1.0]))
    assert bot.names()[-1] == "go_to_sleep_pose"
    adapter.disconnect()
    assert bot.shutdowns == [1]  # type: ignore[attr-defined]


def test_control_loop_drives_the_adapter_and_safe_stops_on_motor_fault(rig) -> None:
    adapter, bot, clock = rig
    cache = ImageCache()
    safety = SafetyFilter(SafetyLimits.wx250s(), joint_solver=K.solve_ik, clock=clock.now)

    class StreamingClock(ManualClock):
        """The loop's sleeps let time pass; camera and xs_sdk publish fresh data meanwhile."""

        def sleep(self, seconds: float) -> None:
            clock.advance(max(0.0, seconds))
            bot.publish_joint_state()
            cache.put("front", np.zeros((4, 4, 3), np.uint8), clock.now())

        def now(self) -> float:
            return clock.now()

    policy = lambda obs: np.tile([0.05, 0, 0, 0, 0, 0, 1.0], (2, 1))  # noqa: E731 - 5 cm asked
    loop = ControlLoop(adapter, policy, safety, LoopConfig(rate_hz=5.0), clock=StreamingClock(),
                       images=cache)
    cache.put("front", np.zeros((4, 4, 3), np.uint8), clock.now())
    x0 = K.fk_pose(bot.q)[0]
    loop.run(max_ticks=3)
    assert loop.stats.commands == 3 and loop.stats.interventions["step_translation"] == 3
    assert K.fk_pose(bot.q)[0] - x0 == pytest.approx(0.09, abs=1e-3)  # 3 x 3 cm
    bot.motor_errors[0] = 32  # waist: electrical shock error
    loop.run(max_ticks=6)
    assert loop.state is LoopState.FAULTED and loop.stats.faults["robot_fault"] == 1
    assert "go_to_home_pose" not in bot.names()  # a motor fault: hold, do not park
