"""Spot through its SDK: absolute end-effector commands for the arm, with faults handled.

The paper's Spot task (drawer opening, App. D.3.2) drives the arm with absolute hand poses and a
gripper open fraction predicted from a forward body camera. This adapter does that with
``bosdyn-client`` directly (no separate ROS driver needed):

- start-up as the SDK intends: SDK -> authenticate (credentials from the environment or a
  chmod-600 file, never logged) -> time sync -> e-stop check (refuses to move without an e-stop
  endpoint unless ``allow_no_estop``) -> body lease + keep-alive -> power on -> stand;
- ``observe``: images from the configured sources through the image service (decoded to RGB,
  stamped in local monotonic time via time sync), arm joints and hand pose from robot state;
- ``apply``: an arm Cartesian command in the body (or odom) frame with a trajectory time of one
  control period, plus the claw gripper open fraction, as one synchro command;
- faults (lease revoked/lost, e-stop, command rejected, connection or time sync lost) set
  ``fault``, which is checked before every send, so nothing more is sent after the tick that
  saw it; with ``recover`` the lease is re-acquired (never taken) and power/stand restored;
- on exit: stow the arm, sit + power off (if ``power_off_on_exit``), return the lease.

Example::

    cfg = SpotConfig(hostname="192.168.80.3", cameras={"front": "frontleft_fisheye_image"})
    with SpotAdapter(cfg) as spot:  # BOSDYN_CLIENT_USERNAME / _PASSWORD in the environment
        obs = spot.observe()
        spot.apply(Action(ActionKind.EE_ABSOLUTE, obs.ee_pose[:3], obs.ee_pose[3:], 1.0))

Whoever holds the body lease commands the robot: run this adapter *or* let ``spot_ros2`` hold
the lease, not both (``take_lease`` steals it from the tablet / another client on purpose).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import bosdyn.client
import numpy as np
from bosdyn.api import estop_pb2, image_pb2, robot_command_pb2, robot_state_pb2
from bosdyn.client.auth import InvalidLoginError
from bosdyn.client.estop import EstopClient
from bosdyn.client.exceptions import Error as BosdynError
from bosdyn.client.exceptions import LeaseUseError, ResponseError, RpcError
from bosdyn.client.image import build_image_request
from bosdyn.client.lease import Error as LeaseWalletError
from bosdyn.client.lease import LeaseClient, LeaseKeepAlive, ResourceAlreadyClaimedError
from bosdyn.client.robot_command import (
    NoTimeSyncError,
    RobotCommandBuilder,
    RobotCommandClient,
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
    wait_until_stowed,
)
from theia_ros.types import Action, ActionKind, Observation, RobotAdapter

__all__ = ["SpotAdapter", "SpotConfig", "SpotFault"]

logger = logging.getLogger(__name__)
RECOVERABLE = frozenset({"lease", "connection", "time_sync"})  # never "estop": needs a human
_ERRORS = (BosdynError, LeaseWalletError)  # everything bosdyn-client raises at us


class SpotFault:
    """Why commanding stopped: ``kind`` in lease | estop | rejected | connection | time_sync |
    power, a one-line ``detail`` (no secrets), and when (``stamp_s``, monotonic)."""

    __slots__ = ("detail", "kind", "stamp_s")

    def __init__(self, kind: str, detail: str) -> None:
        self.kind, self.detail, self.stamp_s = kind, detail[:200], time.monotonic()

    def __repr__(self) -> str:
        return f"SpotFault({self.kind}: {self.detail})"


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
        self.commands_sent = 0  # RobotCommands the robot accepted from apply()
        self.actions_refused = 0  # non-finite actions dropped before sending

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
        self._keepalive = LeaseKeepAlive(
            self._lease_client, must_acquire=True, return_at_exit=False, warnings=False,
            rpc_interval_seconds=self.config.lease_keepalive_s,
            on_failure_callback=lambda exc: self._fault_from(exc, "lease keep-alive"))

    def _power_on_and_stand(self) -> None:
        cfg = self.config
        self._robot.power_on(timeout_sec=cfg.power_timeout_s, update_frequency=10.0,
                             timeout=cfg.rpc_timeout_s)
        if cfg.stand_on_connect:
            blocking_stand(self._command_client, timeout_sec=cfg.power_timeout_s,
                           update_frequency=10.0)

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
            self._fault_from(exc, "observe")
            raise TheiaError(f"{self._where()}: no observation: {type(exc).__name__}"
                             ) from None
        self._check_state(state)
        wall_to_mono_s = time.monotonic() - time.time()

        def local_mono_s(robot_stamp) -> float:
            return converter.local_seconds_from_robot_timestamp(robot_stamp) + wall_to_mono_s

        by_source = {item.source.name: item for item in image_responses}
        images, stamps = {}, {}
        for camera, source in cfg.cameras.items():
            shot = by_source[source].shot
            images[camera] = decode_image(shot.image, source)
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
        if state.power_state.motor_power_state != robot_state_pb2.PowerState.STATE_ON:
            self._set_fault("power", "motor power is off")

    def _ready_to_send(self) -> bool:
        """The check before every send: no fault, time sync alive (else try to recover)."""
        if self._fault is None and self._time_sync.stopped:
            self._set_fault("time_sync", f"time-sync thread stopped: "
                                         f"{type(self._time_sync.thread_exception).__name__}")
        fault = self._fault
        if fault is None:
            return True
        now_s = time.monotonic()
        if (self.config.recover and fault.kind in RECOVERABLE
                and now_s - self._last_recover_s >= self.config.recover_interval_s):
            self._last_recover_s = now_s
            self.recover()
        return False  # even after a recovery: send again only after a fresh observation

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
        try:
            self._command_client.robot_command(self._pose_command(target),
                                               timeout=self.config.tick_timeout_s)
        except _ERRORS as exc:
            self._fault_from(exc, "arm command")
            return self._holding()
        self.commands_sent += 1
        self._last_sent = target
        return target

    def _clip(self, action: Action) -> Action:
        low, high = self.config.workspace_box()
        xyz = np.clip(action.xyz_m, low, high)
        if not np.array_equal(xyz, action.xyz_m):
            logger.debug("spot: target %s clipped to workspace %s..%s", action.xyz_m, low, high)
        return Action(ActionKind.EE_ABSOLUTE, xyz, action.rpy_rad.copy(),
                      float(min(max(action.gripper, 0.0), 1.0)))

    def _pose_command(self, target: Action) -> robot_command_pb2.RobotCommand:
        qw, qx, qy, qz = rpy_to_quat(target.rpy_rad)
        x, y, z = (float(v) for v in target.xyz_m)
        arm = RobotCommandBuilder.arm_pose_command(x, y, z, qw, qx, qy, qz, self.config.frame,
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
        command = robot_command_pb2.RobotCommand()
        command.synchronized_command.arm_command.arm_stop_command.SetInParent()
        try:
            self._command_client.robot_command(command, timeout=self.config.tick_timeout_s)
        except _ERRORS as exc:
            self._fault_from(exc, "hold")

    # -- recovery and shut-down -------------------------------------------------------------------
    def clear_fault(self) -> None:
        """Forget the fault without touching the robot; :meth:`recover` also restores the
        lease, time sync and power."""
        self._fault = None

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
            if not self._robot.is_powered_on(timeout=cfg.rpc_timeout_s):
                self._power_on_and_stand()
        except (TheiaError, *_ERRORS) as exc:
            logger.warning("%s: recovery from %s fault failed: %s", self._where(), fault.kind,
                           type(exc).__name__)
            return False
        with self._lock:
            self._fault = None
        logger.warning("%s: recovered from %s fault", self._where(), fault.kind)
        return True

    def safe_stop(self) -> None:
        """Stow the arm (gripper closed), then sit + power off if configured. Skipped when a
        fault means the robot cannot (or must not) be commanded; an interrupted park (e-stop,
        ``interrupt_park``) stops the arm where it is and skips the power-off."""
        if self._robot is None:
            return
        cfg = self.config
        fault = self._fault
        if fault is not None and fault.kind not in ("time_sync", "rejected"):
            logger.warning("%s: not stowing/powering off after %s fault", self._where(),
                           fault.kind)
            return
        try:
            stow = RobotCommandBuilder.build_synchro_command(
                RobotCommandBuilder.arm_stow_command(),
                RobotCommandBuilder.claw_gripper_open_fraction_command(0.0))
            if self.park_interrupted:
                self.hold()
                return
            command_id = self._command_client.robot_command(stow, timeout=cfg.rpc_timeout_s)
            stowed = wait_until_stowed(self._command_client, command_id, cfg.power_timeout_s,
                                       self.park_wait)
            if stowed is None:
                logger.warning("%s: stow interrupted; stopping the arm where it is",
                               self._where())
                self.hold()
                return
            if not stowed:
                logger.warning("%s: arm did not report stowed in time", self._where())
            if cfg.power_off_on_exit:
                self._robot.power_off(cut_immediately=False, timeout_sec=cfg.power_timeout_s,
                                      update_frequency=10.0, timeout=cfg.rpc_timeout_s)
        except _ERRORS as exc:
            self._fault_from(exc, "safe stop")

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
