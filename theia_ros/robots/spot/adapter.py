"""Spot through its SDK: absolute end-effector commands for the arm, with faults handled.

The paper's Spot task (drawer opening, App. D.3.2) drives the arm with absolute hand poses and a
gripper open fraction predicted from a forward body camera. This adapter does that with
``bosdyn-client`` directly (no separate ROS driver needed):

- start-up as the SDK intends: SDK -> authenticate (credentials from the environment or a
  chmod-600 file, never logged) -> time sync -> e-stop check (refuses to move without an e-stop
  endpoint unless ``allow_no_estop``) -> body lease + keep-alive -> power on -> stand;
- ``observe``: images from the configured sources through the image service (decoded to RGB,
  stamped in local monotonic time via time sync), arm joints and hand pose from robot state;
- then the arm is unstowed (ready pose) and the adapter waits for it, before any target;
- ``apply``: the hand target joins one streamed multi-point Cartesian trajectory in the flat
  body (or odom / body) frame (``stream.py``), plus the claw open fraction, as one synchro
  command; the latest command's feedback is polled asynchronously: STALLED holds (and faults
  after ``stall_tolerance_s``), CANCELLED faults;
- transient RPC failures (a slow tick, a missed lease check-in, a time-sync error) hold for up
  to ``rpc_tolerance_s`` / ``time_sync_tolerance_s`` before they become a fault;
- faults (lease revoked/lost, e-stop, command rejected, connection or time sync lost) set
  ``fault``, which is checked before every send, so nothing more is sent after the tick that
  saw it; with ``recover`` the lease is re-acquired (never taken) and power/stand restored;
- on exit: open the claw, back off, stow and check the stow finished; only then sit + power
  off (if ``power_off_on_exit``): never sit with the arm out; return the lease.

Example::

    cfg = SpotConfig(hostname="192.168.80.3")  # hand_color_image, flat_body frame
    with SpotAdapter(cfg) as spot:  # BOSDYN_CLIENT_USERNAME / _PASSWORD in the environment
        obs = spot.observe()
        spot.apply(Action(ActionKind.EE_ABSOLUTE, obs.ee_pose[:3], obs.ee_pose[3:], 1.0))

Whoever holds the body lease commands the robot: run this adapter *or* let ``spot_ros2`` hold
the lease, not both (``take_lease`` steals it from the tablet / another client on purpose).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable

import bosdyn.client
import numpy as np
from bosdyn.api import (
    arm_command_pb2,
    basic_command_pb2,
    estop_pb2,
    image_pb2,
    robot_command_pb2,
    robot_state_pb2,
)
from bosdyn.client.auth import InvalidLoginError
from bosdyn.client.estop import EstopClient
from bosdyn.client.exceptions import Error as BosdynError
from bosdyn.client.exceptions import LeaseUseError, ResponseError, RpcError
from bosdyn.client.frame_helpers import HAND_FRAME_NAME, get_a_tform_b
from bosdyn.client.image import build_image_request
from bosdyn.client.lease import Error as LeaseWalletError
from bosdyn.client.lease import LeaseClient, LeaseKeepAlive, ResourceAlreadyClaimedError
from bosdyn.client.math_helpers import Quat, SE3Pose
from bosdyn.client.robot_command import (
    NoTimeSyncError,
    RobotCommandBuilder,
    RobotCommandClient,
    block_until_arm_arrives,
    blocking_stand,
)
from bosdyn.client.robot_state import RobotStateClient
from bosdyn.client.time_sync import TimeSyncError

from theia_ros.control.observation import JOINTS_KEY
from theia_ros.errors import TheiaError
from theia_ros.robots.spot.config import SpotConfig
from theia_ros.robots.spot.io import (
    decode_image,
    load_credentials,
    read_arm,
    rpy_to_quat,
    upright,
)
from theia_ros.robots.spot.stream import ArmStream
from theia_ros.types import Action, ActionKind, Observation, RobotAdapter

__all__ = ["SpotAdapter", "SpotConfig", "SpotFault"]

logger = logging.getLogger(__name__)
RECOVERABLE = frozenset({"lease", "connection", "time_sync"})  # never "estop": needs a human
_ERRORS = (BosdynError, LeaseWalletError)  # everything bosdyn-client raises at us


class _ParkInterrupted(Exception):
    """An e-stop arrived while parking: stop the arm where it is."""
_CART = arm_command_pb2.ArmCartesianCommand.Feedback
_NAMED = arm_command_pb2.NamedArmPositionsCommand.Feedback
_MOTORS_ON = robot_state_pb2.PowerState.MOTOR_POWER_STATE_ON
_STOWED = robot_state_pb2.ManipulatorState.STOWSTATE_STOWED


class SpotFault:
    """Why commanding stopped: ``kind`` in lease | estop | rejected | connection | time_sync |
    power | arm (trajectory cancelled or stalled too long), a one-line ``detail`` (no
    secrets), and when (``stamp_s``, monotonic)."""

    __slots__ = ("detail", "kind", "stamp_s")

    def __init__(self, kind: str, detail: str) -> None:
        self.kind, self.detail, self.stamp_s = kind, detail[:200], time.monotonic()

    def __repr__(self) -> str:
        return f"SpotFault({self.kind}: {self.detail})"


def _transient(exc: BaseException) -> bool:
    """A network-level failure (timeout, unreachable) that may pass, not a refusal."""
    return isinstance(exc, RpcError) and not isinstance(exc, (LeaseUseError, LeaseWalletError))


def _classify(exc: BaseException) -> str:
    if isinstance(exc, (LeaseUseError, LeaseWalletError)):
        return "lease"
    if isinstance(exc, (NoTimeSyncError, TimeSyncError)):
        return "time_sync"
    if isinstance(exc, RpcError):
        return "connection"
    return "rejected"


class SpotAdapter(RobotAdapter):
    """Spot's arm as a :class:`RobotAdapter` taking absolute hand poses (``EE_ABSOLUTE``)."""

    action_kind = ActionKind.EE_ABSOLUTE
    name = "spot"

    def __init__(self, config: SpotConfig,
                 on_fault: Callable[[SpotFault], None] | None = None) -> None:
        self.config = config
        self._on_fault = on_fault
        self._lock = threading.Lock()
        self._fault: SpotFault | None = None
        self._robot = self._sdk = self._time_sync = self._keepalive = None
        self._lease_client = self._command_client = self._state_client = None
        self._image_client = None
        self._last_obs: Observation | None = None
        self._last_sent: Action | None = None
        self._last_recover_s = -math.inf
        self._stream = ArmStream(config.frame, config.trajectory_time(),
                                 max_tracking_error_m=config.max_tracking_error_m)
        self._arm_ready = False
        self._failing_since: float | None = None  # first of a run of failed tick RPCs
        self._lease_failing_since: float | None = None
        self._lease_attempt_failed = False
        self._sync_lost_since: float | None = None
        self._sync_reply_at_loss = None
        self._last_command_id: int | None = None
        self._feedback_future = None
        self._feedback_sent_s = -math.inf
        self._stalled_since: float | None = None
        self.arm_status = ""  # latest arm command feedback: IN_PROGRESS, STALLED, ...
        self.commands_sent = 0  # RobotCommands the robot accepted from apply()
        self.actions_refused = 0  # non-finite actions dropped before sending
        self.transient_failures: dict[str, int] = {}  # survived without a fault, per kind

    # -- state ----------------------------------------------------------------------------------
    @property
    def fault(self) -> SpotFault | None:
        return self._fault

    @property
    def faulted(self) -> bool:
        return self._fault is not None

    @property
    def time_synced(self) -> bool:
        """Time sync established and its background thread still running."""
        sync = self._time_sync
        return bool(sync is not None and not sync.stopped and sync.has_established_time_sync)

    def _set_fault(self, kind: str, detail: str) -> None:
        """Record the first fault (an e-stop overrides any other); report it once."""
        with self._lock:
            current = self._fault
            if current is not None and (current.kind == "estop" or kind != "estop"):
                return
            self._fault = fault = SpotFault(kind, detail)
        logger.error("spot %s: %s fault: %s; no further commands are sent",
                     self.config.hostname, kind, fault.detail)
        if self._on_fault is not None:
            self._on_fault(fault)

    def _fault_from(self, exc: BaseException, during: str) -> None:
        self._set_fault(_classify(exc), f"{during}: {type(exc).__name__}: {exc}")

    def _tolerate(self, exc: BaseException, during: str) -> bool:
        """A failed tick RPC: True when it is transient and the run of failures is still
        within ``rpc_tolerance_s`` (hold this tick); otherwise the fault is set."""
        now_s = time.monotonic()
        if _transient(exc):
            if self._failing_since is None:
                self._failing_since = now_s
            if now_s - self._failing_since <= self.config.rpc_tolerance_s:
                self.transient_failures[during] = self.transient_failures.get(during, 0) + 1
                logger.warning("%s: %s failed (%s); holding, tolerated for %.1f s",
                               self._where(), during, type(exc).__name__,
                               self.config.rpc_tolerance_s)
                return True
        self._fault_from(exc, during)
        return False

    def _rpc_ok(self) -> None:
        self._failing_since = None

    def status_text(self) -> str:
        if self._fault is not None:
            return f"fault: {self._fault.kind}"
        parts = [f"arm {self.arm_status.lower()}"] if self.arm_status else []
        if self._failing_since is not None:
            parts.append("rpc failing")
        return ", ".join(parts)

    # -- start-up -------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._robot is not None:
            return
        cfg = self.config
        credentials = load_credentials(cfg.credentials_file)
        self._sdk = bosdyn.client.create_standard_sdk(cfg.client_name,
                                                      cert_resource_glob=cfg.robot_cert)
        self._robot = robot = self._sdk.create_robot(cfg.hostname)
        robot.update_secure_channel_port(cfg.port)
        # The SDK debug-logs every request and response, including GetAuthToken's password and
        # token: keep the auth client's loggers above DEBUG whatever the application sets.
        robot.logger.getChild("AuthService").setLevel(logging.INFO)
        try:
            self._start_up(credentials)
        except BaseException:
            self._teardown()
            raise

    def _where(self) -> str:
        return f"spot {self.config.hostname}:{self.config.port}"

    def _start_up(self, credentials) -> None:
        cfg, robot = self.config, self._robot
        try:
            robot.authenticate(credentials.username, credentials.password,
                               timeout=cfg.rpc_timeout_s)
        except InvalidLoginError:
            raise TheiaError(f"{self._where()}: login refused for the configured user "
                             "(check the credentials source)") from None
        except _ERRORS as exc:
            raise TheiaError(f"{self._where()}: cannot authenticate ({type(exc).__name__})"
                             ) from None
        del credentials
        try:
            robot.sync_with_directory()
            self._time_sync = robot.time_sync  # starts the SDK's time-sync thread
            self._time_sync.time_sync_interval_sec = cfg.time_sync_interval_s
            self._time_sync.wait_for_sync(timeout_sec=cfg.time_sync_timeout_s)
            self._check_estop()
            self._command_client = robot.ensure_client(RobotCommandClient.default_service_name)
            self._state_client = robot.ensure_client(RobotStateClient.default_service_name)
            self._image_client = robot.ensure_client(cfg.image_service)
            read_arm(self._state_client.get_robot_state(timeout=cfg.rpc_timeout_s), cfg.frame)
            self._lease_client = robot.ensure_client(LeaseClient.default_service_name)
            self._acquire_lease(take=cfg.take_lease)
            self._power_on_and_stand()
        except ResourceAlreadyClaimedError as exc:
            owner = exc.response.lease_owner.client_name or "another client"
            raise TheiaError(f"{self._where()}: the body lease is held by {owner!r}; release it "
                             "there (tablet, spot_ros2) or set take_lease: true") from None
        except _ERRORS as exc:
            raise TheiaError(f"{self._where()}: start-up failed: {type(exc).__name__}: {exc}"
                             ) from None

    def _check_estop(self) -> None:
        """Refuse to move while e-stopped, or with no e-stop endpoint unless explicitly allowed."""
        client = self._robot.ensure_client(EstopClient.default_service_name)
        status = client.get_status(timeout=self.config.rpc_timeout_s)
        if status.stop_level != estop_pb2.ESTOP_LEVEL_NONE:
            raise TheiaError(f"{self._where()}: the robot is e-stopped "
                             f"({estop_pb2.EstopStopLevel.Name(status.stop_level)}); release it")
        if not any(entry.endpoint.unique_id for entry in status.endpoints):
            if not self.config.allow_no_estop:
                raise TheiaError(f"{self._where()}: no e-stop endpoint is registered on the "
                                 "robot; start one (tablet or estop_gui) before moving, or set "
                                 "allow_no_estop: true explicitly")
            logger.warning("%s: moving WITHOUT an e-stop endpoint (allow_no_estop is set)",
                           self._where())

    def _acquire_lease(self, take: bool) -> None:
        timeout = self.config.rpc_timeout_s
        if take:
            self._lease_client.take(timeout=timeout)
        else:
            self._lease_client.acquire(timeout=timeout)
        self._start_keepalive()

    def _start_keepalive(self) -> None:
        self._lease_failing_since, self._lease_attempt_failed = None, False
        self._keepalive = LeaseKeepAlive(
            self._lease_client, must_acquire=True, return_at_exit=False, warnings=False,
            rpc_interval_seconds=self.config.lease_keepalive_s,
            keep_running_cb=self._lease_attempt, on_failure_callback=self._lease_failed)

    def _lease_attempt(self) -> bool:
        """Runs before every check-in: the previous one succeeded unless it reported failure."""
        if not self._lease_attempt_failed:
            self._lease_failing_since = None
        self._lease_attempt_failed = False
        return True

    def _lease_failed(self, exc: BaseException) -> None:
        """The SDK keeps checking in after a failure; a refused lease faults at once, a
        network failure only once check-ins have failed for ``rpc_tolerance_s``."""
        self._lease_attempt_failed = True
        if not _transient(exc):
            self._fault_from(exc, "lease keep-alive")
            return
        now_s = time.monotonic()
        if self._lease_failing_since is None:
            self._lease_failing_since = now_s
        self.transient_failures["lease keep-alive"] = \
            self.transient_failures.get("lease keep-alive", 0) + 1
        self._check_lease_streak(now_s)

    def _check_lease_streak(self, now_s: float) -> None:
        since = self._lease_failing_since
        if since is not None and now_s - since > self.config.rpc_tolerance_s:
            self._set_fault("connection", f"lease check-ins failing for {now_s - since:.1f} s")

    def _power_on_and_stand(self) -> None:
        """Power on (if off), stand (also when someone else sat the robot down) and unstow."""
        cfg = self.config
        if not self._robot.is_powered_on(timeout=cfg.rpc_timeout_s):
            self._robot.power_on(timeout_sec=cfg.power_timeout_s, update_frequency=10.0,
                                 timeout=cfg.rpc_timeout_s)
        if cfg.stand_on_connect:
            blocking_stand(self._command_client, timeout_sec=cfg.power_timeout_s,
                           update_frequency=10.0)
        if cfg.ready_arm:
            self._ready_arm()

    def _ready_arm(self) -> None:
        """Unstow to the ready pose and wait for it, so streaming starts from a known pose."""
        cfg = self.config
        command_id = self._command_client.robot_command(RobotCommandBuilder.arm_ready_command(),
                                                        timeout=cfg.rpc_timeout_s)
        if not block_until_arm_arrives(self._command_client, command_id,
                                       timeout_sec=cfg.power_timeout_s):
            raise TheiaError(f"{self._where()}: the arm did not reach its ready pose")
        self._arm_ready = True
        self._stream.reset()

    # -- every tick -----------------------------------------------------------------------------
    def _require_connected(self) -> None:
        if self._robot is None:
            raise TheiaError("spot adapter: call connect() (or use it as a context manager)")

    def observe(self) -> Observation:
        """Latest images + arm state, stamped in local monotonic time. An RPC failure sets the
        fault and raises TheiaError (the control loop then safe-stops)."""
        self._require_connected()
        cfg, timeout = self.config, self.config.tick_timeout_s
        sources = list(cfg.cameras.values())
        requests = [build_image_request(source, quality_percent=cfg.jpeg_quality_percent,
                                        image_format=_FORMATS[cfg.image_format])
                    for source in sources]
        try:
            state_future = self._state_client.get_robot_state_async(timeout=timeout)
            image_responses = self._image_client.get_image(requests, timeout=timeout)
            state = state_future.result()
            converter = self._time_sync.endpoint.get_robot_time_converter()
        except _ERRORS as exc:
            if self._tolerate(exc, "observe") and self._last_obs is not None:
                return self._last_obs  # stale stamps: the control loop holds this tick
            self._fault_from(exc, "observe")
            raise TheiaError(f"{self._where()}: no observation: {type(exc).__name__}"
                             ) from None
        self._rpc_ok()
        self._check_state(state)
        wall_to_mono_s = time.monotonic() - time.time()

        def local_mono_s(robot_stamp) -> float:
            return converter.local_seconds_from_robot_timestamp(robot_stamp) + wall_to_mono_s

        by_source = {item.source.name: item for item in image_responses}
        images, stamps = {}, {}
        for camera, source in cfg.cameras.items():
            shot = by_source[source].shot
            images[camera] = upright(decode_image(shot.image, source), source)
            stamps[camera] = local_mono_s(shot.acquisition_time)
        stamps[JOINTS_KEY] = local_mono_s(state.kinematic_state.acquisition_timestamp)
        arm = read_arm(state, cfg.frame)
        self._last_obs = Observation(images=images, joint_positions=arm.joint_positions,
                                     ee_pose=arm.ee_pose, gripper=arm.gripper,
                                     stamp_s=min(stamps.values()), stamps_s=stamps)
        return self._last_obs

    def _check_state(self, state) -> None:
        for estop in state.estop_states:
            if estop.state == robot_state_pb2.EStopState.STATE_ESTOPPED:
                self._set_fault("estop", f"e-stop {estop.name!r} engaged")
        if state.power_state.motor_power_state != _MOTORS_ON:
            self._set_fault("power", "motor power is off")

    def _ready_to_send(self) -> bool:
        """The check before every send: no fault, time sync alive (else try to recover)."""
        if self._fault is None:
            self._watch_time_sync()
            self._check_lease_streak(time.monotonic())
        fault = self._fault
        if fault is None:
            return True
        now_s = time.monotonic()
        if (self.config.recover and fault.kind in RECOVERABLE
                and now_s - self._last_recover_s >= self.config.recover_interval_s):
            self._last_recover_s = now_s
            self.recover()
        return False  # even after a recovery: send again only after a fresh observation

    def _watch_time_sync(self) -> None:
        """The SDK's time-sync thread ends on its first RPC error; restart it and keep using
        the last estimate (clocks drift slowly); fault only if it stays down too long."""
        sync, now_s = self._time_sync, time.monotonic()
        if self._sync_lost_since is None:
            if not sync.stopped and sync.has_established_time_sync:
                return
            self._sync_lost_since, self._sync_reply_at_loss = now_s, sync.endpoint.response
            self.transient_failures["time sync"] = self.transient_failures.get("time sync",
                                                                              0) + 1
            logger.warning("%s: time sync lost (%s); restarting it", self._where(),
                           type(sync.thread_exception).__name__)
        elif not sync.stopped and sync.endpoint.response is not self._sync_reply_at_loss:
            self._sync_lost_since = None  # a fresh estimate since the loss: back
            return
        if now_s - self._sync_lost_since > self.config.time_sync_tolerance_s:
            self._set_fault("time_sync", f"time sync down for {now_s - self._sync_lost_since:.1f}"
                                         f" s: {type(sync.thread_exception).__name__}")
        elif sync.stopped:
            self._robot.start_time_sync()

    def apply(self, action: Action) -> Action:
        """Send one absolute hand pose + gripper fraction; return what was sent (clipped to the
        workspace), or — when nothing was sent — the pose the arm is holding."""
        self._require_connected()
        if action.kind is not ActionKind.EE_ABSOLUTE:
            raise TheiaError(f"spot adapter: needs {ActionKind.EE_ABSOLUTE.value} actions, "
                             f"got {action.kind.value}")
        if not action.is_finite():
            self.actions_refused += 1
            logger.warning("spot: refusing a non-finite action %s", action.to_vector())
            return self._holding()
        target = self._clip(action)
        if not self._ready_to_send():
            return self._holding()
        self._read_feedback()
        if self._fault is not None or self._stalled_since is not None:
            return self._holding()
        if not self._arm_ready and self.config.ready_arm:
            try:
                self._ready_arm()
            except (TheiaError, *_ERRORS) as exc:
                self._set_fault("arm", f"unstow: {exc}")
            return self._holding()  # send targets only after a fresh observation
        try:
            command_id = self._command_client.robot_command(
                self._pose_command(target), timeout=self.config.tick_timeout_s)
        except _ERRORS as exc:
            self._stream.reset()  # the robot never got this knot
            self._tolerate(exc, "arm command")
            return self._holding()
        self._rpc_ok()
        self._last_command_id = command_id
        self.commands_sent += 1
        self._last_sent = target
        return target

    def _read_feedback(self) -> None:
        """Act on the latest arm command's feedback if it has come back; ask again at most
        every ``feedback_interval_s``, asynchronously: a tick never waits for it."""
        future = self._feedback_future
        if future is not None and future.done():
            self._feedback_future = None
            try:
                self._on_feedback(*future.result())
            except _ERRORS as exc:
                if _transient(exc):
                    self.transient_failures["feedback"] = \
                        self.transient_failures.get("feedback", 0) + 1
                else:
                    self._fault_from(exc, "arm feedback")
        now_s = time.monotonic()
        if (self._feedback_future is None and self._last_command_id is not None
                and now_s - self._feedback_sent_s >= self.config.feedback_interval_s):
            self._feedback_sent_s = now_s
            command_id = self._last_command_id
            request = self._command_client.robot_command_feedback_async(
                command_id, timeout=self.config.tick_timeout_s)
            self._feedback_future = _Tagged(request, command_id)

    def _on_feedback(self, response, command_id: int) -> None:
        """The reply describes the command that was newest when it was asked for (at most one
        tick ago); one that another command has replaced says so and is ignored."""
        arm = response.feedback.synchronized_feedback.arm_command_feedback
        overridden = basic_command_pb2.RobotCommandFeedbackStatus.STATUS_COMMAND_OVERRIDDEN
        if not arm.HasField("arm_cartesian_feedback") or arm.status == overridden:
            return
        status = arm.arm_cartesian_feedback.status
        self.arm_status = _CART.Status.Name(status).removeprefix("STATUS_")
        now_s = time.monotonic()
        if status == _CART.STATUS_TRAJECTORY_CANCELLED:
            self._set_fault("arm", "the robot cancelled the arm trajectory: tracking error "
                                   f"{arm.arm_cartesian_feedback.measured_pos_tracking_error:.3f}"
                                   " m (contact or obstruction?)")
        elif status == _CART.STATUS_TRAJECTORY_STALLED:
            if self._stalled_since is None:
                self._stalled_since = now_s
                self._stream.reset()
                logger.warning("%s: arm stalled; holding", self._where())
            elif now_s - self._stalled_since > self.config.stall_tolerance_s:
                self._set_fault("arm", f"arm stalled for {now_s - self._stalled_since:.1f} s")
        else:
            self._stalled_since = None

    def _clip(self, action: Action) -> Action:
        low, high = self.config.workspace_box()
        xyz = self.config.clip_to_reach(np.clip(action.xyz_m, low, high))
        if not np.array_equal(xyz, action.xyz_m):
            logger.debug("spot: target %s clipped to workspace %s..%s", action.xyz_m, low, high)
        return Action(ActionKind.EE_ABSOLUTE, xyz, action.rpy_rad.copy(),
                      float(min(max(action.gripper, 0.0), 1.0)))

    def _pose_command(self, target: Action) -> robot_command_pb2.RobotCommand:
        if self.config.stream:
            arm = self._stream.command(target.xyz_m, target.rpy_rad, time.time())
        else:
            qw, qx, qy, qz = rpy_to_quat(target.rpy_rad)
            x, y, z = (float(v) for v in target.xyz_m)
            arm = RobotCommandBuilder.arm_pose_command(x, y, z, qw, qx, qy, qz,
                                                       self.config.frame,
                                                       seconds=self.config.trajectory_time())
        gripper = RobotCommandBuilder.claw_gripper_open_fraction_command(target.gripper)
        return RobotCommandBuilder.build_synchro_command(arm, gripper)

    def _holding(self) -> Action:
        """Best knowledge of where the arm is holding: last observed, else last sent pose."""
        if self._last_obs is not None:
            pose = self._last_obs.ee_pose
            return Action(ActionKind.EE_ABSOLUTE, pose[:3].copy(), pose[3:].copy(),
                          self._last_obs.gripper)
        if self._last_sent is not None:
            return self._last_sent
        raise TheiaError("spot adapter: nothing sent and nothing observed yet; observe() first")

    def hold(self) -> None:
        """Stop the arm where it is (ArmStopCommand); nothing is sent while faulted, and a
        hold never triggers a recovery (re-acquiring the lease, powering on, standing)."""
        self._require_connected()
        if self._fault is not None:
            return
        self._stream.reset()
        command = robot_command_pb2.RobotCommand()
        command.synchronized_command.arm_command.arm_stop_command.SetInParent()
        try:
            self._command_client.robot_command(command, timeout=self.config.tick_timeout_s)
        except _ERRORS as exc:
            self._tolerate(exc, "hold")

    # -- recovery and shut-down -------------------------------------------------------------------
    def clear_fault(self) -> None:
        """Forget the fault without touching the robot; :meth:`recover` also restores the
        lease, time sync and power."""
        self._fault = None
        self._failing_since = self._sync_lost_since = self._stalled_since = None
        self._stream.reset()

    def recover(self) -> bool:
        """After a lease / connection / time-sync fault: restore time sync, re-check the e-stop,
        re-acquire the lease (acquire, never take: another owner keeps it), power on and stand.
        Returns True when commanding may resume. E-stop and rejection faults are not recovered."""
        fault = self._fault
        if fault is None:
            return True
        if fault.kind not in RECOVERABLE:
            return False
        cfg = self.config
        try:
            if self._time_sync.stopped:
                self._robot.start_time_sync()
                self._time_sync.wait_for_sync(timeout_sec=cfg.time_sync_timeout_s)
            self._check_estop()
            if self._keepalive is not None:
                self._keepalive.shutdown()
            try:  # still ours (e.g. after a connection blip)? then keep it alive again
                lease = self._lease_client.lease_wallet.get_lease()
                self._lease_client.retain_lease(lease, timeout=cfg.rpc_timeout_s)
            except (LeaseWalletError, LeaseUseError):
                self._lease_client.acquire(timeout=cfg.rpc_timeout_s)
            self._start_keepalive()
            self._power_on_and_stand()  # also stands a robot someone else sat down
        except (TheiaError, *_ERRORS) as exc:
            logger.warning("%s: recovery from %s fault failed: %s", self._where(), fault.kind,
                           type(exc).__name__)
            return False
        with self._lock:
            self._fault = None
        self._failing_since = self._sync_lost_since = self._stalled_since = None
        logger.warning("%s: recovered from %s fault", self._where(), fault.kind)
        return True

    def safe_stop(self) -> None:
        """Leave the robot safe: open the claw (let go of a handle), back the hand off, stow,
        and check the stow finished; only a stowed arm is sat down and powered off (if
        ``power_off_on_exit``): a robot never sits with its arm out. If stowing raises, the
        power-off decision is still made from the arm state the robot reports. Skipped when a
        fault means the robot cannot (or must not) be commanded. An e-stop during any of it
        (``interrupt_park``) stops the arm where it is and skips the power-off."""
        if self._robot is None:
            return
        fault = self._fault
        if fault is not None and fault.kind not in ("time_sync", "rejected", "arm"):
            logger.warning("%s: not stowing/powering off after %s fault", self._where(),
                           fault.kind)
            return
        self._stream.reset()
        try:
            self._release_and_back_off()
            self._stow()
        except _ParkInterrupted:
            logger.warning("%s: stow interrupted; stopping the arm where it is", self._where())
            with contextlib.suppress(*_ERRORS):
                self._arm_stop()
            return
        except (TheiaError, *_ERRORS) as exc:
            logger.error("%s: stowing failed: %s: %s", self._where(), type(exc).__name__, exc)
        if self.park_interrupted:
            return
        self._power_off_if_stowed()

    def _pause(self, seconds: float) -> None:
        """Wait while parking; an e-stop (``interrupt_park``) ends the park at once."""
        if not self.park_wait(seconds):
            raise _ParkInterrupted

    def _release_and_back_off(self) -> None:
        cfg, client = self.config, self._command_client
        self._pause(0.0)
        state = self._state_client.get_robot_state(timeout=cfg.rpc_timeout_s)
        if state.manipulator_state.stow_state == _STOWED:
            return
        release = RobotCommandBuilder.claw_gripper_open_fraction_command(1.0)
        client.robot_command(release, timeout=cfg.rpc_timeout_s)
        deadline = time.monotonic() + cfg.power_timeout_s
        while True:  # wait until the claw has let go
            manip = self._state_client.get_robot_state(
                timeout=cfg.rpc_timeout_s).manipulator_state
            if not manip.is_gripper_holding_item and manip.gripper_open_percentage > 90.0:
                break
            if time.monotonic() > deadline:
                raise TheiaError("the claw did not open")
            self._pause(0.05)
        if cfg.back_off_m <= 0:
            return
        snapshot = self._state_client.get_robot_state(
            timeout=cfg.rpc_timeout_s).kinematic_state.transforms_snapshot
        hand = get_a_tform_b(snapshot, cfg.frame, HAND_FRAME_NAME)
        back = hand * _se3(-cfg.back_off_m)  # along the hand's own axis, away from the handle
        command = RobotCommandBuilder.arm_pose_command(
            back.x, back.y, back.z, back.rot.w, back.rot.x, back.rot.y, back.rot.z, cfg.frame,
            seconds=max(0.3, cfg.back_off_m / 0.25))  # a slow, deliberate 0.25 m/s
        self._pause(0.0)
        command_id = client.robot_command(command, timeout=cfg.rpc_timeout_s)
        if not self._arrived(command_id, cfg.power_timeout_s):
            logger.warning("%s: backing off from the handle did not finish", self._where())

    def _arrived(self, command_id: int, timeout_s: float) -> bool:
        """Poll an arm command's feedback until it reaches its goal (as bosdyn's
        ``block_until_arm_arrives`` does), pausing interruptibly between polls."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            feedback = self._command_client.robot_command_feedback(
                command_id, timeout=self.config.rpc_timeout_s)
            arm = feedback.feedback.synchronized_feedback.arm_command_feedback
            status = arm.arm_cartesian_feedback.status
            if status == _CART.STATUS_TRAJECTORY_COMPLETE:
                return True
            if status in (_CART.STATUS_TRAJECTORY_STALLED, _CART.STATUS_TRAJECTORY_CANCELLED):
                return False
            self._pause(0.05)
        return False

    def _stow(self) -> None:
        cfg, client = self.config, self._command_client
        stow = RobotCommandBuilder.build_synchro_command(
            RobotCommandBuilder.arm_stow_command(),
            RobotCommandBuilder.claw_gripper_open_fraction_command(0.0))
        command_id = client.robot_command(stow, timeout=cfg.rpc_timeout_s)
        self._arm_ready = False
        deadline = time.monotonic() + cfg.power_timeout_s
        while time.monotonic() < deadline:
            feedback = client.robot_command_feedback(command_id, timeout=cfg.rpc_timeout_s)
            named = feedback.feedback.synchronized_feedback.arm_command_feedback \
                .named_arm_position_feedback
            if named.status == _NAMED.STATUS_COMPLETE:
                return
            if named.status == _NAMED.STATUS_STALLED_HOLDING_ITEM:
                raise TheiaError("stow refused: the claw is holding an item")
            self._pause(0.05)
        raise TheiaError("the arm did not report stowed in time")

    def _power_off_if_stowed(self) -> None:
        cfg = self.config
        try:
            state = self._state_client.get_robot_state(timeout=cfg.rpc_timeout_s)
            stowed = state.manipulator_state.stow_state == _STOWED
            if not stowed:
                logger.error("%s: the arm is not stowed: staying up with the arm held still "
                             "(sitting would put the arm down on whatever it is near); stow "
                             "it from the tablet", self._where())
                self._arm_stop()
            elif cfg.power_off_on_exit:
                self._robot.power_off(cut_immediately=False, timeout_sec=cfg.power_timeout_s,
                                      update_frequency=10.0, timeout=cfg.rpc_timeout_s)
        except _ERRORS as exc:
            self._fault_from(exc, "safe stop")

    def _arm_stop(self) -> None:
        command = robot_command_pb2.RobotCommand()
        command.synchronized_command.arm_command.arm_stop_command.SetInParent()
        self._command_client.robot_command(command, timeout=self.config.rpc_timeout_s)

    def disconnect(self) -> None:
        """Stop the keep-alive, return the lease, stop time sync, close channels (idempotent)."""
        self._teardown()

    def _teardown(self) -> None:
        if self._keepalive is not None:
            self._keepalive.shutdown()
            self._keepalive = None
        if self._lease_client is not None:
            try:
                lease = self._lease_client.lease_wallet.get_lease()
                self._lease_client.return_lease(lease, timeout=self.config.rpc_timeout_s)
            except (ResponseError, LeaseWalletError):
                pass  # not ours any more: nothing to return
            except RpcError as exc:
                logger.warning("%s: could not return the lease (%s)", self._where(),
                               type(exc).__name__)
            self._lease_client = None
        if self._sdk is not None:
            self._sdk.clear_robots()  # stops the time-sync and token-refresh threads
        if self._robot is not None:
            self._robot.shutdown()  # closes the channels
        self._robot = self._sdk = self._time_sync = None
        self._command_client = self._state_client = self._image_client = None


_FORMATS = {"jpeg": image_pb2.Image.FORMAT_JPEG, "raw": image_pb2.Image.FORMAT_RAW}


def _se3(x: float) -> SE3Pose:
    return SE3Pose(x, 0.0, 0.0, Quat())


class _Tagged:
    """A feedback request's future together with the command it asks about."""

    def __init__(self, future, command_id: int) -> None:
        self.future, self.command_id = future, command_id

    def done(self) -> bool:
        return self.future.done()

    def result(self):
        return self.future.result(), self.command_id
