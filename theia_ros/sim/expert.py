"""A scripted door-opening expert that acts like a teleoperator: 7-vector EE deltas at 5 Hz.

Uses privileged sim state (door angle and pose, handle position) to pick waypoints, but
only ever emits what a person with a SpaceMouse would: a base-frame EE delta of at most
``max_step_m`` and ``max_rot_rad`` per step, plus a gripper open fraction.

Strategy (gripper pointing steeply down, fingers closed into a compact hook):
1. ``APPROACH``: close the gripper and move above the gap between the handle bar and the
   door, tool yaw aligned with the door.
2. ``INSERT``: lower the fingertips into the gap behind the bar.
3. ``PULL``: hook the bar and swing it along its arc around the hinge (the next waypoint is
   the gap at a slightly larger door angle, so the door follows); yaw follows the door. If
   the hook slips (the door stalls while the fingertips drift from the gap) go back to 1.
4. ``RETREAT``: once past ``target_angle_rad``, lift out and back away; then ``DONE`` (zeros).
"""

from __future__ import annotations

import enum
import math

import numpy as np

from theia_ros.control import kinematics as K
from theia_ros.sim import scene as S

HOOK_PITCH_RAD = 1.3  # tool x tilted 75 deg below horizontal, tip toward the door
GAP_X_LOCAL_M = -S.DOOR_THICKNESS_M / 2 - 0.5 * (S.HANDLE_STANDOFF_M - S.HANDLE_BAR_RADIUS_M)


class Phase(enum.Enum):
    APPROACH = "approach"
    INSERT = "insert"
    PULL = "pull"
    RETREAT = "retreat"
    DONE = "done"


class DoorExpert:
    """Scripted policy for ``DoorEnv`` / ``SimWidowX``: ``act(env) -> [7]`` EE-delta action.

    Args:
        target_angle_rad: pull until the door passes this angle (beyond "fully open").
        good_enough_rad: if the door stalls past this angle (the arm near its reach, the door
            close to the arm), stop pulling instead of re-hooking.
        max_step_m: largest translation per step (m).
        max_rot_rad: largest rotation per step (rad, rotation-vector norm).
        gain: fraction of the remaining error commanded per step (smooth like a person).
        above_m: height of the approach waypoint above the insertion point.
        rng: optional noise source: small Gaussian jitter on the commands (diverse demos).
        noise_m: translation noise std per step when ``rng`` is given.
    """

    def __init__(
        self,
        *,
        target_angle_rad: float = math.radians(85.0),
        good_enough_rad: float = math.radians(78.0),
        max_step_m: float = 0.02,
        max_rot_rad: float = 0.1,
        gain: float = 0.8,
        above_m: float = 0.07,
        rng: np.random.Generator | None = None,
        noise_m: float = 0.002,
    ) -> None:
        self.target_angle_rad = target_angle_rad
        self.good_enough_rad = good_enough_rad
        self.max_step_m = max_step_m
        self.max_rot_rad = max_rot_rad
        self.gain = gain
        self.above_m = above_m
        self.rng = rng
        self.noise_m = noise_m
        self.reset()

    def reset(self) -> None:
        """Forget the episode (call after the env's ``reset``)."""
        self.phase = Phase.APPROACH
        self._phase_steps = 0
        self._retreat_from: np.ndarray | None = None
        self._angle_hist: list[float] = []
        self.regrasps = 0

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    # -- geometry --------------------------------------------------------------------------
    @staticmethod
    def hook_pose(env, door_angle_rad: float, *, depth_m: float) -> np.ndarray:
        """EE target ``[4, 4]`` in the base frame: fingertips in the handle gap at a door angle.

        ``depth_m`` is how far below the bar's centre line the fingertip centre goes (negative:
        above it). Tool yaw follows the door so the fingers lie along the bar.
        """
        door_pos, door_rot = env.door_frame_base()
        current = env.door_angle_rad()
        # door_rot already includes the current angle; rotate to the requested one (axis -z).
        extra = K.rpy_to_matrix([0.0, 0.0, -(door_angle_rad - current)])
        rot = extra @ door_rot
        handle_z = env.params.handle_z_m
        local = np.array([GAP_X_LOCAL_M, -S.HANDLE_R_CENTRE_M, handle_z - depth_m])
        pos = door_pos + rot @ local
        door_yaw = math.atan2(rot[1, 0], rot[0, 0])
        out = np.eye(4)
        out[:3, :3] = K.rpy_to_matrix([0.0, HOOK_PITCH_RAD, door_yaw])
        out[:3, 3] = pos
        return out

    # -- control ---------------------------------------------------------------------------
    def _delta_to(self, current: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
        """Clipped delta ``[6]`` toward ``target``, and the remaining position error (m)."""
        d_pos = target[:3, 3] - current[:3, 3]
        err = float(np.linalg.norm(d_pos))
        step = self.gain * d_pos
        n = float(np.linalg.norm(step))
        if n > self.max_step_m:
            step *= self.max_step_m / n
        w = self.gain * K.rotation_log(target[:3, :3] @ current[:3, :3].T)
        wn = float(np.linalg.norm(w))
        if wn > self.max_rot_rad:
            w *= self.max_rot_rad / wn
        if self.rng is not None:
            step = step + self.rng.normal(0.0, self.noise_m, 3) * min(1.0, err / 0.03)
        rpy = K.matrix_to_rpy(K.rotation_exp(w))
        return np.concatenate([step, rpy]), err

    def _rot_err(self, current: np.ndarray, target: np.ndarray) -> float:
        return float(np.linalg.norm(K.rotation_log(target[:3, :3] @ current[:3, :3].T)))

    def _set(self, phase: Phase) -> None:
        self.phase = phase
        self._phase_steps = 0
        self._angle_hist = []

    def act(self, env) -> np.ndarray:
        """Next action ``[7]``: d_xyz (m), d_rpy (rad, base frame), gripper open fraction."""
        q = env.arm_qpos()
        current = K.fk(q)
        angle = env.door_angle_rad()
        self._phase_steps += 1
        gripper = 0.0
        if self.phase is Phase.APPROACH:
            above = self.hook_pose(env, angle, depth_m=-self.above_m)
            delta, err = self._delta_to(current, above)
            if err < 0.012 and self._rot_err(current, above) < 0.08:
                self._set(Phase.INSERT)
        elif self.phase is Phase.INSERT:
            inside = self.hook_pose(env, angle, depth_m=0.012)
            delta, err = self._delta_to(current, inside)
            if err < 0.008 or self._phase_steps > 12:
                self._set(Phase.PULL)
        elif self.phase is Phase.PULL:
            if angle >= self.target_angle_rad:
                self._retreat_from = current.copy()
                self._set(Phase.RETREAT)
                return self.act_retreat(current)
            lead = min(0.16, self.target_angle_rad + 0.05 - angle)
            goal = self.hook_pose(env, angle + lead, depth_m=0.012)
            delta, _ = self._delta_to(current, goal)
            here = self.hook_pose(env, angle, depth_m=0.012)
            drift = float(np.linalg.norm(here[:3, 3] - current[:3, 3]))
            self._angle_hist.append(angle)
            stalled = len(self._angle_hist) > 6 and angle - self._angle_hist[-7] < 0.01
            if stalled and angle >= self.good_enough_rad:
                self._retreat_from = current.copy()
                self._set(Phase.RETREAT)
                return self.act_retreat(current)
            if drift > 0.035 or stalled:
                self.regrasps += 1
                self._set(Phase.APPROACH)
                # lift straight up first so the fingers clear the bar
                delta = np.array([0.0, 0.0, self.max_step_m, 0.0, 0.0, 0.0])
        elif self.phase is Phase.RETREAT:
            return self.act_retreat(current)
        else:
            return np.zeros(7)
        return np.concatenate([delta, [gripper]])

    def act_retreat(self, current: np.ndarray) -> np.ndarray:
        """Lift out of the handle and back toward the robot, then finish."""
        start = self._retreat_from if self._retreat_from is not None else current
        goal = start.copy()
        goal[2, 3] += 0.08
        goal[0, 3] -= 0.03
        delta, err = self._delta_to(current, goal)
        self._phase_steps += 1
        if err < 0.01 or self._phase_steps > 10:
            self._set(Phase.DONE)
        return np.concatenate([delta, [0.0]])


def run_expert_episode(robot, seed: int, *, max_steps: int = 80,
                       rng_seed: int | None = None) -> dict[str, object]:
    """Reset ``robot`` (a ``SimWidowX``) to ``seed`` and let the expert open the door.

    Returns ``{"stage", "steps", "door_angle_rad", "regrasps", "ik_failures"}``.
    """
    from theia_ros.types import Action, ActionKind

    robot.reset(seed)
    rng = None if rng_seed is None else np.random.default_rng(rng_seed)
    expert = DoorExpert(rng=rng)
    steps = 0
    while not expert.done and steps < max_steps:
        vec = expert.act(robot.env)
        robot.apply(Action.from_vector(ActionKind.EE_DELTA, vec))
        steps += 1
    return {
        "stage": robot.success(),
        "steps": steps,
        "door_angle_rad": robot.env.door_angle_rad(),
        "regrasps": expert.regrasps,
        "ik_failures": robot.stats.ik_failures + robot.stats.joint_jumps_rejected,
    }


def main(argv: list[str] | None = None) -> int:
    """Success rate of the expert over seeds: ``python -m theia_ros.sim.expert --n 50``."""
    import argparse
    import time

    from theia_ros.robots.sim import SimWidowX
    from theia_ros.sim.success import DoorStage

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=50, help="number of seeds (episodes)")
    parser.add_argument("--noise", action="store_true", help="jitter the expert's commands")
    args = parser.parse_args(argv)
    robot = SimWidowX(render=False)
    robot.connect()
    stages, steps = [], []
    t0 = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.n):
        res = run_expert_episode(robot, seed, rng_seed=seed if args.noise else None)
        stages.append(res["stage"])
        steps.append(res["steps"])
        if res["stage"] is not DoorStage.FULLY_OPEN:
            print(f"seed {seed}: {res}")
    robot.disconnect()
    n = len(stages)
    fully = sum(s is DoorStage.FULLY_OPEN for s in stages)
    opened = sum(s >= DoorStage.OPEN for s in stages)
    print(f"episodes {n}: open {opened}/{n}, fully open {fully}/{n}, mean steps "
          f"{np.mean(steps):.1f}, {1e3 * (time.perf_counter() - t0) / n:.0f} ms/episode")
    return 0 if fully >= 0.95 * n else 1


if __name__ == "__main__":
    raise SystemExit(main())
