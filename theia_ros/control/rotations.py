"""Small rotation helpers for the safety filter and the chunk ensembler (numpy only).

Conventions as in :mod:`theia_ros.types`: poses ``[x, y, z, roll, pitch, yaw]`` with extrinsic
XYZ Euler angles, ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``. An end-effector delta translates in
the base frame and *pre*-multiplies its rotation (a rotation about base-frame axes through the
EE point): ``R_new = R(d_rpy) @ R_old``, ``p_new = p_old + d_xyz``. This is the same semantics
as ``control.kinematics.apply_ee_delta`` (the sim twin and the WidowX adapter), checked in
``tests/test_safety.py``.
"""

from __future__ import annotations

import math

import numpy as np


def rpy_to_matrix(rpy_rad: np.ndarray) -> np.ndarray:
    """Extrinsic XYZ Euler ``[3]`` -> rotation ``[3, 3]``."""
    roll, pitch, yaw = (float(v) for v in np.asarray(rpy_rad).reshape(3))
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def matrix_to_rpy(rot: np.ndarray) -> np.ndarray:
    """Rotation ``[3, 3]`` -> extrinsic XYZ Euler ``[3]``; pitch in ``[-pi/2, pi/2]``."""
    sp = -float(rot[2, 0])
    pitch = math.asin(max(-1.0, min(1.0, sp)))
    if abs(sp) < 1.0 - 1e-9:
        roll = math.atan2(float(rot[2, 1]), float(rot[2, 2]))
        yaw = math.atan2(float(rot[1, 0]), float(rot[0, 0]))
    else:  # gimbal lock: put everything into yaw
        roll = 0.0
        yaw = math.atan2(-float(rot[0, 1]), float(rot[1, 1]))
    return np.array([roll, pitch, yaw])


def rotation_log(rot: np.ndarray) -> np.ndarray:
    """Rotation ``[3, 3]`` -> rotation vector ``[3]`` (unit axis * angle, angle in ``[0, pi]``)."""
    vee = 0.5 * np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    sin_a = float(np.linalg.norm(vee))
    cos_a = 0.5 * (float(np.trace(rot)) - 1.0)
    angle = math.atan2(sin_a, cos_a)
    if sin_a > 1e-7:
        return vee * (angle / sin_a)
    if cos_a > 0.0:  # angle ~ 0: first order
        return vee
    # angle ~ pi: R = 2 a a^T - I, take the axis from the largest diagonal column
    diag = np.clip((np.diag(rot) + 1.0) * 0.5, 0.0, None)
    k = int(np.argmax(diag))
    axis = (rot[:, k] + np.eye(3)[:, k]) * 0.5
    axis /= max(float(np.linalg.norm(axis)), 1e-12)
    return axis * angle


def rotation_exp(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vector ``[3]`` -> rotation ``[3, 3]`` (Rodrigues)."""
    rotvec = np.asarray(rotvec, dtype=np.float64).reshape(3)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * kx + (1.0 - math.cos(angle)) * (kx @ kx)


def rotation_angle(rot: np.ndarray) -> float:
    """Angle ``[0, pi]`` rad of a rotation ``[3, 3]``."""
    return float(np.linalg.norm(rotation_log(rot)))


def apply_ee_delta(pose: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Pose ``[6]`` after an EE delta ``[6]`` (base-frame translation, pre-multiplied rotation)."""
    pose = np.asarray(pose, dtype=np.float64).reshape(6)
    delta = np.asarray(delta, dtype=np.float64).reshape(-1)[:6]
    rot = rpy_to_matrix(delta[3:6]) @ rpy_to_matrix(pose[3:6])
    return np.concatenate([pose[:3] + delta[:3], matrix_to_rpy(rot)])


def ee_delta_between(pose_from: np.ndarray, pose_to: np.ndarray) -> np.ndarray:
    """Inverse of :func:`apply_ee_delta`: the delta ``[6]`` taking ``pose_from`` to ``pose_to``."""
    pose_from = np.asarray(pose_from, dtype=np.float64).reshape(6)
    pose_to = np.asarray(pose_to, dtype=np.float64).reshape(6)
    d_rot = rpy_to_matrix(pose_to[3:6]) @ rpy_to_matrix(pose_from[3:6]).T
    return np.concatenate([pose_to[:3] - pose_from[:3], matrix_to_rpy(d_rot)])


def wrap_angle(angle_rad: np.ndarray | float) -> np.ndarray:
    """Angles wrapped to ``[-pi, pi)``."""
    return (np.asarray(angle_rad, dtype=np.float64) + math.pi) % (2.0 * math.pi) - math.pi
