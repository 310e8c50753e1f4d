"""Closed-loop episodes of a policy on the MuJoCo twin, through the real control core.

Used by ``theia run``, ``theia demo`` and evaluation: each episode resets the sim to a
randomised scene, then ``ControlLoop`` drives ``SimWidowX`` through the safety filter at
the bundle's rate. Results carry the door's per-stage outcome and the tick timings;
an optional MP4 shows the first episodes with their status drawn on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from theia_ros.control import (
    ChunkingConfig,
    ControlLoop,
    Freshness,
    LoopConfig,
    ManualClock,
    MonotonicClock,
    SafetyFilter,
    SafetyLimits,
    TickReport,
)
from theia_ros.control.history import ObservationHistory
from theia_ros.evaluate.video import VideoWriter, annotate
from theia_ros.sim.success import DoorStage
from theia_ros.types import Action, Observation, RobotAdapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """How episodes are run.

    Args:
        rate_hz: control rate (the bundle's, 5 Hz for the WidowX door task).
        max_steps: ticks before an episode counts as failed.
        replan_every: k, ticks between policy calls (1 = every tick).
        temporal_ensemble: average overlapping chunks (ACT); ``ensemble_m`` its weight decay.
        fast: manual clock (no real-time pacing): for quick evaluations only.
        stop_on_success: end the episode as soon as the door is fully open.
    """

    rate_hz: float = 5.0
    max_steps: int = 60
    replan_every: int = 1
    temporal_ensemble: bool = True
    ensemble_m: float = 0.1
    fast: bool = False
    stop_on_success: bool = True

    def chunking(self) -> ChunkingConfig:
        return ChunkingConfig(replan_every=self.replan_every,
                              temporal_ensemble=self.temporal_ensemble,
                              ensemble_m=self.ensemble_m)


@dataclass
class EpisodeResult:
    """One closed-loop episode."""

    seed: int
    final_stage: str  # door stage when the episode ended
    best_stage: str  # highest stage seen during the episode
    steps: int
    door_angle_deg: float
    wall_s: float
    holds: int
    interventions: dict[str, int] = field(default_factory=dict)
    fault: str | None = None  # the control loop's fault, when the episode ended in one

    @property
    def success(self) -> bool:
        return self.final_stage == DoorStage.FULLY_OPEN.name


@dataclass
class RunResult:
    """Episodes plus the timing samples of every acting tick (seconds)."""

    episodes: list[EpisodeResult] = field(default_factory=list)
    tick_s: list[float] = field(default_factory=list)  # observe .. apply, one tick
    command_latency_s: list[float] = field(default_factory=list)  # image stamp -> command
    policy_s: list[float] = field(default_factory=list)  # policy calls (wall clock)
    overruns: int = 0
    fast: bool = False

    def summary(self) -> dict[str, Any]:
        n = len(self.episodes)
        out: dict[str, Any] = {"episodes": n, "fast": self.fast,
                               "success": sum(e.success for e in self.episodes),
                               "faulted": sum(e.fault is not None for e in self.episodes)}
        for stage in (DoorStage.OPEN, DoorStage.FULLY_OPEN):
            out[f"reached_{stage.name.lower()}"] = sum(
                DoorStage[e.best_stage] >= stage for e in self.episodes)
        for name in ("tick_s", "command_latency_s", "policy_s"):
            out[name.replace("_s", "_ms")] = percentiles_ms(getattr(self, name))
        out["overruns"] = self.overruns
        return out


def tally_tick(report: TickReport, counts: dict[str, Any], tick_s: list[float],
               latency_s: list[float]) -> None:
    """Count an acted or held tick; an acted one adds its duration and, when the image's
    stamp is known, the image-to-command latency."""
    if report.status == "acted":
        counts["steps"] += 1
        tick_s.append(report.duration_s)
        if report.obs_stamp_s is not None:
            latency_s.append(report.start_s + report.duration_s - report.obs_stamp_s)
    elif report.status == "held":
        counts["holds"] += 1


def percentiles_ms(samples_s: Sequence[float], qs: Sequence[int] = (50, 90, 99)
                   ) -> dict[str, float | None]:
    """``{"p50": ms, "p90": ms, "p99": ms}`` of samples in seconds (None when empty)."""
    if not samples_s:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


class _Tap(RobotAdapter):
    """Passes every call to ``inner`` and keeps the last observation (for the video)."""

    def __init__(self, inner: RobotAdapter) -> None:
        self.inner = inner
        self.action_kind = inner.action_kind
        self.name = inner.name
        self.last_obs: Observation | None = None

    def observe(self) -> Observation:
        self.last_obs = self.inner.observe()
        return self.last_obs

    def apply(self, action: Action) -> Action:
        return self.inner.apply(action)

    def hold(self) -> None:
        self.inner.hold()

    def safe_stop(self) -> None:
        self.inner.safe_stop()


def _timed(policy: Callable[[Observation], np.ndarray], out: list[float]
           ) -> Callable[[Observation], np.ndarray]:
    """Wrap ``policy`` to log its wall-clock latency (the loop's clock may be manual)."""
    def call(obs: Observation) -> np.ndarray:
        t0 = time.perf_counter()
        chunk = policy(obs)
        out.append(time.perf_counter() - t0)
        return chunk
    return call


def run_episodes(policy: Callable[[Observation], np.ndarray], seeds: Sequence[int],
                 settings: RunSettings | None = None, *, image_size: int = 224,
                 cameras: Sequence[str] = ("front",),
                 history: ObservationHistory | None = None,
                 video: str | Path | None = None, video_episodes: int = 1,
                 on_episode: Callable[[EpisodeResult], None] | None = None) -> RunResult:
    """Run ``policy`` (``Observation -> [H, 7]``) on the sim for each seed; see the module doc.

    ``cameras``: sim cameras rendered every tick (and checked for freshness); ``history``:
    the observation history of a policy with ``n_obs_steps > 1`` (reset every episode).
    ``video`` records the first ``video_episodes`` episodes (annotated with seed, step, door
    angle and stage, seen through the first camera) into one MP4.
    """
    from theia_ros.robots.sim import SimWidowX  # imports mujoco

    settings = settings or RunSettings()
    clock = ManualClock() if settings.fast else MonotonicClock()
    sim = SimWidowX(seed=int(seeds[0]) if len(seeds) else 0, image_size=image_size,
                    cameras=tuple(cameras), control_rate_hz=settings.rate_hz, clock=clock.now)
    robot = _Tap(sim)
    result = RunResult(fast=settings.fast)
    writer = VideoWriter(video, settings.rate_hz) if video else None
    timed = _timed(policy, result.policy_s)
    try:
        sim.connect()
        for i, seed in enumerate(seeds):
            ep = _run_one(sim, robot, timed, int(seed), settings, clock, result,
                          writer if i < video_episodes else None, history)
            result.episodes.append(ep)
            if on_episode is not None:
                on_episode(ep)
    finally:
        if writer is not None:
            writer.close()
        sim.disconnect()
    return result


def _run_one(sim, robot: _Tap, policy, seed: int, settings: RunSettings, clock,
             result: RunResult, writer: VideoWriter | None,
             history: ObservationHistory | None = None) -> EpisodeResult:
    sim.reset(seed)
    safety = SafetyFilter(SafetyLimits.wx250s(), clock=clock.now)
    config = LoopConfig(rate_hz=settings.rate_hz, freshness=Freshness(cameras=sim.cameras))
    state = {"steps": 0, "holds": 0, "final": DoorStage.CLOSED, "best": sim.success(),
             "angle_rad": sim.env.door_angle_rad()}
    loop: ControlLoop | None = None

    def on_tick(report: TickReport) -> None:
        stage = sim.success()
        state["final"] = stage
        state["best"] = max(state["best"], stage)
        state["angle_rad"] = sim.env.door_angle_rad()
        tally_tick(report, state, result.tick_s, result.command_latency_s)
        if writer is not None and robot.last_obs is not None:
            angle = math.degrees(state["angle_rad"])
            writer.write(annotate(robot.last_obs.images[sim.camera], [
                f"seed {seed}  step {report.index + 1}  ({report.status})",
                f"door {angle:5.1f} deg  {stage.name.replace('_', ' ').lower()}"], stage))
        if settings.stop_on_success and stage >= DoorStage.FULLY_OPEN and loop is not None:
            loop.stop()  # parks the arm after the stage was recorded

    t0 = time.perf_counter()
    loop = ControlLoop(robot, policy, safety, config, settings.chunking(), clock=clock,
                       on_tick=on_tick, history=history)
    try:
        loop.run(max_ticks=settings.max_steps)
    finally:
        loop.close()
    stats = loop.stats.summary()
    result.overruns += int(stats["overruns"])
    if loop.last_fault:
        log.warning("seed %d: control loop fault: %s", seed, loop.last_fault)
    return EpisodeResult(seed=seed, final_stage=state["final"].name,
                         best_stage=state["best"].name, steps=int(state["steps"]),
                         door_angle_deg=math.degrees(state["angle_rad"]),
                         wall_s=time.perf_counter() - t0, holds=int(state["holds"]),
                         interventions=dict(stats["interventions"]), fault=loop.last_fault)


def check_sim_bundle(meta: Any, name: str = "bundle") -> None:
    """Raise a one-line error unless the bundle can drive the sim WidowX's door task."""
    from theia_ros.errors import TheiaError
    from theia_ros.sim.scene import CAMERA_NAMES

    if meta.action_kind != "ee_delta" or meta.state_dim != 7:
        raise TheiaError(f"{name}: action_kind {meta.action_kind!r}, state_dim "
                         f"{meta.state_dim}; the sim WidowX needs ee_delta and 7")
    if meta.image_hw[0] != meta.image_hw[1]:
        raise TheiaError(f"{name}: camera size {meta.image_hw}; the sim cameras are square")
    unknown = [c for c in meta.cameras if c not in CAMERA_NAMES]
    if unknown:
        raise TheiaError(f"{name}: cameras {unknown} do not exist on the sim WidowX (it has "
                         f"{list(CAMERA_NAMES)})")


def run_bundle(runtime: Any, seeds: Sequence[int], settings: RunSettings, **kwargs: Any
               ) -> RunResult:
    """``run_episodes`` for a loaded ``PolicyRuntime``: its cameras, size and history."""
    check_sim_bundle(runtime.meta, str(runtime.meta.root))
    return run_episodes(runtime, seeds, settings, image_size=runtime.meta.image_hw[0],
                        cameras=runtime.meta.cameras,
                        history=runtime.make_history(1.0 / settings.rate_hz), **kwargs)
