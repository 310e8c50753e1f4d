"""``SpotConfig``: everything the Spot adapter needs to know, validated, with no secrets in it.

Credentials are deliberately *not* fields: they come from ``BOSDYN_CLIENT_USERNAME`` /
``BOSDYN_CLIENT_PASSWORD`` or from ``credentials_file`` (chmod 600), so a saved effective
config or a ROS parameter dump never contains a password.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from theia_ros.errors import TheiaError

FRAMES = ("body", "flat_body", "odom")
# Conservative box for the hand in the (flat) body frame (m): in front of the body, never far
# below it. Its corners lie beyond the arm's reach, so targets are also kept within
# ``reach_m`` of the shoulder.
BODY_WORKSPACE_M = ((0.3, -0.6, -0.3), (1.0, 0.6, 0.8))
SHOULDER_IN_BODY_M = (0.292, 0.0, 0.188)  # arm_link_sh0 (Spot arm URDF)
ARM_REACH_M = 0.98  # shoulder to hand frame at full extension (Spot arm specification)


@dataclass
class SpotConfig:
    """Args:
    hostname: robot address (``192.168.80.3`` on Spot's own Wi-Fi).
    port: TLS port of the robot API (443; tests point it at a loopback stand-in).
    robot_cert: glob of the robot CA certificate(s); None = the one shipped in bosdyn-client.
    credentials_file: ``KEY=VALUE`` file with the two BOSDYN_CLIENT_* variables, chmod 600;
        None = read them from the environment.
    client_name: shown on the tablet as the lease owner.
    cameras: camera name (policy input key, e.g. ``front``) -> image source on the robot.
    image_service: image service name (``image``; a payload camera may register another).
    image_format: ``jpeg`` (small over Wi-Fi) or ``raw``.
    frame: command/observation frame of the hand pose: ``flat_body`` (gravity-aligned body:
        does not tilt as the body sways while the arm pulls), ``odom`` (fixed in the world) or
        ``body``.
    rate_hz: control rate.
    stream: send each target as part of one continuous multi-point trajectory (see
        ``stream.py``); false sends one point per tick due one period later (stop-and-go).
    stream_margin_s: motion queued on the robot beyond the next tick, to cover network delay.
    trajectory_time_s: override the time from sending a target to the hand reaching it
        (default one period + ``stream_margin_s``; one period when not streaming).
    max_tracking_error_m: the robot cancels a trajectory the hand lags by more than this
        (contact, obstruction); the adapter then faults. None = the robot's default.
    workspace_min_m / workspace_max_m: last-line clip box for the hand position in ``frame``
        (the control core's safety filter runs before this); required for ``odom``.
    reach_m: in ``body``/``flat_body``, targets are also kept this close to the shoulder.
    ready_arm: unstow (arm ready pose) after standing and before the first target.
    take_lease: take the lease from its current owner instead of failing.
    allow_no_estop: move even when no e-stop endpoint is registered (dangerous; explicit).
    stand_on_connect: stand after powering on.
    power_off_on_exit: sit and cut motor power on exit (else stay powered and standing).
    recover: after a lease / connection / time-sync fault, re-acquire (never take) the lease and
        power on again, at most every ``recover_interval_s``.
    rpc_tolerance_s: per-tick RPCs and lease check-ins may fail for this long (the arm holds:
        nothing new is sent, the robot finishes the queued motion) before a connection fault.
    time_sync_tolerance_s: the time-sync thread is restarted after an error; fault only when
        sync is not back within this long.
    feedback_interval_s: how often the latest arm command's feedback is requested (one
        asynchronous RPC at a time; a tick never waits for it).
    stall_tolerance_s: how long the arm may report STALLED (holding) before a fault.
    back_off_m: on a safe stop, the hand moves this far back along its own axis after
        opening the claw, before stowing, so the stow does not drag the claw over the handle.
    """

    hostname: str = "192.168.80.3"
    port: int = 443
    robot_cert: str | None = None
    credentials_file: str | None = None
    client_name: str = "theia-ros"
    cameras: dict[str, str] = field(default_factory=lambda: {"front": "hand_color_image"})
    image_service: str = "image"
    image_format: str = "jpeg"
    jpeg_quality_percent: int = 75
    frame: str = "flat_body"
    rate_hz: float = 5.0
    stream: bool = True
    stream_margin_s: float = 0.15
    trajectory_time_s: float | None = None
    max_tracking_error_m: float | None = 0.15
    workspace_min_m: tuple[float, float, float] | None = None
    workspace_max_m: tuple[float, float, float] | None = None
    reach_m: float = 0.9
    ready_arm: bool = True
    take_lease: bool = False
    allow_no_estop: bool = False
    stand_on_connect: bool = True
    power_off_on_exit: bool = True
    recover: bool = False
    recover_interval_s: float = 2.0
    rpc_timeout_s: float = 5.0  # start-up / shut-down RPCs
    tick_rpc_timeout_s: float | None = None  # per-tick RPCs; default one control period
    power_timeout_s: float = 20.0  # power on, stand, stow, power off
    time_sync_timeout_s: float = 5.0
    time_sync_interval_s: float = 10.0
    lease_keepalive_s: float = 2.0
    rpc_tolerance_s: float = 1.0
    time_sync_tolerance_s: float = 5.0
    feedback_interval_s: float = 0.2
    stall_tolerance_s: float = 1.0
    back_off_m: float = 0.1

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> TheiaError:
            return TheiaError(f"spot config field {name!r}: expected {expected}, "
                              f"got {getattr(self, name)!r}")

        if not self.hostname:
            raise bad("hostname", "the robot's address")
        if not 0 < self.port < 65536:
            raise bad("port", "a TCP port")
        if self.frame not in FRAMES:
            raise bad("frame", f"one of {FRAMES}")
        if not self.cameras or not all(isinstance(v, str) and v for v in self.cameras.values()):
            raise bad("cameras", "a non-empty mapping camera name -> image source")
        if self.image_format not in ("jpeg", "raw"):
            raise bad("image_format", "'jpeg' or 'raw'")
        if not 0 < self.jpeg_quality_percent <= 100:
            raise bad("jpeg_quality_percent", "1..100")
        for name in ("rate_hz", "recover_interval_s", "rpc_timeout_s", "power_timeout_s",
                     "time_sync_timeout_s", "time_sync_interval_s", "lease_keepalive_s",
                     "rpc_tolerance_s", "time_sync_tolerance_s", "feedback_interval_s",
                     "stall_tolerance_s", "reach_m"):
            if not getattr(self, name) > 0:
                raise bad(name, "a positive number")
        if not (self.stream_margin_s >= 0 and self.back_off_m >= 0):
            raise bad("stream_margin_s", "stream_margin_s and back_off_m >= 0")
        for name in ("trajectory_time_s", "tick_rpc_timeout_s", "max_tracking_error_m"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise bad(name, "a positive number or null")
        if (self.workspace_min_m is None) != (self.workspace_max_m is None):
            raise bad("workspace_min_m", "workspace_min_m and workspace_max_m given together")
        if self.workspace_min_m is None and self.frame == "odom":
            raise bad("workspace_min_m", "an explicit workspace box when frame is 'odom'")
        if self.reach_m > ARM_REACH_M:
            raise bad("reach_m", f"at most the arm's reach, {ARM_REACH_M} m")
        if self.workspace_min_m is not None:
            low, high = np.asarray(self.workspace_min_m), np.asarray(self.workspace_max_m)
            if low.shape != (3,) or high.shape != (3,) or not np.all(low < high):
                raise bad("workspace_min_m", "3 numbers each below workspace_max_m")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def tick_timeout_s(self) -> float:
        return self.tick_rpc_timeout_s or self.period_s

    def trajectory_time(self) -> float:
        """Seconds from sending a target to the hand reaching it: one control period plus the
        streaming margin (one period when not streaming), unless set."""
        if self.trajectory_time_s:
            return self.trajectory_time_s
        return self.period_s + (self.stream_margin_s if self.stream else 0.0)

    def clip_to_reach(self, xyz: np.ndarray) -> np.ndarray:
        """Pull a (flat) body-frame target back inside ``reach_m`` of the shoulder; odom
        targets are left to the workspace box (the body moves in odom)."""
        if self.frame == "odom":
            return xyz
        shoulder = np.asarray(SHOULDER_IN_BODY_M)
        offset = xyz - shoulder
        distance = float(np.linalg.norm(offset))
        if distance <= self.reach_m:
            return xyz
        return shoulder + offset * (self.reach_m / distance)

    def workspace_box(self) -> tuple[np.ndarray, np.ndarray]:
        low, high = self.workspace_min_m, self.workspace_max_m
        if low is None:
            low, high = BODY_WORKSPACE_M
        return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)

    def safety_limits(self, max_speed_m_s: float = 0.25, max_angular_speed_rad_s: float = 1.25):
        """Control-core limits for this robot: the same workspace box, and 0.25 m/s / 1.25 rad/s
        (5 cm / 0.25 rad per tick at 5 Hz). Absolute poses are stepped from the last commanded
        pose, so a blocked or lagging arm must not let commands walk away from it: beyond the
        lag that streaming itself causes (each target is due one trajectory time ahead, plus
        a tick), steps are judged from the measured hand pose.
        Override with ``SafetyLimits.from_dict(..., base=cfg.safety_limits())`` from the task
        YAML's ``safety:`` block."""
        from theia_ros.control.safety import SafetyLimits

        low, high = self.workspace_box()
        return SafetyLimits(workspace_min_m=tuple(low), workspace_max_m=tuple(high),
                            max_speed_m_s=max_speed_m_s,
                            max_angular_speed_rad_s=max_angular_speed_rad_s,
                            max_tracking_error_m=max_speed_m_s * (
                                self.period_s + self.trajectory_time()))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "spot config") -> SpotConfig:
        """Build from a YAML/ROS-parameter mapping; unknown keys are an error naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TheiaError(f"{source}: unknown key(s) {unknown}; expected some of "
                             f"{sorted(known)}")
        values = dict(data)
        for key in ("workspace_min_m", "workspace_max_m"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)
