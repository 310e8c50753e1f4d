"""The fixed-rate control loop: observe -> check freshness -> policy chunk -> safety -> apply.

One tick (:meth:`ControlLoop.step`) is the unit; a ROS node calls it from its own timer,
while :meth:`ControlLoop.run` schedules ticks itself on deadlines ``t0 + n * period``. When a
tick (or a late wake-up) runs past the next deadline, the overrun and the missed slots are
counted and the next deadline is rescheduled from now (``end + period``): there is never a
burst of catch-up commands. Independently of who schedules, a tick starting less than
``min_command_gap_fraction`` (0.5) of a period after the start of the last commanding tick
is skipped, so an
overdue timer callback cannot send two commands back to back either.

Faults (the policy raises, the adapter raises or reports a fault, the e-stop) end in a safe
stop: ``hold()`` then ``safe_stop()`` (park/stow) on the adapter, and the loop stays FAULTED
until :meth:`ControlLoop.clear_fault`. A stale, missing or impossible sensor value, a missing
plan or a safety-filter rejection only holds that tick.

Threading: ticks and the start/pause/stop calls serialise on one lock, so a ROS service
callback may call them while another thread ticks. A park takes seconds, so two things keep
it from blocking anyone who must not wait: :meth:`ControlLoop.request_stop` holds at once and
leaves the park to the next tick (the control thread, not a service callback), and
:meth:`ControlLoop.estop` latches the filter and interrupts a running park
(``RobotAdapter.interrupt_park``) *before* taking the lock, so the arm holds where it is
within one park segment and the e-stop is answered then.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from theia_ros.control.chunking import ActionChunker, ChunkingConfig, Policy
from theia_ros.control.clock import Clock, MonotonicClock
from theia_ros.control.history import ObservationHistory
from theia_ros.control.observation import Freshness, HoldReason, ImageCache
from theia_ros.control.ratelog import RateLimitedLogger
from theia_ros.control.safety import SafetyFilter
from theia_ros.control.schedule import Deadlines
from theia_ros.control.stats import LoopStats
from theia_ros.errors import TheiaError
from theia_ros.types import Action, RobotAdapter

log = logging.getLogger(__name__)


class LoopState(str, enum.Enum):
    IDLE = "idle"  # built, not started
    RUNNING = "running"
    PAUSED = "paused"  # holding; start() resumes
    STOPPED = "stopped"  # safe-stopped on request; start() re-arms
    FAULTED = "faulted"  # safe-stopped after a fault; clear_fault() then start()


@dataclass(frozen=True)
class LoopConfig:
    """Loop settings.

    Args:
        rate_hz: control rate (5 Hz: the paper's WidowX rate).
        freshness: staleness bounds for the observation.
        park_on_estop: after an e-stop, also ``safe_stop()`` (park) the robot; False keeps
            it holding where it is.
        log_interval_s: at most one log line per hold reason per interval.
        stats_window: timing samples kept for percentiles.
        min_command_gap_fraction: a tick starting sooner than this fraction of the period
            after the last command is skipped (no back-to-back commands).
    """

    rate_hz: float = 5.0
    freshness: Freshness = field(default_factory=Freshness)
    park_on_estop: bool = False
    log_interval_s: float = 2.0
    stats_window: int = 10_000
    min_command_gap_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_hz) and 0 < self.rate_hz <= 1000):
            raise TheiaError(f"control loop: rate_hz must be in (0, 1000], got {self.rate_hz!r}")
        if self.stats_window < 1:
            raise TheiaError(f"control loop: stats_window must be >= 1, got {self.stats_window}")
        if not (0.0 <= self.min_command_gap_fraction <= 1.0):
            raise TheiaError("control loop: min_command_gap_fraction must be in [0, 1], got "
                             f"{self.min_command_gap_fraction!r}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class TickReport:
    """What one tick did (handed to ``on_tick``: publish the applied action, diagnostics).

    ``status``: ``acted`` | ``held`` | ``paused`` | ``skipped`` (too soon after the last
    command) | ``fault`` | ``inactive`` (not running).
    """

    index: int
    start_s: float
    status: str
    hold_reason: str | None = None
    proposed: np.ndarray | None = None  # [7] the policy's action for this tick
    sent: Action | None = None  # what the adapter reports it sent
    interventions: tuple[str, ...] = ()
    obs_stamp_s: float | None = None
    duration_s: float = 0.0
    fault: str | None = None
    hold_camera: str | None = None  # the camera a missing/bad/stale-image hold concerns


class ControlLoop:
    """Drives one :class:`~theia_ros.types.RobotAdapter` with a chunk-predicting policy.

    Args:
        adapter: the robot (connected by the caller).
        policy: ``(Observation) -> [H, 7]`` in physical units, ``adapter.action_kind``.
        safety: the filter every command passes (limits from the robot's config).
        config: rate and staleness bounds.
        chunking: chunk execution / ensembling / async planning.
        clock: time source; :class:`~theia_ros.control.clock.ManualClock` in tests.
        images: optional camera cache merged into every observation (ROS camera topics).
        on_tick: called with each :class:`TickReport` (exceptions there are logged, counted
            under ``faults["on_tick_callback"]`` and otherwise ignored).
        history: the observation history of a policy that conditions on the last T ticks
            (``control.history``); it is pushed every fresh tick, reset on ``start()``.
    """

    def __init__(self, adapter: RobotAdapter, policy: Policy, safety: SafetyFilter,
                 config: LoopConfig | None = None, chunking: ChunkingConfig | None = None,
                 clock: Clock | None = None, images: ImageCache | None = None,
                 on_tick: Callable[[TickReport], None] | None = None,
                 history: ObservationHistory | None = None) -> None:
        self.adapter = adapter
        self.history = history
        self.safety = safety
        self.config = config or LoopConfig()
        self.clock = clock or MonotonicClock()
        self.chunker = ActionChunker(policy, chunking, self.clock)
        self.images = images
        self.on_tick = on_tick
        self.stats = LoopStats(window=self.config.stats_window)
        self.last_fault: str | None = None
        self._state = LoopState.IDLE
        self._lock = threading.RLock()
        self._log = RateLimitedLogger(log, self.config.log_interval_s, self.clock.now)
        self._tick_index = 0  # ticks that reached the policy: the chunker's time axis
        self._prev_start_s: float | None = None
        self._last_command_s: float | None = None  # start of the last commanding tick
        self._last_sent_s: float | None = None  # when the last command was sent
        self._holding = False  # hold() already sent for the current hold streak
        self._stop_requested = False
        self._park_pending = False  # request_stop(): the next tick parks
        self._parking = False  # a safe stop (hold + park) is pending or running
        # the speed limits become per-tick steps at this loop's rate
        self.safety.bind_period(self.config.period_s)

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> LoopState:
        return self._state

    @property
    def period_s(self) -> float:
        return self.config.period_s

    @property
    def parking(self) -> bool:
        """A safe stop is pending or running (the robot must not be used meanwhile)."""
        return self._parking or self._park_pending

    def start(self) -> None:
        """Begin (or resume) acting. Refused while faulted or while the e-stop is latched;
        a park requested by :meth:`request_stop` and not begun yet is cancelled."""
        with self._lock:
            if self._state is LoopState.FAULTED:
                raise TheiaError(f"control loop is faulted ({self.last_fault}); call "
                                 "clear_fault() first")
            if self.safety.estopped:
                raise TheiaError(f"e-stop is latched ({self.safety.estop_reason}); reset it "
                                 "before starting")
            self.adapter.allow_park()  # the e-stop was reset
            self._park_pending = False
            self.chunker.reset()
            if self.history is not None:
                self.history.reset()
            self.safety.reset_reference()
            self._prev_start_s = None
            self._last_command_s = None
            self._last_sent_s = None
            self._holding = False
            self._stop_requested = False
            self._state = LoopState.RUNNING
            log.info("control loop running at %.1f Hz", self.config.rate_hz)

    def pause(self) -> None:
        """Hold the robot where it is; :meth:`start` resumes with a fresh plan."""
        if self._state is not LoopState.RUNNING:
            return  # without waiting for the lock (a park may hold it for seconds)
        with self._lock:
            if self._state is not LoopState.RUNNING:
                return
            self._state = LoopState.PAUSED
            self.chunker.reset()
            self._send_hold()
            log.info("control loop paused")

    def stop(self) -> None:
        """Safe stop (hold, then park/stow) and leave :meth:`run`, parking in the calling
        thread. Safe to call twice."""
        self.request_stop()
        with self._lock:
            self._park_if_requested()

    def request_stop(self) -> None:
        """Hold now and stop acting; the park follows on the next :meth:`step` (or when
        :meth:`run` returns), so the caller, e.g. a ROS service callback, does not wait for
        it. Safe to call twice."""
        self._stop_requested = True
        if self._state in (LoopState.STOPPED, LoopState.FAULTED):
            return  # nothing to do, and a park may be holding the lock
        with self._lock:
            if self._state in (LoopState.RUNNING, LoopState.PAUSED):
                self._state = LoopState.STOPPED
                self.chunker.reset()
                self._send_hold()
                self._park_pending = True
                log.info("control loop stopped; parking")
            elif self._state is LoopState.IDLE:
                self._state = LoopState.STOPPED

    def estop(self, reason: str = "e-stop input") -> None:
        """Latch the e-stop (the filter holds every action from now on) and stop: the arm
        holds where it is. A park in progress is interrupted first, so this returns within
        one park segment, not after the park (unless ``park_on_estop``)."""
        self.safety.trigger_estop(reason)
        if not self.config.park_on_estop:
            self.adapter.interrupt_park()
        with self._lock:
            if not self.config.park_on_estop:
                self._park_pending = False
            if self._state in (LoopState.RUNNING, LoopState.PAUSED):
                self._fault("estop", reason)
            else:
                self._send_hold()

    def clear_fault(self) -> None:
        """FAULTED -> STOPPED, so :meth:`start` may run again (the e-stop has its own reset)."""
        with self._lock:
            if self._state is LoopState.FAULTED:
                self._state = LoopState.STOPPED
                self.last_fault = None

    def close(self) -> None:
        """Stop and release the planner thread."""
        self.stop()
        self.chunker.close()

    # -- ticking -------------------------------------------------------------------------
    def step(self) -> TickReport:
        """One tick now, for callers with their own timer (a ROS node).

        Timing is accounted from consecutive calls: an overrun is a tick that took longer
        than the period; a gap of more than 1.5 periods between starts counts missed ticks.
        """
        with self._lock:
            start = self.clock.now()
            if self._state is LoopState.RUNNING and self._prev_start_s is not None:
                gap = start - self._prev_start_s
                if gap > 1.5 * self.period_s:
                    with self.stats.lock:
                        self.stats.missed_ticks += round(gap / self.period_s) - 1
            self._park_if_requested()
            report = self._guarded_tick(start)
            if report.duration_s > self.period_s:
                with self.stats.lock:
                    self.stats.overruns += 1
        self._emit(report)
        return report

    def run(self, max_ticks: int | None = None, duration_s: float | None = None) -> LoopStats:
        """Tick at ``rate_hz`` until stopped/faulted, ``max_ticks`` or ``duration_s``.

        Starts the loop if it is IDLE. Ctrl-C (or any exception) safe-stops, then re-raises.
        Leaving because of ``max_ticks``/``duration_s`` holds the robot (no park).
        """
        if self._state is LoopState.IDLE:
            self.start()
        period = self.period_s
        t0 = self.clock.now()
        start = t0 if self._last_command_s is None else max(t0, self._last_command_s + period)
        deadlines = Deadlines(period, self.clock, start_s=start)
        n = 0
        try:
            while self._state in (LoopState.RUNNING, LoopState.PAUSED) \
                    and not self._stop_requested:
                deadline = deadlines.next_s
                now = deadlines.wait()
                with self._lock:
                    if self._state not in (LoopState.RUNNING, LoopState.PAUSED):
                        break
                    with self.stats.lock:
                        self.stats.start_lateness_s.append(max(0.0, now - deadline))
                    report = self._guarded_tick(now)
                self._emit(report)
                n += 1
                end = self.clock.now()
                missed = deadlines.advance(end)
                if missed:
                    with self.stats.lock:
                        self.stats.overruns += 1
                        self.stats.missed_ticks += missed
                    self._log.log(logging.WARNING, "overrun", "tick %d overran: %.1f ms, "
                                  "%d slot(s) skipped", report.index, 1e3 * (end - now), missed)
                if max_ticks is not None and n >= max_ticks:
                    break
                if duration_s is not None and end - t0 >= duration_s:
                    break
        except BaseException:
            log.exception("control loop interrupted: safe stop")
            self.stop()
            raise
        with self._lock:
            self._park_if_requested()  # request_stop() from another thread
            if self._state in (LoopState.RUNNING, LoopState.PAUSED):
                self._send_hold()
        return self.stats

    # -- internals -----------------------------------------------------------------------
    def _emit(self, report: TickReport) -> None:
        if self.on_tick is None:
            return
        try:
            self.on_tick(report)
        except Exception as exc:
            with self.stats.lock:
                self.stats.faults["on_tick_callback"] += 1
            self._log.log(logging.ERROR, "on_tick", "on_tick callback failed: %r", exc)

    def _record_period(self, start: float) -> None:
        if self._prev_start_s is not None:
            with self.stats.lock:
                self.stats.period_error_s.append(abs(start - self._prev_start_s - self.period_s))
        self._prev_start_s = start

    def _guarded_tick(self, start: float) -> TickReport:
        """``_tick``, with any error outside the policy/robot calls (the safety filter, its
        IK hook, observation merging) turned into a fault and a safe stop, never a loop that
        keeps RUNNING without holding."""
        try:
            return self._tick(start)
        except Exception as exc:
            return self._faulted(self.stats.ticks - 1, start, "internal", repr(exc))

    def _tick(self, start: float) -> TickReport:
        """One tick at ``start`` (lock held)."""
        with self.stats.lock:
            self.stats.ticks += 1
        index = self.stats.ticks - 1
        if self._state is LoopState.PAUSED:
            self._prev_start_s = None
            return self._held(index, start, HoldReason.PAUSED.value, status="paused")
        if self._state is not LoopState.RUNNING:
            self._prev_start_s = None
            return TickReport(index, start, "inactive")
        min_gap_s = self.config.min_command_gap_fraction * self.period_s
        if self._last_command_s is not None and start - self._last_command_s < min_gap_s:
            with self.stats.lock:
                self.stats.skipped_ticks += 1
            return TickReport(index, start, "skipped")
        self._record_period(start)
        if self.safety.estopped:
            return self._faulted(index, start, "estop", self.safety.estop_reason or "e-stop")

        try:
            obs = self.adapter.observe()
        except Exception as exc:
            return self._faulted(index, start, "adapter_observe", repr(exc))
        fault = self.adapter.fault
        if fault:
            return self._faulted(index, start, "robot_fault", str(fault))
        if self.images is not None:
            obs = self.images.merge_into(obs)
        reason, camera = self.config.freshness.assess(obs, start)
        if reason is not None:
            self.chunker.reset()
            return self._held(index, start, reason.value, obs_stamp_s=obs.stamp_s,
                              camera=camera)
        if self.history is not None:
            try:
                stacked, why = self.history.push(obs, start)
            except Exception as exc:  # the encoder is part of the policy
                return self._faulted(index, start, "policy", repr(exc))
            if why is not None:
                self.chunker.reset()
                return self._held(index, start, why.value, obs_stamp_s=obs.stamp_s)
            obs = stacked

        tick = self._tick_index
        self._tick_index += 1
        try:
            proposed = self.chunker.act(obs, tick)
        except Exception as exc:
            return self._faulted(index, start, "policy", repr(exc))
        latencies = self.chunker.drain_latencies()
        if latencies:
            with self.stats.lock:
                self.stats.policy_latency_s.extend(latencies)
        if proposed is None:
            why = HoldReason.NO_PLAN if self.chunker.last_status == "waiting" \
                else HoldReason.CHUNK_EXHAUSTED
            return self._held(index, start, why.value, obs_stamp_s=obs.stamp_s)

        action = Action.from_vector(self.adapter.action_kind, proposed)
        result = self.safety.filter(action, obs)
        kinds = tuple(k.value for k in result.interventions)
        with self.stats.lock:
            self.stats.interventions.update(kinds)
        if result.action is None:
            self.chunker.reset()
            return self._held(index, start, f"safety:{result.hold_reason.value}",
                              proposed=proposed, interventions=kinds, obs_stamp_s=obs.stamp_s)
        if self._last_sent_s is not None and self.clock.now() - self._last_sent_s < min_gap_s:
            # An overdue timer fired right after a slow tick: never two commands back to back.
            self.safety.reset_reference()  # the filter's target was never sent
            with self.stats.lock:
                self.stats.skipped_ticks += 1
            return TickReport(index, start, "skipped")
        if self.safety.estopped:  # latched while this tick was thinking: nothing goes out
            return self._faulted(index, start, "estop", self.safety.estop_reason or "e-stop")
        try:
            sent = self.adapter.apply(result.action)
        except Exception as exc:
            return self._faulted(index, start, "adapter_apply", repr(exc))
        done = self.clock.now()
        # The pre-inference gap check uses the commanding tick's *start*, so slow inference
        # does not make the next on-time tick look "too soon"; the send-time check above uses
        # when the last command actually went out.
        self._last_command_s = start
        self._last_sent_s = done
        fault = self.adapter.fault
        if fault:
            return self._faulted(index, start, "robot_fault", str(fault))
        with self.stats.lock:
            self.stats.commands += 1
            self.stats.command_latency_s.append(done - obs.stamp_s)
            self.stats.tick_duration_s.append(done - start)
        self._holding = False
        return TickReport(index, start, "acted", None, proposed, sent, kinds, obs.stamp_s,
                          done - start)

    def _held(self, index: int, start: float, reason: str, status: str = "held",
              proposed: np.ndarray | None = None, interventions: tuple[str, ...] = (),
              obs_stamp_s: float | None = None, camera: str | None = None) -> TickReport:
        with self.stats.lock:
            self.stats.holds[reason] += 1
        self.safety.reset_reference()
        if status == "held":
            text = self.config.freshness.hold_text(reason, camera)
            # waiting for the first plan after a start is expected with asynchronous planning
            first_plan = reason == HoldReason.NO_PLAN.value and self.chunker.plans_since_reset == 0
            if first_plan:
                self._log.log(logging.INFO, "first_plan", "holding: %s (first plan in flight)",
                              text)
            else:
                self._log.log(logging.WARNING, text, "holding: %s", text)
            if not self._holding:
                self._send_hold()
        done = self.clock.now()
        with self.stats.lock:
            self.stats.tick_duration_s.append(done - start)
        return TickReport(index, start, status, reason, proposed, None, interventions,
                          obs_stamp_s, done - start, hold_camera=camera)

    def _faulted(self, index: int, start: float, kind: str, detail: str) -> TickReport:
        self._fault(kind, detail)
        done = self.clock.now()
        return TickReport(index, start, "fault", None, None, None, (), None, done - start,
                          self.last_fault)

    def _send_hold(self) -> None:
        try:
            self.adapter.hold()
            self._holding = True
        except Exception as exc:
            with self.stats.lock:
                self.stats.faults["adapter_hold"] += 1
            self._log.log(logging.ERROR, "adapter_hold", "adapter.hold() failed: %r", exc)

    def _park_if_requested(self) -> None:
        """Run the park :meth:`request_stop` left for this thread (lock held)."""
        if self._park_pending:
            self._park_pending = False
            self._parking = True
            self._safe_stop(park=True)
            log.info("control loop stopped")

    def _safe_stop(self, park: bool) -> None:
        self._parking = True
        try:
            self.chunker.reset()
            self._send_hold()
            if park and not self.adapter.park_interrupted:
                try:
                    self.adapter.safe_stop()
                except Exception as exc:
                    with self.stats.lock:
                        self.stats.faults["adapter_safe_stop"] += 1
                    log.error("adapter.safe_stop() failed: %r", exc)
                if self.adapter.park_interrupted:  # an e-stop cut the park short
                    log.warning("park interrupted by the e-stop: holding where the arm is")
                    self._send_hold()
            with self.stats.lock:
                self.stats.safe_stops += 1
        finally:
            self._parking = False

    def _fault(self, kind: str, detail: str) -> None:
        with self.stats.lock:
            self.stats.faults[kind] += 1
        self.last_fault = f"{kind}: {detail}"
        log.error("control loop fault -> safe stop: %s", self.last_fault)
        self._parking = True  # before FAULTED: nobody may take the robot back mid-park
        self._state = LoopState.FAULTED
        park = self.config.park_on_estop if kind == "estop" else True
        self._safe_stop(park=park)
