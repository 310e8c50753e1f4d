"""Safety filter between the policy and the robot: every command passes through it.

What it does to one 7-vector action (see :class:`SafetyFilter.filter` for the order):
non-finite numbers and a latched e-stop mean *hold* (nothing is sent); the target pose is
clipped to the workspace box and optional orientation bounds, then the step from the
reference pose is limited in translation and rotation (speed limits times the control
period, so the arm moves no faster at a higher rate); the gripper is clamped; where a joint
solution is available (a callable hook, e.g. the wx250s IK) the predicted joints must lie
inside the joint limits, else hold. Every intervention is counted by kind and logged
(rate-limited).

Reference pose: for ``EE_DELTA`` the *measured* EE pose (a delta means "from where the arm
is now"); for ``EE_ABSOLUTE`` the last pose this filter let through (so a sequence of small
absolute steps is judged step by step), or the measured pose after a hold, at start, or
when the robot lags the last command by more than ``max_tracking_error_m``.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields

import numpy as np

from theia_ros.control.ratelog import RateLimitedLogger
from theia_ros.control.rotations import (
    ee_delta_between,
    matrix_to_rpy,
    rotation_exp,
    rotation_log,
    rpy_to_matrix,
)
from theia_ros.errors import TheiaError
from theia_ros.types import Action, ActionKind, Observation

log = logging.getLogger(__name__)

# (target pose [6], seed joints [J]) -> predicted joints [J], or None when there is no solution
JointSolver = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]


class Intervention(str, enum.Enum):
    """Kinds of safety interventions. The first five mean the action was not sent (hold)."""

    ESTOP = "estop"  # e-stop latched
    NON_FINITE = "non_finite"  # NaN/Inf in the action
    BAD_OBSERVATION = "bad_observation"  # measured pose not finite: no reference to judge by
    NO_JOINT_SOLUTION = "no_joint_solution"  # the joint hook found no joints for the target
    JOINT_LIMIT = "joint_limit"  # predicted joints outside the limits
    WORKSPACE = "workspace"  # target clipped to the workspace box
    OUTSIDE_WORKSPACE = "outside_workspace"  # the reference itself is outside the box
    ORIENTATION = "orientation"  # target rpy clipped to the orientation bounds
    STEP_TRANSLATION = "step_translation"  # per-step translation clipped
    STEP_ROTATION = "step_rotation"  # per-step rotation clipped
    GRIPPER = "gripper"  # gripper command clamped
    TRACKING_RESET = "tracking_reset"  # absolute: robot lagging, stepped from measured pose


HOLD_INTERVENTIONS = frozenset(
    {
        Intervention.ESTOP,
        Intervention.NON_FINITE,
        Intervention.BAD_OBSERVATION,
        Intervention.NO_JOINT_SOLUTION,
        Intervention.JOINT_LIMIT,
    }
)


def _vec(name: str, value: object, n: int) -> tuple[float, ...]:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise TheiaError(f"safety limits: {name} must be {n} numbers, got {value!r}") from exc
    if arr.shape[0] != n or not np.all(np.isfinite(arr)):
        raise TheiaError(f"safety limits: {name} must be {n} finite numbers, got {value!r}")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class SafetyLimits:
    """Limits for one robot, in its base frame. Validated on construction.

    Args:
        workspace_min_m: lower corner ``[3]`` of the allowed EE box (x, y, z), metres.
        workspace_max_m: upper corner ``[3]`` of the box, metres.
        max_speed_m_s: largest EE translation speed, m/s; one control step may move
            ``max_speed_m_s * period_s``.
        max_angular_speed_rad_s: largest EE rotation speed, rad/s (per step: times the
            period).
        gripper_min: lowest gripper open fraction allowed.
        gripper_max: highest gripper open fraction allowed.
        joint_lower_rad: per-joint lower limits ``[J]`` (None: no joint check).
        joint_upper_rad: per-joint upper limits ``[J]``.
        joint_margin_rad: the joint check uses the limits shrunk by this much.
        rpy_min_rad: optional lower bounds ``[3]`` on the target's extrinsic XYZ Euler angles.
        rpy_max_rad: optional upper bounds ``[3]``.
        max_tracking_error_m: ``EE_ABSOLUTE`` only: when the last commanded position is
            farther than this from the measured one (the robot is not following), the next
            step is judged from the measured pose instead (None: always the last command).
    """

    workspace_min_m: tuple[float, float, float]
    workspace_max_m: tuple[float, float, float]
    max_speed_m_s: float
    max_angular_speed_rad_s: float
    gripper_min: float = 0.0
    gripper_max: float = 1.0
    joint_lower_rad: tuple[float, ...] | None = None
    joint_upper_rad: tuple[float, ...] | None = None
    joint_margin_rad: float = 0.0
    rpy_min_rad: tuple[float, float, float] | None = None
    rpy_max_rad: tuple[float, float, float] | None = None
    max_tracking_error_m: float | None = None

    def __post_init__(self) -> None:
        lo = _vec("workspace_min_m", self.workspace_min_m, 3)
        hi = _vec("workspace_max_m", self.workspace_max_m, 3)
        if any(a >= b for a, b in zip(lo, hi)):
            raise TheiaError(f"safety limits: workspace_min_m {lo} must be below "
                             f"workspace_max_m {hi} on every axis")
        object.__setattr__(self, "workspace_min_m", lo)
        object.__setattr__(self, "workspace_max_m", hi)
        for name in ("max_speed_m_s", "max_angular_speed_rad_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise TheiaError(f"safety limits: {name} must be a positive number, got {value!r}")
        if not (0.0 <= self.gripper_min <= self.gripper_max <= 1.0):
            raise TheiaError("safety limits: need 0 <= gripper_min <= gripper_max <= 1, got "
                             f"{self.gripper_min}, {self.gripper_max}")
        if (self.joint_lower_rad is None) != (self.joint_upper_rad is None):
            raise TheiaError("safety limits: give both joint_lower_rad and joint_upper_rad or "
                             "neither")
        if self.joint_lower_rad is not None:
            n = len(self.joint_lower_rad)
            jl = _vec("joint_lower_rad", self.joint_lower_rad, n)
            ju = _vec("joint_upper_rad", self.joint_upper_rad, n)
            if any(a >= b for a, b in zip(jl, ju)):
                raise TheiaError("safety limits: joint_lower_rad must be below joint_upper_rad "
                                 "for every joint")
            object.__setattr__(self, "joint_lower_rad", jl)
            object.__setattr__(self, "joint_upper_rad", ju)
        if not (math.isfinite(self.joint_margin_rad) and self.joint_margin_rad >= 0):
            raise TheiaError(f"safety limits: joint_margin_rad must be >= 0, got "
                             f"{self.joint_margin_rad!r}")
        err = self.max_tracking_error_m
        if err is not None and not (isinstance(err, int | float) and math.isfinite(err)
                                    and err > 0):
            raise TheiaError(f"safety limits: max_tracking_error_m must be a positive number or "
                             f"None, got {err!r}")
        if (self.rpy_min_rad is None) != (self.rpy_max_rad is None):
            raise TheiaError("safety limits: give both rpy_min_rad and rpy_max_rad or neither")
        if self.rpy_min_rad is not None:
            rlo = _vec("rpy_min_rad", self.rpy_min_rad, 3)
            rhi = _vec("rpy_max_rad", self.rpy_max_rad, 3)
            if any(a > b for a, b in zip(rlo, rhi)):
                raise TheiaError("safety limits: rpy_min_rad must not exceed rpy_max_rad")
            object.__setattr__(self, "rpy_min_rad", rlo)
            object.__setattr__(self, "rpy_max_rad", rhi)

    @classmethod
    def wx250s(cls) -> SafetyLimits:
        """WidowX 250s on a table: a box in front of the base, 0.15 m/s and 1 rad/s (3 cm and
        0.2 rad per step at the paper's 5 Hz).

        The box keeps the fingertip centre 2 cm above the base plane (the table), within the
        arm's comfortable reach (0.65 m max) and out of the base itself (x >= 0.10 m). It
        contains Interbotix's home pose (x 0.458 m, z 0.361 m). Joint limits from the public
        model (``shared/reference/wx250s-kinematics.md``), used with a 0.02 rad margin.
        """
        return cls(
            workspace_min_m=(0.10, -0.40, 0.02),
            workspace_max_m=(0.50, 0.40, 0.45),
            max_speed_m_s=0.15,
            max_angular_speed_rad_s=1.0,
            gripper_min=0.0,
            gripper_max=1.0,
            joint_lower_rad=(-3.14158, -1.88496, -2.14675, -3.14158, -1.74533, -3.14158),
            joint_upper_rad=(3.14158, 1.98968, 1.6057, 3.14158, 2.14675, 3.14158),
            joint_margin_rad=0.02,
        )

    @classmethod
    def for_robot(cls, robot: str) -> SafetyLimits:
        """Preset limits by robot name (see ``LIMIT_PRESETS``; Spot's adapter adds its own)."""
        try:
            factory = LIMIT_PRESETS[robot]
        except KeyError:
            raise TheiaError(f"safety limits: no preset for robot {robot!r}; known: "
                             f"{sorted(LIMIT_PRESETS)}") from None
        return factory()

    @classmethod
    def from_dict(cls, data: Mapping[str, object], base: SafetyLimits | None = None,
                  source: str = "safety") -> SafetyLimits:
        """Limits from a config mapping (e.g. the ``safety:`` block of ``config/<task>.yaml``).

        Keys override ``base`` (a preset) field by field; unknown keys are an error naming
        ``source``.
        """
        known = {f.name for f in fields(cls)}
        legacy = sorted(set(data) & set(PER_STEP_KEYS))
        if legacy:
            raise TheiaError(f"{source}: {legacy} were per control step; the limits are per "
                             "second now: max_speed_m_s (= max_step_m x rate_hz) and "
                             "max_angular_speed_rad_s (= max_step_rad x rate_hz)")
        unknown = sorted(set(data) - known)
        if unknown:
            raise TheiaError(f"{source}: unknown safety limit(s) {unknown}; expected some of "
                             f"{sorted(known)}")
        values = asdict(base) if base is not None else {}
        values.update(data)
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in values]
        if missing:
            raise TheiaError(f"{source}: missing safety limit(s) {missing}")
        return cls(**values)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Plain-Python form (lists, floats) for saving beside a run."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def joints_within(self, q_rad: np.ndarray) -> bool:
        """True when ``q_rad`` lies inside the joint limits shrunk by the margin (or no limits)."""
        if self.joint_lower_rad is None:
            return True
        q = np.asarray(q_rad, dtype=np.float64).reshape(-1)
        lower = np.asarray(self.joint_lower_rad) + self.joint_margin_rad
        upper = np.asarray(self.joint_upper_rad) - self.joint_margin_rad
        if q.shape != lower.shape:
            raise TheiaError(f"safety limits: {lower.shape[0]} joint limits but a joint vector of "
                             f"{q.shape[0]}")
        return bool(np.all(np.isfinite(q)) and np.all(q >= lower) and np.all(q <= upper))


LIMIT_PRESETS: dict[str, Callable[[], SafetyLimits]] = {"wx250s": SafetyLimits.wx250s}
PER_STEP_KEYS = ("max_step_m", "max_step_rad")  # the old spelling, refused with a hint


@dataclass(frozen=True)
class FilterResult:
    """What the filter decided for one action.

    ``action`` is None when the robot must hold; ``target_pose`` ``[6]`` is the pose the
    filtered action aims for (None on hold); ``interventions`` lists every kind applied.
    """

    action: Action | None
    target_pose: np.ndarray | None
    interventions: tuple[Intervention, ...] = field(default_factory=tuple)
    hold_reason: Intervention | None = None

    @property
    def held(self) -> bool:
        return self.action is None


class SafetyFilter:
    """Checks and clips every action before it reaches a robot adapter. Thread-safe.

    Args:
        limits: the robot's limits.
        joint_solver: optional ``(target_pose [6], seed_joints [J]) -> joints [J] | None``
            used for the joint-limit check (e.g. the wx250s IK seeded from the measured joints).
        clock: monotonic seconds, for log throttling.
        log_interval_s: at most one log line per intervention kind per interval.
        period_s: the control period the speed limits are turned into step limits with;
            a :class:`~theia_ros.control.loop.ControlLoop` sets its own (see
            :meth:`bind_period`). Filtering without a period is an error.
    """

    def __init__(self, limits: SafetyLimits, joint_solver: JointSolver | None = None,
                 clock: Callable[[], float] = time.monotonic, log_interval_s: float = 1.0,
                 period_s: float | None = None) -> None:
        self.limits = limits
        self.joint_solver = joint_solver
        self._period_s: float | None = None
        if period_s is not None:
            self.bind_period(period_s)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._estop_reason: str | None = None
        self._last_target: np.ndarray | None = None
        self._log = RateLimitedLogger(log, log_interval_s, clock)
        self._box_lo = np.asarray(limits.workspace_min_m)
        self._box_hi = np.asarray(limits.workspace_max_m)

    # -- rate ----------------------------------------------------------------------------
    @property
    def period_s(self) -> float | None:
        return self._period_s

    def bind_period(self, period_s: float) -> None:
        """Use control period ``period_s``; refused when a different one is already set
        (two rates for one filter would make one of them too fast)."""
        period_s = float(period_s)
        if not (math.isfinite(period_s) and period_s > 0):
            raise TheiaError(f"safety filter: period_s must be > 0, got {period_s!r}")
        if self._period_s is not None and abs(self._period_s - period_s) > 1e-9:
            raise TheiaError(f"safety filter: already used with a {self._period_s} s period; "
                             f"cannot also run at {period_s} s")
        self._period_s = period_s

    def step_limits(self) -> tuple[float, float]:
        """``(metres, radians)`` one control step may move."""
        if self._period_s is None:
            raise TheiaError("safety filter: no control period; pass period_s (or run it in "
                             "a ControlLoop, which sets its own)")
        lim = self.limits
        return lim.max_speed_m_s * self._period_s, lim.max_angular_speed_rad_s * self._period_s

    # -- e-stop --------------------------------------------------------------------------
    def trigger_estop(self, reason: str = "e-stop") -> None:
        """Latch the e-stop: every action is held until :meth:`reset_estop`."""
        with self._lock:
            first = self._estop_reason is None
            self._estop_reason = reason
            self._last_target = None
        if first:
            log.error("e-stop latched: %s", reason)

    def reset_estop(self) -> None:
        """Release a latched e-stop (an operator decision; nothing resets it automatically)."""
        with self._lock:
            was = self._estop_reason
            self._estop_reason = None
        if was is not None:
            log.warning("e-stop reset (was: %s)", was)

    @property
    def estopped(self) -> bool:
        return self._estop_reason is not None

    @property
    def estop_reason(self) -> str | None:
        return self._estop_reason

    # -- bookkeeping ---------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Interventions so far, by kind (a copy)."""
        with self._lock:
            return dict(self._counts)

    def reset_reference(self) -> None:
        """Forget the last commanded pose (after a hold the measured pose is the reference)."""
        with self._lock:
            self._last_target = None

    def _note(self, kinds: Sequence[Intervention], detail: str) -> None:
        with self._lock:
            self._counts.update(k.value for k in kinds)
        for kind in kinds:
            level = logging.WARNING if kind in HOLD_INTERVENTIONS else logging.INFO
            self._log.log(level, kind.value, "safety: %s (%s)", kind.value, detail)

    def _hold(self, kind: Intervention, detail: str) -> FilterResult:
        self._note([kind], detail)
        with self._lock:
            self._last_target = None
        return FilterResult(None, None, (kind,), kind)

    # -- the filter ----------------------------------------------------------------------
    def filter(self, action: Action, obs: Observation) -> FilterResult:
        """Return the action to send (clipped) or a hold, judged against ``obs``.

        Order: e-stop -> finite check -> reference pose -> workspace box (and orientation
        bounds) -> per-step translation and rotation from the reference -> gripper clamp ->
        joint-limit check on the predicted joints. Box-then-step keeps both invariants when
        the reference is inside the box (the box is convex); when it is outside, the step
        limit wins (no jump into the box) and ``outside_workspace`` is counted.
        """
        if self.estopped:
            return self._hold(Intervention.ESTOP, self._estop_reason or "e-stop")
        vec = action.to_vector()
        if not np.all(np.isfinite(vec)):
            return self._hold(Intervention.NON_FINITE,
                              f"action {np.array2string(vec, precision=3)}")
        measured = np.asarray(obs.ee_pose, dtype=np.float64).reshape(-1)
        if measured.shape[0] != 6 or not np.all(np.isfinite(measured)):
            return self._hold(Intervention.BAD_OBSERVATION, "measured EE pose is not 6 finite "
                              "numbers")

        lim = self.limits
        max_step_m, max_step_rad = self.step_limits()
        kinds: list[Intervention] = []
        with self._lock:
            last = self._last_target
        if action.kind is ActionKind.EE_DELTA:
            ref = measured
            ref_rot = rpy_to_matrix(ref[3:6])
            tgt_pos = ref[:3] + vec[:3]
            tgt_rot = rpy_to_matrix(vec[3:6]) @ ref_rot
        else:
            ref = last if last is not None else measured
            if last is not None and lim.max_tracking_error_m is not None and \
                    float(np.linalg.norm(last[:3] - measured[:3])) > lim.max_tracking_error_m:
                ref = measured
                kinds.append(Intervention.TRACKING_RESET)
            ref_rot = rpy_to_matrix(ref[3:6])
            tgt_pos = vec[:3].copy()
            tgt_rot = rpy_to_matrix(vec[3:6])

        # 1. workspace box and orientation bounds on the target
        clipped = np.clip(tgt_pos, self._box_lo, self._box_hi)
        if not np.array_equal(clipped, tgt_pos):
            kinds.append(Intervention.WORKSPACE)
            tgt_pos = clipped
        if np.any(ref[:3] < self._box_lo) or np.any(ref[:3] > self._box_hi):
            kinds.append(Intervention.OUTSIDE_WORKSPACE)
        if lim.rpy_min_rad is not None:
            rpy = matrix_to_rpy(tgt_rot)
            rpy_c = np.clip(rpy, lim.rpy_min_rad, lim.rpy_max_rad)
            if not np.array_equal(rpy, rpy_c):
                kinds.append(Intervention.ORIENTATION)
                tgt_rot = rpy_to_matrix(rpy_c)

        # 2. per-step limits from the reference (scale the step, keep its direction)
        step = tgt_pos - ref[:3]
        dist = float(np.linalg.norm(step))
        if dist > max_step_m:
            kinds.append(Intervention.STEP_TRANSLATION)
            tgt_pos = ref[:3] + step * (max_step_m / dist)
        rotvec = rotation_log(tgt_rot @ ref_rot.T)
        angle = float(np.linalg.norm(rotvec))
        if angle > max_step_rad:
            kinds.append(Intervention.STEP_ROTATION)
            tgt_rot = rotation_exp(rotvec * (max_step_rad / angle)) @ ref_rot

        # 3. gripper
        gripper = float(np.clip(vec[6], lim.gripper_min, lim.gripper_max))
        if gripper != vec[6]:
            kinds.append(Intervention.GRIPPER)

        target = np.concatenate([tgt_pos, matrix_to_rpy(tgt_rot)])

        # 4. joint limits on the predicted joints
        if self.joint_solver is not None:
            seed = np.asarray(obs.joint_positions, dtype=np.float64)
            q = self.joint_solver(target, seed)
            if q is None:
                self._note(kinds, "clipped before the joint check")
                return self._hold(Intervention.NO_JOINT_SOLUTION,
                                  f"target {np.array2string(target, precision=3)}")
            if not lim.joints_within(q):
                self._note(kinds, "clipped before the joint check")
                return self._hold(Intervention.JOINT_LIMIT,
                                  f"joints {np.array2string(np.asarray(q), precision=3)}")

        if kinds:
            self._note(kinds, f"raw {np.array2string(vec, precision=3)}")
        if action.kind is ActionKind.EE_DELTA:
            out_vec = np.concatenate([ee_delta_between(measured, target), [gripper]])
        else:
            out_vec = np.concatenate([target, [gripper]])
        with self._lock:
            self._last_target = target
        return FilterResult(Action.from_vector(action.kind, out_vec), target, tuple(kinds))
