"""The stand-in robot's state: lease, e-stop, power, stance, hand pose, and what it was sent.

THIS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. It models only what the
theia-ros Spot adapter relies on, kinematically (the hand is wherever it was last commanded;
joint angles are a smooth made-up function of the hand pose, not Spot's kinematics).

All times kept here are the *robot's* clock: local wall time plus ``clock_skew_s``, so time-sync
conversion errors on the client side show up as offsets of several seconds.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from bosdyn.api import lease_pb2
from bosdyn.client import math_helpers

BODY, ODOM, FLAT_BODY, HAND = "body", "odom", "flat_body", "hand"
ARM_JOINTS = ("arm0.sh0", "arm0.sh1", "arm0.el0", "arm0.el1", "arm0.wr0", "arm0.wr1")
GRIPPER_JOINT = "arm0.f1x"
STOW_POSE = math_helpers.SE3Pose(0.55, 0.0, 0.26, math_helpers.Quat())  # hand in body, stowed
CLAW_OPEN_RAD, CLAW_CLOSED_RAD = -1.5708, 0.0  # the SDK's claw angle range for open fraction
# source name -> True for colour, False for greyscale (like the body fisheye cameras)
IMAGE_SOURCES = {"frontleft_fisheye_image": False, "hand_color_image": True,
                 "front_color": True}


@dataclass
class ReceivedCommand:
    """One RobotCommand RPC as it arrived, with the stand-in's verdict."""

    received_s: float  # time.monotonic() when the servicer got it
    request: object  # bosdyn.api.RobotCommandRequest
    verdict: str  # "ok", "lease:STATUS_REVOKED", "STATUS_NOT_POWERED_ON", ...

    @property
    def accepted(self) -> bool:
        return self.verdict == "ok"


@dataclass
class StandInRobot:
    """Mutable robot state shared by all servicers (guarded by ``lock``)."""

    username: str
    password: str
    clock_skew_s: float = 7.25  # robot clock = local clock + this
    estop_registered: bool = True  # an operator's e-stop endpoint is checked in
    image_hw: tuple[int, int] = (240, 320)
    lock: threading.RLock = field(default_factory=threading.RLock)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    clock_identifier: str = ""
    time_sync_up: bool = True
    estopped: bool = False
    lease_epoch: str = "standin-epoch"
    lease_seq: int = 0
    lease_owner: str | None = None
    revoked_seqs: set[int] = field(default_factory=set)
    motors_on: bool = False
    standing: bool = False
    body_tform_hand: math_helpers.SE3Pose = STOW_POSE
    gripper_open: float = 0.0
    reject_status: int | None = None  # when set, every RobotCommand is answered with it
    stow_duration_s: float = 0.0  # a stow's feedback says "in progress" this long
    commands: list[ReceivedCommand] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # ordered log: auth, lease_acquire, ...
    # where the body is in odom (so odom-frame commands are distinguishable from body-frame)
    odom_tform_body: math_helpers.SE3Pose = field(default_factory=lambda: math_helpers.SE3Pose(
        1.0, 0.5, 0.0, math_helpers.Quat.from_yaw(0.3)))

    # -- clock -------------------------------------------------------------------------------
    def robot_now_s(self) -> float:
        return time.time() + self.clock_skew_s

    # -- lease -------------------------------------------------------------------------------
    def active_lease(self) -> lease_pb2.Lease:
        return lease_pb2.Lease(resource=BODY, epoch=self.lease_epoch, sequence=[self.lease_seq],
                               client_names=["root"])

    def lease_use(self, lease: lease_pb2.Lease) -> lease_pb2.LeaseUseResult:
        """Judge a lease attached to a request, as the robot's lease service would."""
        result = lease_pb2.LeaseUseResult(attempted_lease=lease,
                                          latest_known_lease=self.active_lease())
        result.owner.client_name = self.lease_owner or ""
        root = lease.sequence[0] if lease.sequence else -1
        if lease.resource != BODY:
            result.status = lease_pb2.LeaseUseResult.STATUS_INVALID_LEASE
        elif lease.epoch != self.lease_epoch:
            result.status = lease_pb2.LeaseUseResult.STATUS_WRONG_EPOCH
        elif root in self.revoked_seqs or (root == self.lease_seq and self.lease_owner is None):
            result.status = lease_pb2.LeaseUseResult.STATUS_REVOKED
        elif root < self.lease_seq:
            result.status = lease_pb2.LeaseUseResult.STATUS_OLDER
        elif root > self.lease_seq:
            result.status = lease_pb2.LeaseUseResult.STATUS_INVALID_LEASE
        else:
            result.status = lease_pb2.LeaseUseResult.STATUS_OK
        return result

    def grant_lease(self, client_name: str) -> lease_pb2.Lease:
        self.lease_seq += 1
        self.lease_owner = client_name or "anonymous"
        return self.active_lease()

    # -- test hooks (faults on demand) -----------------------------------------------------
    def revoke_lease(self) -> None:
        """Another client took the lease / the robot revoked it."""
        with self.lock:
            self.revoked_seqs.add(self.lease_seq)
            self.lease_owner = None
            self.events.append("lease_revoked")

    def engage_estop(self) -> None:
        """An operator pressed the e-stop: motors cut, the robot drops."""
        with self.lock:
            self.estopped, self.motors_on, self.standing = True, False, False
            self.events.append("estop_engaged")

    # -- kinematic "motion" -------------------------------------------------------------------
    def set_hand(self, frame: str, pose: math_helpers.SE3Pose) -> None:
        if frame == ODOM:
            pose = self.odom_tform_body.inverse() * pose
        self.body_tform_hand = pose

    def hand_in(self, frame: str) -> math_helpers.SE3Pose:
        if frame == ODOM:
            return self.odom_tform_body * self.body_tform_hand
        return self.body_tform_hand

    def arm_joint_positions(self) -> list[float]:
        """Made-up smooth joint angles [6] from the hand pose (NOT Spot kinematics)."""
        hand = self.body_tform_hand
        reach = math.hypot(hand.x, hand.y)
        return [math.atan2(hand.y, hand.x), -1.0 - 0.8 * hand.z, 1.5 - reach,
                0.0, hand.rot.to_pitch(), hand.rot.to_roll()]

    def render(self, source: str) -> np.ndarray:
        """Synthetic camera frame ``[H, W, 3]`` uint8 RGB: gradient + a red square that moves
        with the hand, so consecutive observations differ when the arm moves."""
        height, width = self.image_hw
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 1] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
        image[..., 2] = np.linspace(0, 200, height, dtype=np.uint8)[:, None]
        cx = int(np.clip(width / 2 - self.body_tform_hand.y * width, 20, width - 20))
        cy = int(np.clip(height / 2 - (self.body_tform_hand.z - 0.26) * height, 20, height - 20))
        cv2.rectangle(image, (cx - 16, cy - 16), (cx + 16, cy + 16), (255, 0, 0), -1)
        if not IMAGE_SOURCES[source]:
            grey = image.mean(axis=2).astype(np.uint8)
            image = np.repeat(grey[..., None], 3, axis=2)
        return image
