"""How the stand-in robot's arm and claw move: commanded trajectories, finite speed, limits.

THIS IS PART OF A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. It is a kinematic
model written from the public API documentation (``arm_command.proto``, ``trajectory.proto``),
not from the robot's controller:

- a Cartesian command is a list of knots (times relative to the trajectory's reference time, or
  to the receipt time when none is given). The commanded hand follows a cubic through them
  with the knot velocities sent; an unset velocity is zero (the message default), so a knot
  sent without one is a stop. Before the first knot it blends from where and how fast the
  previous command had the hand, so overlapping knots keep a stream of commands smooth;
- the real hand follows the commanded one at a capped speed, through the arm's own inverse
  kinematics (``kinematics.py``): a pose out of reach or past a joint limit is not entered;
- feedback as the proto describes it: IN_PROGRESS, COMPLETE (at the end, within 1 cm),
  STALLED (no progress for 0.3 s while short of the goal), CANCELLED (tracking error above
  ``max_pos_tracking_error`` when one is given; the hand then stays where it was);
- named positions move in joint space; STOW is refused while the claw holds an item
  (STATUS_STALLED_HOLDING_ITEM, the arm holds still) and proceeds once it is released;
- the claw closes at finite speed and stops on a grasped item (``is_gripper_holding_item``).

Imitates the arm behaviour spot-sdk documents (``docs/concepts/arm/``) and the feedback
statuses of bosdyn-api ``arm_command.proto`` (ArmCartesianCommand / NamedArmPositionsCommand
feedback), with kinematics from the project's ``spot-arm.md`` reference.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from bosdyn.client.math_helpers import Quat

from . import kinematics as kin

MAX_HAND_SPEED_M_S = 1.0
MAX_HAND_TURN_RAD_S = 2.0
JOINT_SPEED_RAD_S = 1.5  # named moves
# faster than this through IK = the shoulder/elbow flipping branch: not followed (the wrist's
# x-y-x angles may swing fast near its straight-wrist singularity; that is let through)
MAX_JOINT_STEP_RAD_S = 6.0
CLAW_SPEED_PER_S = 2.5  # open fraction per second
GOAL_TOLERANCE_M, GOAL_TOLERANCE_RAD = 0.01, 0.03
STALL_AFTER_S = 0.3


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    q = Quat.from_matrix(m)
    return np.array([q.w, q.x, q.y, q.z]) / math.sqrt(q.w ** 2 + q.x ** 2 + q.y ** 2 + q.z ** 2)


def slerp(a: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    dot = float(np.dot(a, b))
    if dot < 0.0:
        b, dot = -b, -dot
    if dot > 0.9995:
        q = a + s * (b - a)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    return (math.sin((1 - s) * theta) * a + math.sin(s * theta) * b) / math.sin(theta)


def quat_angle(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * math.acos(min(1.0, abs(float(np.dot(a, b)))))


@dataclass
class Knot:
    t_s: float  # robot clock
    pos: np.ndarray  # [3] body frame
    quat: np.ndarray  # [4] w x y z, body frame
    vel: np.ndarray | None = None  # [3] given by the client, else estimated


class CartesianPlan:
    """The commanded hand of one Cartesian command, as a function of robot time."""

    def __init__(self, knots: list[Knot], start: Knot) -> None:
        knots = sorted(knots, key=lambda k: k.t_s)
        if start.t_s < knots[0].t_s:
            knots = [start, *knots]  # blend from where the previous command had the hand
        self.knots = knots
        last = len(knots) - 1
        for i, knot in enumerate(knots):
            if knot is start or knot.vel is not None:
                continue  # the start keeps the velocity the hand had
            if i == last:
                knot.vel = np.zeros(3)
                continue
            before, after = knots[max(i - 1, 0)], knots[i + 1]
            knot.vel = (after.pos - before.pos) / max(after.t_s - before.t_s, 1e-6)
        self.goal = knots[-1]

    @property
    def end_s(self) -> float:
        return self.goal.t_s

    def sample(self, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position, quaternion, velocity) of the commanded hand at ``t_s``."""
        knots = self.knots
        if t_s >= knots[-1].t_s:
            return knots[-1].pos, knots[-1].quat, np.zeros(3)
        if t_s <= knots[0].t_s:
            return knots[0].pos, knots[0].quat, knots[0].vel
        i = next(j for j in range(len(knots) - 1) if knots[j + 1].t_s > t_s)
        a, b = knots[i], knots[i + 1]
        h = b.t_s - a.t_s
        s = (t_s - a.t_s) / h
        s2, s3 = s * s, s * s * s
        pos = ((2 * s3 - 3 * s2 + 1) * a.pos + (s3 - 2 * s2 + s) * h * a.vel
               + (-2 * s3 + 3 * s2) * b.pos + (s3 - s2) * h * b.vel)
        vel = ((6 * s2 - 6 * s) * a.pos + (3 * s2 - 4 * s + 1) * h * a.vel
               + (-6 * s2 + 6 * s) * b.pos + (3 * s2 - 2 * s) * h * b.vel) / h
        return pos, slerp(a.quat, b.quat, s), vel


@dataclass
class Item:
    """Something the claw can close on (a drawer handle): where it is and how wide."""

    pos: np.ndarray  # [3] body frame
    width: float  # claw open fraction at which the jaws touch it


@dataclass
class ArmModel:
    """The arm + claw state; ``step`` advances it. Guarded by the robot's lock."""

    q: np.ndarray = field(default_factory=lambda: kin.STOW_Q.copy())
    claw: float = 0.0  # measured open fraction
    claw_target: float = 0.0
    claw_speed_per_s: float = CLAW_SPEED_PER_S
    joint_speed_rad_s: float = JOINT_SPEED_RAD_S
    item: Item | None = None
    jammed: bool = False  # something blocks the arm (test hook)
    gripping: bool = False  # the jaws have closed on the item and stopped there
    mode: str = "idle"  # idle | cartesian | named | stop
    command_id: int = 0
    status: dict[int, str] = field(default_factory=dict)  # command id -> feedback status
    plan: CartesianPlan | None = None
    max_error_m: float | None = None
    named: str = ""
    named_q: np.ndarray | None = None
    desired_vel: np.ndarray = field(default_factory=lambda: np.zeros(3))
    tracking_error_m: float = 0.0
    hand_vel: np.ndarray = field(default_factory=lambda: np.zeros(3))
    last_progress_s: float = 0.0
    # (monotonic s, commanded hand speed or nan, real hand speed): the motion record
    log: list[tuple[float, float, float]] = field(default_factory=list)

    # -- what it measures ------------------------------------------------------------------
    def hand(self) -> tuple[np.ndarray, np.ndarray]:
        """Hand position [3] and quaternion [4] in the body frame."""
        pos, rot = kin.forward(self.q)
        return pos, matrix_to_quat(rot)

    @property
    def holding(self) -> bool:
        return self.gripping

    @property
    def stowed(self) -> bool:
        return bool(np.abs(self.q - kin.STOW_Q).max() < 0.05)

    # -- commands ------------------------------------------------------------------------------
    def _take_over(self, command_id: int) -> None:
        if self.command_id in self.status and self.status[self.command_id] == "IN_PROGRESS":
            self.status[self.command_id] = "OVERRIDDEN"
        self.command_id = command_id

    def command_cartesian(self, command_id: int, knots: list[Knot], now_s: float,
                          max_error_m: float | None) -> None:
        if self.mode == "cartesian" and self.plan is not None:
            pos, quat, _ = self.plan.sample(now_s)
            vel = self.desired_vel.copy()
        else:
            pos, quat = self.hand()
            vel = np.zeros(3)
            self.last_progress_s = now_s  # progress is the arm's: a new target is not progress
        self._take_over(command_id)
        self.plan = CartesianPlan(knots, Knot(now_s, pos, quat, vel))
        self.max_error_m, self.mode = max_error_m, "cartesian"
        self.status[command_id] = "IN_PROGRESS"

    def command_named(self, command_id: int, name: str, now_s: float) -> None:
        self._take_over(command_id)
        self.mode, self.named = "named", name
        self.named_q = kin.STOW_Q if name == "stow" else kin.READY_Q
        self.status[command_id] = "IN_PROGRESS"

    def command_stop(self, command_id: int) -> None:
        self._take_over(command_id)
        self.mode, self.plan = "stop", None
        self.status[command_id] = "COMPLETE"

    # -- physics --------------------------------------------------------------------------------
    def step(self, now_s: float, dt: float, mono_s: float) -> None:
        self._step_claw(dt)
        before = kin.forward(self.q)[0]
        desired_speed = math.nan
        if self.mode == "cartesian":
            desired_speed = self._step_cartesian(now_s, dt)
        elif self.mode == "named":
            self._step_named(dt)
        after = kin.forward(self.q)[0]
        self.hand_vel = (after - before) / dt
        self.log.append((mono_s, desired_speed, float(np.linalg.norm(self.hand_vel))))

    def _step_claw(self, dt: float) -> None:
        target, item = self.claw_target, self.item
        closing_on_item = False
        if item is not None and target < item.width:
            around = (self.claw >= item.width - 1e-6
                      and np.linalg.norm(kin.forward(self.q)[0] - item.pos) < 0.03)
            closing_on_item = self.gripping or around  # jaws open around it, closing
            if closing_on_item:
                target = item.width  # the jaws stop on the item
        step = self.claw_speed_per_s * dt
        self.claw += float(np.clip(target - self.claw, -step, step))
        self.gripping = closing_on_item and abs(self.claw - item.width) < 1e-6

    def _step_cartesian(self, now_s: float, dt: float) -> float:
        plan = self.plan
        status = self.status.get(self.command_id)
        desired_pos, desired_quat, desired_vel = plan.sample(now_s)
        self.desired_vel = desired_vel
        pos, quat = self.hand()
        if status == "CANCELLED":
            return float(np.linalg.norm(desired_vel))
        moved = False
        if not self.jammed:
            delta = desired_pos - pos
            dist = float(np.linalg.norm(delta))
            step = min(dist, MAX_HAND_SPEED_M_S * dt)
            new_pos = pos + (delta / dist * step if dist > 1e-9 else 0.0)
            angle = quat_angle(quat, desired_quat)
            turn = 1.0 if angle < 1e-9 else min(1.0, MAX_HAND_TURN_RAD_S * dt / angle)
            new_quat = slerp(quat, desired_quat, turn)
            q = kin.inverse(new_pos, quat_to_matrix(new_quat), self.q)
            if q is not None and np.abs(q - self.q)[:3].max() <= MAX_JOINT_STEP_RAD_S * dt:
                moved = np.abs(q - self.q).max() > 1e-7
                self.q = q
                if self.item is not None and self.holding:
                    self.item.pos = kin.forward(self.q)[0]  # the handle comes along
        pos, quat = self.hand()
        error = float(np.linalg.norm(desired_pos - pos))
        self.tracking_error_m = error
        to_goal = float(np.linalg.norm(plan.goal.pos - pos))
        if moved:
            self.last_progress_s = now_s
        if self.max_error_m is not None and error > self.max_error_m:
            self.status[self.command_id] = "CANCELLED"  # the hand stays where it is
        elif (now_s >= plan.end_s and to_goal < GOAL_TOLERANCE_M
              and quat_angle(quat, plan.goal.quat) < GOAL_TOLERANCE_RAD):
            self.status[self.command_id] = "COMPLETE"
        elif now_s - self.last_progress_s > STALL_AFTER_S and to_goal >= GOAL_TOLERANCE_M:
            self.status[self.command_id] = "STALLED"
        else:
            self.status[self.command_id] = "IN_PROGRESS"
        return float(np.linalg.norm(desired_vel))

    def _step_named(self, dt: float) -> None:
        if self.named == "stow" and self.holding:
            self.status[self.command_id] = "STALLED_HOLDING_ITEM"  # frozen until released
            return
        delta = self.named_q - self.q
        biggest = float(np.abs(delta).max())
        if biggest < 1e-4:
            self.status[self.command_id] = "COMPLETE"
            return
        if self.jammed:
            return
        self.q = self.q + delta * min(1.0, self.joint_speed_rad_s * dt / biggest)
        self.status[self.command_id] = "IN_PROGRESS"


def stopped_intervals(log: np.ndarray, times_s: list[float], min_speed_m_s: float) -> list[bool]:
    """For each interval between consecutive ``times_s`` (command arrivals, monotonic): did
    the commanded hand speed drop below ``min_speed_m_s`` anywhere in it? ``log`` is
    :meth:`StandInRobot.speed_log`."""
    out = []
    for start, end in itertools.pairwise(times_s):
        inside = log[(log[:, 0] >= start) & (log[:, 0] < end)]
        speeds = inside[:, 1]
        out.append(bool(len(speeds) == 0 or np.nanmin(np.nan_to_num(speeds)) < min_speed_m_s))
    return out
