"""A live MuJoCo window for ``theia record --robot sim`` on a desktop.

MuJoCo's passive viewer draws the simulation in its own thread while the recorder keeps
stepping it; ``sync()`` after every tick shows the new state. It needs a display: on Linux
an X11 or Wayland session (``DISPLAY`` / ``WAYLAND_DISPLAY``), on macOS the ``mjpython``
launcher. Without one (CI, ssh, containers) it is never tried, because MuJoCo's
``launch_passive`` waits forever for a window that GLFW could not open.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping

from theia_ros.errors import TheiaError

MODES = ("auto", "on", "off")


def display_available(env: Mapping[str, str] | None = None,
                      platform: str | None = None) -> bool:
    """Whether a desktop session exists that a GLFW window could open on."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux"):
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return False  # macOS needs mjpython; Windows is not a target


def want_viewer(mode: str, env: Mapping[str, str] | None = None,
                platform: str | None = None) -> bool:
    """``--viewer auto|on|off`` -> open the window? ``on`` without a display is an error."""
    if mode not in MODES:
        raise TheiaError(f"--viewer {mode!r}: choose from {MODES}")
    if mode == "off":
        return False
    have = display_available(env, platform)
    if mode == "on" and not have:
        raise TheiaError("--viewer on: no display (DISPLAY / WAYLAND_DISPLAY unset); run on a "
                         "desktop session, or use --viewer off and --preview FILE.png")
    return have


class PassiveViewer:
    """MuJoCo's passive viewer on a model/data pair; ``sync`` after each tick."""

    def __init__(self, model, data) -> None:  # mujoco.MjModel, mujoco.MjData
        try:
            import glfw
            import mujoco.viewer
        except (ImportError, RuntimeError) as exc:
            raise TheiaError(f"the MuJoCo viewer is unavailable ({exc}); use --viewer off") \
                from None
        if not glfw.init():  # probe here: a failure inside the viewer thread would hang
            raise TheiaError("cannot open a window on this display (GLFW init failed); "
                             "use --viewer off")
        before = set(threading.enumerate())
        self._handle = mujoco.viewer.launch_passive(model, data, show_left_ui=False,
                                                    show_right_ui=False)
        # the viewer's render thread: joined on close, since tearing GL down under a thread
        # that still draws crashes the process at exit
        self._threads = [t for t in threading.enumerate() if t not in before]

    @property
    def running(self) -> bool:
        return self._handle.is_running()

    def sync(self) -> None:
        """Show the simulation's current state (a closed window is simply not updated)."""
        if self._handle.is_running():
            self._handle.sync()

    def close(self, timeout_s: float = 5.0) -> None:
        self._handle.close()
        for thread in self._threads:
            thread.join(timeout_s)
