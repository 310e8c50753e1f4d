"""A scripted drawer-opening policy for Spot's arm: absolute hand poses, one per control tick.

The paper's Spot demonstrations (App. D.3.2) were collected with a scripted policy rather than
a person. This one knows where the drawer handle is (a hand pose in the body frame, measured
once, e.g. by teleoperating the hand onto the handle and reading ``observe().ee_pose``) and
emits, from wherever the hand starts:

1. ``approach``: to a pre-grasp pose ``approach_offset_m`` in front of the handle (along the
   pull axis), open;
2. ``insert``: onto the handle, open;
3. ``close``: ``close_ticks`` ticks on the handle closing the claw;
4. ``pull``: back along the pull axis by ``pull_distance_m``, closed, then ``settle_ticks``
   there;
5. ``release``: ``release_ticks`` ticks opening the claw;
6. ``retreat``: a further ``retreat_m`` back, open.

Between episodes an unrecorded ``reset`` plan brings the hand to a start pose in front of the
handle, jittered per episode (seeded) so the demonstrations differ. Segments are straight
lines (position) and geodesics (rotation) at ``speed_m_s`` / ``angular_speed_rad_s``, so every
step stays inside the safety filter's per-tick limits; plans outside the workspace box are
refused up front rather than clipped into a wrong demonstration.

The policy only moves on to the next waypoint once the control loop reports the current one
*sent* (:meth:`ScriptedDrawerPolicy.advance`), so a held or skipped tick repeats it instead of
leaving a gap. Torch-free and bosdyn-free (pure numpy), like the rest of ``theia_ros``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from theia_ros.control.rotations import matrix_to_rpy, rotation_exp, rotation_log, rpy_to_matrix
from theia_ros.errors import TheiaError
from theia_ros.types import Observation

OPEN, CLOSED = 1.0, 0.0
DEMO_PHASES = ("approach", "insert", "close", "pull", "release", "retreat")


@dataclass(frozen=True)
class DrawerScript:
    """Args (body frame, metres / radians):
    handle_xyz_m / handle_rpy_rad: the hand pose that grasps the handle.
    start_offset_m: start pose = handle + this (orientation: the handle's).
    start_jitter_m: each start coordinate is moved by a uniform draw in +-this (seeded).
    start_xyz_m / start_rpy_rad: optional start pose in the body frame, the same whatever the
        handle's place (the paper's robot walked to a random pose and started from its own
        arm pose); unset: ``start_offset_m`` from the handle.
    approach_offset_m: the pre-grasp pose is this far in front of the handle (-x, see
        ``pull_along_grasp``).
    pull_distance_m: how far the closed claw pulls back (-x, see ``pull_along_grasp``).
    retreat_m: how far the open hand backs off after releasing.
    speed_m_s / angular_speed_rad_s: hand speed along the segments.
    close_ticks / release_ticks: ticks spent closing / opening the claw.
    pull_along_grasp: approach, pull and retreat along the grasp's heading (its yaw) instead
        of body -x: the drawer faces the robot at an angle.
    grasp_settle_ticks: ticks the open claw waits on the handle before closing (the hand
        reaches a streamed target about a period and a margin after it is sent).
    settle_ticks: ticks the pull's end is held (claw closed) before releasing: the robot
        reaches each streamed target about a period and a margin after it is sent, and
        success is judged when the release begins.
    success_tolerance_m: success needs the measured hand this close to the pull's end.
    grasp_min_open: if set, success also needs the measured claw open fraction at the end of
        the pull to be at least this (a handle in the claw keeps it from closing fully).
    """

    # defaults: a level hand on a handle at hip height in front of a standing Spot, every
    # pose of the plan (start jitter included) well inside the arm's reach and wrist limits
    handle_xyz_m: tuple[float, float, float] = (0.90, 0.0, 0.15)
    handle_rpy_rad: tuple[float, float, float] = (0.0, 0.0, 0.0)
    start_offset_m: tuple[float, float, float] = (-0.20, 0.0, 0.12)
    start_xyz_m: tuple[float, float, float] | None = None
    start_rpy_rad: tuple[float, float, float] | None = None
    start_jitter_m: float = 0.03
    approach_offset_m: float = 0.10
    pull_distance_m: float = 0.20
    retreat_m: float = 0.05
    speed_m_s: float = 0.15
    angular_speed_rad_s: float = 0.6
    close_ticks: int = 3
    grasp_settle_ticks: int = 0
    pull_along_grasp: bool = False
    release_ticks: int = 2
    settle_ticks: int = 4
    success_tolerance_m: float = 0.03
    grasp_min_open: float | None = None

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> TheiaError:
            return TheiaError(f"drawer script field {name!r}: expected {expected}, got "
                              f"{getattr(self, name)!r}")

        for name in ("handle_xyz_m", "handle_rpy_rad", "start_offset_m", "start_xyz_m",
                     "start_rpy_rad"):
            if getattr(self, name) is None and name in ("start_xyz_m", "start_rpy_rad"):
                continue
            try:
                value = tuple(float(v) for v in getattr(self, name))
            except (TypeError, ValueError):
                raise bad(name, "3 numbers") from None
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise bad(name, "3 finite numbers")
            object.__setattr__(self, name, value)
        for name in ("speed_m_s", "angular_speed_rad_s", "success_tolerance_m"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise bad(name, "a positive number")
        for name in ("start_jitter_m", "approach_offset_m", "pull_distance_m", "retreat_m"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise bad(name, "a number >= 0")
        if self.pull_distance_m <= 0:
            raise bad("pull_distance_m", "a positive distance")
        for name in ("settle_ticks", "grasp_settle_ticks"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise bad(name, "an integer >= 0")
        for name in ("close_ticks", "release_ticks"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise bad(name, "an integer >= 1")
        if self.grasp_min_open is not None and not 0.0 < self.grasp_min_open < 1.0:
            raise bad("grasp_min_open", "null or a fraction in (0, 1)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "drawer script"
                     ) -> DrawerScript:
        """From a YAML mapping; unknown keys are an error naming the key and ``source``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TheiaError(f"{source}: unknown key(s) {unknown}; expected some of "
                             f"{sorted(known)}")
        try:
            return cls(**data)
        except TheiaError as exc:
            raise TheiaError(f"{source}: {exc}") from None

    # -- poses ----------------------------------------------------------------------------
    @property
    def handle_pose(self) -> np.ndarray:
        """``[6]`` xyz + rpy of the grasp."""
        return np.array([*self.handle_xyz_m, *self.handle_rpy_rad], dtype=np.float64)

    def start_pose(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """``[6]`` start pose of an episode (jittered when ``rng`` is given): ``start_xyz_m``
        / ``start_rpy_rad`` when set (a start fixed in the body frame, so where the handle is
        must be seen), else the handle pose moved by ``start_offset_m``."""
        pose = self.handle_pose
        if self.start_xyz_m is not None:
            pose[:3] = self.start_xyz_m
        else:
            pose[:3] += np.asarray(self.start_offset_m)
        if self.start_rpy_rad is not None:
            pose[3:6] = self.start_rpy_rad
        if rng is not None and self.start_jitter_m > 0:
            pose[:3] += rng.uniform(-self.start_jitter_m, self.start_jitter_m, 3)
        return pose

    @property
    def pull_axis(self) -> np.ndarray:
        """``[3]`` unit vector the drawer opens along: body -x, or with ``pull_along_grasp``
        the horizontal direction the grasp faces, reversed (a drawer seen at an angle)."""
        if not self.pull_along_grasp:
            return np.array([-1.0, 0.0, 0.0])
        yaw = float(self.handle_rpy_rad[2])
        return -np.array([math.cos(yaw), math.sin(yaw), 0.0])

    def back_off(self, pose: np.ndarray, distance_m: float) -> np.ndarray:
        """``pose`` ``[6]`` moved ``distance_m`` along :attr:`pull_axis`."""
        out = np.array(pose, dtype=np.float64)
        out[:3] += distance_m * self.pull_axis
        return out

    def pull_end(self) -> np.ndarray:
        """``[6]`` where the pull ends (handle moved back along the pull axis)."""
        return self.back_off(self.handle_pose, self.pull_distance_m)


@dataclass(frozen=True)
class Plan:
    """Waypoints ``[N, 7]`` (pose + gripper) and each one's phase name."""

    waypoints: np.ndarray
    phases: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.waypoints.shape[0])


def _segment(a: np.ndarray, b: np.ndarray, gripper: float, step_m: float,
             step_rad: float) -> list[np.ndarray]:
    """Poses ``[7]`` from ``a`` (excluded) to ``b`` (included) in steps of at most ``step_m``
    and ``step_rad``; a zero-length segment still gives one waypoint (at ``b``)."""
    rot_a, rot_b = rpy_to_matrix(a[3:6]), rpy_to_matrix(b[3:6])
    rotvec = rotation_log(rot_b @ rot_a.T)
    n = max(1, math.ceil(float(np.linalg.norm(b[:3] - a[:3])) / step_m - 1e-9),
            math.ceil(float(np.linalg.norm(rotvec)) / step_rad - 1e-9))
    out = []
    for i in range(1, n + 1):
        f = i / n
        rot = rotation_exp(rotvec * f) @ rot_a
        out.append(np.concatenate([a[:3] + (b[:3] - a[:3]) * f, matrix_to_rpy(rot), [gripper]]))
    return out


def plan_reset(script: DrawerScript, from_pose: np.ndarray, start_pose: np.ndarray,
               period_s: float) -> Plan:
    """Open the claw and move from ``from_pose`` ``[6]`` to ``start_pose`` ``[6]``."""
    step_m, step_rad = script.speed_m_s * period_s, script.angular_speed_rad_s * period_s
    points = _segment(np.asarray(from_pose, np.float64), np.asarray(start_pose, np.float64),
                      OPEN, step_m, step_rad)
    return Plan(np.stack(points), ("reset",) * len(points))


def plan_demo(script: DrawerScript, from_pose: np.ndarray, period_s: float) -> Plan:
    """The recorded demonstration from ``from_pose`` ``[6]`` (see the module docstring)."""
    step_m, step_rad = script.speed_m_s * period_s, script.angular_speed_rad_s * period_s
    handle = script.handle_pose
    pre = script.back_off(handle, script.approach_offset_m)
    pulled = script.pull_end()
    retreat = script.back_off(pulled, script.retreat_m)
    points: list[np.ndarray] = []
    phases: list[str] = []

    def add(name: str, rows: list[np.ndarray]) -> None:
        points.extend(rows)
        phases.extend([name] * len(rows))

    def hold(pose: np.ndarray, gripper: float, ticks: int) -> list[np.ndarray]:
        return [np.concatenate([pose, [gripper]]) for _ in range(ticks)]

    add("approach", _segment(np.asarray(from_pose, np.float64), pre, OPEN, step_m, step_rad))
    add("insert", _segment(pre, handle, OPEN, step_m, step_rad)
        + hold(handle, OPEN, script.grasp_settle_ticks))
    add("close", hold(handle, CLOSED, script.close_ticks))
    add("pull", _segment(handle, pulled, CLOSED, step_m, step_rad)
        + hold(pulled, CLOSED, script.settle_ticks))
    add("release", hold(pulled, OPEN, script.release_ticks))
    if script.retreat_m > 0:
        add("retreat", _segment(pulled, retreat, OPEN, step_m, step_rad))
    return Plan(np.stack(points), tuple(phases))


def check_plan_inside(plan: Plan, low_m: np.ndarray, high_m: np.ndarray, what: str) -> None:
    """Refuse a plan that leaves the workspace box (the filter would clip it into a different
    demonstration than the script describes)."""
    xyz = plan.waypoints[:, :3]
    outside = np.any(xyz < np.asarray(low_m) - 1e-9, axis=1) | \
        np.any(xyz > np.asarray(high_m) + 1e-9, axis=1)
    if np.any(outside):
        i = int(np.argmax(outside))
        raise TheiaError(f"drawer script: the {plan.phases[i]} phase of the {what} reaches "
                         f"{np.round(xyz[i], 3).tolist()} m, outside the workspace box "
                         f"{np.round(low_m, 3).tolist()}..{np.round(high_m, 3).tolist()}; "
                         "move handle_xyz_m / start_offset_m or shorten pull_distance_m")


class ScriptedDrawerPolicy:
    """The control core's policy ``(Observation) -> [1, 7]`` for one plan at a time.

    Call :meth:`run` with a plan, tick the loop, and :meth:`advance` when the loop reports the
    current waypoint sent; :attr:`done` once every waypoint went out. ``success`` is judged on
    the first observation after the pull (see :class:`DrawerScript`).
    """

    def __init__(self, script: DrawerScript) -> None:
        self.script = script
        self.plan: Plan | None = None
        self.index = 0
        self.last_obs: Observation | None = None
        self.pull_check: tuple[float, float] | None = None  # (error m, measured gripper)

    def run(self, plan: Plan) -> None:
        self.plan, self.index, self.pull_check = plan, 0, None

    @property
    def done(self) -> bool:
        return self.plan is None or self.index >= len(self.plan)

    @property
    def phase(self) -> str | None:
        return None if self.done else self.plan.phases[self.index]

    def __call__(self, obs: Observation) -> np.ndarray:
        self.last_obs = obs
        if self.plan is None:
            raise TheiaError("scripted policy: no plan; call run(plan) first")
        if self.done:  # every waypoint sent: keep holding the last one
            return self.plan.waypoints[-1:].copy()
        if self.phase == "release" and self.pull_check is None:
            error_m = float(np.linalg.norm(np.asarray(obs.ee_pose[:3])
                                           - self.script.pull_end()[:3]))
            self.pull_check = (error_m, float(obs.gripper))
        return self.plan.waypoints[self.index][None].copy()

    def advance(self) -> None:
        """The current waypoint was sent: move on to the next."""
        if not self.done:
            self.index += 1

    @property
    def success(self) -> bool:
        """The hand reached the end of the pull (and, with ``grasp_min_open``, the claw was
        held open by the handle there)."""
        if self.pull_check is None:
            return False
        error_m, gripper = self.pull_check
        if error_m > self.script.success_tolerance_m:
            return False
        return self.script.grasp_min_open is None or gripper >= self.script.grasp_min_open
