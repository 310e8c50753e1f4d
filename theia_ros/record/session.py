"""One keyboard recording session: ticks, keys -> safety filter -> robot -> dataset.

Every control tick the recorder observes, turns the keys pressed since the last tick into
one end-effector delta (:mod:`theia_ros.record.keys`), passes it through the same safety
filter the policy uses, applies it, and appends (images, joint state, EE pose, the action
actually sent) to a LeRobot v3 dataset. Idle ticks before an episode's first command are
not recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from theia_ros.atomic import atomic_write_bytes
from theia_ros.control.clock import Clock, MonotonicClock
from theia_ros.control.safety import SafetyFilter
from theia_ros.control.schedule import Deadlines
from theia_ros.errors import TheiaError
from theia_ros.record.keys import DISCARD, QUIT, SAVE, KeySource, keys_to_command
from theia_ros.types import Action, ActionKind, Observation, RobotAdapter

TASK = "open the fridge door"


class EpisodeRecorder:
    """One teleop step = observe -> command -> safety filter -> apply -> add_frame.

    Shared by the keyboard recorder and the demo's scripted recorder, so both write the
    same frames: the observation the command was chosen from and the action actually sent.

    Args:
        robot: a connected adapter (``EE_DELTA`` actions).
        writer: an open ``theia_ros.dataset.DatasetWriter`` with the robot's camera(s).
        safety: the filter every command passes (its speed limits apply per frame of the
            writer's ``fps``).
        task: episode task text.
        stamp: store the observation's capture time (real-time recording) instead of the
            control grid ``frame_index / fps``.
    """

    def __init__(self, robot: RobotAdapter, writer, safety: SafetyFilter,
                 task: str = TASK, stamp: bool = False) -> None:
        self.robot = robot
        self.writer = writer
        self.safety = safety
        safety.bind_period(1.0 / float(writer.fps))  # one frame per teleop step
        self.task = task
        self.stamp = stamp
        self.holds = 0

    @property
    def frames(self) -> int:
        return int(self.writer.episode_frames)

    def start(self) -> None:
        if self.writer.recording:
            self.writer.discard_episode()
        self.writer.start_episode(self.task)
        self.safety.reset_reference()

    def step(self, command: np.ndarray, obs: Observation | None = None) -> Action | None:
        """Send ``command`` ``[7]`` (EE delta + gripper); returns what was sent (None: held)."""
        obs = self.robot.observe() if obs is None else obs
        proposed = Action.from_vector(ActionKind.EE_DELTA, np.asarray(command, np.float64))
        result = self.safety.filter(proposed, obs)
        if result.action is None:
            self.holds += 1
            self.robot.hold()
            sent = Action(ActionKind.EE_DELTA, np.zeros(3), np.zeros(3), obs.gripper)
        else:
            sent = self.robot.apply(result.action)
        self.writer.add_frame(images=dict(obs.images), state=obs.state_vector(),
                              ee_pose=obs.ee_pose, action=sent.to_vector().astype(np.float32),
                              timestamp=obs.stamp_s if self.stamp else None)
        return None if result.action is None else sent

    def save(self, success: bool) -> int:
        return int(self.writer.save_episode(success))

    def discard(self) -> None:
        if self.writer.recording:
            self.writer.discard_episode()


@dataclass
class SessionResult:
    saved: list[int] = field(default_factory=list)  # episode indices
    successes: list[bool] = field(default_factory=list)
    discarded: int = 0
    ticks: int = 0


def _status_line(robot: RobotAdapter, obs: Observation, episode: int, frames: int,
                 gripper_cmd: float) -> str:
    x, y, z = obs.ee_pose[:3]
    line = (f"ep {episode:3d} | frames {frames:3d} | ee x {x:+.3f} y {y:+.3f} z {z:+.3f} m | "
            f"gripper {'open' if gripper_cmd > 0.5 else 'closed'}")
    status = robot.status_text()
    return f"{line} | {status}" if status else line


def _save_preview(path: Path, image: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if ok:
        atomic_write_bytes(path, data.tobytes())


def run_session(robot: RobotAdapter, writer, keys: KeySource, safety: SafetyFilter, *,
                first_seed: int = 0, max_episodes: int | None = None,
                clock: Clock | None = None, rate_hz: float = 5.0,
                max_ticks: int | None = None, preview: Path | None = None,
                print_fn: Callable[[str], None] | None = None,
                on_tick: Callable[[], None] | None = None) -> SessionResult:
    """The keyboard recording session on a sim robot (``reset(seed)``, ``success()``).

    One tick per period on ``clock`` (a ``ManualClock`` runs a scripted key stream as fast
    as possible). Episodes use seeds ``first_seed, first_seed + 1, ...``. ``on_tick`` runs
    at the start of every tick, after the last one's command took effect (a live viewer).
    """
    clock = clock or MonotonicClock()
    period_s = 1.0 / rate_hz
    rec = EpisodeRecorder(robot, writer, safety, stamp=isinstance(clock, MonotonicClock))
    out = SessionResult()
    seed = first_seed
    gripper = 1.0

    def new_episode() -> None:
        nonlocal gripper
        robot.reset(seed)
        gripper = 1.0
        rec.discard()

    new_episode()
    deadlines = Deadlines(period_s, clock)
    while max_ticks is None or out.ticks < max_ticks:
        if out.ticks:
            deadlines.advance()
        deadlines.wait()
        if on_tick is not None:
            on_tick()
        out.ticks += 1
        cmd = keys_to_command(keys.poll())
        if cmd.control == QUIT:
            break
        if cmd.control == DISCARD:
            out.discarded += int(rec.frames > 0)
            new_episode()
            continue
        if cmd.control == SAVE:
            if rec.frames == 0:
                continue  # nothing recorded yet: Enter before moving is a no-op
            done = robot.task_success()
            success = True if done is None else bool(done)
            out.saved.append(rec.save(success))
            out.successes.append(success)
            if print_fn:
                print_fn(f"\nsaved episode {out.saved[-1]} (success={success}, seed {seed})")
            seed += 1
            if max_episodes is not None and len(out.saved) >= max_episodes:
                break
            new_episode()
            continue
        if cmd.toggle_gripper:
            gripper = 0.0 if gripper > 0.5 else 1.0
        obs = robot.observe()
        if not writer.recording:
            if not cmd.moves:
                robot.hold()
                continue
            rec.start()
        rec.step(np.concatenate([cmd.delta, [gripper]]), obs)
        if preview is not None and obs.images:
            _save_preview(preview, next(iter(obs.images.values())))
        if print_fn:
            print_fn("\r" + _status_line(robot, obs, writer.num_episodes, rec.frames, gripper))
    rec.discard()
    return out


def open_writer(out: str | Path, fps: int, image_size: int,
                cameras: tuple[str, ...] = ("front",)):
    """Create ``out`` or append to it (checking it matches this robot's cameras)."""
    from theia_ros.dataset import DatasetWriter

    root = Path(out)
    want = {c: (image_size, image_size) for c in cameras}
    if (root / "meta" / "info.json").exists():
        writer = DatasetWriter.open(root)
        if (writer.cameras != want or writer.state_dim != 7 or writer.fps != fps
                or writer.action_kind is not ActionKind.EE_DELTA):
            got = (f"cameras {writer.cameras}, state_dim {writer.state_dim}, fps "
                   f"{writer.fps}, action_kind {writer.action_kind.value}")
            writer.close()
            raise TheiaError(f"{root}: dataset has {got}; expected cameras {want}, state_dim "
                             f"7, fps {fps}, action_kind ee_delta (sim wx250s)")
        return writer
    return DatasetWriter.create(root, fps=fps, robot_type="wx250s_sim", cameras=want,
                                state_dim=7,
                                action_kind=ActionKind.EE_DELTA)


