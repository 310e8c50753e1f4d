"""ROS image messages -> uint8 RGB ``[H, W, 3]``, without ROS (numpy + OpenCV, no cv_bridge).

Works on anything shaped like ``sensor_msgs/Image`` (``height``, ``width``, ``encoding``,
``step``, ``data``) or ``sensor_msgs/CompressedImage`` (``format``, ``data``), so tests and the
nodes share one code path. Rows are read with the message's ``step`` (drivers pad rows to an
alignment), never assumed packed. Anything malformed raises :class:`ImageConversionError`
naming the field; the nodes turn it into a throttled warning and keep running.

Example::

    rgb = image_to_rgb(msg)            # sensor_msgs/Image, any of ENCODINGS
    rgb = compressed_to_rgb(cmsg)      # sensor_msgs/CompressedImage, jpeg or png
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from theia_ros.errors import TheiaError


class ImageConversionError(TheiaError):
    """A message that cannot be turned into an RGB image (field named in the message)."""


@dataclass(frozen=True)
class _Encoding:
    channels: int
    to_rgb: int | None  # cv2 colour conversion code; None: already RGB


# 8-bit encodings the cameras we target publish (REP 118 names, as in sensor_msgs/image_encodings).
ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, None),
    "bgr8": _Encoding(3, cv2.COLOR_BGR2RGB),
    "rgba8": _Encoding(4, cv2.COLOR_RGBA2RGB),
    "bgra8": _Encoding(4, cv2.COLOR_BGRA2RGB),
    "mono8": _Encoding(1, cv2.COLOR_GRAY2RGB),
}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
MAX_SIDE_PX = 16384  # larger headers are treated as garbage, not allocated


def _raw_bytes(data: Any) -> np.ndarray:
    """``data`` of a message (bytes, array.array, list of ints or numpy) -> uint8 view."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image`` -> uint8 RGB ``[H, W, 3]`` (a new, contiguous array).

    Raises :class:`ImageConversionError` for an unknown encoding, a zero or absurd size, a
    ``step`` shorter than one packed row, or ``data`` shorter than ``step * height``.
    """
    encoding = str(msg.encoding).lower()
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ImageConversionError(f"image encoding {msg.encoding!r} is not supported; "
                                   f"expected one of {sorted(ENCODINGS)}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if not (0 < height <= MAX_SIDE_PX and 0 < width <= MAX_SIDE_PX):
        raise ImageConversionError(f"image size {height}x{width} (height x width) is invalid")
    row_bytes = width * spec.channels
    if step < row_bytes:
        raise ImageConversionError(f"image step {step} is shorter than one row of {width} "
                                   f"{encoding} pixels ({row_bytes} bytes)")
    raw = _raw_bytes(msg.data)
    # The last row may omit its padding; anything shorter than that is truncated.
    need = step * (height - 1) + row_bytes
    if raw.size < need:
        raise ImageConversionError(f"image data has {raw.size} bytes, expected at least {need} "
                                   f"(step {step} x height {height}): truncated message")
    if raw.size < step * height:
        raw = np.concatenate([raw[:need], np.zeros(step * height - need, np.uint8)])
    rows = raw[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = rows.reshape(height, width, spec.channels)
    if spec.to_rgb is None:
        return np.ascontiguousarray(pixels)
    if spec.channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(pixels), spec.to_rgb)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg or png, colour or grey) -> uint8 RGB ``[H, W, 3]``.

    ``format`` may be ``jpeg`` or the ``image_transport`` style ``"bgr8; jpeg compressed bgr8"``;
    the codec is detected from the bytes, the format string only has to name a supported one.
    """
    fmt = str(getattr(msg, "format", "")).lower()
    if fmt and not any(f in fmt for f in COMPRESSED_FORMATS):
        raise ImageConversionError(f"compressed image format {msg.format!r} is not supported; "
                                   f"expected jpeg or png")
    raw = _raw_bytes(msg.data)
    if raw.size == 0:
        raise ImageConversionError("compressed image has no data")
    decoded = cv2.imdecode(raw, cv2.IMREAD_COLOR)  # BGR, grey expanded to 3 channels
    if decoded is None:
        raise ImageConversionError(f"compressed image ({raw.size} bytes, format {fmt!r}) could "
                                   "not be decoded: truncated or not jpeg/png")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8",
                        pad_bytes: int = 0) -> dict[str, Any]:
    """The fields of a ``sensor_msgs/Image`` holding ``rgb`` ``[H, W, 3]`` in ``encoding``,
    with ``pad_bytes`` of row padding (publishers in tests and benchmarks use this)."""
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ImageConversionError(f"image encoding {encoding!r} is not supported")
    rgb = np.asarray(rgb, dtype=np.uint8)
    if spec.to_rgb is None:
        pixels = rgb
    else:
        back = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
                "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY}[encoding]
        pixels = cv2.cvtColor(rgb, back)
    h, w = rgb.shape[:2]
    rows = pixels.reshape(h, w * spec.channels)
    if pad_bytes:
        rows = np.concatenate([rows, np.zeros((h, pad_bytes), np.uint8)], axis=1)
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0,
            "step": rows.shape[1], "data": rows.tobytes()}
