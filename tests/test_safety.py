"""Safety filter: NaN never passes, workspace/step/gripper/joint limits hold, e-stop latches.

``hypothesis`` is not installed here, so the property checks run as seeded random cases
(several hundred actions per seed, parametrised over seeds).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from theia_ros.control import (
    FilterResult,
    Intervention,
    ManualClock,
    SafetyFilter,
    SafetyLimits,
    kinematics,
)
from theia_ros.control.rotations import (
    apply_ee_delta,
    ee_delta_between,
    rotation_angle,
    rpy_to_matrix,
)
from theia_ros.errors import TheiaError
from theia_ros.types import Action, ActionKind, Observation

HOME_POSE = kinematics.fk_pose(kinematics.HOME_QPOS_RAD)
PERIOD_S = 0.2  # 5 Hz, the rate the wx250s preset's 3 cm / 0.2 rad steps are quoted at


def make_obs(pose: np.ndarray, joints: np.ndarray | None = None) -> Observation:
    joints = kinematics.HOME_QPOS_RAD if joints is None else joints
    return Observation(images={}, joint_positions=np.asarray(joints, dtype=np.float64),
                       ee_pose=np.asarray(pose, dtype=np.float64), gripper=1.0, stamp_s=0.0)


def delta(vec: list[float]) -> Action:
    return Action.from_vector(ActionKind.EE_DELTA, np.asarray(vec, dtype=np.float64))


def in_box(p: np.ndarray, lim: SafetyLimits, tol: float = 1e-9) -> bool:
    return bool(np.all(p >= np.asarray(lim.workspace_min_m) - tol)
                and np.all(p <= np.asarray(lim.workspace_max_m) + tol))


def angle_between(rpy_a: np.ndarray, rpy_b: np.ndarray) -> float:
    return rotation_angle(rpy_to_matrix(rpy_b) @ rpy_to_matrix(rpy_a).T)


# -- limits --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {"workspace_min_m": (0.5, 0.0, 0.0), "workspace_max_m": (0.4, 1.0, 1.0)},
        {"workspace_min_m": (0.0, 0.0)},
        {"workspace_max_m": (1.0, float("nan"), 1.0)},
        {"max_speed_m_s": 0.0},
        {"max_angular_speed_rad_s": -0.1},
        {"max_speed_m_s": float("inf")},
        {"gripper_min": 0.8, "gripper_max": 0.2},
        {"gripper_max": 1.5},
        {"joint_lower_rad": (0.0, 0.0), "joint_upper_rad": None},
        {"joint_lower_rad": (0.0, 1.0), "joint_upper_rad": (1.0, 0.5)},
        {"rpy_min_rad": (0.0, 0.0, 0.0)},
        {"joint_margin_rad": -0.01},
        {"max_tracking_error_m": 0.0},
    ],
)
def test_invalid_limits_raise_theia_error(overrides: dict) -> None:
    base = SafetyLimits.wx250s().to_dict()
    base.update(overrides)
    with pytest.raises(TheiaError, match="safety limits"):
        SafetyLimits(**base)


def test_wx250s_preset_contains_home_pose_and_round_trips() -> None:
    lim = SafetyLimits.for_robot("wx250s")
    assert in_box(HOME_POSE[:3], lim)
    assert lim.joints_within(kinematics.HOME_QPOS_RAD)
    assert not lim.joints_within(np.array([0.0, 0.0, 1.7, 0.0, 0.0, 0.0]))  # elbow > 1.6057
    again = SafetyLimits.from_dict(lim.to_dict())
    assert again == lim


def test_from_dict_overrides_preset_and_rejects_unknown_keys() -> None:
    lim = SafetyLimits.from_dict({"max_speed_m_s": 0.05}, base=SafetyLimits.wx250s())
    wx = SafetyLimits.wx250s()
    assert lim.max_speed_m_s == 0.05 and lim.max_angular_speed_rad_s == wx.max_angular_speed_rad_s
    with pytest.raises(TheiaError, match=r"per control step.*max_speed_m_s \(= max_step_m x"):
        SafetyLimits.from_dict({"max_step_m": 0.03}, base=wx)  # the old per-step spelling
    with pytest.raises(TheiaError, match=r"config/door\.yaml: unknown safety limit"):
        SafetyLimits.from_dict({"max_speed": 1.0}, source="config/door.yaml")
    with pytest.raises(TheiaError, match="missing"):
        SafetyLimits.from_dict({"max_speed_m_s": 0.05})
    with pytest.raises(TheiaError, match="no preset"):
        SafetyLimits.for_robot("ur5")


# -- non-finite ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(ActionKind))
@pytest.mark.parametrize("index", range(7))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_action_is_held(kind: ActionKind, index: int, bad: float) -> None:
    vec = np.concatenate([HOME_POSE, [0.5]]) if kind is ActionKind.EE_ABSOLUTE else np.zeros(7)
    vec[index] = bad
    filt = SafetyFilter(SafetyLimits.wx250s(), period_s=PERIOD_S)
    result = filt.filter(Action.from_vector(kind, vec), make_obs(HOME_POSE))
    assert result.held and result.action is None and result.target_pose is None
    assert result.hold_reason is Intervention.NON_FINITE
    assert filt.counts == {"non_finite": 1}


def test_non_finite_measured_pose_is_held() -> None:
    filt = SafetyFilter(SafetyLimits.wx250s(), period_s=PERIOD_S)
    pose = HOME_POSE.copy()
    pose[4] = float("nan")
    result = filt.filter(delta([0.01, 0, 0, 0, 0, 0, 1]), make_obs(pose))
    assert result.held and result.hold_reason is Intervention.BAD_OBSERVATION


# -- clipping ------------------------------------------------------------------------------
def test_small_action_inside_limits_passes_unchanged() -> None:
    filt = SafetyFilter(SafetyLimits.wx250s(), period_s=PERIOD_S)
    vec = np.array([0.01, -0.005, 0.002, 0.05, -0.03, 0.02, 0.7])
    result = filt.filter(delta(list(vec)), make_obs(HOME_POSE))
    assert not result.held and result.interventions == ()
    np.testing.assert_allclose(result.action.to_vector(), vec, atol=1e-12)
    np.testing.assert_allclose(result.target_pose, apply_ee_delta(HOME_POSE, vec[:6]), atol=1e-12)


def test_translation_step_is_scaled_along_its_direction() -> None:
    filt = SafetyFilter(SafetyLimits.wx250s(), period_s=PERIOD_S)
    pose = np.array([0.3, 0.0, 0.2, 0.0, 0.5, 0.0])
    result = filt.filter(delta([-0.08, 0.06, 0.0, 0, 0, 0, 1.0]), make_obs(pose))
    out = result.action.to_vector()
    np.testing.assert_allclose(out[:3], [-0.024, 0.018, 0.0], atol=1e-12)  # 0.1 m -> 0.03 m
    np.testing.assert_allclose(out[3:6], 0.0, atol=1e-12)
    assert result.interventions == (Intervention.STEP_TRANSLATION,)


def test_rotation_step_is_scaled_to_the_limit() -> None:
    filt = SafetyFilter(SafetyLimits.wx250s(), period_s=PERIOD_S)
    pose = np.array([0.3, 0.0, 0.2, 0.0, 0.5, 0.0])
    result = filt.filter(delta([0, 0, 0, 0.0, 0.0, 0.9, 1.0]), make_obs(pose))
    np.testing.assert_allclose(result.action.to_vector()[3:6], [0.0, 0.0, 0.2], atol=1e-9)
    assert Intervention.STEP_ROTATION in result.interventions


def test_gripper_is_clamped() -> None:
    lim = SafetyLimits.from_dict({"gripper_min": 0.2, "gripper_max": 0.9},
                                 base=SafetyLimits.wx250s())
    filt = SafetyFilter(lim, period_s=PERIOD_S)
    low = filt.filter(delta([0, 0, 0, 0, 0, 0, -3.0]), make_obs(HOME_POSE))
    high = filt.filter(delta([0, 0, 0, 0, 0, 0, 7.0]), make_obs(HOME_POSE))
    assert low.action.gripper == pytest.approx(0.2) and high.action.gripper == pytest.approx(0.9)
    assert filt.counts["gripper"] == 2


def test_workspace_box_clips_target_at_the_edge() -> None:
    lim = SafetyLimits.wx250s()
    filt = SafetyFilter(lim, period_s=PERIOD_S)
    pose = np.array([0.3, 0.0, 0.03, 0.0, 0.0, 0.0])  # 1 cm above the floor of the box
    result = filt.filter(delta([0, 0, -0.025, 0, 0, 0, 1.0]), make_obs(pose))
    assert result.target_pose[2] == pytest.approx(lim.workspace_min_m[2])
    assert result.action.xyz_m[2] == pytest.approx(-0.01)
    assert result.interventions == (Intervention.WORKSPACE,)


def test_orientation_bounds_clip_target() -> None:
    lim = SafetyLimits.from_dict({"rpy_min_rad": (-0.1, -0.1, -0.1),
                                  "rpy_max_rad": (0.1, 0.1, 0.1)}, base=SafetyLimits.wx250s())
    filt = SafetyFilter(lim, period_s=PERIOD_S)
    pose = np.array([0.3, 0.0, 0.2, 0.0, 0.0, 0.05])
    result = filt.filter(delta([0, 0, 0, 0, 0, 0.15, 1.0]), make_obs(pose))
    assert result.target_pose[5] == pytest.approx(0.1)
    assert Intervention.ORIENTATION in result.interventions


def test_reference_outside_box_moves_toward_it_by_at_most_one_step() -> None:
    lim = SafetyLimits.wx250s()
    filt = SafetyFilter(lim, period_s=PERIOD_S)
    pose = np.array([0.05, 0.0, 0.3, 0.0, 0.0, 0.0])  # x below the box (e.g. after sleep pose)
    result = filt.filter(delta([0.0, 0.0, 0.0, 0, 0, 0, 1.0]), make_obs(pose))
    step = result.target_pose[:3] - pose[:3]
    assert np.linalg.norm(step) <= lim.max_speed_m_s * PERIOD_S + 1e-12
    assert result.target_pose[0] > pose[0]  # toward the box
    assert {Intervention.OUTSIDE_WORKSPACE, Intervention.WORKSPACE,
            Intervention.STEP_TRANSLATION} <= set(result.interventions)


@pytest.mark.parametrize("seed", range(6))
def test_random_delta_actions_respect_every_limit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lim = SafetyLimits.wx250s()
    filt = SafetyFilter(lim, period_s=PERIOD_S)
    lo, hi = np.asarray(lim.workspace_min_m), np.asarray(lim.workspace_max_m)
    clipped = 0
    for _ in range(300):
        pose = np.concatenate([rng.uniform(lo, hi), rng.uniform(-math.pi, math.pi, 3)])
        pose[4] = rng.uniform(-1.4, 1.4)
        scale = rng.choice([0.005, 0.05, 1.0])
        vec = np.concatenate([rng.normal(0, scale, 6), rng.normal(0.5, 1.0, 1)])
        result = filt.filter(delta(list(vec)), make_obs(pose))
        assert not result.held
        target = result.target_pose
        assert in_box(target[:3], lim)
        assert np.linalg.norm(target[:3] - pose[:3]) <= lim.max_speed_m_s * PERIOD_S + 1e-9
        assert angle_between(pose[3:], target[3:]) <= lim.max_angular_speed_rad_s * PERIOD_S + 1e-7
        assert lim.gripper_min <= result.action.gripper <= lim.gripper_max
        # the delta that is sent reaches exactly the filtered target
        reached = apply_ee_delta(pose, result.action.to_vector()[:6])
        np.testing.assert_allclose(reached[:3], target[:3], atol=1e-9)
        assert angle_between(reached[3:], target[3:]) < 1e-7
        clipped += bool(result.interventions)
    assert clipped > 50  # the random set really exercised the clipping


@pytest.mark.parametrize("seed", range(4))
def test_random_absolute_sequence_steps_from_last_command(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    lim = SafetyLimits.wx250s()
    filt = SafetyFilter(lim, period_s=PERIOD_S)
    measured = np.array([0.3, 0.0, 0.25, 0.0, 0.3, 0.0])
    prev = measured
    for _ in range(200):
        goal = np.concatenate([rng.uniform(-0.2, 0.8, 3), rng.uniform(-3, 3, 3), [0.5]])
        result = filt.filter(Action.from_vector(ActionKind.EE_ABSOLUTE, goal), make_obs(measured))
        target = result.target_pose
        np.testing.assert_allclose(result.action.to_vector()[:6], target)
        assert in_box(target[:3], lim)
        assert np.linalg.norm(target[:3] - prev[:3]) <= lim.max_speed_m_s * PERIOD_S + 1e-9
        assert angle_between(prev[3:], target[3:]) <= lim.max_angular_speed_rad_s * PERIOD_S + 1e-7
        prev = target
    filt.reset_reference()  # after a hold, the measured pose is the reference again
    far = np.concatenate([measured[:3] + np.array([0.1, 0, 0]), measured[3:], [0.5]])
    result = filt.filter(Action.from_vector(ActionKind.EE_ABSOLUTE, far), make_obs(measured))
    np.testing.assert_allclose(result.target_pose[:3], measured[:3] + np.array([0.03, 0, 0]),
                               atol=1e-12)


def test_absolute_reference_resets_when_robot_does_not_follow() -> None:
    lim = SafetyLimits.from_dict({"max_tracking_error_m": 0.05}, base=SafetyLimits.wx250s())
    filt = SafetyFilter(lim, period_s=PERIOD_S)
    stuck = np.array([0.3, 0.0, 0.25, 0.0, 0.3, 0.0])
    goal = np.concatenate([stuck[:3] + np.array([0.0, 0.2, 0.0]), stuck[3:], [0.5]])
    targets = []
    for _ in range(4):  # the robot is blocked: the measured pose never changes
        result = filt.filter(Action.from_vector(ActionKind.EE_ABSOLUTE, goal), make_obs(stuck))
        targets.append(result.target_pose[1] - stuck[1])
    # 0.03, 0.06 (then 6 cm > 5 cm off: back to the measured pose) 0.03, 0.06
    np.testing.assert_allclose(targets, [0.03, 0.06, 0.03, 0.06], atol=1e-12)
    assert filt.counts["tracking_reset"] == 1


# -- e-stop --------------------------------------------------------------------------------
def test_estop_latches_until_reset() -> None:
    filt = SafetyFilter(SafetyLimits.wx250s(), period_s=PERIOD_S)
    ok = delta([0.005, 0, 0, 0, 0, 0, 1.0])
    assert not filt.filter(ok, make_obs(HOME_POSE)).held
    filt.trigger_estop("operator button")
    for _ in range(5):
        result = filt.filter(ok, make_obs(HOME_POSE))
        assert result.held and result.hold_reason is Intervention.ESTOP
    assert filt.estopped and filt.estop_reason == "operator button"
    filt.reset_estop()
    assert not filt.estopped and not filt.filter(ok, make_obs(HOME_POSE)).held
    assert filt.counts["estop"] == 5


# -- joint limits through the real wx250s IK -----------------------------------------------
def _ik(target: np.ndarray, seed: np.ndarray) -> np.ndarray | None:
    return kinematics.solve_ik(target, seed)


def test_joint_hook_passes_reachable_targets() -> None:
    filt = SafetyFilter(SafetyLimits.wx250s(), joint_solver=_ik, period_s=PERIOD_S)
    result = filt.filter(delta([0.01, 0.01, -0.01, 0, 0, 0, 1.0]), make_obs(HOME_POSE))
    assert not result.held


def test_joint_hook_holds_on_limit_violation() -> None:
    lim = SafetyLimits.from_dict({"joint_lower_rad": (-0.01, -1.88, -2.14, -3.1, -1.74, -3.1),
                                  "joint_upper_rad": (0.01, 1.98, 1.60, 3.1, 2.14, 3.1),
                                  "joint_margin_rad": 0.0}, base=SafetyLimits.wx250s())
    filt = SafetyFilter(lim, joint_solver=_ik, period_s=PERIOD_S)
    # moving sideways needs the waist to turn past its (tight) limit
    result = filt.filter(delta([0.0, 0.03, 0.0, 0, 0, 0, 1.0]), make_obs(HOME_POSE))
    assert result.held and result.hold_reason is Intervention.JOINT_LIMIT


def test_joint_hook_holds_when_no_solution() -> None:
    lim = SafetyLimits.from_dict({"workspace_max_m": (3.0, 3.0, 3.0), "max_speed_m_s": 25.0},
                                 base=SafetyLimits.wx250s())
    filt = SafetyFilter(lim, joint_solver=_ik, period_s=PERIOD_S)
    result = filt.filter(delta([2.0, 0, 0, 0, 0, 0, 1.0]), make_obs(HOME_POSE))  # 2.4 m away
    assert result.held and result.hold_reason is Intervention.NO_JOINT_SOLUTION


# -- conventions and logging ---------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_delta_semantics_match_the_shared_kinematics(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        pose = np.concatenate([rng.uniform(-0.5, 0.5, 3), rng.uniform(-3, 3, 3)])
        pose[4] = rng.uniform(-1.5, 1.5)
        d = rng.normal(0, 0.3, 6)
        ours = apply_ee_delta(pose, d)
        theirs = kinematics.matrix_to_pose(
            kinematics.apply_ee_delta(kinematics.pose_to_matrix(pose), d))
        np.testing.assert_allclose(ours[:3], theirs[:3], atol=1e-12)
        assert angle_between(ours[3:], theirs[3:]) < 1e-9
        back = ee_delta_between(pose, ours)
        assert angle_between(back[3:], d[3:]) < 1e-9


def test_interventions_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    filt = SafetyFilter(SafetyLimits.wx250s(), clock=clock.now, log_interval_s=1.0,
                        period_s=PERIOD_S)
    bad = delta([float("nan")] * 7)
    with caplog.at_level(logging.INFO, logger="theia_ros.control.safety"):
        for _ in range(10):
            filt.filter(bad, make_obs(HOME_POSE))
            clock.advance(0.05)
        clock.advance(1.0)
        filt.filter(bad, make_obs(HOME_POSE))
    lines = [r.getMessage() for r in caplog.records if "non_finite" in r.getMessage()]
    assert len(lines) == 2
    assert "+9 similar" in lines[1]
    assert filt.counts["non_finite"] == 11


def test_filter_result_held_property() -> None:
    assert FilterResult(None, None).held


def test_spot_absolute_targets_cannot_walk_away_from_a_stuck_arm() -> None:
    """Spot's limits: with the hand stuck (measured pose fixed), absolute targets stepping
    5 cm a tick stay within a few steps of the hand instead of drifting off with the policy."""
    from theia_ros.robots.spot.config import SpotConfig

    limits = SpotConfig().safety_limits()
    assert limits.max_tracking_error_m is not None
    filt = SafetyFilter(limits, period_s=PERIOD_S)
    hand = np.array([0.6, 0.0, 0.3, 0.0, 0.0, 0.0])
    obs = make_obs(hand)
    for k in range(1, 11):  # the policy keeps asking for a hand further along -y
        want = hand + np.array([0.0, -0.05 * k, 0.0, 0.0, 0.0, 0.0])
        result = filt.filter(Action.from_vector(ActionKind.EE_ABSOLUTE,
                                                np.append(want, 1.0)), obs)
        assert result.action is not None
        gap = float(np.linalg.norm(result.action.xyz_m - hand[:3]))
        step_m = limits.max_speed_m_s * PERIOD_S
        assert gap <= limits.max_tracking_error_m + step_m + 1e-9, (k, gap)


# -- limits are per second -----------------------------------------------------------------
@pytest.mark.parametrize("rate_hz", [5.0, 20.0, 50.0])
def test_speed_limits_do_not_grow_with_the_rate(rate_hz: float) -> None:
    """One second of maximal steps moves the same distance at every rate: a faster loop is
    not a faster arm."""
    lim = SafetyLimits.wx250s()
    filt = SafetyFilter(lim, period_s=1.0 / rate_hz)
    pose = HOME_POSE.copy()
    pose[:3] = (0.3, 0.0, 0.2)
    start = pose.copy()
    for _ in range(round(rate_hz)):  # one second of ticks, each asking for 10 cm and 1 rad
        result = filt.filter(delta([-0.1, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]), make_obs(pose))
        assert Intervention.STEP_TRANSLATION in result.interventions
        pose = result.target_pose
    assert np.linalg.norm(pose[:3] - start[:3]) == pytest.approx(lim.max_speed_m_s, rel=1e-6)
    assert angle_between(start[3:], pose[3:]) == pytest.approx(lim.max_angular_speed_rad_s,
                                                               rel=1e-6)


def test_a_filter_needs_one_control_period() -> None:
    filt = SafetyFilter(SafetyLimits.wx250s())
    with pytest.raises(TheiaError, match="no control period"):
        filt.filter(delta([0.01, 0, 0, 0, 0, 0, 1.0]), make_obs(HOME_POSE))
    filt.bind_period(0.05)
    filt.bind_period(0.05)  # the same period again is fine
    with pytest.raises(TheiaError, match=r"cannot also run at 0\.2 s"):
        filt.bind_period(0.2)
    with pytest.raises(TheiaError, match="period_s must be > 0"):
        SafetyFilter(SafetyLimits.wx250s(), period_s=0.0)
