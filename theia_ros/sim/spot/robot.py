"""The stand-in robot's state: lease, e-stop, power, stance, the arm, and what it was sent.

THIS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. It models what the theia-ros
Spot adapter relies on, and how the public API documentation says the robot behaves: powering
on, standing and sitting take time; the arm moves at finite speed along the commanded
trajectory (``motion.py``, with the arm's kinematics in ``kinematics.py``); a lease whose owner
stops checking in is revoked and the robot runs its comms-loss procedure (sit, then power
off); an e-stop endpoint that stops checking in cuts motor power. A background "world" thread
advances all of it at ``physics_hz``.

All times kept in commands and states are the *robot's* clock: local wall time plus
``clock_skew_s``, so time-sync conversion errors on the client side show up as offsets of
several seconds.

Imitates what spot-sdk ``docs/concepts/lease_service.md``, ``estop_service.md`` and
``base_services.md`` say the robot does (lease revocation, comms-loss sit and power-off,
e-stop cut), with the messages of bosdyn-api ``lease.proto``, ``estop.proto``, ``power.proto``.
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

from . import kinematics as kin
from .motion import ArmModel, Item

BODY, ODOM, FLAT_BODY, HAND = "body", "odom", "flat_body", "hand"
ARM_JOINTS = ("arm0.sh0", "arm0.sh1", "arm0.el0", "arm0.el1", "arm0.wr0", "arm0.wr1")
GRIPPER_JOINT = "arm0.f1x"
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
    command_id: int = 0

    @property
    def accepted(self) -> bool:
        return self.verdict == "ok"


@dataclass
class StandInRobot:
    """Mutable robot state shared by all servicers and the world thread (guarded by ``lock``)."""

    username: str
    password: str
    clock_skew_s: float = 7.25  # robot clock = local clock + this
    estop_registered: bool = True  # an operator's e-stop endpoint is checked in
    image_hw: tuple[int, int] = (240, 320)
    power_on_s: float = 0.3  # motor power-up (a real Spot takes a few seconds)
    stand_s: float = 0.3
    sit_s: float = 0.3
    lease_timeout_s: float = 3.0  # no RetainLease / command for this long: comms loss
    estop_timeout_s: float = 9.0  # the e-stop endpoint's check-in timeout
    physics_hz: float = 250.0
    claw_speed_per_s: float = 2.5  # open fraction per second (inf: the claw snaps)
    joint_speed_rad_s: float = 1.5  # named moves (stow, ready)
    lock: threading.RLock = field(default_factory=threading.RLock)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    clock_identifier: str = ""
    time_sync_up: bool = True
    time_sync_best: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> rtt, skew
    estopped: bool = False
    lease_epoch: str = "standin-epoch"
    lease_seq: int = 0
    lease_owner: str | None = None
    lease_checkin_s: float = 0.0  # monotonic time of the owner's last sign of life
    revoked_seqs: set[int] = field(default_factory=set)
    motors_on: bool = False
    standing: bool = False
    arm: ArmModel = field(default_factory=ArmModel)
    reject_status: int | None = None  # when set, every RobotCommand is answered with it
    feedback_requests: int = 0
    cartesian_while_stowed: int = 0  # Cartesian commands that found the arm still stowed
    # a failing claw sensor: reported instead of the claw's real opening (None: the truth)
    false_gripper_reading: float | None = None
    commands: list[ReceivedCommand] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # ordered log: auth, lease_acquire, ...
    # where the body is in odom (so odom-frame commands are distinguishable from body-frame)
    odom_tform_body: math_helpers.SE3Pose = field(default_factory=lambda: math_helpers.SE3Pose(
        1.0, 0.5, 0.0, math_helpers.Quat.from_yaw(0.3)))
    # pending transitions: (monotonic deadline, what happens then)
    power_done_s: float | None = None
    stance_done_s: float | None = None
    stance_target: bool = False
    power_off_after_sit: bool = False
    estop_silent_since_s: float | None = None
    # an optional world around the robot (``drawer.DrawerWorld``): stepped with the arm,
    # renders the camera frames the image service returns
    world: object | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.arm.claw_speed_per_s = self.claw_speed_per_s
        self.arm.joint_speed_rad_s = self.joint_speed_rad_s

    # -- clock -------------------------------------------------------------------------------
    def robot_now_s(self) -> float:
        return time.time() + self.clock_skew_s

    # -- the world thread ------------------------------------------------------------------------
    def start_world(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_world, name="standin-world",
                                        daemon=True)
        self._thread.start()

    def stop_world(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def _run_world(self) -> None:
        dt = 1.0 / self.physics_hz
        next_s = last_s = time.monotonic()
        while not self._stop.is_set():
            next_s += dt
            now_s = time.monotonic()
            # the time that really passed (a busy machine delays steps), so the arm keeps
            # its real speed; capped so a long stall is not one big jump
            elapsed, last_s = min(max(now_s - last_s, 1e-4), 5 * dt), now_s
            with self.lock:
                self.step(elapsed)
            if self.world is not None:
                self.world.render_due(self)  # outside the lock: services keep answering
            delay = next_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_s = time.monotonic()  # fell behind (busy machine): no catch-up burst
        if self.world is not None:
            self.world.close()  # in this thread: its GL context is current here

    def step(self, dt: float) -> None:
        """Advance power, stance, watchdogs and the arm by ``dt`` (lock held)."""
        mono = time.monotonic()
        if self.power_done_s is not None and mono >= self.power_done_s:
            self.power_done_s, self.motors_on = None, True
            self.events.append("powered_on")
        if self.stance_done_s is not None and mono >= self.stance_done_s:
            self.stance_done_s, self.standing = None, self.stance_target
            if not self.standing:
                if not self.arm.stowed:
                    self.events.append("sat_with_arm_out")
                if self.power_off_after_sit:
                    self.power_off_after_sit, self.motors_on = False, False
                    self.arm.mode = "idle"
                    self.events.append("powered_off")
        if self.lease_owner is not None and mono - self.lease_checkin_s > self.lease_timeout_s:
            self.events.append("comms_loss")  # sit down if it can, then power off
            self.revoke_lease()
            if self.motors_on:
                self.begin_sit(power_off=True)
        if (self.estop_silent_since_s is not None and not self.estopped
                and mono - self.estop_silent_since_s > self.estop_timeout_s):
            self.engage_estop()
            self.events.append("estop_timeout")
        if self.motors_on:
            self.arm.step(self.robot_now_s(), dt, mono)
        if self.world is not None:
            self.world.step(self, dt)

    # -- power and stance -------------------------------------------------------------------
    def begin_power_on(self) -> None:
        if not self.motors_on and self.power_done_s is None:
            self.power_done_s = time.monotonic() + self.power_on_s

    def power_off_now(self) -> None:
        self.motors_on = self.standing = False
        self.power_done_s = self.stance_done_s = None
        self.arm.mode = "idle"

    def begin_stance(self, stand: bool) -> None:
        if self.standing == stand and self.stance_done_s is None:
            return
        self.stance_target = stand
        self.stance_done_s = time.monotonic() + (self.stand_s if stand else self.sit_s)

    def begin_sit(self, power_off: bool) -> None:
        self.power_off_after_sit = power_off
        self.stance_target = False
        self.stance_done_s = time.monotonic() + self.sit_s

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
            self.lease_checkin_s = time.monotonic()
        return result

    def grant_lease(self, client_name: str) -> lease_pb2.Lease:
        self.lease_seq += 1
        self.lease_owner = client_name or "anonymous"
        self.lease_checkin_s = time.monotonic()
        return self.active_lease()

    # -- test hooks (faults and the world on demand) ------------------------------------------
    def revoke_lease(self) -> None:
        """Another client took the lease / the robot revoked it."""
        with self.lock:
            self.revoked_seqs.add(self.lease_seq)
            self.lease_owner = None
            self.events.append("lease_revoked")

    def engage_estop(self) -> None:
        """An operator pressed the e-stop: motors cut, the robot drops."""
        with self.lock:
            self.estopped = True
            self.power_off_now()
            self.events.append("estop_engaged")

    def silence_estop_endpoint(self) -> None:
        """The operator's e-stop endpoint stops checking in; after its timeout power is cut."""
        with self.lock:
            self.estop_silent_since_s = time.monotonic()

    def grasp_item(self, width: float = 0.3) -> None:
        """Put a handle between the jaws at the hand's current place: closing stops on it."""
        with self.lock:
            self.arm.item = Item(pos=kin.forward(self.arm.q)[0], width=width)

    def jam_arm(self, jammed: bool = True) -> None:
        """Something blocks the arm: it stops moving whatever it is told."""
        with self.lock:
            self.arm.jammed = jammed

    def sit_down_elsewhere(self) -> None:
        """Someone else (the tablet) sat the robot down; motors stay on."""
        with self.lock:
            self.begin_stance(False)
            self.events.append("sat_by_other")

    # -- what it measures -----------------------------------------------------------------------
    def hand_in(self, frame: str) -> math_helpers.SE3Pose:
        pos, quat = self.arm.hand()
        body_hand = math_helpers.SE3Pose(*pos, math_helpers.Quat(*quat))
        if frame == ODOM:
            return self.odom_tform_body * body_hand
        return body_hand

    @property
    def body_tform_hand(self) -> math_helpers.SE3Pose:
        return self.hand_in(BODY)

    @property
    def gripper_open(self) -> float:
        return self.arm.claw

    def render(self, source: str, hand_xyz: tuple[float, float, float] | None = None
               ) -> np.ndarray:
        """Synthetic camera frame ``[H, W, 3]`` uint8 RGB: gradient + a red square that moves
        with the hand (or at ``hand_xyz``), so observations differ when the arm moves."""
        if hand_xyz is None:
            hand_xyz = tuple(kin.forward(self.arm.q)[0])
        _, y, z = hand_xyz
        height, width = self.image_hw
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 1] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
        image[..., 2] = np.linspace(0, 200, height, dtype=np.uint8)[:, None]
        cx = int(np.clip(width / 2 - y * width, 20, width - 20))
        cy = int(np.clip(height / 2 - (z - 0.26) * height, 20, height - 20))
        cv2.rectangle(image, (cx - 16, cy - 16), (cx + 16, cy + 16), (255, 0, 0), -1)
        if not IMAGE_SOURCES[source]:
            grey = image.mean(axis=2).astype(np.uint8)
            image = np.repeat(grey[..., None], 3, axis=2)
        return image

    def camera_frame(self, source: str) -> tuple[np.ndarray, float]:
        """(RGB frame, robot-clock acquisition time): the world's latest rendered frame when
        it renders ``source``, else a synthetic frame taken now."""
        if self.world is not None:
            frame = self.world.frame(source)
            if frame is not None:
                return frame
        return self.render(source), self.robot_now_s()

    def speed_log(self) -> np.ndarray:
        """``[N, 3]``: monotonic time, commanded hand speed (nan outside Cartesian moves),
        real hand speed (m/s)."""
        with self.lock:
            return np.asarray(self.arm.log, dtype=np.float64).reshape(-1, 3)


def clamp01(value: float) -> float:
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
