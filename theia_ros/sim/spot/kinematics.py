"""Spot arm kinematics for the stand-in robot: forward and inverse, with joint limits.

THIS IS PART OF A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. Link offsets, joint
axes and limits are the figures of the Spot arm MJCF (mujoco_menagerie
``boston_dynamics_spot/spot_arm.xml``, from spot_ros2's URDF), summarised in
``shared/reference/spot-arm.md``; the tool frame is ``wrist_tform_tool`` = 0.19557 m along the
wrist's x, the default of ``ArmCartesianCommand``. The arm is six revolute joints
(sh0 z, sh1 y, el0 y, el1 x, wr0 y, wr1 x) whose wrist axes meet in one point, so the inverse is
closed-form: position from sh0/sh1/el0, orientation as x-y-x angles of el1/wr0/wr1.
"""

from __future__ import annotations

import math

import numpy as np

SHOULDER_M = np.array([0.292, 0.0, 0.188])  # arm_link_sh0 in the body frame
UPPER_ARM_M = 0.3385  # sh1 -> el0 along x
FOREARM_M = np.array([0.4033, 0.0, 0.075])  # el0 -> el1 (wrist centre)
TOOL_M = 0.19557  # wrist -> hand frame along the wrist's x
LIMITS_RAD = np.array([(-2.61799, 3.14159), (-3.14159, 0.523599), (0.0, 3.14159),
                       (-2.79253, 2.79253), (-1.8326, 1.8326), (-2.87979, 2.87979)])
STOW_Q = np.array([0.0, -3.14, 3.06, 0.0, 0.0, 0.0])  # the menagerie's stowed keyframe
READY_Q = np.array([0.0, -1.75, 2.364, 0.0, -0.614, 0.0])  # hand ~(0.8, 0, 0.35), level


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def forward(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint angles [6] -> hand position [3] and rotation [3, 3] in the body frame."""
    upper = rot_z(q[0]) @ rot_y(q[1])
    elbow = SHOULDER_M + upper @ np.array([UPPER_ARM_M, 0.0, 0.0])
    fore = upper @ rot_y(q[2])
    wrist = elbow + fore @ FOREARM_M
    hand = fore @ rot_x(q[3]) @ rot_y(q[4]) @ rot_x(q[5])
    return wrist + hand @ np.array([TOOL_M, 0.0, 0.0]), hand


def within_limits(q: np.ndarray) -> bool:
    return bool(np.all(q >= LIMITS_RAD[:, 0] - 1e-9) and np.all(q <= LIMITS_RAD[:, 1] + 1e-9))


def inverse(position: np.ndarray, rotation: np.ndarray, near: np.ndarray) -> np.ndarray | None:
    """Hand pose in the body frame -> joint angles [6] inside the limits, nearest ``near``;
    None when the pose is out of reach or every solution breaks a joint limit."""
    wrist = position - rotation @ np.array([TOOL_M, 0.0, 0.0])
    d = wrist - SHOULDER_M
    heading = math.atan2(d[1], d[0]) if math.hypot(d[0], d[1]) > 1e-6 else float(near[0])
    best = None
    # the shoulder may face the wrist or face away from it (reaching back over the top)
    for sh0, u in ((heading, math.hypot(d[0], d[1])),
                   (_wrap(heading + math.pi), -math.hypot(d[0], d[1]))):
        best = _nearest(best, _solve_plane(sh0, u, d[2], rotation, near), near)
    return best


def _nearest(best: np.ndarray | None, candidates: list[np.ndarray],
             near: np.ndarray) -> np.ndarray | None:
    for q in candidates:
        if within_limits(q) and (best is None or np.abs(q - near).sum()
                                 < np.abs(best - near).sum()):
            best = q
    return best


def _solve_plane(sh0: float, u: float, w: float, rotation: np.ndarray,
                 near: np.ndarray) -> list[np.ndarray]:
    """Planar two-link problem in the vertical plane through sh0 (u forward, w up)."""
    fore_len = math.hypot(FOREARM_M[0], FOREARM_M[2])
    bend = math.atan2(FOREARM_M[2], FOREARM_M[0])
    cos_elbow = (u * u + w * w - UPPER_ARM_M ** 2 - fore_len ** 2) / (2 * UPPER_ARM_M * fore_len)
    if abs(cos_elbow) > 1.0:
        return []
    out = []
    for elbow in (math.acos(cos_elbow), -math.acos(cos_elbow)):
        phi2 = -bend - elbow  # rotation of the forearm in the plane (= -el0)
        reach_u = UPPER_ARM_M + fore_len * math.cos(phi2 + bend)
        reach_w = fore_len * math.sin(phi2 + bend)
        phi1 = math.atan2(w, u) - math.atan2(reach_w, reach_u)
        sh1, el0 = -phi1, -phi2
        fore = rot_z(sh0) @ rot_y(sh1 + el0)
        m = fore.T @ rotation  # = Rx(el1) Ry(wr0) Rx(wr1)
        out += [np.array([sh0, _wrap(sh1), el0, *q_wrist])
                for q_wrist in _xyx_angles(m, near[3:])]
    return out


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi if a > math.pi or a < -math.pi else a


def _xyx_angles(m: np.ndarray, near: np.ndarray) -> list[tuple[float, float, float]]:
    """Both (a, b, c) with ``Rx(a) Ry(b) Rx(c) = m``; near-singular: keep ``near``'s a."""
    b = math.acos(max(-1.0, min(1.0, m[0, 0])))
    if math.sin(b) < 1e-6:  # wrist straight (b = 0; b = pi is outside wr0's limits)
        if b > 1.0:
            return []
        total, a = math.atan2(m[2, 1], m[1, 1]), float(near[0])
        return [(a, b, _wrap(total - a))]
    a, c = math.atan2(m[1, 0], -m[2, 0]), math.atan2(m[0, 1], m[0, 2])
    return [(a, b, c), (_wrap(a + math.pi), -b, _wrap(c + math.pi))]
