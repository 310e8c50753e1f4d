"""ROS 2 messages (as deserialised by ``rosbags``) -> numpy: images, stamps, poses.

No ROS install needed: ``rosbags`` gives plain objects with the message's fields.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from theia_ros.errors import TheiaError

# encoding -> (channels, cv2 conversion to RGB or None)
_RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8uc1": (1, cv2.COLOR_GRAY2RGB),
    "8uc3": (3, cv2.COLOR_BGR2RGB),  # OpenCV's default channel order
}
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def image_to_rgb(msg: Any, msgtype: str, topic: str) -> np.ndarray:
    """``Image`` (rgb8/bgr8/rgba8/bgra8/mono8) or ``CompressedImage`` -> RGB ``[H, W, 3]``."""
    if msgtype == "sensor_msgs/msg/CompressedImage":
        buf = np.frombuffer(bytes(msg.data), np.uint8)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if bgr is None:
            raise TheiaError(f"{topic}: cannot decode CompressedImage (format {msg.format!r})")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    encoding = str(msg.encoding).lower()
    if encoding not in _RAW_ENCODINGS:
        raise TheiaError(f"{topic}: image encoding {msg.encoding!r} not supported; expected one "
                         f"of {sorted(_RAW_ENCODINGS)}")
    channels, conversion = _RAW_ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, np.uint8)
    if step < w * channels or data.size < h * step:
        raise TheiaError(f"{topic}: image data {data.size} bytes too short for "
                         f"{h}x{w} {encoding} (step {step})")
    rows = data[: h * step].reshape(h, step)[:, : w * channels]  # drop row padding
    img = rows.reshape(h, w, channels)
    if conversion is None:
        return np.ascontiguousarray(img)
    return cv2.cvtColor(img if channels > 1 else img[..., 0], conversion)


def image_size(msg: Any, msgtype: str, topic: str) -> tuple[int, int]:
    """``(H, W)`` of an image message (decodes a compressed one)."""
    if msgtype == "sensor_msgs/msg/Image":
        return int(msg.height), int(msg.width)
    h, w = image_to_rgb(msg, msgtype, topic).shape[:2]
    return h, w


def header_stamp_ns(msg: Any) -> int | None:
    """The header stamp in ns, or None when the message has no (or a zero) header stamp."""
    header = getattr(msg, "header", None)
    if header is None:
        return None
    ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return ns or None


def quaternion_to_rpy(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion -> ``[roll, pitch, yaw]`` (extrinsic XYZ, as in ``theia_ros.types``)."""
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([roll, pitch, yaw])


def pose_to_vector(msg: Any, msgtype: str) -> np.ndarray:
    """``PoseStamped``/``Pose``/``TransformStamped`` -> ``[x, y, z, roll, pitch, yaw]``."""
    if msgtype == "geometry_msgs/msg/TransformStamped":
        p, q = msg.transform.translation, msg.transform.rotation
    else:
        pose = msg.pose if msgtype == "geometry_msgs/msg/PoseStamped" else msg
        p, q = pose.position, pose.orientation
    return np.concatenate([[p.x, p.y, p.z], quaternion_to_rpy(q.x, q.y, q.z, q.w)])


def twist_to_vector(msg: Any, msgtype: str) -> np.ndarray:
    """``Twist``/``TwistStamped`` -> ``[vx, vy, vz, wx, wy, wz]``."""
    twist = msg.twist if msgtype == "geometry_msgs/msg/TwistStamped" else msg
    return np.array([twist.linear.x, twist.linear.y, twist.linear.z,
                     twist.angular.x, twist.angular.y, twist.angular.z], np.float64)
