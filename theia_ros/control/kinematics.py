"""WidowX 250s (wx250s) kinematics: FK, Jacobian and damped-least-squares IK, numpy only.

Shared by the MuJoCo twin and the real-arm adapter so that an end-effector delta means the
same motion on both. The chain is the one in ``shared/reference/wx250s-kinematics.md``; the EE
frame is Interbotix's ``ee_gripper_link`` (fingertip centre), ``EE_OFFSET_M`` beyond
``gripper_link`` along its x axis. That figure is what Interbotix's own ``mr_descriptions``
home matrix ``M`` for the wx250s implies: x = 0.458325 m, z = 0.36065 m at zero joints, i.e.
0.458325 - (0.04975 + 0.175 + 0.075 + 0.065) = 0.093575 m past ``gripper_link``.

Conventions (as in ``theia_ros.types``): metres, radians, poses ``[x, y, z, roll, pitch, yaw]``
in the arm base frame with extrinsic XYZ Euler angles, i.e. ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``.
An EE delta translates in the base frame and *pre*-multiplies its rotation in the base frame:
``R_new = R(d_rpy) @ R_old``, ``p_new = p_old + d_xyz`` (the fingertip centre stays put under a
pure rotation).
"""

from __future__ import annotations

import math

import numpy as np

# One implementation of the rotation conventions, shared with the safety filter; re-exported
# here because the sim and its expert use them through this module.
from theia_ros.control.rotations import matrix_to_rpy as matrix_to_rpy
from theia_ros.control.rotations import rotation_exp as rotation_exp
from theia_ros.control.rotations import rotation_log as rotation_log
from theia_ros.control.rotations import rpy_to_matrix as rpy_to_matrix

JOINT_NAMES: tuple[str, ...] = (
    "waist",
    "shoulder",
    "elbow",
    "forearm_roll",
    "wrist_angle",
    "wrist_rotate",
)
NUM_JOINTS = 6

# Offset of each joint's frame in its parent's frame [6, 3] m, and its rotation axis (0=x,1=y,2=z).
JOINT_OFFSETS_M = np.array(
    [
        [0.0, 0.0, 0.072],  # waist: shoulder_link in base_link
        [0.0, 0.0, 0.03865],  # shoulder: upper_arm_link in shoulder_link
        [0.04975, 0.0, 0.25],  # elbow: upper_forearm_link in upper_arm_link
        [0.175, 0.0, 0.0],  # forearm_roll: lower_forearm_link
        [0.075, 0.0, 0.0],  # wrist_angle: wrist_link
        [0.065, 0.0, 0.0],  # wrist_rotate: gripper_link
    ]
)
JOINT_AXES: tuple[int, ...] = (2, 1, 1, 0, 1, 0)
EE_OFFSET_M = 0.093575  # ee_gripper_link beyond gripper_link along its x axis
FINGER_OFFSET_M = 0.066  # finger bodies beyond gripper_link along x (fingers slide along y)

JOINT_LOWER_RAD = np.array([-3.14158, -1.88496, -2.14675, -3.14158, -1.74533, -3.14158])
JOINT_UPPER_RAD = np.array([3.14158, 1.98968, 1.6057, 3.14158, 2.14675, 3.14158])

HOME_QPOS_RAD = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])  # the public model's home keyframe
# Interbotix's stow pose for the wx250s (arm folded onto its base).
SLEEP_QPOS_RAD = np.array([0.0, -1.80, 1.55, 0.0, 0.8, 0.0])

# Gripper finger travel (left finger slide joint, m); right = -left. 1.0 open fraction = max.
FINGER_CLOSED_M = 0.015
FINGER_OPEN_M = 0.037


def _axis_rotation(axis: int, angle_rad: float) -> np.ndarray:
    """``[3, 3]`` rotation about the x (0), y (1) or z (2) axis."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    if axis == 0:
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == 1:
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])




def pose_to_matrix(pose: np.ndarray) -> np.ndarray:
    """``[6]`` xyz + rpy -> homogeneous ``[4, 4]``."""
    pose = np.asarray(pose, dtype=np.float64).reshape(6)
    mat = np.eye(4)
    mat[:3, :3] = rpy_to_matrix(pose[3:])
    mat[:3, 3] = pose[:3]
    return mat


def matrix_to_pose(mat: np.ndarray) -> np.ndarray:
    """Homogeneous ``[4, 4]`` -> ``[6]`` xyz + rpy."""
    return np.concatenate([mat[:3, 3], matrix_to_rpy(mat[:3, :3])])




def apply_ee_delta(ee_mat: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Target ``[4, 4]`` after an EE delta ``[6]`` (d_xyz m, d_rpy rad) in the base frame.

    The delta rotation is pre-multiplied (a rotation about base-frame axes through the
    fingertip centre), the translation added in the base frame.
    """
    delta = np.asarray(delta, dtype=np.float64).reshape(-1)
    out = np.eye(4)
    out[:3, :3] = rpy_to_matrix(delta[3:6]) @ ee_mat[:3, :3]
    out[:3, 3] = ee_mat[:3, 3] + delta[:3]
    return out


def ee_delta_between(from_mat: np.ndarray, to_mat: np.ndarray) -> np.ndarray:
    """Inverse of :func:`apply_ee_delta`: the ``[6]`` delta taking ``from_mat`` to ``to_mat``."""
    d_rot = to_mat[:3, :3] @ from_mat[:3, :3].T
    return np.concatenate([to_mat[:3, 3] - from_mat[:3, 3], matrix_to_rpy(d_rot)])


def _chain(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint origins ``[6, 3]``, world joint axes ``[6, 3]`` and the EE transform ``[4, 4]``."""
    rot = np.eye(3)
    pos = np.zeros(3)
    origins = np.empty((NUM_JOINTS, 3))
    axes = np.empty((NUM_JOINTS, 3))
    for i in range(NUM_JOINTS):
        pos = pos + rot @ JOINT_OFFSETS_M[i]
        rot = rot @ _axis_rotation(JOINT_AXES[i], float(q[i]))
        origins[i] = pos
        axes[i] = rot[:, JOINT_AXES[i]]
    ee = np.eye(4)
    ee[:3, :3] = rot
    ee[:3, 3] = pos + rot[:, 0] * EE_OFFSET_M
    return origins, axes, ee


def fk(q_rad: np.ndarray) -> np.ndarray:
    """Arm joints ``[6]`` rad -> ``ee_gripper_link`` pose in the base frame, ``[4, 4]``."""
    return _chain(np.asarray(q_rad, dtype=np.float64))[2]


def fk_pose(q_rad: np.ndarray) -> np.ndarray:
    """Arm joints ``[6]`` rad -> EE pose ``[6]`` (xyz m, extrinsic XYZ rpy rad)."""
    return matrix_to_pose(fk(q_rad))


def jacobian(q_rad: np.ndarray) -> np.ndarray:
    """Geometric Jacobian ``[6, 6]`` of the EE in the base frame (rows: linear, then angular)."""
    origins, axes, ee = _chain(np.asarray(q_rad, dtype=np.float64))
    return _jacobian_from(origins, axes, ee[:3, 3])


def _jacobian_from(origins: np.ndarray, axes: np.ndarray, ee_pos: np.ndarray) -> np.ndarray:
    jac = np.empty((6, NUM_JOINTS))
    jac[:3] = np.cross(axes, ee_pos - origins).T
    jac[3:] = axes.T
    return jac


def within_limits(q_rad: np.ndarray, margin_rad: float = 0.0) -> bool:
    """True when every joint lies inside its range shrunk by ``margin_rad``."""
    q = np.asarray(q_rad, dtype=np.float64)
    lower_ok = np.all(q >= JOINT_LOWER_RAD + margin_rad)
    return bool(lower_ok and np.all(q <= JOINT_UPPER_RAD - margin_rad))


def solve_ik(
    target: np.ndarray,
    seed_rad: np.ndarray,
    *,
    max_iters: int = 60,
    pos_tol_m: float = 1e-4,
    rot_tol_rad: float = 1e-3,
    damping: float = 1e-2,
    max_joint_step_rad: float = 0.3,
) -> np.ndarray | None:
    """Joint angles ``[6]`` reaching the EE ``target`` (``[4, 4]``, or a ``[6]`` pose), or None.

    Damped least squares on the full 6-DOF pose error, started at ``seed_rad`` (use the current
    joints so the answer stays on the same branch and close to it), clamped to the joint
    limits after every step. Returns None when the tolerances are not met within ``max_iters``
    (unreachable target, or one too far from the seed) - the caller holds instead of jumping.
    """
    target = np.asarray(target, dtype=np.float64)
    if target.shape == (6,):
        target = pose_to_matrix(target)
    if target.shape != (4, 4) or not np.all(np.isfinite(target)):
        return None
    q = np.clip(np.asarray(seed_rad, dtype=np.float64).reshape(NUM_JOINTS), JOINT_LOWER_RAD,
                JOINT_UPPER_RAD)
    target_rot = target[:3, :3]
    target_pos = target[:3, 3]
    lam2 = damping * damping
    err = np.empty(6)
    for _ in range(max_iters):
        origins, axes, ee = _chain(q)
        err[:3] = target_pos - ee[:3, 3]
        err[3:] = rotation_log(target_rot @ ee[:3, :3].T)
        pos_err = math.sqrt(float(err[0] ** 2 + err[1] ** 2 + err[2] ** 2))
        rot_err = math.sqrt(float(err[3] ** 2 + err[4] ** 2 + err[5] ** 2))
        if pos_err <= pos_tol_m and rot_err <= rot_tol_rad:
            return q
        jac = _jacobian_from(origins, axes, ee[:3, 3])
        dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), err)
        step = float(np.max(np.abs(dq)))
        if step > max_joint_step_rad:
            dq *= max_joint_step_rad / step
        q = np.clip(q + dq, JOINT_LOWER_RAD, JOINT_UPPER_RAD)
    return None
