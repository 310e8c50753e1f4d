"""Streamed arm motion: each tick's hand target joins one continuous multi-point trajectory.

Sending every target as its own one-point trajectory, due one control period after it
arrives, makes the hand arrive, stop and restart whenever a command is a little late: the
robot interpolates to each point with zero end velocity. Instead, as Boston Dynamics'
``arm_long_cartesian_trajectory`` example does, every command here carries

- one fixed reference time for the whole stream (local clock; the SDK converts it to the
  robot's clock), so consecutive commands describe the same timeline;
- the last few targets already sent (overlap) plus the new one, so the part of the trajectory
  the robot is executing when a command lands is unchanged by it;
- explicit knot velocities (finite differences of the neighbouring knots; zero at the newest
  knot, so if commands stop coming the hand comes to rest on the last target, never beyond);
- the new target due ``lead_s`` after sending: one control period plus a margin, so the robot
  always has motion queued beyond the next command's arrival under network delay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from bosdyn.api import geometry_pb2, robot_command_pb2
from bosdyn.client.robot_command import RobotCommandBuilder
from bosdyn.util import seconds_to_timestamp

from theia_ros.control.rotations import rotation_log, rpy_to_matrix
from theia_ros.robots.spot.io import rpy_to_quat


@dataclass
class _Knot:
    t_s: float  # local wall clock (time.time())
    xyz: np.ndarray  # [3]
    rpy: np.ndarray  # [3]


@dataclass
class ArmStream:
    """Builds the streamed Cartesian commands for one frame. ``reset()`` after a hold, a stow
    or a fault: the next command then starts a fresh stream from wherever the hand is."""

    frame: str
    lead_s: float
    overlap: int = 3  # earlier knots repeated in every command
    max_tracking_error_m: float | None = None
    knots: list[_Knot] = field(default_factory=list)
    reference_s: float | None = None

    def reset(self) -> None:
        self.knots.clear()
        self.reference_s = None

    def command(self, xyz: np.ndarray, rpy: np.ndarray,
                now_s: float) -> robot_command_pb2.RobotCommand:
        """The arm command for a new target, sent at local wall time ``now_s``."""
        if self.knots and now_s > self.knots[-1].t_s:
            self.reset()  # the hand has come to rest on the last target: start afresh
        if self.reference_s is None:
            self.reference_s = now_s
        due_s = now_s + self.lead_s
        if self.knots:
            due_s = max(due_s, self.knots[-1].t_s + 1e-3)
        self.knots.append(_Knot(due_s, np.asarray(xyz, np.float64).copy(),
                                np.asarray(rpy, np.float64).copy()))
        del self.knots[:-(self.overlap + 1)]
        return self._build()

    def _build(self) -> robot_command_pb2.RobotCommand:
        knots = self.knots
        poses, velocities, times = [], [], []
        for i, knot in enumerate(knots):
            qw, qx, qy, qz = rpy_to_quat(knot.rpy)
            poses.append(geometry_pb2.SE3Pose(
                position=geometry_pb2.Vec3(x=float(knot.xyz[0]), y=float(knot.xyz[1]),
                                           z=float(knot.xyz[2])),
                rotation=geometry_pb2.Quaternion(w=qw, x=qx, y=qy, z=qz)))
            linear, angular = np.zeros(3), np.zeros(3)
            if 0 < i < len(knots) - 1 or (i == 0 and len(knots) > 1):
                before, after = knots[max(i - 1, 0)], knots[i + 1]
                span = max(after.t_s - before.t_s, 1e-3)
                linear = (after.xyz - before.xyz) / span
                turn = rpy_to_matrix(after.rpy) @ rpy_to_matrix(before.rpy).T
                angular = rotation_log(turn) / span  # in the root frame, as the proto says
            velocities.append(geometry_pb2.SE3Velocity(
                linear=geometry_pb2.Vec3(x=linear[0], y=linear[1], z=linear[2]),
                angular=geometry_pb2.Vec3(x=angular[0], y=angular[1], z=angular[2])))
            times.append(knot.t_s - self.reference_s)
        command = RobotCommandBuilder.arm_cartesian_move_helper(
            se3_poses=poses, times=times, se3_velocities=velocities,
            root_frame_name=self.frame, ref_time=seconds_to_timestamp(self.reference_s))
        if self.max_tracking_error_m is not None:
            command.synchronized_command.arm_command.arm_cartesian_command \
                .max_pos_tracking_error.value = self.max_tracking_error_m
        return command
