"""Teleop commands -> one end-effector delta per control step (ROS-free).

A SpaceMouse (``spacenav`` node: ``geometry_msgs/Twist`` with axes in [-1, 1] and a ``Joy``
for its two buttons) or a gamepad (``sensor_msgs/Joy``) gives a deflection per axis; one
control step (0.2 s at 5 Hz) moves the end effector by ``deflection * scale``:
``[dx, dy, dz] * scale_linear_m`` and ``[droll, dpitch, dyaw] * scale_angular_rad``, in the
arm base frame (the ``EE_DELTA`` action layout). Deflections inside the dead zone are zero;
a command older than ``timeout_s`` counts as released (a dropped teleop link stops the arm).
The gripper keeps its last open/close command.

Robots that take absolute hand poses (Spot, ``EE_ABSOLUTE``) get the same deltas integrated
by :class:`PoseIntegrator` into a target pose, anchored on the pose last *sent* (after the
safety filter), or on the measured pose at start and after any hold, so a clipped step never
winds the target up beyond what the robot was told.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from theia_ros.control.rotations import apply_ee_delta
from theia_ros.errors import TheiaError


@dataclass(frozen=True)
class TeleopScales:
    """Args:
    scale_linear_m: translation per step at full deflection (m).
    scale_angular_rad: rotation per step at full deflection (rad).
    deadzone: deflections below this magnitude are zero.
    timeout_s: commands older than this count as zero.
    joy_axes: Joy axis index for dx, dy, dz, droll, dpitch, dyaw (-1: unused).
    joy_axis_signs: gain/sign per Joy axis.
    open_button, close_button: Joy buttons for the gripper.
    """

    scale_linear_m: float = 0.02
    scale_angular_rad: float = 0.1
    deadzone: float = 0.05
    timeout_s: float = 0.5
    joy_axes: tuple[int, ...] = (1, 0, 4, -1, -1, 3)
    joy_axis_signs: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    open_button: int = 0
    close_button: int = 1

    def __post_init__(self) -> None:
        if len(self.joy_axes) != 6 or len(self.joy_axis_signs) != 6:
            raise TheiaError("teleop: joy_axes and joy_axis_signs need 6 entries (dx, dy, dz, "
                             "droll, dpitch, dyaw)")
        if self.scale_linear_m < 0 or self.scale_angular_rad < 0 or self.timeout_s <= 0:
            raise TheiaError("teleop: scales must be >= 0 and timeout_s > 0")


class TeleopMapper:
    """Latest teleop deflection -> ``[7]`` EE-delta action (see the module docstring)."""

    def __init__(self, scales: TeleopScales, gripper: float = 1.0) -> None:
        self.scales = scales
        self._lock = threading.Lock()
        self._deflection = np.zeros(6)
        self._stamp_s = -np.inf
        self._gripper = float(gripper)

    def _store(self, deflection: np.ndarray, stamp_s: float) -> None:
        d = np.clip(np.nan_to_num(deflection, nan=0.0), -1.0, 1.0)
        d[np.abs(d) < self.scales.deadzone] = 0.0
        with self._lock:
            self._deflection, self._stamp_s = d, float(stamp_s)

    def on_twist(self, linear: Sequence[float], angular: Sequence[float], stamp_s: float) -> None:
        """SpaceMouse ``Twist``: linear x/y/z and angular x/y/z deflections in [-1, 1]."""
        self._store(np.array([*linear, *angular], dtype=np.float64), stamp_s)

    def on_joy(self, axes: Sequence[float], buttons: Sequence[int], stamp_s: float,
               use_axes: bool = True) -> None:
        """Gamepad ``Joy`` (``use_axes``) and/or the gripper buttons of any Joy."""
        s = self.scales
        if use_axes:
            d = np.zeros(6)
            for i, (axis, sign) in enumerate(zip(s.joy_axes, s.joy_axis_signs)):
                if 0 <= axis < len(axes):
                    d[i] = sign * float(axes[axis])
            self._store(d, stamp_s)
        with self._lock:
            if s.open_button < len(buttons) and buttons[s.open_button]:
                self._gripper = 1.0
            elif s.close_button < len(buttons) and buttons[s.close_button]:
                self._gripper = 0.0

    def action(self, now_s: float) -> np.ndarray:
        """``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` for the step starting at ``now_s``."""
        s = self.scales
        with self._lock:
            d = self._deflection.copy() if now_s - self._stamp_s <= s.timeout_s else np.zeros(6)
            grip = self._gripper
        return np.concatenate([d[:3] * s.scale_linear_m, d[3:] * s.scale_angular_rad, [grip]])

    def set_gripper(self, fraction: float) -> None:
        with self._lock:
            self._gripper = float(np.clip(fraction, 0.0, 1.0))


class PoseIntegrator:
    """EE deltas ``[7]`` -> absolute targets ``[7]`` (xyz m, extrinsic rpy rad, gripper).

    ``target`` does not move the anchor: only :meth:`commit` (the pose actually sent) does,
    so a step the control loop skipped or the safety filter refused is not counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._anchor: np.ndarray | None = None  # [6] last sent pose

    @property
    def anchor(self) -> np.ndarray | None:
        with self._lock:
            return None if self._anchor is None else self._anchor.copy()

    def target(self, delta: np.ndarray, measured_pose: np.ndarray) -> np.ndarray:
        """``[7]``: the anchor (else ``measured_pose`` ``[6]``) moved by ``delta[:6]`` (base-
        frame translation, pre-multiplied rotation, as the safety filter reads EE deltas),
        with ``delta[6]`` as the gripper."""
        delta = np.asarray(delta, dtype=np.float64).reshape(-1)
        with self._lock:
            base = self._anchor if self._anchor is not None else measured_pose
        pose = apply_ee_delta(np.asarray(base, dtype=np.float64).reshape(6), delta[:6])
        return np.concatenate([pose, delta[6:7]])

    def commit(self, sent_pose: np.ndarray) -> None:
        """The pose ``[6]`` (or a ``[7]`` action) the robot was sent becomes the anchor."""
        pose = np.asarray(sent_pose, dtype=np.float64).reshape(-1)[:6].copy()
        with self._lock:
            self._anchor = pose if np.all(np.isfinite(pose)) else None

    def reset(self) -> None:
        """Re-anchor on the measured pose next time (after a hold, pause or fault)."""
        with self._lock:
            self._anchor = None
