"""``theia record``: teleoperate a robot with the keyboard and record demonstrations.

Every control tick (5 Hz) the recorder observes, turns the keys pressed since the last tick
into one end-effector delta, passes it through the same safety filter the policy uses,
applies it, and appends (image, joint state, EE pose, the action actually sent) to a
dataset in the LeRobot v3 layout (``theia_ros.dataset.DatasetWriter``), the same format the
demo's scripted recorder and ``theia train-policy`` use. Idle ticks before the first
command of an episode are not recorded.

Keys (the terminal is put in raw mode; a camera window is impossible headless, so the state
is printed on one line and ``--preview`` keeps a PNG of the camera view up to date)::

    w / s   +x / -x (away from / toward the base)     q / e   yaw  + / -
    a / d   +y / -y (left / right)                     j / l   roll + / -
    r / f   +z / -z (up / down)                        i / k   pitch + / -
    space   toggle the gripper (open <-> closed)
    Enter   save the episode (success = the sim's door detector) and start the next one
    Backspace  discard the episode and start again      Esc    quit (an unsaved episode
                                                                 is discarded)

Example::

    theia record --robot sim --out data/door_teleop --seed 100 --preview /tmp/view.png
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from theia_ros.control.clock import Clock, MonotonicClock
from theia_ros.control.safety import SafetyFilter, SafetyLimits
from theia_ros.errors import TheiaError
from theia_ros.sim.success import DoorStage
from theia_ros.types import Action, ActionKind, Observation, RobotAdapter

TASK = "open the fridge door"
STEP_M = 0.01  # translation per key press
STEP_RAD = 0.05  # rotation per key press
MAX_PRESSES = 3  # presses of one key that count in one tick (key repeat bursts)

# key -> (action index, sign)
MOTION_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "j": (3, 1.0), "l": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "q": (5, 1.0), "e": (5, -1.0),
}
KEY_HELP = ("keys: w/s a/d r/f = x y z, j/l i/k q/e = roll pitch yaw, space = gripper, "
            "Enter = save, Backspace = discard, Esc = quit")
SAVE, DISCARD, QUIT, GRIPPER = "save", "discard", "quit", "gripper"
CONTROL_KEYS = {"\r": SAVE, "\n": SAVE, "\x7f": DISCARD, "\x08": DISCARD, "\x1b": QUIT,
                " ": GRIPPER}


def parse_keys(data: str) -> list[str]:
    """Raw terminal bytes (decoded) -> key names: motion letters, or SAVE/DISCARD/QUIT/GRIPPER.

    Escape sequences (arrow keys: ``ESC [ A``) are skipped, a lone ESC is QUIT; unknown
    characters are ignored; letters are case-insensitive.
    """
    keys: list[str] = []
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "\x1b" and i + 1 < len(data) and data[i + 1] in "[O":
            i += 2
            while i < len(data) and not data[i].isalpha() and data[i] != "~":
                i += 1
            i += 1
            continue
        low = ch.lower()
        if low in MOTION_KEYS:
            keys.append(low)
        elif ch in CONTROL_KEYS:
            keys.append(CONTROL_KEYS[ch])
        i += 1
    return keys


@dataclass
class Command:
    """What one tick's keys ask for: an EE delta ``[6]``, gripper toggles, episode control."""

    delta: np.ndarray = field(default_factory=lambda: np.zeros(6))
    toggle_gripper: bool = False
    control: str | None = None  # SAVE | DISCARD | QUIT

    @property
    def moves(self) -> bool:
        return bool(np.any(self.delta != 0.0)) or self.toggle_gripper


def keys_to_command(keys: Iterable[str], step_m: float = STEP_M,
                    step_rad: float = STEP_RAD) -> Command:
    """Sum the motion keys (at most ``MAX_PRESSES`` per key); the first control key wins."""
    cmd = Command()
    counts: dict[str, int] = {}
    toggles = 0
    for key in keys:
        if key in MOTION_KEYS:
            counts[key] = counts.get(key, 0) + 1
            if counts[key] <= MAX_PRESSES:
                idx, sign = MOTION_KEYS[key]
                cmd.delta[idx] += sign * (step_m if idx < 3 else step_rad)
        elif key == GRIPPER:
            toggles += 1
        elif cmd.control is None:
            cmd.control = key
    cmd.toggle_gripper = toggles % 2 == 1
    return cmd


class KeySource(Protocol):
    """Keys pressed since the last call (never blocks)."""

    def poll(self) -> list[str]: ...


class ScriptedKeys:
    """Keys from a script, one string per tick (tests, demos, replaying a session)."""

    def __init__(self, ticks: Iterable[str]) -> None:
        self._ticks: Iterator[str] = iter(ticks)

    def poll(self) -> list[str]:
        try:
            return parse_keys(next(self._ticks))
        except StopIteration:
            return [QUIT]


class TerminalKeys:
    """Raw-mode keyboard on a TTY file descriptor; restores the terminal on ``close``."""

    def __init__(self, fd: int | None = None) -> None:
        import termios
        import tty

        self.fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise TheiaError("theia record needs an interactive terminal on stdin (keyboard "
                             "teleop); use a real terminal, not a pipe")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def poll(self) -> list[str]:
        data = b""
        while select.select([self.fd], [], [], 0.0)[0]:
            chunk = os.read(self.fd, 1024)
            if not chunk:
                break
            data += chunk
        return parse_keys(data.decode("utf-8", errors="ignore"))

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


class EpisodeRecorder:
    """One teleop step = observe -> command -> safety filter -> apply -> add_frame.

    Shared by the keyboard recorder and the demo's scripted recorder, so both write the
    same frames: the observation the command was chosen from and the action actually sent.

    Args:
        robot: a connected adapter (``EE_DELTA`` actions).
        writer: an open ``theia_ros.dataset.DatasetWriter`` with the robot's camera(s).
        safety: the filter every command passes.
        task: episode task text.
        stamp: store the observation's capture time (real-time recording) instead of the
            control grid ``frame_index / fps``.
    """

    def __init__(self, robot: RobotAdapter, writer, safety: SafetyFilter,
                 task: str = TASK, stamp: bool = False) -> None:
        self.robot = robot
        self.writer = writer
        self.safety = safety
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


def _status_line(robot, obs: Observation, episode: int, frames: int, gripper_cmd: float) -> str:
    x, y, z = obs.ee_pose[:3]
    line = (f"ep {episode:3d} | frames {frames:3d} | ee x {x:+.3f} y {y:+.3f} z {z:+.3f} m | "
            f"gripper {'open' if gripper_cmd > 0.5 else 'closed'}")
    env = getattr(robot, "env", None)
    if env is not None and hasattr(env, "door_angle_rad"):
        line += f" | door {np.degrees(env.door_angle_rad()):5.1f} deg ({env.stage().name})"
    return line


def _save_preview(path: Path, image: np.ndarray) -> None:
    import cv2

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)


def run_session(robot, writer, keys: KeySource, safety: SafetyFilter, *,
                first_seed: int = 0, max_episodes: int | None = None,
                clock: Clock | None = None, rate_hz: float = 5.0,
                max_ticks: int | None = None, preview: Path | None = None,
                print_fn: Callable[[str], None] | None = None) -> SessionResult:
    """The keyboard recording session on a sim robot (``reset(seed)``, ``success()``).

    One tick per period on ``clock`` (a ``ManualClock`` runs a scripted key stream as fast
    as possible). Episodes use seeds ``first_seed, first_seed + 1, ...``.
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
    deadline = clock.now()
    while max_ticks is None or out.ticks < max_ticks:
        now = clock.now()
        if now < deadline:
            clock.sleep(deadline - now)
        deadline = max(deadline + period_s, clock.now())
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
            success = bool(robot.success() >= DoorStage.FULLY_OPEN) \
                if hasattr(robot, "success") else True
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", choices=["sim", "spot"], required=True,
                        help="sim: keyboard teleop of the MuJoCo twin; spot: the scripted "
                             "drawer-opening policy through bosdyn-client (the real WidowX "
                             "records through recorder_node)")
    parser.add_argument("--out", required=True, help="dataset directory (created, or appended)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed of the first episode")
    parser.add_argument("--episodes", type=int, default=None, help="stop after N saved episodes")
    parser.add_argument("--rate", type=float, default=5.0, help="control rate in Hz (5)")
    parser.add_argument("--image-size", type=int, default=224, help="camera resolution (224)")
    parser.add_argument("--preview", default=None,
                        help="PNG file kept up to date with the camera view")
    parser.add_argument("--scripted", action="store_true",
                        help="spot: record the scripted drawer-opening policy (no person)")
    parser.add_argument("--config", default="config/spot_drawer.yaml",
                        help="spot: task YAML with the spot: and safety: blocks")
    parser.add_argument("--script", default=None,
                        help="spot: YAML of DrawerScript fields (handle pose, pull distance)")


def open_writer(out: str | Path, fps: int, image_size: int):
    """Create ``out`` or append to it (checking it matches this robot's camera)."""
    from theia_ros.dataset import DatasetWriter

    root = Path(out)
    if (root / "meta" / "info.json").exists():
        writer = DatasetWriter.open(root)
        want = {"front": (image_size, image_size)}
        if (writer.cameras != want or writer.state_dim != 7 or writer.fps != fps
                or writer.action_kind is not ActionKind.EE_DELTA):
            got = (f"cameras {writer.cameras}, state_dim {writer.state_dim}, fps "
                   f"{writer.fps}, action_kind {writer.action_kind.value}")
            writer.close()
            raise TheiaError(f"{root}: dataset has {got}; expected cameras {want}, state_dim "
                             f"7, fps {fps}, action_kind ee_delta (sim wx250s)")
        return writer
    return DatasetWriter.create(root, fps=fps, robot_type="wx250s_sim",
                                cameras={"front": (image_size, image_size)}, state_dim=7,
                                action_kind=ActionKind.EE_DELTA)


def main(args: argparse.Namespace) -> int:
    if args.robot == "spot":
        from theia_ros.spot_record import main_spot

        return main_spot(args)
    from theia_ros.adapters.sim import SimWidowX

    if args.rate <= 0 or not float(args.rate).is_integer():
        raise TheiaError(f"--rate must be a positive whole number of Hz, got {args.rate}")
    writer = open_writer(args.out, int(args.rate), args.image_size)
    keys = TerminalKeys()
    robot = SimWidowX(seed=args.seed, image_size=args.image_size, control_rate_hz=args.rate)
    print(KEY_HELP, file=sys.stderr)
    try:
        robot.connect()
        result = run_session(robot, writer, keys, SafetyFilter(SafetyLimits.wx250s()),
                             first_seed=args.seed, max_episodes=args.episodes,
                             rate_hz=args.rate,
                             preview=Path(args.preview) if args.preview else None,
                             print_fn=lambda s: print(s, end="", flush=True, file=sys.stderr))
    finally:
        keys.close()
        robot.disconnect()
        writer.close()
    print(f"\nsaved {len(result.saved)} episode(s) ({sum(result.successes)} successful), "
          f"discarded {result.discarded}; dataset {args.out} now has {writer.num_episodes}",
          file=sys.stderr)
    return 0
