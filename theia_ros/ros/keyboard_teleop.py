"""``keyboard_teleop``: drive the recorder's episode services (and, optionally, the arm) from
a terminal.

Episode keys call ``std_srvs/Trigger`` services of the recorder node (``--recorder``, default
``/recorder_node``); with ``--twist`` the motion keys also publish ``geometry_msgs/Twist``
deflections on ``--twist-topic`` (what the recorder's Twist teleop listens to), so a demo can
be recorded without a SpaceMouse. Keys are read raw from the terminal (no Enter needed).

Example::

    keyboard_teleop                       # b Enter x Backspace z, Esc to quit
    keyboard_teleop --twist --twist-topic /spacenav/twist
"""

from __future__ import annotations

import argparse
import select
import sys
import termios
import time
import tty
from typing import Any

from theia_ros.record.keys import KEY_HELP, MOTION_KEYS

# key -> recorder service (relative to the recorder node's name). Enter / Backspace / Esc
# mean save / discard / quit here as in ``theia record``; motion keys are its keys too.
SERVICE_KEYS: dict[str, str] = {
    "b": "start",
    "\r": "save_success",
    "\n": "save_success",
    "x": "save_failure",
    "\x7f": "discard",
    "\x08": "discard",
    "z": "rerecord",
}
TWIST_AXES = (("linear", "x"), ("linear", "y"), ("linear", "z"),
              ("angular", "x"), ("angular", "y"), ("angular", "z"))
QUIT_KEYS = ("\x1b", "\x03")  # Esc, Ctrl-C

HELP = ("b begin | Enter save (success) | x save (failure) | Backspace discard | z re-record | "
        "Esc quit\nwith --twist: " + KEY_HELP.split(", space")[0]
        + "; any other key stops")


def twist_for(key: str, deflection: float) -> dict[str, dict[str, float]]:
    """The Twist fields (``{"linear": {...}, "angular": {...}}``) one motion key means
    (the same key map as ``theia record``: :data:`theia_ros.record.keys.MOTION_KEYS`)."""
    out = {"linear": {"x": 0.0, "y": 0.0, "z": 0.0}, "angular": {"x": 0.0, "y": 0.0, "z": 0.0}}
    if key in MOTION_KEYS:
        index, sign = MOTION_KEYS[key]
        part, axis = TWIST_AXES[index]
        out[part][axis] = sign * deflection
    return out


def _read_key(timeout_s: float) -> str | None:
    ready, _, _ = select.select([sys.stdin], [], [], timeout_s)
    return sys.stdin.read(1) if ready else None


def main(argv: list[str] | None = None) -> int:
    """Console script ``keyboard_teleop``."""
    import rclpy
    from geometry_msgs.msg import Twist
    from std_srvs.srv import Trigger

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recorder", default="/recorder_node")
    parser.add_argument("--twist", action="store_true", help="also publish Twist from keys")
    parser.add_argument("--twist-topic", default="/spacenav/twist")
    parser.add_argument("--deflection", type=float, default=0.6, help="Twist value per key")
    args, ros_args = parser.parse_known_args(argv)
    rclpy.init(args=ros_args)
    node = rclpy.create_node("keyboard_teleop")
    clients: dict[str, Any] = {k: node.create_client(Trigger, f"{args.recorder}/{srv}")
                               for k, srv in SERVICE_KEYS.items()}
    twist_pub = node.create_publisher(Twist, args.twist_topic, 10) if args.twist else None
    if not sys.stdin.isatty():
        print("keyboard_teleop needs a terminal", file=sys.stderr)
        return 2
    old = termios.tcgetattr(sys.stdin)
    print(HELP)
    try:
        tty.setcbreak(sys.stdin.fileno())
        while rclpy.ok():
            key = _read_key(0.1)
            rclpy.spin_once(node, timeout_sec=0.0)
            if key is None:
                continue
            if key in QUIT_KEYS:
                break
            if key in clients:
                client = clients[key]
                if not client.wait_for_service(timeout_sec=1.0):
                    print(f"\r{client.srv_name}: not available")
                    continue
                future = client.call_async(Trigger.Request())
                rclpy.spin_until_future_complete(node, future, timeout_sec=30.0)
                res = future.result()
                ok = "ok" if res is not None and res.success else "REFUSED"
                print(f"\r{SERVICE_KEYS[key]}: {ok}: {res.message if res else 'timeout'}")
            elif twist_pub is not None:
                fields = twist_for(key, args.deflection)
                msg = Twist()
                for part, axes in fields.items():
                    for axis, value in axes.items():
                        setattr(getattr(msg, part), axis, value)
                twist_pub.publish(msg)
            time.sleep(0.0)
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
