"""Scripted demonstrations on Spot, recorded in the same dataset format as every recorder.

``record_spot`` connects the Spot adapter (``bosdyn-client``: lease, power, stand), drives the
arm with the scripted drawer-opening policy (``theia_ros.record.spot_script``) through the
same control core as a learned policy (fixed-rate loop, freshness checks, safety filter), and
records every commanding tick into a LeRobot-v3 dataset (``theia_ros.dataset``): the camera
frames and arm state the tick acted on, and as ``action`` the absolute hand pose + claw open
fraction that went out in the RobotCommand (after clipping). ``info.json`` says
``action_kind: ee_absolute``. Each episode starts with an unrecorded move to a jittered start
pose; its success flag is the script's check at the end of the pull.

Gamepad teleop on Spot records through ``recorder_node`` (``robot: spot``) instead; both write
the same frames.

Example (``theia record`` dispatches ``--robot spot`` here)::

    export BOSDYN_CLIENT_USERNAME=... BOSDYN_CLIENT_PASSWORD=...
    theia record --robot spot --scripted --config config/spot_drawer.yaml \\
        --script drawer_script.yaml --out data/spot_drawer --episodes 20
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from theia_ros.control import (
    ControlLoop,
    Freshness,
    LoopConfig,
    LoopState,
    SafetyFilter,
    SafetyLimits,
    TickReport,
)
from theia_ros.control.schedule import Deadlines
from theia_ros.errors import TheiaError
from theia_ros.record.spot_script import (
    DrawerScript,
    ScriptedDrawerPolicy,
    check_plan_inside,
    plan_demo,
    plan_reset,
)
from theia_ros.types import ActionKind, Observation

log = logging.getLogger(__name__)

TASK = "open the drawer"
ROBOT_TYPE = "spot"


@dataclass
class SpotRecordResult:
    """What one ``record_spot`` call saved."""

    episodes: list[int] = field(default_factory=list)  # dataset episode indices
    successes: list[bool] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # frames per saved episode
    frame_errors: int = 0  # commanding ticks whose frame could not be stored
    seeds: list[int] = field(default_factory=list)  # the seed of each saved episode
    attempts: int = 0  # episodes run (failed ones included)


class _FrameSink:
    """``on_tick`` hook: each tick that sent a command becomes one frame (when recording)."""

    def __init__(self, policy: ScriptedDrawerPolicy, cameras: tuple[str, ...]) -> None:
        self.policy = policy
        self.cameras = cameras
        self.writer = None  # set while recording
        self.frame_errors = 0

    def __call__(self, report: TickReport) -> None:
        if report.status != "acted" or report.sent is None:
            return
        self.policy.advance()
        obs: Observation | None = self.policy.last_obs
        if self.writer is None or obs is None:
            return
        cam = self.cameras[0]
        try:
            self.writer.add_frame(images={c: obs.images[c] for c in self.cameras},
                                  state=obs.state_vector(), ee_pose=obs.ee_pose,
                                  action=report.sent.to_vector().astype(np.float32),
                                  timestamp=obs.stamps_s.get(cam, obs.stamp_s))
        except (TheiaError, KeyError) as exc:
            self.frame_errors += 1
            log.warning("spot record: frame not stored: %s", exc)


def _open_writer(out: Path, fps: int, obs: Observation, cameras: tuple[str, ...]):
    from theia_ros.dataset import DatasetWriter
    from theia_ros.dataset.layout import INFO_PATH
    from theia_ros.robots.spot.io import ARM_JOINTS

    shapes = {c: tuple(obs.images[c].shape[:2]) for c in cameras}
    state_dim = obs.joint_positions.size + 1
    if (out / INFO_PATH).exists():
        writer = DatasetWriter.open(out)
        if (writer.action_kind is not ActionKind.EE_ABSOLUTE or writer.cameras != shapes
                or writer.state_dim != state_dim):
            found = (writer.action_kind.value, writer.cameras, writer.state_dim)
            writer.close()
            raise TheiaError(f"{out}: dataset has (action_kind, cameras, state_dim) {found}; "
                             f"Spot records {('ee_absolute', shapes, state_dim)}")
        return writer
    names = [*ARM_JOINTS, "gripper"] if state_dim == len(ARM_JOINTS) + 1 else None
    return DatasetWriter.create(out, fps=fps, robot_type=ROBOT_TYPE, cameras=shapes,
                                state_dim=state_dim, action_kind=ActionKind.EE_ABSOLUTE,
                                state_names=names)


def run_plan(loop: ControlLoop, policy: ScriptedDrawerPolicy, period_s: float,
              what: str) -> None:
    """Tick at the loop's rate until every waypoint of the policy's plan was sent."""
    limit = 3 * len(policy.plan) + 25  # holds (stale camera) repeat a waypoint, within reason
    deadlines = Deadlines(period_s)
    for _ in range(limit):
        if policy.done:
            return
        deadlines.wait()
        loop.step()
        if loop.state is LoopState.FAULTED:
            raise TheiaError(f"spot record: {what} stopped by a fault ({loop.last_fault}); "
                             "the robot was safe-stopped")
        deadlines.advance()
    if not policy.done:
        holds = dict(loop.stats.holds)
        raise TheiaError(f"spot record: {what} did not finish within {limit} ticks "
                         f"({policy.index}/{len(policy.plan)} waypoints sent; holds {holds})")


def record_spot(config, out: str | Path, episodes: int, *,
                script: DrawerScript | None = None, limits: SafetyLimits | None = None,
                freshness: Freshness | None = None, task: str = TASK, seed: int = 0,
                between_episodes: Callable[[int], None] | None = None,
                prepare_episode: Callable[[int], DrawerScript] | None = None,
                judge: Callable[[ScriptedDrawerPolicy], bool] | None = None,
                keep_failures: bool = True, progress: bool = True,
                on_attempt: Callable[[int, bool], None] | None = None) -> SpotRecordResult:
    """Record ``episodes`` scripted drawer openings on Spot into the dataset at ``out``.

    Args:
        config: a ``SpotConfig`` (robot address, cameras, frame, ``rate_hz`` = dataset fps).
        out: dataset directory; created, or appended to when it already holds a Spot dataset.
        episodes: episodes to add.
        script: where the handle is and how to open it (default ``DrawerScript()``).
        limits: the safety filter's limits (default: the Spot config's).
        freshness: observation staleness bounds (default: every configured camera, 0.3 s).
        task: task text stored with each episode.
        seed: episode ``i`` jitters its start pose with ``seed + i``.
        between_episodes: called with the next episode's number before it starts (e.g. to
            wait until someone closed the drawer again); not before the first.
        prepare_episode: called with each attempt's number (the first too) before it
            starts; returns the script for that attempt (e.g. a simulator placing the robot
            and reporting where the handle is). None: ``script`` for every attempt.
        judge: decides an episode's success after its plan ran (default: the script's own
            check, :attr:`ScriptedDrawerPolicy.success`).
        keep_failures: False keeps only successful episodes (a failed one is discarded and
            another attempt made, at most ``2 * episodes + 10`` attempts), as the paper kept
            only successful demonstrations.
        progress: show a tqdm bar.
        on_attempt: called after each finished attempt with its seed and whether it was
            saved (after the save), e.g. to note the seeds used for a later resume.

    Raises TheiaError on a robot fault (after a safe stop; the unfinished episode is dropped,
    saved ones stay), a script that leaves the workspace, or a mismatched dataset.
    """
    from theia_ros.robots.spot.adapter import SpotAdapter

    if not isinstance(episodes, int) or episodes < 1:
        raise TheiaError(f"episodes: expected a positive integer, got {episodes!r}")
    if abs(config.rate_hz - round(config.rate_hz)) > 1e-9:
        raise TheiaError(f"spot config field 'rate_hz': the dataset fps must be a whole number "
                         f"of Hz, got {config.rate_hz}")
    script = script or DrawerScript()
    # a streamed target is reached one trajectory time after it is sent: hold the pull's end
    # at least that long (and a tick more) before the script judges where the hand got to
    settle = math.ceil(config.trajectory_time() / config.period_s) + 1
    if script.settle_ticks < settle:
        script = dataclasses.replace(script, settle_ticks=settle)
    limits = limits or config.safety_limits()
    cameras = tuple(config.cameras)
    freshness = freshness or Freshness(cameras=cameras)
    period_s = config.period_s
    if (script.speed_m_s > limits.max_speed_m_s
            or script.angular_speed_rad_s > limits.max_angular_speed_rad_s):
        raise TheiaError(f"spot record: the script moves at {script.speed_m_s} m/s, "
                         f"{script.angular_speed_rad_s} rad/s; the safety limits allow "
                         f"{limits.max_speed_m_s} m/s, {limits.max_angular_speed_rad_s} rad/s "
                         "(slow the script down or raise safety.max_speed_m_s)")
    low, high = np.asarray(limits.workspace_min_m), np.asarray(limits.workspace_max_m)
    check_plan_inside(plan_demo(script, script.start_pose(), period_s), low, high,
                      "demonstration")
    out = Path(out)
    result = SpotRecordResult()
    policy = ScriptedDrawerPolicy(script)
    sink = _FrameSink(policy, cameras)
    writer = None
    with SpotAdapter(config) as spot:
        loop = ControlLoop(spot, policy, SafetyFilter(limits),
                           LoopConfig(rate_hz=config.rate_hz, freshness=freshness),
                           on_tick=sink)
        try:
            writer = _open_writer(out, round(config.rate_hz), spot.observe(), cameras)
            loop.start()
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=episodes, desc="spot episodes", unit="ep")
            max_attempts = episodes if keep_failures else 2 * episodes + 10
            for number in range(max_attempts):
                if len(result.episodes) >= episodes:
                    break
                if number > 0 and between_episodes is not None:
                    between_episodes(number)
                if prepare_episode is not None:
                    script = prepare_episode(number)
                    check_plan_inside(plan_demo(script, script.start_pose(), period_s), low,
                                      high, "demonstration")
                    policy.script = script
                rng = np.random.default_rng(seed + number)
                start = script.start_pose(rng)
                reset = plan_reset(script, spot.observe().ee_pose, start, period_s)
                check_plan_inside(reset, low, high, "reset move")
                policy.run(reset)
                run_plan(loop, policy, period_s, f"episode {number} reset")
                policy.run(plan_demo(script, start, period_s))
                writer.start_episode(task)
                sink.writer = writer
                try:
                    run_plan(loop, policy, period_s, f"episode {number}")
                finally:
                    sink.writer = None
                frames = writer.episode_frames
                success = judge(policy) if judge is not None else policy.success
                result.attempts += 1
                if not success and not keep_failures:
                    writer.discard_episode()
                    log.info("spot record: attempt %d failed; discarded", number)
                    if on_attempt is not None:
                        on_attempt(seed + number, False)
                    continue
                result.episodes.append(writer.save_episode(success))
                if on_attempt is not None:
                    on_attempt(seed + number, True)
                result.successes.append(success)
                result.frames.append(frames)
                result.seeds.append(seed + number)
                if bar is not None:
                    bar.update(1)
                log.info("spot record: saved episode %d (%d frames, success=%s)",
                         result.episodes[-1], frames, success)
            if bar is not None:
                bar.close()
            if len(result.episodes) < episodes:
                raise TheiaError(f"spot record: only {len(result.episodes)} of {episodes} "
                                 f"episodes succeeded in {result.attempts} attempts")
            loop.pause()  # hold; leaving the adapter's context stows and returns the lease
        finally:
            loop.chunker.close()
            if writer is not None:
                if writer.recording:
                    writer.discard_episode()
                writer.close()
    result.frame_errors = sink.frame_errors
    return result


