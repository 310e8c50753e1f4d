"""Helpers for the Spot adapter: credentials, pose conversions, image decoding, arm state, and
waiting for a stow that an e-stop can cut short.

Kept apart from ``spot.py`` so the adapter reads as the start-up / tick / shut-down sequence,
and so these conversions can be tested without a robot.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from bosdyn.api import image_pb2
from bosdyn.client.frame_helpers import HAND_FRAME_NAME, get_a_tform_b

from theia_ros.errors import TheiaError

USERNAME_ENV = "BOSDYN_CLIENT_USERNAME"
PASSWORD_ENV = "BOSDYN_CLIENT_PASSWORD"
ARM_JOINTS = ("arm0.sh0", "arm0.sh1", "arm0.el0", "arm0.el1", "arm0.wr0", "arm0.wr1")


@dataclass(frozen=True)
class Credentials:
    """Username and password for ``robot.authenticate``; the password never appears in repr."""

    username: str
    password: str = field(repr=False)


def load_credentials(path: str | os.PathLike[str] | None,
                     environ: Mapping[str, str] = os.environ) -> Credentials:
    """Credentials from ``path`` (if given) or the environment; never from the command line.

    The file holds ``BOSDYN_CLIENT_USERNAME=...`` and ``BOSDYN_CLIENT_PASSWORD=...`` lines (the
    same file works as a ``docker --env-file``). It must be owned by the current user and not
    readable by group or others (``chmod 600``): a world-readable password is refused.
    Error messages name the file or variable, never a value.
    """
    if path is None:
        username, password = environ.get(USERNAME_ENV, ""), environ.get(PASSWORD_ENV, "")
        if not username or not password:
            raise TheiaError(f"spot credentials: set {USERNAME_ENV} and {PASSWORD_ENV} in the "
                             "environment, or give credentials_file (a chmod-600 file)")
        return Credentials(username, password)
    file = Path(path).expanduser()
    try:
        info = file.stat()
    except OSError:
        raise TheiaError(f"{file}: credentials file not found or not readable") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TheiaError(f"{file}: credentials file must not be accessible to group/others "
                         f"(mode {stat.S_IMODE(info.st_mode):o}); run chmod 600 on it")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise TheiaError(f"{file}: credentials file must be owned by the user running theia-ros")
    values: dict[str, str] = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or key.strip() not in (USERNAME_ENV, PASSWORD_ENV):
            raise TheiaError(f"{file}:{number}: expected {USERNAME_ENV}=... or "
                             f"{PASSWORD_ENV}=...")
        values[key.strip()] = value.strip()
    if not values.get(USERNAME_ENV) or not values.get(PASSWORD_ENV):
        raise TheiaError(f"{file}: needs both {USERNAME_ENV} and {PASSWORD_ENV}")
    return Credentials(values[USERNAME_ENV], values[PASSWORD_ENV])


def rpy_to_quat(rpy_rad: np.ndarray) -> tuple[float, float, float, float]:
    """Extrinsic XYZ roll/pitch/yaw (``R = Rz(yaw) Ry(pitch) Rx(roll)``) -> ``(w, x, y, z)``."""
    roll, pitch, yaw = (float(a) / 2.0 for a in rpy_rad)
    cr, sr, cp, sp = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return (cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy)


def quat_to_rpy(w: float, x: float, y: float, z: float) -> np.ndarray:
    """``(w, x, y, z)`` -> extrinsic XYZ ``[roll, pitch, yaw]`` rad, ``[3]`` float64."""
    norm = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2.0 * (w * y - z * x))))
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return np.array([roll, pitch, yaw], dtype=np.float64)


def decode_image(image: image_pb2.Image, source: str) -> np.ndarray:
    """A bosdyn ``Image`` (JPEG or RAW 8-bit) -> uint8 RGB ``[H, W, 3]``; grey is repeated."""
    if image.format == image_pb2.Image.FORMAT_JPEG:
        pixels = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise TheiaError(f"spot image source {source!r}: JPEG data could not be decoded")
        if pixels.ndim == 3:
            code = cv2.COLOR_BGRA2RGB if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB
            return cv2.cvtColor(pixels, code)
    elif image.format == image_pb2.Image.FORMAT_RAW:
        channels = {image_pb2.Image.PIXEL_FORMAT_GREYSCALE_U8: 1,
                    image_pb2.Image.PIXEL_FORMAT_RGB_U8: 3,
                    image_pb2.Image.PIXEL_FORMAT_RGBA_U8: 4}.get(image.pixel_format)
        expected = None if channels is None else image.rows * image.cols * channels
        if expected is None or len(image.data) != expected:
            raise TheiaError(f"spot image source {source!r}: expected 8-bit grey/RGB/RGBA raw "
                             f"pixels {image.rows}x{image.cols}, got pixel format "
                             f"{image.pixel_format} with {len(image.data)} bytes")
        pixels = np.frombuffer(image.data, np.uint8).reshape(image.rows, image.cols, channels)
        if channels > 1:
            return np.ascontiguousarray(pixels[..., :3])
        pixels = pixels[..., 0]
    else:
        raise TheiaError(f"spot image source {source!r}: image format {image.format} is not "
                         "supported (use JPEG or RAW)")
    return np.repeat(pixels[..., None], 3, axis=2)


# Spot's body fisheye cameras are mounted rotated: the counter-clockwise turn in degrees that
# makes each one upright (the ``ROTATION_ANGLE`` table of Boston Dynamics' get_image example).
UPRIGHT_DEG = {"back_fisheye_image": 0, "frontleft_fisheye_image": -78,
               "frontright_fisheye_image": -102, "left_fisheye_image": 0,
               "right_fisheye_image": 180}


def upright(rgb: np.ndarray, source: str) -> np.ndarray:
    """Turn a body fisheye frame upright (others pass unchanged). Like the SDK example, the
    canvas grows to hold the whole turned frame, black outside it; a right angle is exact."""
    angle = UPRIGHT_DEG.get(source, 0)
    if angle % 360 == 0:
        return rgb
    if angle % 90 == 0:
        return np.ascontiguousarray(np.rot90(rgb, k=angle // 90))
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)  # + = counter-clockwise
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    out_w, out_h = round(h * sin + w * cos), round(h * cos + w * sin)
    m[0, 2] += out_w / 2 - w / 2
    m[1, 2] += out_h / 2 - h / 2
    return cv2.warpAffine(rgb, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=0)


@dataclass(frozen=True)
class ArmReading:
    """What one RobotState says about the arm, in the adapter's command frame."""

    joint_positions: np.ndarray  # [6] rad, ARM_JOINTS order
    ee_pose: np.ndarray  # [6] xyz m + extrinsic rpy rad of the hand in the frame
    gripper: float  # open fraction [0, 1]; NaN for an impossible reading


def read_arm(robot_state, frame: str) -> ArmReading:
    """Arm joints, hand pose (``frame -> hand`` from the transforms snapshot) and gripper."""
    kinematic = robot_state.kinematic_state
    by_name = {joint.name: joint.position.value for joint in kinematic.joint_states}
    missing = [name for name in ARM_JOINTS if name not in by_name]
    if missing:
        raise TheiaError(f"spot robot state: no arm joints {missing} (is an arm attached?)")
    pose = get_a_tform_b(kinematic.transforms_snapshot, frame, HAND_FRAME_NAME)
    if pose is None:
        raise TheiaError(f"spot robot state: no transform {frame!r} -> 'hand' in the snapshot")
    rot = pose.rot
    ee = np.concatenate([[pose.x, pose.y, pose.z], quat_to_rpy(rot.w, rot.x, rot.y, rot.z)])
    gripper = robot_state.manipulator_state.gripper_open_percentage / 100.0
    # a reading outside 0..100 % (beyond rounding) is a bad sample, not "fully open":
    # NaN makes the control loop hold until a good one arrives
    gripper = min(max(gripper, 0.0), 1.0) if -0.01 <= gripper <= 1.01 else math.nan
    return ArmReading(np.array([by_name[name] for name in ARM_JOINTS], dtype=np.float64),
                      ee.astype(np.float64), float(gripper))



