"""The simulated Spot in front of a cabinet whose top drawer it can open (MuJoCo).

THIS IS PART OF A SIMULATOR / STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. It is
the world around ``StandInRobot`` (``robot.world``), for the paper's Spot task (open the top
drawer; one forward-facing camera; start pose varied by +-5 cm in x and y and +-0.2 rad yaw;
success = drawer opened at least 10 cm):

- MuJoCo holds the cabinet and the top drawer on a damped slide joint with a bar handle, the
  standing body (placed per seed, ``reset``) and a visual arm (capsules through the arm's
  forward kinematics, ``kinematics.py``) with a two-jaw claw;
- the arm itself stays the stand-in's kinematic model (``motion.py``); MuJoCo does not
  simulate its contacts, so the hand can pass through the cabinet;
- the handle is the claw's ``Item``: open jaws closing within 3 cm of it stop on it. The grip
  model is deliberately simple: while the claw holds the handle, the drawer's joint follows
  the hand's displacement along the slide (clipped to its travel); if the hand strays more
  than ``SLIP_M`` off the slide line the handle slips out of the jaws. Released, the drawer
  moves under MuJoCo's damped slide dynamics;
- the body camera ``front_color`` (colour, forward-facing at the front of the body, pitched
  10 degrees down) is rendered in the world thread at ``camera_hz`` and served as JPEG by the
  image service with its render time as acquisition time (other sources stay synthetic).

The frames go out as bosdyn-api ``image.proto`` ``ImageResponse`` messages (``FORMAT_JPEG``,
``shot.acquisition_time``; the generated ``bosdyn/api/image_pb2.py``), through the image
service in ``services.py``; the scene itself imitates no vendor code.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from . import kinematics as kin
from .motion import Item

BODY_HEIGHT_M = 0.55  # standing body origin above the floor
HANDLE_NOMINAL_BODY_M = (0.92, 0.0, 0.15)  # where the handle is from the nominal stance
HANDLE_STANDOFF_M = 0.04  # handle bar in front of the drawer face
DRAWER_TRAVEL_M = 0.30
DRAWER_DAMPING = 15.0  # N s / m on the slide
HANDLE_WIDTH = 0.3  # claw open fraction at which the jaws touch the bar
SLIP_M = 0.03  # the hand this far off the slide line: the handle slips out of the jaws
SUCCESS_OPEN_M = 0.10
POSE_JITTER_M, YAW_JITTER_RAD = 0.05, 0.2
CAMERA_SOURCES = ("front_color",)

_FACE_X = HANDLE_NOMINAL_BODY_M[0] + HANDLE_STANDOFF_M
_HANDLE_Z = BODY_HEIGHT_M + HANDLE_NOMINAL_BODY_M[2]
_CAB_DEPTH, _CAB_HALF_W = 0.45, 0.28
_DRAWER_H = 0.16  # top drawer front height
_CAB_TOP = _HANDLE_Z + _DRAWER_H / 2 + 0.03


def _scene_xml(height: int, width: int) -> str:
    cx = _FACE_X + _CAB_DEPTH / 2  # cabinet centre
    d = _CAB_DEPTH / 2
    w = _CAB_HALF_W
    hz = _CAB_TOP / 2
    dz = _DRAWER_H / 2 - 0.01
    inner_w = w - 0.03
    arm = "rgba='0.95 0.8 0.1 1'"
    black = "rgba='0.12 0.12 0.12 1'"
    return f"""
<mujoco model="spot_drawer_sim">
  <option timestep="0.004" gravity="0 0 -9.81"/>
  <visual><global offwidth="{width}" offheight="{height}"/>
    <quality shadowsize="0" offsamples="0"/></visual>
  <default><geom contype="0" conaffinity="0"/></default>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.55 0.55 0.5" rgb2="0.45 0.45 0.42"
             width="256" height="256"/>
    <material name="floor" texture="floor" texrepeat="6 6"/>
    <texture name="wood" type="2d" builtin="flat" rgb1="0.55 0.38 0.22" width="64" height="64"
             mark="random" random="0.15" markrgb="0.45 0.3 0.18"/>
    <material name="wood" texture="wood"/>
  </asset>
  <worldbody>
    <light pos="0.3 -0.8 2.2" dir="0.3 0.5 -1" diffuse="0.8 0.8 0.8" castshadow="false"/>
    <light pos="-0.5 0.8 2.0" dir="0.5 -0.4 -1" diffuse="0.4 0.4 0.4" castshadow="false"/>
    <geom name="floor" type="plane" size="4 4 0.1" material="floor"/>
    <geom name="wall" type="box" pos="{cx + d + 0.6} 0 1.0" size="0.02 2.5 1.0"
          rgba="0.82 0.84 0.86 1"/>
    <body name="cabinet" pos="{cx} 0 0">
      <geom type="box" pos="0 {-w + 0.01} {hz}" size="{d} 0.01 {hz}" material="wood"/>
      <geom type="box" pos="0 {w - 0.01} {hz}" size="{d} 0.01 {hz}" material="wood"/>
      <geom type="box" pos="0 0 {_CAB_TOP - 0.01}" size="{d} {w} 0.01" material="wood"/>
      <geom type="box" pos="{d - 0.01} 0 {hz}" size="0.01 {w} {hz}" material="wood"/>
      <geom type="box" pos="{-d + 0.01} 0 {(_HANDLE_Z - _DRAWER_H / 2 - 0.01) / 2}"
            size="0.01 {w} {(_HANDLE_Z - _DRAWER_H / 2 - 0.01) / 2}" rgba="0.5 0.35 0.2 1"/>
      <geom type="box" pos="{-d - 0.02} 0 {(_HANDLE_Z - _DRAWER_H / 2) / 2}"
            size="0.015 0.03 0.01" {black}/>
      <body name="drawer" pos="{-d + 0.01} 0 {_HANDLE_Z}">
        <joint name="drawer" type="slide" axis="-1 0 0" range="0 {DRAWER_TRAVEL_M}"
               limited="true" damping="{DRAWER_DAMPING}"/>
        <geom name="drawer_front" type="box" pos="0 0 0" size="0.012 {w - 0.012} {dz + 0.01}"
              rgba="0.85 0.7 0.5 1"/>
        <geom type="box" pos="{d - 0.03} 0 {-dz + 0.005}" size="{d - 0.04} {inner_w} 0.005"
              rgba="0.9 0.9 0.85 1"/>
        <geom type="box" pos="{d - 0.03} {-inner_w} 0" size="{d - 0.04} 0.006 {dz}"
              rgba="0.8 0.65 0.45 1"/>
        <geom type="box" pos="{d - 0.03} {inner_w} 0" size="{d - 0.04} 0.006 {dz}"
              rgba="0.8 0.65 0.45 1"/>
        <geom type="box" pos="{2 * d - 0.07} 0 0" size="0.006 {inner_w} {dz}"
              rgba="0.8 0.65 0.45 1"/>
        <geom type="box" pos="0.2 0.05 {-dz + 0.04}" size="0.04 0.06 0.03" rgba="0.2 0.4 0.8 1"/>
        <geom name="handle" type="capsule" fromto="{-HANDLE_STANDOFF_M} -0.08 0
              {-HANDLE_STANDOFF_M} 0.08 0" size="0.01" {black}/>
        <geom type="cylinder" fromto="{-HANDLE_STANDOFF_M} -0.07 0 -0.01 -0.07 0" size="0.007"
              {black}/>
        <geom type="cylinder" fromto="{-HANDLE_STANDOFF_M} 0.07 0 -0.01 0.07 0" size="0.007"
              {black}/>
        <inertial pos="{d - 0.03} 0 0" mass="2.0" diaginertia="0.05 0.05 0.05"/>
      </body>
    </body>
    <body name="spot_body" mocap="true" pos="0 0 {BODY_HEIGHT_M}">
      <geom type="box" size="0.42 0.12 0.09" rgba="0.95 0.8 0.1 1"/>
      <geom type="box" pos="0.43 0 0.0" size="0.02 0.1 0.06" {black}/>
      <camera name="front_color" pos="0.46 0 0.10" xyaxes="0 -1 0 {math.sin(0.17):.4f} 0
              {math.cos(0.17):.4f}" fovy="80"/>
    </body>
    <body name="upper_arm" mocap="true"><geom type="capsule" size="0.04 0.15" {arm}/></body>
    <body name="forearm" mocap="true"><geom type="capsule" size="0.035 0.18" {arm}/></body>
    <body name="wrist" mocap="true"><geom type="capsule" size="0.035 0.07" {black}/></body>
    <body name="hand" mocap="true">
      <geom type="box" pos="-0.07 0 0" size="0.05 0.04 0.035" {black}/>
    </body>
    <body name="jaw_top" mocap="true">
      <geom type="box" pos="-0.02 0 0" size="0.035 0.03 0.006" rgba="0.3 0.3 0.3 1"/>
    </body>
    <body name="jaw_bottom" mocap="true">
      <geom type="box" pos="-0.02 0 0" size="0.035 0.03 0.006" rgba="0.3 0.3 0.3 1"/>
    </body>
  </worldbody>
</mujoco>
"""


def _yaw_matrix(yaw: float) -> np.ndarray:
    return kin.rot_z(yaw)


def _quat_from_matrix(m: np.ndarray) -> np.ndarray:
    import mujoco

    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(m, dtype=np.float64).reshape(9))
    return q


def _segment_quat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quaternion turning z onto the direction a -> b (a capsule's axis)."""
    import mujoco

    q = np.zeros(4)
    v = b - a
    n = float(np.linalg.norm(v))
    mujoco.mju_quatZ2Vec(q, v / n if n > 1e-9 else np.array([0.0, 0.0, 1.0]))
    return q


def body_pose_for_seed(seed: int) -> tuple[float, float, float]:
    """(x, y, yaw) of the standing body in the world for an episode seed."""
    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(-POSE_JITTER_M, POSE_JITTER_M, 2)
    yaw = rng.uniform(-YAW_JITTER_RAD, YAW_JITTER_RAD)
    return float(dx), float(dy), float(yaw)


class DrawerWorld:
    """The cabinet world around a :class:`StandInRobot`; see the module docstring.

    ``step`` runs in the robot's world thread with the robot's lock held; ``render_due`` in
    the same thread without it; ``frame`` from the image service's threads.
    """

    def __init__(self, height: int = 224, width: int = 224, camera_hz: float = 10.0,
                 sources: tuple[str, ...] = ("front_color",), seed: int = 0) -> None:
        import mujoco

        unknown = set(sources) - set(CAMERA_SOURCES)
        if unknown:
            raise ValueError(f"drawer world: no camera {sorted(unknown)}; has {CAMERA_SOURCES}")
        self.model = mujoco.MjModel.from_xml_string(_scene_xml(height, width))
        self.data = mujoco.MjData(self.model)
        self.hw = (height, width)
        self.sources = tuple(sources)
        self.camera_period_s = 1.0 / camera_hz
        self._joint = self.model.joint("drawer")
        self._qadr, self._dadr = int(self._joint.qposadr[0]), int(self._joint.dofadr[0])
        self._mocap = {name: int(self.model.body(name).mocapid[0]) for name in
                       ("spot_body", "upper_arm", "forearm", "wrist", "hand", "jaw_top",
                        "jaw_bottom")}
        handle_local = np.array([-HANDLE_STANDOFF_M, 0.0, 0.0])
        mujoco.mj_forward(self.model, self.data)
        drawer = self.data.body("drawer")
        self.handle_closed_world = drawer.xpos + drawer.xmat.reshape(3, 3) @ handle_local
        self.pull_dir_world = np.array([-1.0, 0.0, 0.0])  # the slide's opening direction
        self.body_xy_yaw = (0.0, 0.0, 0.0)
        self.max_opening_m = 0.0
        self._renderer = None
        self._frames: dict[str, tuple[np.ndarray, float]] = {}
        self._frame_lock = threading.Lock()
        self._next_render_s = 0.0
        self._snapshot: tuple | None = None
        self.reset(seed)

    # -- episode set-up ------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """Close the drawer and stand the body at the seed's pose (call with the robot's lock
        held when the world thread runs). The arm keeps its body-frame pose."""
        self.body_xy_yaw = body_pose_for_seed(seed)
        self.data.qpos[self._qadr] = 0.0
        self.data.qvel[self._dadr] = 0.0
        self.max_opening_m = 0.0
        with self._frame_lock:
            self._frames.clear()  # no frame of the previous scene is served
        self._next_render_s = 0.0

    @property
    def opening_m(self) -> float:
        return float(self.data.qpos[self._qadr])

    @property
    def success(self) -> bool:
        return self.opening_m >= SUCCESS_OPEN_M

    def body_in_world(self) -> tuple[np.ndarray, np.ndarray]:
        x, y, yaw = self.body_xy_yaw
        return np.array([x, y, BODY_HEIGHT_M]), _yaw_matrix(yaw)

    def to_body(self, p_world: np.ndarray) -> np.ndarray:
        t, r = self.body_in_world()
        return r.T @ (np.asarray(p_world) - t)

    def to_world(self, p_body: np.ndarray) -> np.ndarray:
        t, r = self.body_in_world()
        return t + r @ np.asarray(p_body)

    def handle_world(self) -> np.ndarray:
        return self.handle_closed_world + self.opening_m * self.pull_dir_world

    def handle_pose_in_body(self) -> tuple[np.ndarray, np.ndarray]:
        """Grasp pose of the closed drawer's handle in the body frame: xyz, rpy (the hand's x
        axis pointing into the drawer, level). What an operator would measure once."""
        xyz = self.to_body(self.handle_closed_world)
        return xyz, np.array([0.0, 0.0, -self.body_xy_yaw[2]])

    # -- the world thread ------------------------------------------------------------------------
    def step(self, robot, dt: float) -> None:
        import mujoco

        arm = robot.arm
        hand_world = self.to_world(kin.forward(arm.q)[0])
        if arm.gripping:
            offset = hand_world - self.handle_closed_world
            along = float(offset @ self.pull_dir_world)
            target = min(max(along, 0.0), DRAWER_TRAVEL_M)
            if np.linalg.norm(offset - target * self.pull_dir_world) > SLIP_M:
                arm.gripping = False  # pulled off the slide line: the bar slips out
            else:
                self.data.qvel[self._dadr] = (target - self.opening_m) / dt
                self.data.qpos[self._qadr] = target
        if not arm.gripping:
            self.model.opt.timestep = dt
            mujoco.mj_step(self.model, self.data)
        self.max_opening_m = max(self.max_opening_m, self.opening_m)
        handle_body = self.to_body(self.handle_world())
        if arm.item is None:
            arm.item = Item(pos=handle_body, width=HANDLE_WIDTH)
        else:
            arm.item.pos, arm.item.width = handle_body, HANDLE_WIDTH
        if self._renderer is not None or self.sources:
            self._snapshot = (arm.q.copy(), float(arm.claw), self.opening_m,
                              self.body_xy_yaw, robot.robot_now_s())

    def render_due(self, robot) -> None:
        """Render the cameras when a frame is due (world thread, robot lock not held)."""
        import time

        now = time.monotonic()
        if now < self._next_render_s or self._snapshot is None:
            return
        self._next_render_s = now + self.camera_period_s
        q, claw, opening, body, stamp = self._snapshot
        frames = self.render(q, claw, opening, body)
        with self._frame_lock:
            for source, rgb in frames.items():
                self._frames[source] = (rgb, stamp)

    def frame(self, source: str) -> tuple[np.ndarray, float] | None:
        with self._frame_lock:
            return self._frames.get(source)

    # -- drawing ---------------------------------------------------------------------------------
    def pose_visuals(self, q: np.ndarray, claw: float, opening: float,
                     body: tuple[float, float, float]) -> None:
        """Place the body, the arm's links and the claw for ``q`` (no physics)."""
        import mujoco

        m, d = self.model, self.data
        saved = (self.body_xy_yaw, float(d.qpos[self._qadr]))
        self.body_xy_yaw = body
        d.qpos[self._qadr] = opening
        t, r = self.body_in_world()
        d.mocap_pos[self._mocap["spot_body"]] = t
        d.mocap_quat[self._mocap["spot_body"]] = _quat_from_matrix(r)
        upper = kin.rot_z(q[0]) @ kin.rot_y(q[1])
        shoulder = kin.SHOULDER_M
        elbow = shoulder + upper @ np.array([kin.UPPER_ARM_M, 0.0, 0.0])
        fore = upper @ kin.rot_y(q[2])
        wrist = elbow + fore @ kin.FOREARM_M
        tool, hand_rot = kin.forward(q)
        hand_base = wrist + hand_rot @ np.array([0.06, 0.0, 0.0])
        for name, a, b in (("upper_arm", shoulder, elbow), ("forearm", elbow, wrist),
                           ("wrist", wrist, hand_base)):
            wa, wb = self.to_world(a), self.to_world(b)
            d.mocap_pos[self._mocap[name]] = (wa + wb) / 2
            d.mocap_quat[self._mocap[name]] = _segment_quat(wa, wb)
        hand_world_rot = r @ hand_rot
        d.mocap_pos[self._mocap["hand"]] = self.to_world(tool)
        d.mocap_quat[self._mocap["hand"]] = _quat_from_matrix(hand_world_rot)
        gap = 0.008 + 0.04 * float(np.clip(claw, 0.0, 1.0))
        for name, sign in (("jaw_top", 1.0), ("jaw_bottom", -1.0)):
            d.mocap_pos[self._mocap[name]] = self.to_world(tool + hand_rot @ np.array(
                [0.0, 0.0, sign * gap]))
            d.mocap_quat[self._mocap[name]] = _quat_from_matrix(hand_world_rot)
        mujoco.mj_kinematics(m, d)
        self.body_xy_yaw, d.qpos[self._qadr] = saved

    def render(self, q: np.ndarray, claw: float, opening: float,
               body: tuple[float, float, float]) -> dict[str, np.ndarray]:
        """RGB frames ``[H, W, 3]`` uint8 of every source for this state."""
        import mujoco

        if self._renderer is None:  # created in the thread that renders (its GL context)
            self._renderer = mujoco.Renderer(self.model, *self.hw)
        self.pose_visuals(q, claw, opening, body)
        out = {}
        for source in self.sources:
            self._renderer.update_scene(self.data, camera=source)
            out[source] = self._renderer.render().copy()
        return out

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def drawer_robot_options() -> dict[str, float]:
    """Robot timing for the drawer simulation: a brisk stand-up, as on the test stand-in."""
    return {"joint_speed_rad_s": 3.0, "power_on_s": 0.2, "stand_s": 0.2, "sit_s": 0.2,
            "physics_hz": 100.0}
