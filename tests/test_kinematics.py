"""wx250s kinematics: FK against hand-derived values, IK round trips, EE-delta semantics."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from theia_ros.control import kinematics as K


def _ry(v: np.ndarray, angle: float) -> np.ndarray:
    """Rotate an x/z-plane vector about +y (x toward -z for positive angles)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] + s * v[2], v[1], -s * v[0] + c * v[2]])


def test_fk_zero_matches_interbotix_home_matrix() -> None:
    # Interbotix mr_descriptions wx250s M: ee_gripper_link at (0.458325, 0, 0.36065), identity.
    mat = K.fk(np.zeros(6))
    np.testing.assert_allclose(mat[:3, 3], [0.458325, 0.0, 0.36065], atol=1e-9)
    np.testing.assert_allclose(mat[:3, :3], np.eye(3), atol=1e-12)


def test_fk_home_hand_derived() -> None:
    # Home: shoulder -0.96, elbow 1.16, wrist_angle -0.3; all pitch joints about +y, so the
    # link directions are the cumulative pitches -0.96, 0.2 and -0.1.
    shoulder, elbow, wrist = -0.96, 1.16, -0.3
    p = np.array([0.0, 0.0, 0.072 + 0.03865])
    p += _ry(np.array([0.04975, 0.0, 0.25]), shoulder)
    p += _ry(np.array([0.175 + 0.075, 0.0, 0.0]), shoulder + elbow)
    p += _ry(np.array([0.065 + 0.093575, 0.0, 0.0]), shoulder + elbow + wrist)
    pose = K.fk_pose(K.HOME_QPOS_RAD)
    np.testing.assert_allclose(pose[:3], p, atol=1e-9)
    np.testing.assert_allclose(pose[3:], [0.0, shoulder + elbow + wrist, 0.0], atol=1e-9)
    # Waist turns the whole arm about z.
    q = K.HOME_QPOS_RAD.copy()
    q[0] = 0.5
    pose_w = K.fk_pose(q)
    np.testing.assert_allclose(pose_w[:2], [p[0] * math.cos(0.5), p[0] * math.sin(0.5)], atol=1e-9)
    assert pose_w[5] == pytest.approx(0.5)


def test_rpy_roundtrip_and_convention() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        rpy = rng.uniform([-math.pi, -1.5, -math.pi], [math.pi, 1.5, math.pi])
        np.testing.assert_allclose(K.matrix_to_rpy(K.rpy_to_matrix(rpy)), rpy, atol=1e-9)
    # Extrinsic XYZ: R = Rz(yaw) Ry(pitch) Rx(roll); a pure yaw maps x to (cos, sin, 0).
    x_axis = K.rpy_to_matrix([0, 0, 0.3])[:, 0]
    np.testing.assert_allclose(x_axis, [math.cos(0.3), math.sin(0.3), 0], atol=1e-12)
    r = K.rpy_to_matrix([0.2, 0.0, 0.0]) @ K.rpy_to_matrix([0.0, 0.3, 0.0])
    r2 = K.rpy_to_matrix([0.0, 0.3, 0.0]) @ K.rpy_to_matrix([0.2, 0.0, 0.0])
    assert not np.allclose(r, r2)  # order matters; the convention is not symmetric


def test_rotation_log_near_pi() -> None:
    for axis in (np.array([1.0, 0, 0]), np.array([0, 1.0, 1.0]) / math.sqrt(2)):
        angle = math.pi - 1e-9
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
        w = K.rotation_log(rot)
        assert np.linalg.norm(w) == pytest.approx(angle, abs=1e-6)
        assert abs(abs(float(w @ axis)) - angle) < 1e-5


def test_jacobian_matches_finite_differences() -> None:
    q = np.array([0.3, -0.5, 0.7, 0.2, -0.4, 0.1])
    jac = K.jacobian(q)
    eps = 1e-6
    base = K.fk(q)
    for i in range(6):
        dq = np.zeros(6)
        dq[i] = eps
        moved = K.fk(q + dq)
        np.testing.assert_allclose((moved[:3, 3] - base[:3, 3]) / eps, jac[:3, i], atol=1e-5)
        w = K.rotation_log(moved[:3, :3] @ base[:3, :3].T) / eps
        np.testing.assert_allclose(w, jac[3:, i], atol=1e-5)


def test_ik_roundtrip_random_reachable() -> None:
    rng = np.random.default_rng(0)
    solved = 0
    times = []
    n = 100
    for _ in range(n):
        q = rng.uniform(K.JOINT_LOWER_RAD * 0.8, K.JOINT_UPPER_RAD * 0.8)
        seed = q + rng.normal(0.0, 0.1, 6)
        target = K.fk(q)
        t0 = time.perf_counter()
        sol = K.solve_ik(target, seed)
        times.append(time.perf_counter() - t0)
        if sol is None:
            continue
        solved += 1
        assert K.within_limits(sol)
        got = K.fk(sol)
        assert np.linalg.norm(got[:3, 3] - target[:3, 3]) < 2e-4
        assert np.linalg.norm(K.rotation_log(got[:3, :3] @ target[:3, :3].T)) < 2e-3
    assert solved >= 0.95 * n
    assert float(np.median(times)) < 2e-3


@pytest.mark.parametrize("rot_scale", [0.0, 1.0])
def test_ik_small_deltas_stay_close(rot_scale: float) -> None:
    """Teleop-sized steps (<= 2 cm, <= 0.1 rad) solve from the current joints, no jumps.

    Starts gripper-down (pitch 1.2 rad), the working posture of the door task: at home the
    wrist is near its singularity (forearm_roll and wrist_rotate almost aligned) and a
    fixed-orientation sideways step needs large forearm_roll motions.
    """
    rng = np.random.default_rng(2)
    q = np.array([0.0, -0.3, 0.5, 0.0, 1.0, 0.0])
    max_step = 0.3
    for _ in range(30):
        delta = np.concatenate([rng.uniform(-0.02, 0.02, 3), rng.uniform(-0.1, 0.1, 3)])
        delta[3:] *= rot_scale
        target = K.apply_ee_delta(K.fk(q), delta)
        sol = K.solve_ik(target, q)
        assert sol is not None
        assert float(np.max(np.abs(sol - q))) < max_step  # same branch, no jumps
        np.testing.assert_allclose(K.fk(sol)[:3, 3], target[:3, 3], atol=2e-4)
        q = sol


def test_ik_unreachable_returns_none() -> None:
    far = K.pose_to_matrix(np.array([1.5, 0.0, 0.3, 0.0, 0.0, 0.0]))
    assert K.solve_ik(far, K.HOME_QPOS_RAD) is None
    assert K.solve_ik(np.full((4, 4), np.nan), K.HOME_QPOS_RAD) is None


def test_ee_delta_semantics() -> None:
    start = K.fk(K.HOME_QPOS_RAD)
    # Pure translation: base-frame offset, orientation unchanged.
    moved = K.apply_ee_delta(start, np.array([0.01, -0.02, 0.005, 0, 0, 0]))
    np.testing.assert_allclose(moved[:3, 3] - start[:3, 3], [0.01, -0.02, 0.005], atol=1e-12)
    np.testing.assert_allclose(moved[:3, :3], start[:3, :3], atol=1e-12)
    # Pure yaw: about the base z axis (pre-multiplied), fingertip position fixed.
    yawed = K.apply_ee_delta(start, np.array([0, 0, 0, 0, 0, 0.1]))
    np.testing.assert_allclose(yawed[:3, 3], start[:3, 3], atol=1e-12)
    np.testing.assert_allclose(yawed[:3, :3], K.rpy_to_matrix([0, 0, 0.1]) @ start[:3, :3])
    # With the gripper pitched (home: pitch -0.1), a base-frame roll differs from a tool roll.
    tool_roll = start[:3, :3] @ K.rpy_to_matrix([0.1, 0, 0])
    rolled = K.apply_ee_delta(start, np.array([0, 0, 0, 0.1, 0, 0]))
    assert not np.allclose(rolled[:3, :3], tool_roll, atol=1e-4)
    # ee_delta_between inverts apply_ee_delta.
    delta = np.array([0.01, 0.0, -0.01, 0.05, -0.07, 0.09])
    np.testing.assert_allclose(
        K.ee_delta_between(start, K.apply_ee_delta(start, delta)), delta, atol=1e-12
    )
