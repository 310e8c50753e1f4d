"""Keyboard teleop keys -> one end-effector delta per control tick.

Shared by ``theia record`` (terminal keys) and the ROS ``keyboard_teleop`` node, so a key
means the same motion everywhere::

    w / s   +x / -x (away from / toward the base)     q / e   yaw  + / -
    a / d   +y / -y (left / right)                     j / l   roll + / -
    r / f   +z / -z (up / down)                        i / k   pitch + / -
    space   toggle the gripper (open <-> closed)
    Enter   save the episode, Backspace discard it, Esc quit
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from theia_ros.errors import TheiaError

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


SCRIPT_IDLE = "."  # a tick with no key pressed
SCRIPT_ESCAPES = {"n": "\r", "b": "\x7f", "e": "\x1b"}  # Enter, Backspace, Esc
SCRIPT_HELP = ("one tick per character: w/s a/d r/f q/e j/l i/k as on the keyboard, space = "
               "gripper, '.' = idle tick, newline or \\n = save (Enter), \\b = discard, "
               "\\e = quit; the session quits at the end of the script")


def script_ticks(text: str) -> list[str]:
    """A key script (``--keys``/``--keys-file``) -> one key string per tick.

    Every character is one tick (``wwwr`` = three ticks forward, one up); see
    :data:`SCRIPT_HELP`. An unknown character is an error rather than a silent idle tick.
    """
    ticks: list[str] = []
    i = 0
    text = text.replace("\r\n", "\n")
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in SCRIPT_ESCAPES:
            ticks.append(SCRIPT_ESCAPES[text[i + 1]])
            i += 2
            continue
        if ch == SCRIPT_IDLE:
            ticks.append("")
        elif ch == "\n":
            ticks.append("\r")
        elif ch.lower() in MOTION_KEYS or ch in CONTROL_KEYS:
            ticks.append(ch)
        else:
            raise TheiaError(f"key script: {ch!r} at position {i} is not a key ({SCRIPT_HELP})")
        i += 1
    return ticks


class KeySource(Protocol):
    """Keys pressed since the last call (never blocks)."""

    def poll(self) -> list[str]: ...

    def close(self) -> None: ...


class ScriptedKeys:
    """Keys from a script, one string per tick (tests, demos, replaying a session)."""

    def __init__(self, ticks: Iterable[str]) -> None:
        self._ticks: Iterator[str] = iter(ticks)

    def poll(self) -> list[str]:
        try:
            return parse_keys(next(self._ticks))
        except StopIteration:
            return [QUIT]

    def close(self) -> None:
        """Nothing to restore (the same life cycle as :class:`TerminalKeys`)."""


class TerminalKeys:
    """Raw-mode keyboard on a TTY file descriptor; restores the terminal on ``close``."""

    def __init__(self, fd: int | None = None) -> None:
        import termios
        import tty

        self.fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise TheiaError("theia record needs an interactive terminal on stdin (keyboard "
                             "teleop); for piped or scripted keys pass --keys 'wwwr...' or "
                             "--keys-file FILE ('-' reads stdin)")
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
