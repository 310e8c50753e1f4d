"""Control loop: fixed rate with deadline accounting, holds on stale sensors, safety before
every command, safe stop on faults.

Time is a :class:`ManualClock` (a real implementation of the clock interface: sleeping
advances it), so these runs are deterministic and take milliseconds. The robot is
:class:`RecordingArm`, a small in-test ``RobotAdapter`` (a test double: plain Python that
integrates the EE deltas it receives and records every call with its time); the MuJoCo twin
exercises the loop with a simulated arm in the sim tests.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from theia_ros.control import (
    JOINTS_KEY,
    ChunkingConfig,
    ControlLoop,
    Freshness,
    ImageCache,
    LoopConfig,
    LoopState,
    ManualClock,
    MonotonicClock,
    SafetyFilter,
    SafetyLimits,
    TickReport,
)
from theia_ros.control.rotations import apply_ee_delta
from theia_ros.errors import TheiaError
from theia_ros.types import Action, ActionKind, Observation, RobotAdapter

PERIOD_S = 0.2
START_POSE = np.array([0.3, 0.0, 0.2, 0.0, 0.5, 0.0])


class RecordingArm(RobotAdapter):
    """Test double of a robot: integrates EE deltas, records calls, fails on demand."""

    action_kind = ActionKind.EE_DELTA
    name = "recording-arm"

    def __init__(self, clock: ManualClock | MonotonicClock, with_camera: bool = True) -> None:
        self.clock = clock
        self.with_camera = with_camera
        self.pose = START_POSE.copy()
        self.applied: list[tuple[float, np.ndarray]] = []  # (time, action vector)
        self.calls: list[tuple[str, float]] = []
        self.image_age_s = 0.0
        self.joint_age_s = 0.0
        self.raise_on_apply = False
        self.fault: str | None = None

    def observe(self) -> Observation:
        now = self.clock.now()
        self.calls.append(("observe", now))
        images = {"front": np.zeros((8, 8, 3), np.uint8)} if self.with_camera else {}
        stamps = {JOINTS_KEY: now - self.joint_age_s}
        if self.with_camera:
            stamps["front"] = now - self.image_age_s
        return Observation(images=images, joint_positions=np.zeros(6), ee_pose=self.pose.copy(),
                           gripper=1.0, stamp_s=min(stamps.values()), stamps_s=stamps)

    def apply(self, action: Action) -> Action:
        now = self.clock.now()
        self.calls.append(("apply", now))
        if self.raise_on_apply:
            raise ConnectionError("servo bus gone")
        vec = action.to_vector()
        self.pose = apply_ee_delta(self.pose, vec[:6])
        self.applied.append((now, vec))
        return action

    def hold(self) -> None:
        self.calls.append(("hold", self.clock.now()))

    def safe_stop(self) -> None:
        self.calls.append(("safe_stop", self.clock.now()))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def wait_for(cond, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def constant_policy(vec: list[float], horizon: int = 1):
    chunk = np.tile(np.asarray(vec, dtype=np.float64), (horizon, 1))
    return lambda obs: chunk


def make_loop(arm: RecordingArm, policy, clock, **kwargs) -> ControlLoop:
    chunking = kwargs.pop("chunking", None)
    config = kwargs.pop("config", LoopConfig(rate_hz=1.0 / PERIOD_S))
    safety = kwargs.pop("safety", SafetyFilter(SafetyLimits.wx250s(), clock=clock.now))
    return ControlLoop(arm, policy, safety, config, chunking, clock=clock, **kwargs)


# -- rate and deadlines --------------------------------------------------------------------
def test_fixed_rate_run_acts_every_period() -> None:
    clock = ManualClock(100.0)
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.01, 0, 0, 0, 0, 0, 1.0]), clock)
    stats = loop.run(max_ticks=20)
    times = np.array([t for t, _ in arm.applied])
    assert len(times) == 20 and stats.commands == 20
    np.testing.assert_allclose(np.diff(times), PERIOD_S, atol=1e-9)
    summary = stats.summary()
    assert summary["overruns"] == 0 and summary["missed_ticks"] == 0
    assert summary["period_error_p99_ms"] == pytest.approx(0.0, abs=1e-6)
    assert arm.pose[0] == pytest.approx(0.3 + 20 * 0.01)
    assert loop.state is LoopState.RUNNING and arm.names()[-1] == "hold"


def test_overrun_is_counted_and_next_deadline_rescheduled_without_burst() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    calls = {"n": 0}

    def slow_on_third(obs: Observation) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 4:
            clock.advance(0.5)  # inference hiccup: 2.5 periods
        return np.array([[0.005, 0, 0, 0, 0, 0, 1.0]])

    loop = make_loop(arm, slow_on_third, clock)
    stats = loop.run(max_ticks=10)
    times = np.array([t for t, _ in arm.applied])
    gaps = np.diff(times)
    assert stats.overruns == 1
    assert stats.missed_ticks == 2  # tick 3 started at 0.6 s, ended 1.1 s, next at 1.3 s
    assert gaps.min() >= PERIOD_S - 1e-9  # never two commands closer than a period
    assert times[4] == pytest.approx(1.3)
    assert stats.summary()["period_error_max_ms"] == pytest.approx(500.0)
    assert stats.summary()["policy_latency_max_ms"] == pytest.approx(500.0)


def test_step_from_an_overdue_timer_never_sends_back_to_back_commands() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    slow = {"on": False}

    def policy(obs: Observation) -> np.ndarray:
        if slow["on"]:
            slow["on"] = False
            clock.advance(0.35)
        return np.array([[0.005, 0, 0, 0, 0, 0, 1.0]])

    loop = make_loop(arm, policy, clock)
    loop.start()
    reports: list[TickReport] = []
    for k in range(12):  # a timer on the 0.2 s grid that also fires once when overdue
        target = k * PERIOD_S
        if clock.now() < target:
            clock.advance(target - clock.now())
        slow["on"] = k == 3
        reports.append(loop.step())
        if k == 3:
            reports.append(loop.step())  # the overdue callback, right after the long one
    times = np.array([t for t, _ in arm.applied])
    assert np.diff(times).min() >= 0.5 * PERIOD_S - 1e-9
    assert [r.status for r in reports].count("skipped") >= 1
    assert loop.stats.overruns == 1 and loop.stats.missed_ticks >= 1


def test_real_clock_run_keeps_the_rate() -> None:
    clock = MonotonicClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.0, 0, 0, 0, 0, 0, 1.0]), clock,
                     config=LoopConfig(rate_hz=50.0))
    t0 = time.monotonic()
    stats = loop.run(max_ticks=30)
    elapsed = time.monotonic() - t0
    summary = stats.summary()
    # a loaded 2-core CI box may delay a wake-up: such a tick is skipped, never doubled
    assert summary["ticks"] == 30
    assert summary["commands"] + summary["skipped_ticks"] == 30
    assert 29 * 0.02 - 1e-3 <= elapsed < 29 * 0.02 + 0.5  # sleeps, does not spin ahead
    assert np.diff([t for t, _ in arm.applied]).min() >= 0.5 * 0.02


# -- holds ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda arm: setattr(arm, "image_age_s", 0.5), "stale_image"),
        (lambda arm: setattr(arm, "joint_age_s", 0.5), "stale_joint_state"),
        (lambda arm: setattr(arm, "with_camera", False), "missing_image"),
        (lambda arm: setattr(arm, "image_age_s", -1.0), "stamp_in_future"),
    ],
)
def test_stale_or_missing_sensor_holds_then_recovers(setup, reason: str) -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.01, 0, 0, 0, 0, 0, 1.0]), clock)
    loop.run(max_ticks=2)
    setup(arm)
    loop.run(max_ticks=5)
    assert loop.stats.holds[reason] == 5
    assert len(arm.applied) == 2
    assert arm.names().count("hold") == 2  # once when the streak began, once leaving run()
    arm.image_age_s = arm.joint_age_s = 0.0
    arm.with_camera = True
    loop.run(max_ticks=3)
    assert len(arm.applied) == 5


def test_image_cache_supplies_camera_for_adapters_without_one() -> None:
    clock = ManualClock(10.0)
    arm = RecordingArm(clock, with_camera=False)
    cache = ImageCache()
    loop = make_loop(arm, constant_policy([0.0, 0, 0, 0, 0, 0, 1.0]), clock, images=cache)
    loop.run(max_ticks=2)
    assert loop.stats.holds["missing_image"] == 2
    cache.put("front", np.zeros((4, 4, 3), np.uint8), stamp_s=clock.now())
    loop.run(max_ticks=1)
    assert len(arm.applied) == 1
    clock.advance(1.0)  # the camera stopped publishing
    loop.run(max_ticks=1)
    assert loop.stats.holds["stale_image"] == 1 and len(arm.applied) == 1
    with pytest.raises(TheiaError, match="uint8"):
        cache.put("front", np.zeros((4, 4), np.float32), stamp_s=0.0)


@pytest.mark.parametrize("seed", range(3))
def test_nan_never_reaches_apply(seed: int) -> None:
    rng = np.random.default_rng(seed)
    clock = ManualClock()
    arm = RecordingArm(clock)
    bad_ticks = {"n": 0}

    def flaky(obs: Observation) -> np.ndarray:
        vec = rng.normal(0, 0.01, 7)
        if rng.random() < 0.4:
            vec[rng.integers(7)] = rng.choice([np.nan, np.inf, -np.inf])
            bad_ticks["n"] += 1
        return vec[None]

    loop = make_loop(arm, flaky, clock)
    loop.run(max_ticks=60)
    assert all(np.all(np.isfinite(v)) for _, v in arm.applied)
    assert loop.stats.holds["safety:non_finite"] == bad_ticks["n"] > 0
    assert len(arm.applied) == 60 - bad_ticks["n"]
    assert loop.stats.interventions["non_finite"] == bad_ticks["n"]


def test_every_command_is_safety_filtered() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.5, 0, 0, 0, 0, 2.0, 3.0]), clock)
    loop.run(max_ticks=4)
    for _, vec in arm.applied:
        assert np.linalg.norm(vec[:3]) <= 0.03 + 1e-12
        assert vec[6] == 1.0
    assert loop.stats.interventions["step_translation"] == 4
    assert loop.stats.interventions["gripper"] == 4


def test_chunked_policy_is_called_every_k_ticks() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    calls = {"n": 0}

    def chunk_policy(obs: Observation) -> np.ndarray:
        calls["n"] += 1
        return np.tile([0.002, 0, 0, 0, 0, 0, 1.0], (8, 1))

    loop = make_loop(arm, chunk_policy, clock, chunking=ChunkingConfig(replan_every=4))
    loop.run(max_ticks=12)
    assert calls["n"] == 3 and len(arm.applied) == 12


def test_async_planning_never_blocks_the_tick_on_slow_inference(caplog) -> None:
    caplog.set_level("INFO", logger="theia_ros.control")
    clock = MonotonicClock()
    arm = RecordingArm(clock)
    gate = threading.Event()

    def slow_diffusion(obs: Observation) -> np.ndarray:
        gate.wait(5.0)  # the first plan takes 0.5 s; later ones are instant
        return np.tile([0.001, 0, 0, 0, 0, 0, 1.0], (16, 1))

    loop = make_loop(arm, slow_diffusion, clock, config=LoopConfig(rate_hz=20.0),
                     chunking=ChunkingConfig(replan_every=4, async_planning=True,
                                             plan_wait_s=0.01))
    timer = threading.Timer(0.5, gate.set)
    timer.start()
    try:
        loop.run(max_ticks=20)
    finally:
        gate.set()
        timer.join()
        loop.close()
    assert max(loop.stats.tick_duration_s) < 0.15  # a blocking tick would take >= 0.5 s
    assert loop.stats.holds["no_plan"] >= 5
    assert loop.stats.commands >= 5
    assert loop.stats.overruns == 0
    # waiting for the first plan is expected: logged, but not as a warning
    waits = [r for r in caplog.records if "no_plan" in r.getMessage()]
    assert waits and all(r.levelname == "INFO" and "first plan" in r.getMessage()
                         for r in waits)


# -- faults and safe stop ------------------------------------------------------------------
def test_policy_exception_triggers_safe_stop() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    n = {"calls": 0}

    def dies(obs: Observation) -> np.ndarray:
        n["calls"] += 1
        if n["calls"] == 3:
            raise RuntimeError("engine lost")
        return np.array([[0.001, 0, 0, 0, 0, 0, 1.0]])

    loop = make_loop(arm, dies, clock)
    loop.run(max_ticks=10)
    assert loop.state is LoopState.FAULTED
    assert "engine lost" in loop.last_fault
    assert arm.names()[-2:] == ["hold", "safe_stop"]
    assert len(arm.applied) == 2 and loop.stats.faults["policy"] == 1
    with pytest.raises(TheiaError, match="faulted"):
        loop.start()
    loop.clear_fault()
    loop.start()
    assert loop.state is LoopState.RUNNING


@pytest.mark.parametrize("failure", ["raise", "fault_flag"])
def test_adapter_error_triggers_safe_stop(failure: str) -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.001, 0, 0, 0, 0, 0, 1.0]), clock)
    loop.run(max_ticks=2)
    if failure == "raise":
        arm.raise_on_apply = True
    else:
        arm.fault = "motor 3: overheating"
    loop.run(max_ticks=5)
    assert loop.state is LoopState.FAULTED
    assert arm.names()[-2:] == ["hold", "safe_stop"]
    kind = "adapter_apply" if failure == "raise" else "robot_fault"
    assert loop.stats.faults[kind] == 1 and loop.stats.safe_stops == 1


def test_estop_latches_holds_and_parks_when_configured() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.001, 0, 0, 0, 0, 0, 1.0]), clock,
                     config=LoopConfig(rate_hz=5.0, park_on_estop=True))
    loop.run(max_ticks=3)
    loop.estop("big red button")
    assert loop.state is LoopState.FAULTED and arm.names()[-2:] == ["hold", "safe_stop"]
    loop.clear_fault()
    with pytest.raises(TheiaError, match="e-stop is latched"):
        loop.start()
    loop.safety.reset_estop()
    loop.start()
    loop.run(max_ticks=2)
    assert len(arm.applied) == 5


def test_estop_without_park_only_holds() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.001, 0, 0, 0, 0, 0, 1.0]), clock,
                     config=LoopConfig(rate_hz=5.0, park_on_estop=False))
    loop.run(max_ticks=2)
    loop.estop()
    assert "safe_stop" not in arm.names() and arm.names()[-1] == "hold"


def test_estop_from_another_thread_stops_a_running_loop() -> None:
    clock = MonotonicClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.0, 0, 0, 0, 0, 0, 1.0]), clock,
                     config=LoopConfig(rate_hz=50.0))
    timer = threading.Timer(0.1, loop.estop, args=("remote",))
    timer.start()
    t0 = time.monotonic()
    loop.run(duration_s=5.0)
    timer.join()
    assert time.monotonic() - t0 < 1.0
    # the default e-stop holds where the arm is: no park motion after the button
    assert loop.state is LoopState.FAULTED and arm.names()[-1] == "hold"
    assert "safe_stop" not in arm.names()


class SlowParkArm(RecordingArm):
    """A RecordingArm whose park takes two 1 s segments in real time, waited through
    ``park_wait`` as the real adapters do, so an e-stop can cut it short."""

    SEGMENT_S = 1.0

    def safe_stop(self) -> None:
        self.calls.append(("safe_stop", self.clock.now()))
        for segment in ("park_home", "park_sleep"):
            if self.park_interrupted:
                break
            self.calls.append((segment, self.clock.now()))
            self.park_wait(self.SEGMENT_S)
        if self.park_interrupted:
            self.hold()


@pytest.mark.parametrize("how", ["stop", "fault"])
def test_estop_preempts_a_park_within_one_tick(how: str) -> None:
    clock = MonotonicClock()
    arm = SlowParkArm(clock)
    loop = make_loop(arm, constant_policy([0.001, 0, 0, 0, 0, 0, 1.0]), clock)
    loop.run(max_ticks=2)
    if how == "stop":
        parker = threading.Thread(target=loop.stop)  # e.g. the control thread after ~/stop
    else:
        arm.raise_on_apply = True  # the next tick faults, then parks
        time.sleep(PERIOD_S)  # (a tick right after the last command is skipped)
        parker = threading.Thread(target=loop.step)
    parker.start()
    assert wait_for(lambda: "park_home" in arm.names(), 2.0)
    assert loop.parking
    t0 = time.monotonic()
    loop.estop("big red button")
    answered_s = time.monotonic() - t0
    parker.join(timeout=5.0)
    assert answered_s < 0.5, f"e-stop answered after {answered_s:.2f} s (park: 2 x 1 s)"
    assert "park_sleep" not in arm.names() and arm.names()[-1] == "hold"
    assert loop.safety.estopped and not loop.parking
    # nothing parks while the e-stop is latched, not even a later stop
    loop.stop()
    assert arm.names().count("safe_stop") == 1


def test_request_stop_holds_now_and_parks_on_the_next_tick() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.001, 0, 0, 0, 0, 0, 1.0]), clock)
    loop.start()
    clock.advance(PERIOD_S)
    assert loop.step().status == "acted"
    loop.request_stop()
    assert loop.state is LoopState.STOPPED and loop.parking
    assert arm.names()[-1] == "hold" and "safe_stop" not in arm.names()
    clock.advance(PERIOD_S)
    assert loop.step().status == "inactive"
    assert arm.names()[-1] == "safe_stop" and not loop.parking
    loop.request_stop()  # twice: nothing more
    clock.advance(PERIOD_S)
    loop.step()
    assert arm.names().count("safe_stop") == 1
    # a start before the next tick cancels a requested park: the operator resumed
    loop.start()
    loop.request_stop()
    loop.start()
    clock.advance(PERIOD_S)
    loop.step()
    assert arm.names().count("safe_stop") == 1


def test_pause_holds_and_start_resumes() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.001, 0, 0, 0, 0, 0, 1.0]), clock)
    loop.run(max_ticks=2)
    loop.pause()
    loop.run(max_ticks=3)
    assert len(arm.applied) == 2 and loop.stats.holds["paused"] == 3
    assert arm.names().count("hold") >= 1
    loop.start()
    loop.run(max_ticks=2)
    assert len(arm.applied) == 4


def test_stop_safe_stops_once_and_keyboard_interrupt_safe_stops() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.0, 0, 0, 0, 0, 0, 1.0]), clock)
    loop.run(max_ticks=1)
    loop.stop()
    loop.stop()
    assert arm.names().count("safe_stop") == 1 and loop.state is LoopState.STOPPED

    arm2 = RecordingArm(clock)

    def interrupted(obs: Observation) -> np.ndarray:
        raise KeyboardInterrupt

    loop2 = make_loop(arm2, interrupted, clock)
    with pytest.raises(KeyboardInterrupt):
        loop2.run(max_ticks=3)
    assert arm2.names()[-1] == "safe_stop" and loop2.state is LoopState.STOPPED


def test_on_tick_reports_and_diagnostics() -> None:
    clock = ManualClock()
    arm = RecordingArm(clock)
    seen: list[TickReport] = []
    loop = make_loop(arm, constant_policy([0.001, 0, 0, 0, 0, 0, 1.0]), clock,
                     on_tick=seen.append)
    loop.run(max_ticks=3)
    assert [r.status for r in seen] == ["acted"] * 3
    assert seen[0].sent is not None and seen[0].proposed.shape == (7,)
    diag = loop.stats.diagnostics()
    assert diag["commands"] == "3" and "period_error_p99_ms" in diag


def test_invalid_loop_config() -> None:
    with pytest.raises(TheiaError, match="rate_hz"):
        LoopConfig(rate_hz=0.0)
    with pytest.raises(TheiaError, match="max_image_age_s"):
        Freshness(max_image_age_s=-1.0)


def test_drives_the_mujoco_twin_with_chunks_and_parks_on_stop() -> None:
    """The same loop on the simulated WidowX (no rendering: no camera required here)."""
    pytest.importorskip("mujoco")
    from theia_ros.control import kinematics
    from theia_ros.robots.sim import SimWidowX

    clock = ManualClock()
    with SimWidowX(seed=0, render=False, clock=clock.now) as arm:
        safety = SafetyFilter(SafetyLimits.wx250s(), joint_solver=kinematics.solve_ik,
                              clock=clock.now)
        policy = constant_policy([0.0, 0.0, -0.01, 0, 0, 0, 1.0], horizon=8)
        loop = ControlLoop(arm, policy, safety, LoopConfig(freshness=Freshness(cameras=())),
                           ChunkingConfig(replan_every=4, temporal_ensemble=True), clock=clock)
        z0 = arm.observe().ee_pose[2]
        loop.run(max_ticks=10)
        assert loop.stats.commands == 10
        assert arm.observe().ee_pose[2] - z0 == pytest.approx(-0.10, abs=0.01)
        loop.stop()
        np.testing.assert_allclose(arm.observe().joint_positions, kinematics.SLEEP_QPOS_RAD,
                                   atol=0.05)


def test_slow_inference_on_the_timer_grid_skips_no_ticks() -> None:
    """Inference taking 0.15 s of a 0.2 s period: every on-time tick still commands."""
    clock = ManualClock()
    arm = RecordingArm(clock)

    def policy(obs: Observation) -> np.ndarray:
        clock.advance(0.15)
        return np.array([[0.005, 0, 0, 0, 0, 0, 1.0]])

    loop = make_loop(arm, policy, clock)
    loop.start()
    reports = []
    for k in range(10):
        target = k * PERIOD_S
        if clock.now() < target:
            clock.advance(target - clock.now())
        reports.append(loop.step())
    assert [r.status for r in reports].count("skipped") == 0
    assert len(arm.applied) == 10
    assert np.diff([t for t, _ in arm.applied]).min() >= 0.5 * PERIOD_S - 1e-9


def test_an_error_inside_the_safety_filter_faults_and_stops() -> None:
    """Errors outside the policy/robot calls (here the filter's IK hook) must not leave the
    loop RUNNING without a hold: they fault it and safe-stop the robot."""
    clock = ManualClock()
    arm = RecordingArm(clock)

    def broken_ik(target: np.ndarray, seed: np.ndarray) -> np.ndarray:
        raise np.linalg.LinAlgError("singular matrix")

    safety = SafetyFilter(SafetyLimits.wx250s(), joint_solver=broken_ik, clock=clock.now)
    loop = make_loop(arm, constant_policy([0.001, 0, 0, 0, 0, 0, 1.0]), clock, safety=safety)
    loop.start()
    report = loop.step()
    assert report.status == "fault" and loop.state is LoopState.FAULTED
    assert arm.applied == [] and arm.names()[-2:] == ["hold", "safe_stop"]
    assert loop.stats.faults["internal"] == 1


@pytest.mark.parametrize("rate_hz", [5.0, 20.0])
def test_a_faster_loop_does_not_move_the_arm_faster(rate_hz: float) -> None:
    """A policy asking for 5 cm every tick gets the filter's speed limit (0.15 m/s for the
    wx250s) at 5 Hz and at 20 Hz alike: the step limit is the speed times the period."""
    clock = ManualClock()
    arm = RecordingArm(clock)
    loop = make_loop(arm, constant_policy([0.05, 0, 0, 0, 0, 0, 1.0]), clock,
                     config=LoopConfig(rate_hz=rate_hz))
    loop.run(max_ticks=round(rate_hz))  # one second
    assert len(arm.applied) == round(rate_hz)
    assert arm.pose[0] - START_POSE[0] == pytest.approx(0.15, rel=1e-6)
