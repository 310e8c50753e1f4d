"""``theia record``: teleoperate a robot with the keyboard and record demonstrations.

Every control tick (5 Hz) the recorder observes, turns the keys pressed since the last tick
into one end-effector delta, passes it through the same safety filter the policy uses,
applies it, and appends (image, joint state, EE pose, the action actually sent) to a
dataset in the LeRobot v3 layout (``theia_ros.dataset.DatasetWriter``), the same format the
demo's scripted recorder and ``theia train-policy`` use. Idle ticks before the first
command of an episode are not recorded.

Keys (the terminal is put in raw mode; the state is printed on one line, ``--preview`` keeps a
PNG of the camera view up to date, and on a desktop MuJoCo's viewer shows the scene live)::

    w / s   +x / -x (away from / toward the base)     q / e   yaw  + / -
    a / d   +y / -y (left / right)                     j / l   roll + / -
    r / f   +z / -z (up / down)                        i / k   pitch + / -
    space   toggle the gripper (open <-> closed)
    Enter   save the episode (success = the sim's door detector) and start the next one
    Backspace  discard the episode and start again      Esc    quit (an unsaved episode
                                                                 is discarded)

Without a terminal (a pipe, a script, CI) give the keys as a script: ``--keys`` or
``--keys-file`` (``-`` = stdin), one tick per character, ``.`` an idle tick, a newline or
``\\n`` saves, ``\\b`` discards; the script runs as fast as the sim steps (real time when the
viewer is open) and the session ends with it.

Example::

    theia record --robot sim --out data/door_teleop --seed 100 --preview /tmp/view.png
    theia record --robot sim --out data/door_scripted --keys 'wwwwrr..ddd\\n' --viewer off
    printf 'wwwr\\nsss\\n' | theia record --robot sim --out data/piped --keys-file -
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

from theia_ros.control.safety import SafetyFilter, SafetyLimits
from theia_ros.errors import TheiaError
from theia_ros.record.keys import KEY_HELP, SCRIPT_HELP, ScriptedKeys, TerminalKeys, script_ticks
from theia_ros.record.session import open_writer, run_session
from theia_ros.record.spot import record_spot
from theia_ros.record.spot_script import DrawerScript


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
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--keys", default=None, metavar="SCRIPT",
                      help=f"sim: scripted keys instead of the terminal ({SCRIPT_HELP})")
    keys.add_argument("--keys-file", default=None, metavar="FILE",
                      help="sim: read the key script from FILE ('-' = stdin)")
    parser.add_argument("--viewer", choices=("auto", "on", "off"), default="auto",
                        help="sim: MuJoCo's live viewer window (auto: when a display exists)")
    parser.add_argument("--scripted", action="store_true",
                        help="spot: record the scripted drawer-opening policy (no person)")
    parser.add_argument("--sim", action="store_true",
                        help="spot: record against the simulated Spot in front of the MuJoCo "
                             "drawer (theia_ros.sim.spot, a stand-in; only successes kept)")
    parser.add_argument("--config", default="config/spot_drawer.yaml",
                        help="spot: task YAML with the spot: and safety: blocks")
    parser.add_argument("--script", default=None,
                        help="spot: YAML of DrawerScript fields (handle pose, pull distance)")


def main(args: argparse.Namespace) -> int:
    if args.robot == "spot":
        return main_spot(args)
    from theia_ros.control.clock import ManualClock, MonotonicClock
    from theia_ros.record.viewer import PassiveViewer, want_viewer
    from theia_ros.robots.sim import SimWidowX

    if args.rate <= 0 or not float(args.rate).is_integer():
        raise TheiaError(f"--rate must be a positive whole number of Hz, got {args.rate}")
    show = want_viewer(args.viewer)
    script = _key_script(args)  # every input problem is reported before the dataset exists
    # a script needs no human pace; with a window open it plays in real time to be watched
    clock = ManualClock() if script is not None and not show else MonotonicClock()
    robot = SimWidowX(seed=args.seed, image_size=args.image_size, control_rate_hz=args.rate,
                      clock=clock.now)
    keys = ScriptedKeys(script) if script is not None else TerminalKeys()  # raw mode from here
    writer = viewer = None
    try:
        writer = open_writer(args.out, int(args.rate), args.image_size)
        robot.connect()
        if show:
            try:
                viewer = PassiveViewer(robot.env.model, robot.env.data)
            except TheiaError as exc:
                if args.viewer == "on":
                    raise
                print(f"no live viewer: {exc}", file=sys.stderr)
        if script is None:
            print(KEY_HELP, file=sys.stderr)
        result = run_session(robot, writer, keys, SafetyFilter(SafetyLimits.wx250s()),
                             first_seed=args.seed, max_episodes=args.episodes,
                             clock=clock, rate_hz=args.rate,
                             preview=Path(args.preview) if args.preview else None,
                             print_fn=lambda s: print(s, end="", flush=True, file=sys.stderr),
                             on_tick=viewer.sync if viewer is not None else None)
    finally:  # the dataset first: nothing after it may cost a recorded episode
        keys.close()
        if writer is not None:
            writer.close()
        if viewer is not None:
            viewer.close()
        robot.disconnect()
    print(f"\nsaved {len(result.saved)} episode(s) ({sum(result.successes)} successful), "
          f"discarded {result.discarded}; dataset {args.out} now has {writer.num_episodes}",
          file=sys.stderr)
    return 0


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False  # closed, replaced or captured stdin: not a keyboard


def _key_script(args: argparse.Namespace) -> list[str] | None:
    """The ticks of ``--keys``/``--keys-file``, or None for the interactive terminal.

    Raises before anything is created when stdin is no terminal and no script is given.
    """
    if args.keys is not None:
        return script_ticks(args.keys)
    if args.keys_file is not None:
        if args.keys_file == "-":
            return script_ticks(sys.stdin.read())
        try:
            return script_ticks(Path(args.keys_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise TheiaError(f"--keys-file {args.keys_file}: cannot read ({exc.strerror})") \
                from None
    if not _stdin_is_terminal():
        raise TheiaError("stdin is not a terminal (piped or redirected), so keys cannot be "
                         "read from a keyboard; pass --keys 'wwwr...' or --keys-file FILE "
                         "('-' reads the pipe). Nothing was created")
    return None


def main_spot(args: argparse.Namespace) -> int:
    """``theia record --robot spot --scripted``: task YAML (``--config``) -> record_spot.

    Reads ``args.config`` (task YAML with a ``spot:`` block and ``safety:``), ``args.script``
    (optional YAML of :class:`DrawerScript` fields), ``args.out``, ``args.episodes``,
    ``args.seed`` and ``args.scripted``.
    """
    import yaml

    from theia_ros.ros.task_config import base_limits, load_task_config

    if not getattr(args, "scripted", False):
        raise TheiaError("theia record --robot spot records scripted demonstrations only: add "
                         "--scripted (gamepad teleop on Spot: recorder_node with robot:=spot)")
    if getattr(args, "sim", False):
        from theia_ros.sim.spot.drawer_task import record_drawer_demos

        # the dataset is filled up to --episodes (an interrupted run continues its seeds)
        res = record_drawer_demos(args.out, int(args.episodes or 1),
                                  first_seed=int(getattr(args, "seed", 0) or 0))
        if res is None:
            print(f"{args.out} already holds {args.episodes or 1} simulated Spot episode(s)")
        else:
            print(f"saved {len(res.episodes)} successful simulated Spot episode(s) of "
                  f"{res.attempts} attempts to {args.out}")
        return 0
    config_path = getattr(args, "config", None) or "config/spot_drawer.yaml"
    task_cfg = load_task_config(config_path)
    if task_cfg.robot != "spot":
        raise TheiaError(f"{config_path}: robot is {task_cfg.robot!r}; --robot spot needs a "
                         "task config with robot: spot")
    spot_cfg = task_cfg.spot_config()
    rate_hz = task_cfg.control.get("rate_hz")
    if rate_hz is not None and abs(float(rate_hz) - spot_cfg.rate_hz) > 1e-9:
        raise TheiaError(f"{config_path}: control.rate_hz ({rate_hz}) and spot.rate_hz "
                         f"({spot_cfg.rate_hz}) differ; the recording rate must be one")
    script = DrawerScript()
    script_path = getattr(args, "script", None)
    if script_path:
        path = Path(script_path)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TheiaError(f"{path}: cannot read the drawer script ({exc})") from None
        if not isinstance(doc, dict):
            raise TheiaError(f"{path}: expected a mapping of DrawerScript fields")
        script = DrawerScript.from_mapping(doc, source=str(path))
    fresh = task_cfg.freshness({"cameras": list(spot_cfg.cameras)})
    result = record_spot(spot_cfg, args.out, int(args.episodes or 1), script=script,
                         limits=task_cfg.safety_limits(base_limits(task_cfg)),
                         freshness=fresh, seed=int(getattr(args, "seed", 0) or 0))
    print(f"saved {len(result.episodes)} Spot episode(s) ({sum(result.successes)} "
          f"successful) to {args.out}")
    return 0
