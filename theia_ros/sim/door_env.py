"""The MuJoCo door-opening environment: physics, joint-space commands, camera, door state.

Joint-space only: end-effector semantics (deltas, IK) live in the ``SimWidowX`` adapter so
the same code path as the real arm is exercised. Each ``step_joints`` simulates one control
period, moving the position-servo targets linearly from the previous command to the new one
(like the real arm's moving-time profile) and stepping the physics as fast as it can.

Headless rendering needs an OpenGL backend chosen before MuJoCo is imported; ``MUJOCO_GL``
defaults to ``egl`` (Mesa) here unless the caller set it.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from theia_ros.control import kinematics as K
from theia_ros.sim import scene as S
from theia_ros.sim.success import DoorStage, door_stage

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported, or it is too late
import mujoco

TIMESTEP_S = 0.002


def _yaw_quat(yaw_rad: float) -> np.ndarray:
    return np.array([math.cos(yaw_rad / 2), 0.0, 0.0, math.sin(yaw_rad / 2)])


def finger_from_fraction(fraction: float) -> float:
    """Gripper open fraction ``[0, 1]`` -> left finger slide position (m)."""
    f = min(1.0, max(0.0, float(fraction)))
    return K.FINGER_CLOSED_M + f * (K.FINGER_OPEN_M - K.FINGER_CLOSED_M)


def fraction_from_finger(finger_m: float) -> float:
    """Left finger slide position (m) -> open fraction ``[0, 1]``."""
    f = (float(finger_m) - K.FINGER_CLOSED_M) / (K.FINGER_OPEN_M - K.FINGER_CLOSED_M)
    return min(1.0, max(0.0, f))


class DoorEnv:
    """One simulated WidowX 250s + fridge; ``reset(seed)`` draws a new randomised episode.

    Args:
        image_size: square camera resolution in pixels (the policies use 224).
        render: build an offscreen renderer; False for physics-only use (tests, the expert).
    """

    def __init__(self, *, image_size: int = 224, render: bool = True) -> None:
        self.image_size = int(image_size)
        self.model = mujoco.MjModel.from_xml_string(S.build_mjcf(self.image_size))
        self.model.opt.timestep = TIMESTEP_S
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_qpos_adr = np.array(
            [m.jnt_qposadr[m.joint(n).id] for n in K.JOINT_NAMES], dtype=np.int64
        )
        self._arm_dof_adr = np.array(
            [m.jnt_dofadr[m.joint(n).id] for n in K.JOINT_NAMES], dtype=np.int64
        )
        self._finger_adr = (
            int(m.jnt_qposadr[m.joint("left_finger").id]),
            int(m.jnt_qposadr[m.joint("right_finger").id]),
        )
        self._door_adr = int(m.jnt_qposadr[m.joint("door_hinge").id])
        self._base_body = m.body("base_link").id
        self._door_body = m.body("door").id
        self._handle_site = m.site("handle_centre").id
        self._ee_site = m.site("ee_gripper").id
        self._handle_geoms = [m.geom(n).id for n in ("handle_bar", "handle_so_inner",
                                                     "handle_so_outer")]
        self._handle_site_z0 = float(m.site_pos[self._handle_site][2])
        self._handle_geom_z0 = [float(m.geom_pos[g][2]) for g in self._handle_geoms]
        self._jitter_geoms = [m.geom(n).id for n in ("door", "cabinet", "floor")]
        self._rgba0 = {g: m.mat_rgba[m.geom_matid[g]].copy() if m.geom_matid[g] >= 0
                       else m.geom_rgba[g].copy() for g in self._jitter_geoms}
        self._renderer: mujoco.Renderer | None = None
        self._render_lock = threading.Lock()
        if render:
            self._renderer = mujoco.Renderer(m, self.image_size, self.image_size)
            _release_gl()
        self.params = S.SceneParams.nominal()
        self._ctrl_arm = S.START_QPOS_RAD.copy()
        self._ctrl_finger = K.FINGER_OPEN_M
        self.reset(None)

    # -- episode ---------------------------------------------------------------------------
    def reset(self, seed: int | None, arm_qpos: np.ndarray | None = None) -> S.SceneParams:
        """New episode: the nominal scene for ``seed=None``, else a randomised one."""
        params = S.SceneParams.nominal() if seed is None else S.sample_scene_params(seed)
        self._apply_params(params)
        self.params = params
        mujoco.mj_resetData(self.model, self.data)
        q0 = np.asarray(params.arm_qpos0_rad if arm_qpos is None else arm_qpos, dtype=np.float64)
        self.data.qpos[self._arm_qpos_adr] = q0
        self.data.qpos[self._finger_adr[0]] = K.FINGER_OPEN_M
        self.data.qpos[self._finger_adr[1]] = -K.FINGER_OPEN_M
        self.data.qpos[self._door_adr] = params.door_angle0_rad
        self._ctrl_arm = q0.copy()
        self._ctrl_finger = K.FINGER_OPEN_M
        self._write_ctrl(self._ctrl_arm, self._ctrl_finger)
        mujoco.mj_forward(self.model, self.data)
        return params

    def _apply_params(self, p: S.SceneParams) -> None:
        m = self.model
        m.body_pos[self._base_body] = p.base_xyz_m
        m.body_quat[self._base_body] = _yaw_quat(p.base_yaw_rad)
        m.body_pos[self._door_body][:2] = p.hinge_xy_m
        dz = p.handle_z_m - S.HANDLE_Z_M
        for g, z0 in zip(self._handle_geoms, self._handle_geom_z0):
            m.geom_pos[g][2] = z0 + dz
        m.site_pos[self._handle_site][2] = self._handle_site_z0 + dz
        light = np.asarray(p.light_dir)
        m.light_dir[0] = light / np.linalg.norm(light)
        m.light_diffuse[0] = p.light_level
        for i, g in enumerate(self._jitter_geoms):
            rgba = self._rgba0[g].copy()
            rgba[:3] = np.clip(rgba[:3] + np.asarray(p.colour_jitter[3 * i:3 * i + 3]), 0, 1)
            if m.geom_matid[g] >= 0:
                m.mat_rgba[m.geom_matid[g]] = rgba
            else:
                m.geom_rgba[g] = rgba

    # -- commands --------------------------------------------------------------------------
    def _write_ctrl(self, arm: np.ndarray, finger_m: float) -> None:
        self.data.ctrl[:6] = arm
        self.data.ctrl[6] = finger_m

    def step_joints(self, arm_target_rad: np.ndarray, gripper_fraction: float,
                    period_s: float = 0.2) -> None:
        """Simulate one control period toward arm joint targets ``[6]`` and a gripper fraction.

        The servo targets ramp linearly from the previous command over the period (no step
        jumps), then the physics runs as fast as it can: no real-time pacing here.
        """
        target = np.clip(np.asarray(arm_target_rad, dtype=np.float64), K.JOINT_LOWER_RAD,
                         K.JOINT_UPPER_RAD)
        finger = finger_from_fraction(gripper_fraction)
        start_arm, start_finger = self._ctrl_arm, self._ctrl_finger
        n = max(1, round(period_s / self.model.opt.timestep))
        ramp = max(1, int(0.8 * n))  # reach the target with 20 % of the period to settle
        for i in range(n):
            a = min(1.0, (i + 1) / ramp)
            self._write_ctrl(start_arm + a * (target - start_arm),
                             start_finger + a * (finger - start_finger))
            mujoco.mj_step(self.model, self.data)
        self._ctrl_arm = target
        self._ctrl_finger = finger

    def hold(self, period_s: float = 0.2) -> None:
        """Command the current joint positions (stop where we are) and simulate one period."""
        self._ctrl_arm = self.arm_qpos()
        self.step_joints(self._ctrl_arm, fraction_from_finger(self._ctrl_finger), period_s)

    # -- state -----------------------------------------------------------------------------
    def arm_qpos(self) -> np.ndarray:
        """Measured arm joint positions ``[6]`` rad."""
        return self.data.qpos[self._arm_qpos_adr].copy()

    def commanded_arm(self) -> np.ndarray:
        """Last arm joint targets ``[6]`` rad."""
        return self._ctrl_arm.copy()

    def gripper_fraction(self) -> float:
        """Measured gripper open fraction ``[0, 1]``."""
        return fraction_from_finger(self.data.qpos[self._finger_adr[0]])

    def door_angle_rad(self) -> float:
        """Hinge angle, 0 = closed, positive = open toward the robot."""
        return float(self.data.qpos[self._door_adr])

    def set_door_angle(self, angle_rad: float) -> None:
        """Force the door to ``angle_rad`` (tests, scripted resets)."""
        self.data.qpos[self._door_adr] = angle_rad
        self.data.qvel[self.model.jnt_dofadr[self.model.joint("door_hinge").id]] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def stage(self) -> DoorStage:
        """Success stage of the current door angle."""
        return door_stage(self.door_angle_rad())

    def time_s(self) -> float:
        """Simulated time since reset."""
        return float(self.data.time)

    def base_pose_world(self) -> tuple[np.ndarray, np.ndarray]:
        """Robot base position ``[3]`` and rotation ``[3, 3]`` in the world (kitchen) frame."""
        return (self.data.xpos[self._base_body].copy(),
                self.data.xmat[self._base_body].reshape(3, 3).copy())

    def world_to_base(self, p_world: np.ndarray) -> np.ndarray:
        """A world point ``[3]`` expressed in the robot base frame."""
        pos, rot = self.base_pose_world()
        return rot.T @ (np.asarray(p_world) - pos)

    def handle_centre_base(self) -> np.ndarray:
        """Privileged: the handle bar's centre ``[3]`` in the base frame (the expert uses it)."""
        return self.world_to_base(self.data.site_xpos[self._handle_site])

    def door_frame_base(self) -> tuple[np.ndarray, np.ndarray]:
        """Privileged: door body origin (hinge axis, bottom) ``[3]`` and rotation ``[3, 3]``."""
        pos, rot = self.base_pose_world()
        door_pos = self.data.xpos[self._door_body]
        door_rot = self.data.xmat[self._door_body].reshape(3, 3)
        return rot.T @ (door_pos - pos), rot.T @ door_rot

    def ee_site_base(self) -> np.ndarray:
        """The simulated fingertip centre ``[3]`` in the base frame (checks FK against MuJoCo)."""
        return self.world_to_base(self.data.site_xpos[self._ee_site])

    def robot_door_contact(self) -> bool:
        """True when any robot geom touches the door or its handle."""
        m, d = self.model, self.data
        for i in range(d.ncon):
            b1 = m.geom_bodyid[d.contact[i].geom1]
            b2 = m.geom_bodyid[d.contact[i].geom2]
            if self._door_body in (b1, b2) and (b1 != self._door_body or b2 != self._door_body):
                return True
        return False

    # -- camera ----------------------------------------------------------------------------
    @property
    def can_render(self) -> bool:
        return self._renderer is not None

    def render(self, camera: str = S.CAMERA_NAME) -> np.ndarray:
        """A camera's view (``front``: fixed scene camera; ``wrist``: on the gripper), uint8
        RGB ``[H, W, 3]``."""
        if camera not in S.CAMERA_NAMES:
            raise ValueError(f"sim camera {camera!r} unknown; the door scene has "
                             f"{list(S.CAMERA_NAMES)}")
        if self._renderer is None:
            raise RuntimeError("DoorEnv was built with render=False")
        with self._render_lock:
            try:
                self._renderer.update_scene(self.data, camera)
                return self._renderer.render().copy()
            finally:
                _release_gl()

    def close(self) -> None:
        """Free the renderer's GL context; safe to call twice."""
        with self._render_lock:
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None
                _release_gl()


def _release_gl() -> None:
    """Let the EGL context go from this thread, so another thread can render next.

    ROS nodes connect the sim on the main thread and tick (render) on their control thread;
    an EGL context still current on the first thread makes the second fail (EGL_BAD_ACCESS).
    """
    if os.environ.get("MUJOCO_GL") == "egl":
        from mujoco.egl import EGL

        EGL.eglReleaseThread()
