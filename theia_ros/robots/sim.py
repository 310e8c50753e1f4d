"""``SimWidowX``: the MuJoCo twin behind the same adapter seam and action semantics as the arm.

An ``EE_DELTA`` action ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` moves the fingertip
centre (``ee_gripper_link``) by ``d_xyz`` in the arm base frame and pre-multiplies the delta
rotation in the base frame (``control.kinematics.apply_ee_delta``). The delta applies to the
arm's current *target* (the last commanded pose), so deltas add up exactly and a zero action
holds still instead of freezing the servo lag; when the measured pose is more than
``resync_m`` / ``resync_rad`` away from that target (contact blocks the arm, or after a
hold) the reference snaps back to the measured pose, so targets never wind up. Our IK,
seeded from the reference joints, gives joint targets that the position servos reach within
one control period (0.2 s at 5 Hz, simulated with substeps). ``gripper`` is the commanded
open fraction. Real-time pacing is the control loop's job: ``apply`` simulates one period
as fast as it can and returns.

Example::

    with SimWidowX(seed=0) as robot:
        obs = robot.observe()
        sent = robot.apply(Action(ActionKind.EE_DELTA, np.array([0.01, 0, 0]), np.zeros(3), 1.0))
        print(robot.success())
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theia_ros.control import kinematics as K
from theia_ros.sim.success import DoorStage
from theia_ros.types import Action, ActionKind, Observation, RobotAdapter

PARK_STEPS = 8  # control periods used to glide to the sleep pose in safe_stop
SETTLE_STEPS = 3  # then periods holding it while the servos settle


@dataclass
class SimStats:
    """Interventions the adapter made on its own (reported, never raised)."""

    steps: int = 0
    ik_failures: int = 0
    joint_jumps_rejected: int = 0
    bad_actions: int = 0
    resyncs: int = 0  # reference snapped from the target back to the measured pose


class SimWidowX(RobotAdapter):
    """The simulated WidowX 250s in the door scene, driven by EE deltas at ``control_rate_hz``.

    Args:
        seed: scene seed for the first episode (None = nominal scene); ``reset`` draws others.
        render: render the cameras in ``observe``; False leaves ``images`` empty (fast tests).
        image_size: square camera resolution.
        cameras: cameras rendered each observation (``front``, ``wrist``); the first is
            ``camera``, the one videos show.
        control_rate_hz: the rate actions are meant for; each ``apply`` simulates one period.
        max_joint_step_rad: an IK answer moving any joint further than this in one period is
            treated as a failure (a branch flip), not executed.
        resync_m, resync_rad: measured-vs-target distance beyond which deltas start from the
            measured pose instead of the target.
        clock: monotonic clock for observation stamps (the control loop checks staleness).
    """

    action_kind = ActionKind.EE_DELTA
    name = "sim_widowx"
    camera = "front"

    def __init__(
        self,
        seed: int | None = 0,
        *,
        render: bool = True,
        image_size: int = 224,
        cameras: tuple[str, ...] = ("front",),
        control_rate_hz: float = 5.0,
        max_joint_step_rad: float = 0.8,
        resync_m: float = 0.02,
        resync_rad: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if control_rate_hz <= 0:
            raise ValueError(f"control_rate_hz must be > 0, got {control_rate_hz}")
        from theia_ros.sim.scene import CAMERA_NAMES  # no mujoco import

        cameras = tuple(cameras)
        bad = [c for c in cameras if c not in CAMERA_NAMES]
        if not cameras or bad:
            raise ValueError(f"sim cameras {list(cameras)}: choose from {list(CAMERA_NAMES)}")
        self.cameras = cameras
        self.camera = cameras[0]
        self.seed = seed
        self.render_images = render
        self.image_size = int(image_size)
        self.period_s = 1.0 / float(control_rate_hz)
        self.max_joint_step_rad = float(max_joint_step_rad)
        self.resync_m = float(resync_m)
        self.resync_rad = float(resync_rad)
        self.clock = clock
        self.stats = SimStats()
        self.last_error: str | None = None
        self._env = None
        self._gripper_cmd = 1.0
        self._best_stage = DoorStage.CLOSED

    # -- lifecycle -------------------------------------------------------------------------
    def connect(self) -> None:
        """Build the simulation (compiles the model, opens the renderer if ``render``)."""
        if self._env is None:
            from theia_ros.sim.door_env import DoorEnv  # mujoco only when a sim is wanted

            self._env = DoorEnv(image_size=self.image_size, render=self.render_images)
            self._env.reset(self.seed)
            self._gripper_cmd = 1.0

    def disconnect(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    @property
    def env(self):  # -> DoorEnv; untyped so importing this module does not import mujoco
        """The underlying ``DoorEnv`` (privileged state for the expert and tests)."""
        if self._env is None:
            self.connect()
        return self._env

    def reset(self, seed: int | None = None) -> None:
        """Start a new randomised episode (``seed`` None keeps the adapter's own seed)."""
        if seed is not None:
            self.seed = seed
        self.env.reset(self.seed)
        self._gripper_cmd = 1.0
        self._best_stage = self.env.stage()
        self.stats = SimStats()
        self.last_error = None

    # -- seam ------------------------------------------------------------------------------
    def observe(self) -> Observation:
        env = self.env
        q = env.arm_qpos()
        images: dict[str, np.ndarray] = {}
        stamps: dict[str, float] = {}
        now = self.clock()
        if self.render_images:
            for cam in self.cameras:
                images[cam] = env.render(cam)
                stamps[cam] = now
        stamps["joints"] = now
        return Observation(
            images=images,
            joint_positions=q,
            ee_pose=K.fk_pose(q),
            gripper=env.gripper_fraction(),
            stamp_s=min(stamps.values()),
            stamps_s=stamps,
        )

    def apply(self, action: Action) -> Action:
        """Move by one EE delta over one control period; on an IK failure hold and report."""
        env = self.env
        self.stats.steps += 1
        if action.kind is not ActionKind.EE_DELTA or not action.is_finite():
            self.stats.bad_actions += 1
            self.last_error = f"rejected action (kind={action.kind.value}, finite="\
                              f"{action.is_finite()})"
            self.hold()
            return self._zero_action()
        gripper = float(np.clip(action.gripper, 0.0, 1.0))
        q = self._reference_joints()
        target = K.apply_ee_delta(K.fk(q), action.to_vector()[:6])
        q_new = K.solve_ik(target, q)
        if q_new is None:
            self.stats.ik_failures += 1
            self.last_error = "IK failed for the requested EE delta; holding"
        elif float(np.max(np.abs(q_new - q))) > self.max_joint_step_rad:
            self.stats.joint_jumps_rejected += 1
            self.last_error = "IK answer jumps joints too far in one step; holding"
            q_new = None
        if q_new is None:
            self._gripper_cmd = gripper
            env.step_joints(env.arm_qpos(), gripper, self.period_s)
            return Action(ActionKind.EE_DELTA, np.zeros(3), np.zeros(3), gripper)
        self._gripper_cmd = gripper
        env.step_joints(q_new, gripper, self.period_s)
        self._best_stage = max(self._best_stage, env.stage())
        return Action(ActionKind.EE_DELTA, action.xyz_m.copy(), action.rpy_rad.copy(), gripper)

    def _reference_joints(self) -> np.ndarray:
        """Joints the next delta starts from: the last target, or the measured joints."""
        env = self.env
        measured, commanded = env.arm_qpos(), env.commanded_arm()
        m, c = K.fk(measured), K.fk(commanded)
        pos_gap = float(np.linalg.norm(m[:3, 3] - c[:3, 3]))
        rot_gap = float(np.linalg.norm(K.rotation_log(m[:3, :3] @ c[:3, :3].T)))
        if pos_gap > self.resync_m or rot_gap > self.resync_rad:
            self.stats.resyncs += 1
            return measured
        return commanded

    def hold(self) -> None:
        """Command the measured joints and simulate one period (the arm stops in place)."""
        env = self.env
        env.step_joints(env.arm_qpos(), self._gripper_cmd, self.period_s)

    def safe_stop(self) -> None:
        """Hold, then glide to the Interbotix sleep pose over ``PARK_STEPS`` periods; an
        interrupted park (e-stop) holds where the arm is after the current period."""
        if self._env is None:
            return
        env = self._env
        self.hold()
        start = env.arm_qpos()
        for i in range(PARK_STEPS + SETTLE_STEPS):
            if self.park_interrupted:
                self.hold()
                return
            a = min(1.0, (i + 1) / PARK_STEPS)
            env.step_joints(start + a * (K.SLEEP_QPOS_RAD - start), self._gripper_cmd,
                            self.period_s)

    # -- sim extras ------------------------------------------------------------------------
    def success(self) -> DoorStage:
        """Door stage now (CLOSED / OPEN / FULLY_OPEN): what an evaluator sees at the end."""
        return self.env.stage()

    def task_success(self) -> bool:
        """The door task is done when the door is fully open."""
        return self.env.stage() >= DoorStage.FULLY_OPEN

    def status_text(self) -> str:
        env = self.env
        return f"door {np.degrees(env.door_angle_rad()):5.1f} deg ({env.stage().name})"

    def best_stage(self) -> DoorStage:
        """Highest stage seen after any ``apply`` since ``reset`` (per-stage success rates)."""
        return max(self._best_stage, self.env.stage())

    def _zero_action(self) -> Action:
        return Action(ActionKind.EE_DELTA, np.zeros(3), np.zeros(3), self._gripper_cmd)
