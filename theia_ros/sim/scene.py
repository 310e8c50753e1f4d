"""The door-opening scene: a WidowX 250s from primitive geoms in front of a toy-kitchen fridge.

The MJCF is built once as a string over the chain in ``control.kinematics`` (so the sim and
the real-arm adapter share every link length); per-episode randomisation (``SceneParams``)
then edits model fields in place, so one compiled model and one renderer serve every episode.

World frame = kitchen frame: floor at z = 0, the fridge's closed door in the plane
x = ``FRIDGE_FRONT_X_M``, the kitchen running along y. The robot base stands on a pedestal at
about the origin, facing +x, at the paper's base height of 0.40-0.46 m. The door is hinged on
the robot's left (+y edge) and opens toward the robot; a horizontal bar handle near its free
edge stands off the door so a fingertip can hook behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from theia_ros.control import kinematics as K

# Nominal geometry (metres). Door-local frame: origin on the hinge axis at the door's bottom,
# x out of the fridge (toward the robot is -x when closed), the door spans local -y.
FRIDGE_FRONT_X_M = 0.40
HINGE_Y_M = 0.13
DOOR_BOTTOM_Z_M = 0.36
DOOR_WIDTH_M = 0.22
DOOR_HEIGHT_M = 0.36
DOOR_THICKNESS_M = 0.02
HANDLE_Z_M = 0.16  # handle bar height above the door bottom (world ~0.52 m)
HANDLE_R_INNER_M = 0.115  # standoffs along the door, from the hinge
HANDLE_R_OUTER_M = 0.205
HANDLE_STANDOFF_M = 0.04  # bar centre in front of the door face
HANDLE_BAR_RADIUS_M = 0.006
HANDLE_R_CENTRE_M = 0.5 * (HANDLE_R_INNER_M + HANDLE_R_OUTER_M)
DOOR_MAX_ANGLE_RAD = math.radians(105.0)
CABINET_DEPTH_M = 0.28

ROBOT_BASE_Z_RANGE_M = (0.40, 0.46)  # paper: base height varied between 40 and 46 cm
ROBOT_BASE_Y_RANGE_M = (-0.05, 0.05)  # position along the kitchen
ROBOT_BASE_X_RANGE_M = (-0.02, 0.02)  # distance to the fridge
ROBOT_BASE_YAW_RANGE_RAD = (-0.05, 0.05)
DOOR_ANGLE0_RANGE_RAD = (0.0, math.radians(4.0))  # closed or slightly ajar
HINGE_JITTER_M = 0.01
HANDLE_Z_JITTER_M = 0.015

# Episodes start gripper-down in front of the base (fingertip ~(0.28, 0, 0.17) m, pitch 1.2
# rad): away from the wrist singularity of the home keyframe, where forearm_roll and
# wrist_rotate are nearly aligned and a teleoperator's small rotations need large, branch-
# flipping wrist motions. A seeded jitter of up to START_JITTER_RAD per joint varies it.
START_QPOS_RAD = np.array([0.0, -0.3, 0.5, 0.0, 1.0, 0.0])
START_JITTER_RAD = 0.05

CAMERA_NAME = "front"
# A wrist camera on the gripper (like the WidowX set-ups with a second, hand-mounted
# camera): behind and above the fingers, looking along the gripper 0.5 rad downward, so the
# fingertips and what they approach fill the view.
WRIST_CAMERA_NAME = "wrist"
CAMERA_NAMES = (CAMERA_NAME, WRIST_CAMERA_NAME)
ARM_BODIES = (
    "shoulder_link",
    "upper_arm_link",
    "upper_forearm_link",
    "lower_forearm_link",
    "wrist_link",
    "gripper_link",
)
ARM_MASSES_KG = (0.481, 0.431, 0.235, 0.221, 0.085, 0.110)
FINGER_MASS_KG = 0.016


@dataclass(frozen=True)
class SceneParams:
    """One episode's randomised scene (world frame, metres / radians)."""

    seed: int
    base_xyz_m: tuple[float, float, float]
    base_yaw_rad: float
    hinge_xy_m: tuple[float, float]
    handle_z_m: float  # above the door bottom
    door_angle0_rad: float
    arm_qpos0_rad: tuple[float, ...]  # [6] start joints
    light_dir: tuple[float, float, float]
    light_level: float
    colour_jitter: tuple[float, ...]  # [9] small rgb offsets: door, cabinet, floor

    @classmethod
    def nominal(cls) -> SceneParams:
        """The un-randomised scene (used for building the model and for tests)."""
        return cls(
            seed=-1,
            base_xyz_m=(0.0, 0.0, 0.43),
            base_yaw_rad=0.0,
            hinge_xy_m=(FRIDGE_FRONT_X_M + DOOR_THICKNESS_M / 2, HINGE_Y_M),
            handle_z_m=HANDLE_Z_M,
            door_angle0_rad=0.0,
            arm_qpos0_rad=tuple(float(v) for v in START_QPOS_RAD),
            light_dir=(0.3, 0.2, -1.0),
            light_level=0.7,
            colour_jitter=(0.0,) * 9,
        )


def sample_scene_params(seed: int) -> SceneParams:
    """Draw an episode's scene from ``seed`` (deterministic: same seed, same scene)."""
    rng = np.random.default_rng(seed)
    nominal = SceneParams.nominal()
    light = rng.normal([0.3, 0.2, -1.0], [0.25, 0.25, 0.0])
    return SceneParams(
        seed=int(seed),
        base_xyz_m=(
            float(rng.uniform(*ROBOT_BASE_X_RANGE_M)),
            float(rng.uniform(*ROBOT_BASE_Y_RANGE_M)),
            float(rng.uniform(*ROBOT_BASE_Z_RANGE_M)),
        ),
        base_yaw_rad=float(rng.uniform(*ROBOT_BASE_YAW_RANGE_RAD)),
        hinge_xy_m=(
            nominal.hinge_xy_m[0] + float(rng.uniform(-HINGE_JITTER_M, HINGE_JITTER_M)),
            nominal.hinge_xy_m[1] + float(rng.uniform(-HINGE_JITTER_M, HINGE_JITTER_M)),
        ),
        handle_z_m=HANDLE_Z_M + float(rng.uniform(-HANDLE_Z_JITTER_M, HANDLE_Z_JITTER_M)),
        door_angle0_rad=float(rng.uniform(*DOOR_ANGLE0_RANGE_RAD)),
        arm_qpos0_rad=tuple(
            float(v) for v in START_QPOS_RAD + rng.uniform(-START_JITTER_RAD, START_JITTER_RAD, 6)
        ),
        light_dir=tuple(float(v) for v in light),
        light_level=float(rng.uniform(0.55, 0.85)),
        colour_jitter=tuple(float(v) for v in rng.uniform(-0.06, 0.06, 9)),
    )


def _v(*vals: float) -> str:
    return " ".join(f"{v:.6g}" for v in vals)


def _arm_xml() -> str:
    """The wx250s chain: bodies at the reference offsets, capsules along each link."""
    off = K.JOINT_OFFSETS_M
    lo, hi = K.JOINT_LOWER_RAD, K.JOINT_UPPER_RAD
    axes = {0: "1 0 0", 1: "0 1 0", 2: "0 0 1"}
    joint = [
        f'<joint name="{n}" axis="{axes[a]}" range="{_v(lo[i], hi[i])}"/>'
        for i, (n, a) in enumerate(zip(K.JOINT_NAMES, K.JOINT_AXES))
    ]
    m = ARM_MASSES_KG
    ee = K.EE_OFFSET_M
    fo = K.FINGER_OFFSET_M
    return f"""
    <body name="base_link" pos="0 0 0.43" gravcomp="1" childclass="arm">
      <geom name="base" type="box" pos="0 0 0.036" size="0.06 0.06 0.036" mass="0.539"
            material="arm_dark"/>
      <geom name="pedestal" type="box" pos="0 0 -0.3" size="0.09 0.09 0.3" material="pedestal"
            contype="0" conaffinity="0" mass="0.1"/>
      <body name="shoulder_link" pos="{_v(*off[0])}" gravcomp="1">
        {joint[0]}
        <geom type="cylinder" pos="0 0 0.018" size="0.045 0.022" mass="{m[0]}"
              material="arm_dark"/>
        <body name="upper_arm_link" pos="{_v(*off[1])}" gravcomp="1">
          {joint[1]}
          <geom type="capsule" fromto="0 0 0 {_v(*off[2])}" size="0.024" mass="{m[1]}"
                material="arm_dark"/>
          <body name="upper_forearm_link" pos="{_v(*off[2])}" gravcomp="1">
            {joint[2]}
            <geom type="capsule" fromto="0 0 0 {_v(*off[3])}" size="0.021" mass="{m[2]}"
                  material="arm_light"/>
            <body name="lower_forearm_link" pos="{_v(*off[3])}" gravcomp="1">
              {joint[3]}
              <geom type="capsule" fromto="0 0 0 {_v(*off[4])}" size="0.019" mass="{m[3]}"
                    material="arm_dark"/>
              <body name="wrist_link" pos="{_v(*off[4])}" gravcomp="1">
                {joint[4]}
                <geom type="capsule" fromto="0 0 0 0.045 0 0" size="0.017" mass="{m[4]}"
                      material="arm_light"/>
                <body name="gripper_link" pos="{_v(*off[5])}" gravcomp="1">
                  {joint[5]}
                  <geom type="box" pos="0.03 0 0" size="0.03 0.042 0.018" mass="{m[5]}"
                        material="arm_dark"/>
                  <site name="ee_gripper" pos="{ee} 0 0" size="0.004" rgba="1 0 0 0"/>
                  <camera name="{WRIST_CAMERA_NAME}" pos="0.05 0 0.045"
                          xyaxes="0 -1 0 0.4794 0 0.8776" fovy="75"/>
                  <body name="left_finger_link" pos="{fo} 0 0" gravcomp="1">
                    <joint name="left_finger" type="slide" axis="0 1 0"
                           range="{_v(K.FINGER_CLOSED_M, K.FINGER_OPEN_M)}"/>
                    <geom name="left_pad" type="box" pos="{ee - fo - 0.012} -0.006 0"
                          size="0.016 0.005 0.008" mass="{FINGER_MASS_KG}" material="finger"
                          friction="1.2 0.02 0.001"/>
                  </body>
                  <body name="right_finger_link" pos="{fo} 0 0" gravcomp="1">
                    <joint name="right_finger" type="slide" axis="0 1 0"
                           range="{_v(-K.FINGER_OPEN_M, -K.FINGER_CLOSED_M)}"/>
                    <geom name="right_pad" type="box" pos="{ee - fo - 0.012} 0.006 0"
                          size="0.016 0.005 0.008" mass="{FINGER_MASS_KG}" material="finger"
                          friction="1.2 0.02 0.001"/>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


def _fridge_xml() -> str:
    """Cabinet (static), hinged door with a stand-off bar handle, and kitchen dressing."""
    w, h, t = DOOR_WIDTH_M, DOOR_HEIGHT_M, DOOR_THICKNESS_M
    x_front = FRIDGE_FRONT_X_M
    cab_x = x_front + t + CABINET_DEPTH_M / 2 + 0.002
    cab_y = HINGE_Y_M - w / 2
    cab_z = DOOR_BOTTOM_Z_M / 2 + h / 2 + 0.02
    bar_x = -t / 2 - HANDLE_STANDOFF_M
    so_len = HANDLE_STANDOFF_M
    return f"""
    <body name="cabinet" pos="{_v(cab_x, cab_y, 0)}">
      <geom name="cabinet" type="box" pos="0 0 {cab_z}" size="{_v(CABINET_DEPTH_M / 2,
            w / 2 + 0.015, cab_z)}" material="cabinet"/>
      <geom name="counter" type="box" pos="0 {-w / 2 - 0.3} 0.2" size="{_v(
            CABINET_DEPTH_M / 2, 0.285, 0.2)}" material="counter"/>
      <geom name="stove" type="cylinder" pos="0.02 {-w / 2 - 0.25} 0.402" size="0.06 0.003"
            material="stove" contype="0" conaffinity="0"/>
    </body>
    <body name="door" pos="{_v(x_front + t / 2, HINGE_Y_M, DOOR_BOTTOM_Z_M)}">
      <joint name="door_hinge" axis="0 0 -1" range="0 {DOOR_MAX_ANGLE_RAD}" damping="0.05"
             frictionloss="0.015" armature="0.002" limited="true"/>
      <geom name="door" type="box" pos="{_v(0, -w / 2, h / 2)}" size="{_v(t / 2, w / 2,
            h / 2)}" mass="0.25" material="door"/>
      <geom name="handle_bar" type="capsule" fromto="{_v(bar_x, -HANDLE_R_INNER_M + 0.006,
            HANDLE_Z_M, bar_x, -HANDLE_R_OUTER_M - 0.006, HANDLE_Z_M)}"
            size="{HANDLE_BAR_RADIUS_M}" mass="0.02" material="handle"/>
      <geom name="handle_so_inner" type="box" pos="{_v(-t / 2 - so_len / 2,
            -HANDLE_R_INNER_M, HANDLE_Z_M)}" size="{_v(so_len / 2, 0.005, 0.006)}" mass="0.005"
            material="handle"/>
      <geom name="handle_so_outer" type="box" pos="{_v(-t / 2 - so_len / 2,
            -HANDLE_R_OUTER_M, HANDLE_Z_M)}" size="{_v(so_len / 2, 0.005, 0.006)}" mass="0.005"
            material="handle"/>
      <site name="handle_centre" pos="{_v(bar_x, -HANDLE_R_CENTRE_M, HANDLE_Z_M)}"
            size="0.004" rgba="0 1 0 0"/>
    </body>"""


def build_mjcf(image_size: int = 224) -> str:
    """The whole scene as an MJCF string (nominal geometry; randomise via model fields)."""
    fin = K.FINGER_OPEN_M
    kp, kp_grip = 50.0, 200.0
    actuators = "\n".join(
        f'<position name="{n}" joint="{n}" kp="{kp}" dampratio="0.95" forcerange="-35 35"'
        f' ctrlrange="{_v(K.JOINT_LOWER_RAD[i], K.JOINT_UPPER_RAD[i])}"/>'
        for i, n in enumerate(K.JOINT_NAMES)
    )
    return f"""<mujoco model="wx250s_door">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="{image_size}" offheight="{image_size}"/>
    <quality shadowsize="1024"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  <default>
    <joint frictionloss="0.1" armature="0.1"/>
    <geom friction="0.8 0.01 0.001" solref="0.004 1"/>
    <default class="arm">
      <!-- arm links collide with the world but not with each other (no self-collision) -->
      <geom contype="2" conaffinity="1"/>
    </default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" width="128" height="128"
             rgb1="0.55 0.5 0.45" rgb2="0.45 0.4 0.36"/>
    <material name="floor" texture="grid" texrepeat="6 6"/>
    <material name="arm_dark" rgba="0.12 0.12 0.13 1"/>
    <material name="arm_light" rgba="0.25 0.25 0.27 1"/>
    <material name="finger" rgba="0.35 0.35 0.38 1"/>
    <material name="pedestal" rgba="0.45 0.35 0.25 1"/>
    <material name="cabinet" rgba="0.92 0.9 0.85 1"/>
    <material name="door" rgba="0.55 0.75 0.9 1"/>
    <material name="handle" rgba="0.85 0.25 0.2 1"/>
    <material name="counter" rgba="0.9 0.8 0.55 1"/>
    <material name="stove" rgba="0.2 0.2 0.2 1"/>
    <material name="wall" rgba="0.78 0.8 0.74 1"/>
  </asset>
  <worldbody>
    <light name="sun" directional="true" pos="0 0 2" dir="0.3 0.2 -1" diffuse="0.7 0.7 0.7"
           castshadow="true"/>
    <geom name="floor" type="plane" size="2 2 0.05" material="floor"/>
    <geom name="back_wall" type="box" pos="0.75 0 0.8" size="0.01 1.5 0.8" material="wall"
          contype="0" conaffinity="0"/>
    <geom name="side_wall" type="box" pos="0 1.0 0.8" size="1.5 0.01 0.8" material="wall"
          contype="0" conaffinity="0"/>
    <body name="cam_target" pos="0.3 0.02 0.5"/>
    <camera name="{CAMERA_NAME}" pos="-0.28 -0.5 0.95" mode="targetbody" target="cam_target"
            fovy="55"/>
    {_arm_xml()}
    {_fridge_xml()}
  </worldbody>
  <contact>
    <exclude body1="cabinet" body2="door"/>
  </contact>
  <equality>
    <joint joint1="right_finger" joint2="left_finger" polycoef="0 -1 0 0 0"/>
  </equality>
  <actuator>
    {actuators}
    <position name="gripper" joint="left_finger" kp="{kp_grip}" dampratio="1"
              forcerange="-10 10" ctrlrange="{_v(K.FINGER_CLOSED_M, fin)}"/>
  </actuator>
</mujoco>"""
