"""``theia run``: run a policy bundle closed-loop on the MuJoCo twin through the control core.

Each episode resets the sim to a randomised scene (``--seed``, ``--seed + 1``, ...), then
the real control core drives it: ``ControlLoop`` at the bundle's control rate (real-time
pacing on the monotonic clock), action chunking (re-plan every ``--replan-every`` ticks, optional
temporal ensembling), the wx250s ``SafetyFilter``, and the ``SimWidowX`` adapter. An episode
ends when the door is fully open (the success detector) or after ``--max-steps`` ticks. The
door's best stage per episode gives the per-stage success (open / fully open); tick timings
give the control-step latency. ``--fast`` swaps the clock for a manual one, so episodes run
as fast as the machine allows (same decisions, but latency numbers then mean nothing).
Torch-free with the onnxruntime backend.

Example::

    theia run --bundle outputs/demo/bundle --robot sim --episodes 5 --seed 10000 \\
        --video rollout.mp4 --json run.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
from theia_ros.errors import TheiaError
from theia_ros.sim.success import DoorStage
from theia_ros.types import Action, Observation, RobotAdapter

log = logging.getLogger(__name__)
VIDEO_SCALE = 2  # 224 -> 448 px, so the overlay text is legible


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
                               "success": sum(e.success for e in self.episodes)}
        for stage in (DoorStage.OPEN, DoorStage.FULLY_OPEN):
            out[f"reached_{stage.name.lower()}"] = sum(
                DoorStage[e.best_stage] >= stage for e in self.episodes)
        for name in ("tick_s", "command_latency_s", "policy_s"):
            out[name.replace("_s", "_ms")] = percentiles_ms(getattr(self, name))
        out["overruns"] = self.overruns
        return out


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


class VideoWriter:
    """MP4 (H.264) of RGB frames at the control rate; written to a temp file, then renamed."""

    def __init__(self, path: str | Path, fps: float) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}{self.path.suffix}")
        self._container = av.open(str(self._tmp), mode="w")
        self._stream = None
        self._fps = max(1, round(fps))
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self._fps)
            self._stream.height, self._stream.width = rgb.shape[0], rgb.shape[1]
            self._stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; None (and nothing written) when no frame came."""
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        if self.frames == 0:
            self._tmp.unlink(missing_ok=True)
            return None
        os.replace(self._tmp, self.path)
        return self.path


def annotate(image: np.ndarray, lines: Sequence[str], stage: DoorStage) -> np.ndarray:
    """Upscaled copy of ``image`` ``[H, W, 3]`` with text lines and a stage-coloured border."""
    import cv2

    img = cv2.resize(image, None, fx=VIDEO_SCALE, fy=VIDEO_SCALE,
                     interpolation=cv2.INTER_NEAREST)
    colour = {DoorStage.CLOSED: (200, 60, 60), DoorStage.OPEN: (230, 180, 40),
              DoorStage.FULLY_OPEN: (60, 200, 60)}[stage]
    cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), colour, 6)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.55
    for i, text in enumerate(lines):
        y = 24 + 22 * i
        # A dark box, not a thick black outline: Hershey glyph advances grow with stroke
        # thickness, so an outline drawn thicker drifts away from the text it should frame.
        (w, h), base = cv2.getTextSize(text, font, scale, 1)
        cv2.rectangle(img, (7, y - h - 4), (13 + w, y + base + 1), (0, 0, 0), -1)
        cv2.putText(img, text, (10, y), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


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
                 video: str | Path | None = None, video_episodes: int = 1,
                 on_episode: Callable[[EpisodeResult], None] | None = None) -> RunResult:
    """Run ``policy`` (``Observation -> [H, 7]``) on the sim for each seed; see the module doc.

    ``video`` records the first ``video_episodes`` episodes (annotated with seed, step, door
    angle and stage) into one MP4.
    """
    from theia_ros.adapters.sim import SimWidowX  # imports mujoco

    settings = settings or RunSettings()
    clock = ManualClock() if settings.fast else MonotonicClock()
    sim = SimWidowX(seed=int(seeds[0]) if len(seeds) else 0, image_size=image_size,
                    control_rate_hz=settings.rate_hz, clock=clock.now)
    robot = _Tap(sim)
    result = RunResult(fast=settings.fast)
    writer = VideoWriter(video, settings.rate_hz) if video else None
    timed = _timed(policy, result.policy_s)
    try:
        sim.connect()
        for i, seed in enumerate(seeds):
            ep = _run_one(sim, robot, timed, int(seed), settings, clock, result,
                          writer if i < video_episodes else None)
            result.episodes.append(ep)
            if on_episode is not None:
                on_episode(ep)
    finally:
        if writer is not None:
            writer.close()
        sim.disconnect()
    return result


def _run_one(sim, robot: _Tap, policy, seed: int, settings: RunSettings, clock,
             result: RunResult, writer: VideoWriter | None) -> EpisodeResult:
    sim.reset(seed)
    safety = SafetyFilter(SafetyLimits.wx250s(), clock=clock.now)
    config = LoopConfig(rate_hz=settings.rate_hz, freshness=Freshness(cameras=(sim.camera,)))
    state = {"steps": 0, "holds": 0, "final": DoorStage.CLOSED, "best": sim.success(),
             "angle_rad": sim.env.door_angle_rad()}
    loop: ControlLoop | None = None

    def on_tick(report: TickReport) -> None:
        stage = sim.success()
        state["final"] = stage
        state["best"] = max(state["best"], stage)
        state["angle_rad"] = sim.env.door_angle_rad()
        if report.status == "acted":
            state["steps"] += 1
            result.tick_s.append(report.duration_s)
            if report.obs_stamp_s is not None:
                result.command_latency_s.append(report.start_s + report.duration_s
                                                - report.obs_stamp_s)
        elif report.status == "held":
            state["holds"] += 1
        if writer is not None and robot.last_obs is not None:
            angle = math.degrees(state["angle_rad"])
            writer.write(annotate(robot.last_obs.images[sim.camera], [
                f"seed {seed}  step {report.index + 1}  ({report.status})",
                f"door {angle:5.1f} deg  {stage.name.replace('_', ' ').lower()}"], stage))
        if settings.stop_on_success and stage >= DoorStage.FULLY_OPEN and loop is not None:
            loop.stop()  # parks the arm after the stage was recorded

    t0 = time.perf_counter()
    loop = ControlLoop(robot, policy, safety, config, settings.chunking(), clock=clock,
                       on_tick=on_tick)
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
                         interventions=dict(stats["interventions"]))


# -- CLI ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="policy bundle (theia export)")
    parser.add_argument("--robot", choices=["sim"], required=True,
                        help="robot to drive (the real arms run through the ROS nodes)")
    parser.add_argument("--backend", default="auto",
                        help="auto | onnxruntime | tensorrt | torch (default auto)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to run (1)")
    parser.add_argument("--seed", type=int, default=10_000,
                        help="scene seed of the first episode (default 10000: the demo's "
                             "held-out range)")
    parser.add_argument("--max-steps", type=int, default=60, help="ticks per episode (60)")
    parser.add_argument("--replan-every", type=int, default=1,
                        help="ticks between policy calls (1)")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="execute chunks as planned instead of temporal ensembling")
    parser.add_argument("--fast", action="store_true",
                        help="no real-time pacing (evaluation only; latencies meaningless)")
    parser.add_argument("--video", default=None, help="MP4 of the first --video-episodes")
    parser.add_argument("--video-episodes", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results as JSON here")


def main(args: argparse.Namespace) -> int:
    from theia_ros.runtime import load

    if args.episodes < 1 or args.max_steps < 1:
        raise TheiaError("--episodes and --max-steps must be >= 1")
    runtime = load(args.bundle, backend=args.backend)
    meta = runtime.meta
    if meta.action_kind != "ee_delta" or meta.state_dim != 7:
        raise TheiaError(f"{args.bundle}: action_kind {meta.action_kind!r}, state_dim "
                         f"{meta.state_dim}; the sim WidowX needs ee_delta and 7")
    if meta.image_hw[0] != meta.image_hw[1]:
        raise TheiaError(f"{args.bundle}: camera size {meta.image_hw}; the sim camera is square")
    settings = RunSettings(rate_hz=float(meta.control_rate_hz), max_steps=args.max_steps,
                           replan_every=args.replan_every,
                           temporal_ensemble=not args.no_ensemble, fast=args.fast)
    seeds = list(range(args.seed, args.seed + args.episodes))

    def show(ep: EpisodeResult) -> None:
        print(f"seed {ep.seed}: {ep.final_stage.lower()} (best {ep.best_stage.lower()}, door "
              f"{ep.door_angle_deg:.0f} deg) in {ep.steps} steps, {ep.wall_s:.1f} s")

    result = run_episodes(runtime, seeds, settings, image_size=meta.image_hw[0],
                          video=args.video, video_episodes=args.video_episodes,
                          on_episode=show)
    summary = result.summary()
    tick = summary["tick_ms"]
    print(f"success {summary['success']}/{summary['episodes']} (fully open at the end); "
          f"reached open {summary['reached_open']}, fully open {summary['reached_fully_open']}")
    if not settings.fast and tick["p50"] is not None:
        print(f"control step p50 {tick['p50']:.1f} ms, p90 {tick['p90']:.1f} ms, p99 "
              f"{tick['p99']:.1f} ms at {settings.rate_hz:g} Hz ({runtime.backend}); "
              f"overruns {summary['overruns']}")
    if args.video:
        print(f"video: {args.video}")
    if args.json:
        doc = {"settings": asdict(settings), "summary": summary,
               "episodes": [asdict(e) for e in result.episodes]}
        path = Path(args.json)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)
    runtime.close()
    return 0
