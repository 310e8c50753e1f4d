"""Closed-loop drawer episodes on the simulated Spot, through ``SpotAdapter`` and the control core.

The simulator (``theia_ros.sim.spot``, a stand-in, not Boston Dynamics' software) is started
once; a ``SpotAdapter`` connection (real ``bosdyn-client``: lease, power, stand, streamed arm
trajectories, JPEG images) serves the episodes, and a fresh one is made after an episode that
faulted (the loop's safe stop sat the robot down). Per held-out seed: the scene is reset
(drawer closed, body placed at the seed's pose), the scripted reset move brings the hand to
the start pose (the same body-frame pose on every seed, jittered +-2 cm, as before each
demonstration), then the policy runs ``max_steps`` ticks at the loop's rate with the
configured chunk execution (asynchronous planning as ``config/spot_drawer.yaml``). Success:
drawer opened >= 10 cm.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from theia_ros.control import (
    ChunkingConfig,
    ControlLoop,
    Freshness,
    LoopConfig,
    LoopState,
    SafetyFilter,
    TickReport,
)
from theia_ros.control.history import ObservationHistory
from theia_ros.control.schedule import Deadlines
from theia_ros.evaluate.rollout import _timed, percentiles_ms, tally_tick
from theia_ros.types import Observation

SUCCESS_OPEN_M = 0.10  # the paper's criterion (theia_ros.sim.spot.drawer has the same figure)


@dataclass
class DrawerEpisode:
    seed: int
    success: bool
    opening_m: float  # at the end
    max_opening_m: float
    steps: int
    holds: int
    wall_s: float
    fault: str | None = None


@dataclass
class DrawerRun:
    episodes: list[DrawerEpisode] = field(default_factory=list)
    tick_s: list[float] = field(default_factory=list)
    command_latency_s: list[float] = field(default_factory=list)
    policy_s: list[float] = field(default_factory=list)
    overruns: int = 0

    def timing(self) -> dict[str, dict[str, float | None]]:
        return {"tick_ms": percentiles_ms(self.tick_s),
                "command_latency_ms": percentiles_ms(self.command_latency_s),
                "policy_ms": percentiles_ms(self.policy_s)}


def run_drawer_episodes(policy: Callable[[Observation], np.ndarray], seeds: Sequence[int], *,
                        max_steps: int = 45, chunking: ChunkingConfig | None = None,
                        video: str | None = None, video_episodes: int = 1,
                        on_episode: Callable[[DrawerEpisode], None] | None = None,
                        make_history: Callable[[float], ObservationHistory | None] | None = None,
                        ) -> DrawerRun:
    """Run ``policy`` (``Observation -> [H, 7]`` absolute hand poses + claw) on each seed.

    ``make_history(period_s)``: the observation history a policy conditioned on several
    steps needs (``PolicyRuntime.make_history``); a fresh one per episode."""
    from theia_ros.evaluate.video import VideoWriter
    from theia_ros.record.spot import run_plan
    from theia_ros.record.spot_script import ScriptedDrawerPolicy, plan_reset
    from theia_ros.robots.spot.adapter import SpotAdapter
    from theia_ros.sim.spot.drawer_task import DrawerSim

    chunking = chunking or ChunkingConfig(replan_every=3, async_planning=True)
    run = DrawerRun()
    timed = _timed(policy, run.policy_s)
    writer = VideoWriter(video, 5.0) if video else None
    with DrawerSim(seed=int(seeds[0])) as sim:
        cfg = sim.config()
        limits = cfg.safety_limits()
        freshness = Freshness(cameras=tuple(cfg.cameras))
        loop_cfg = LoopConfig(rate_hz=cfg.rate_hz, freshness=freshness)
        spot: SpotAdapter | None = None
        try:
            for i, seed in enumerate(seeds):
                if spot is None:  # first seed, or the last one faulted: a fresh connection
                    spot = SpotAdapter(cfg)
                    spot.connect()  # lease, power on, stand
                sim.reset(int(seed))
                script = sim.script_for()
                mover = ScriptedDrawerPolicy(script)
                reset_loop = ControlLoop(spot, mover, SafetyFilter(limits), loop_cfg,
                                         on_tick=lambda r, m=mover: r.status == "acted"
                                         and r.sent is not None and m.advance())
                start = script.start_pose(np.random.default_rng(int(seed)))
                mover.run(plan_reset(script, spot.observe().ee_pose, start, cfg.period_s))
                reset_loop.start()
                run_plan(reset_loop, mover, cfg.period_s, f"seed {seed} reset")
                reset_loop.pause()
                reset_loop.chunker.close()
                history = make_history(cfg.period_s) if make_history is not None else None
                ep = _episode(spot, sim, timed, int(seed), max_steps, limits, loop_cfg,
                              chunking, run, writer if i < video_episodes else None, history)
                run.episodes.append(ep)
                if on_episode is not None:
                    on_episode(ep)
                if ep.fault is not None:  # the loop safe-stopped the robot: start afresh
                    spot.disconnect()
                    spot = None
        finally:
            if spot is not None:
                _close(spot)
    if writer is not None:
        writer.close()
    return run


def _close(spot) -> None:
    """What leaving ``with SpotAdapter(...)`` does: park safely, then disconnect."""
    try:
        spot.safe_stop()
    finally:
        spot.disconnect()


def _episode(spot, sim, policy, seed: int, max_steps: int, limits, loop_cfg: LoopConfig,
             chunking: ChunkingConfig, run: DrawerRun, writer,
             history: ObservationHistory | None) -> DrawerEpisode:
    state = {"steps": 0, "holds": 0, "max": 0.0, "obs": None}

    def on_tick(report: TickReport) -> None:
        opening = sim.opening_m
        state["max"] = max(state["max"], opening)
        tally_tick(report, state, run.tick_s, run.command_latency_s)
        if writer is not None and spot._last_obs is not None:
            import cv2

            frame = cv2.resize(spot._last_obs.images["front"], (448, 448),
                               interpolation=cv2.INTER_NEAREST)
            colour = (60, 230, 60) if opening >= SUCCESS_OPEN_M else (240, 240, 240)
            frame[:58, :236] //= 3  # a dark band: the text stays readable on the drawer front
            for text, y in ((f"seed {seed} step {report.index + 1}", 22),
                            (f"drawer {100 * opening:4.1f} cm", 46)):
                cv2.putText(frame, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2,
                            cv2.LINE_AA)
            writer.write(frame)

    loop = ControlLoop(spot, policy, SafetyFilter(limits), loop_cfg, chunking, on_tick=on_tick,
                       history=history)
    t0 = time.perf_counter()
    deadlines = Deadlines(loop_cfg.period_s)
    fault = None
    loop.start()
    try:
        for _ in range(max_steps):
            deadlines.wait()
            loop.step()
            if loop.state is LoopState.FAULTED:
                fault = str(loop.last_fault)
                break
            deadlines.advance()
    finally:
        loop.pause()
        loop.chunker.close()
    run.overruns += int(loop.stats.summary()["overruns"])
    opening = sim.opening_m
    return DrawerEpisode(seed=seed, success=opening >= SUCCESS_OPEN_M, opening_m=opening,
                         max_opening_m=state["max"], steps=state["steps"],
                         holds=state["holds"], wall_s=time.perf_counter() - t0, fault=fault)
