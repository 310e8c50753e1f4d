"""The robot-adapter seam: observations in, actions out, the same for WidowX, Spot and the sim.

Conventions (units in names, shapes in comments):
- Images are uint8 RGB ``[H, W, 3]``.
- Poses are ``[x, y, z, roll, pitch, yaw]`` in metres / radians in the arm base frame
  (Spot: body frame unless the adapter is configured for odom). Euler angles are extrinsic
  XYZ (roll about x, then pitch about y, then yaw about z, all in the fixed frame).
- ``gripper`` is the open fraction in ``[0, 1]`` (1 = fully open).
"""

from __future__ import annotations

import enum
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


class ActionKind(str, enum.Enum):
    """What the 7 numbers of an action vector mean."""

    EE_DELTA = "ee_delta"  # WidowX: [dx, dy, dz, droll, dpitch, dyaw] in the base frame + gripper
    EE_ABSOLUTE = "ee_absolute"  # Spot: [x, y, z, roll, pitch, yaw] + gripper


ACTION_DIM = 7  # xyz (3) + rpy (3) + gripper (1)


@dataclass(frozen=True)
class Action:
    """One command to a robot. ``to_vector``/``from_vector`` give the policy's 7-vector layout."""

    kind: ActionKind
    xyz_m: np.ndarray  # [3]
    rpy_rad: np.ndarray  # [3]
    gripper: float  # open fraction in [0, 1]

    def to_vector(self) -> np.ndarray:
        """``[7]`` float64: xyz, rpy, gripper."""
        return np.concatenate([self.xyz_m, self.rpy_rad, [self.gripper]]).astype(np.float64)

    @classmethod
    def from_vector(cls, kind: ActionKind, vec: np.ndarray) -> Action:
        vec = np.asarray(vec, dtype=np.float64).reshape(-1)
        if vec.shape[0] != ACTION_DIM:
            raise ValueError(f"action vector must have {ACTION_DIM} numbers, got {vec.shape[0]}")
        return cls(kind, vec[:3].copy(), vec[3:6].copy(), float(vec[6]))

    def is_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.to_vector())))


@dataclass(frozen=True)
class Observation:
    """What the robot sensed. ``stamps_s`` holds per-sensor capture times (monotonic clock)."""

    images: dict[str, np.ndarray]  # camera name -> uint8 RGB [H, W, 3]
    joint_positions: np.ndarray  # [J] rad (arm joints; fingers excluded)
    ee_pose: np.ndarray  # [6] xyz m + rpy rad in the base frame
    gripper: float  # measured open fraction in [0, 1]
    stamp_s: float  # the oldest sensor capture time (monotonic seconds)
    # sensor -> capture time: camera name for images, "joints" for the joint state
    stamps_s: dict[str, float] = field(default_factory=dict)

    def state_vector(self) -> np.ndarray:
        """Policy state input ``[J + 1]``: joint positions then gripper."""
        return np.concatenate([self.joint_positions, [self.gripper]]).astype(np.float32)


class RobotAdapter(ABC):
    """A robot the control core can drive. Use as a context manager: connect/disconnect.

    ``apply`` returns the action actually sent (after the adapter's own clipping or an IK
    fallback); it never raises on a single bad step: it holds and reports instead.

    A park (``safe_stop``) takes seconds; an e-stop must not wait for it. The control loop
    calls :meth:`interrupt_park` from another thread, and ``safe_stop`` implementations wait
    through :meth:`park_wait` (or check :attr:`park_interrupted` between segments): once
    interrupted they hold where the arm is and return. The interruption stays until
    :meth:`allow_park` (the e-stop was reset), so nothing parks after an e-stop either.
    """

    action_kind: ActionKind = ActionKind.EE_DELTA
    name: str = "robot"
    # A latched fault description (None when healthy); the control loop checks it after
    # every apply and safe-stops. Adapters set it on lease loss, motor faults, e-stop, ...
    fault: object | None = None

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections / start the simulation."""

    def disconnect(self) -> None:  # noqa: B027 - optional hook
        """Release everything; must be safe to call twice."""

    def __enter__(self) -> RobotAdapter:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.safe_stop()
        finally:
            self.disconnect()

    @abstractmethod
    def observe(self) -> Observation:
        """Latest sensor readings."""

    @abstractmethod
    def apply(self, action: Action) -> Action:
        """Send one (already safety-filtered) action; return what was actually sent."""

    @abstractmethod
    def hold(self) -> None:
        """Stop moving and keep the current pose."""

    @abstractmethod
    def safe_stop(self) -> None:
        """Hold, then park/stow the arm. Called on shutdown and on faults."""

    # -- park interruption (thread-safe; see the class docstring) -------------------------
    @property
    def _park_event(self) -> threading.Event:
        event = self.__dict__.get("_park_interrupt")
        if event is None:  # created on first use: adapters need not call a base __init__
            event = self.__dict__.setdefault("_park_interrupt", threading.Event())
        return event

    def interrupt_park(self) -> None:
        """End a running ``safe_stop`` where it is (and skip later ones): an e-stop."""
        self._park_event.set()

    def allow_park(self) -> None:
        """Parking may happen again (the e-stop was reset)."""
        self._park_event.clear()

    @property
    def park_interrupted(self) -> bool:
        return self._park_event.is_set()

    def park_wait(self, seconds: float) -> bool:
        """Let a commanded park segment run for ``seconds``; False, at once, when the park
        was interrupted (the caller then holds and returns)."""
        return not self._park_event.wait(max(0.0, seconds))

    def clear_fault(self) -> None:
        """Forget the latched fault once the operator has fixed its cause."""
        self.fault = None

    def recover(self) -> bool:
        """Make the robot commandable again after a fault (e.g. re-acquire a lease, power
        on); True when commanding may resume. By default the fault is only cleared."""
        self.clear_fault()
        return True

    def task_success(self) -> bool | None:
        """Whether the task is done, where the robot can tell (a sim's detector); None
        when it cannot, as on a real robot, where the operator decides."""
        return None

    def status_text(self) -> str:
        """A short task status for a teleop status line ("" when there is none)."""
        return ""
