"""ROS image messages -> uint8 RGB ``[H, W, 3]``, without ROS (numpy + OpenCV, no cv_bridge).

Works on anything shaped like ``sensor_msgs/Image`` (``height``, ``width``, ``encoding``,
``step``, ``data``) or ``sensor_msgs/CompressedImage`` (``format``, ``data``), so tests and the
nodes share one code path. Rows are read with the message's ``step`` (drivers pad rows to an
alignment), never assumed packed. Anything malformed raises :class:`ImageConversionError`
naming the field; the nodes turn it into a throttled warning and keep running.

Size limits hold before anything is allocated: a raw image's ``height`` / ``width`` and a
compressed image's *declared* size (the PNG ``IHDR`` or JPEG ``SOF`` header, read without
decoding) must be within :data:`MAX_SIDE_PX` per side and :data:`MAX_PIXELS` in all, and
equal ``expect_hw`` where the caller knows the size it needs. A 600 KB PNG can declare
25000 x 25000 pixels (1.9 GB decoded); it is refused from its first 24 bytes.

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
MAX_PIXELS = 8192 * 8192  # 192 MB as RGB: far above any camera, far below a bomb
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, ...): all but DHT, JPG, DAC
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field


def check_size(height: int, width: int, what: str,
               expect_hw: tuple[int, int] | None = None) -> None:
    """Raise :class:`ImageConversionError` unless ``height x width`` is a sane image size
    (and ``expect_hw`` when given)."""
    if not (0 < height <= MAX_SIDE_PX and 0 < width <= MAX_SIDE_PX) \
            or height * width > MAX_PIXELS:
        raise ImageConversionError(f"{what} size {height}x{width} (height x width) is invalid "
                                   f"(at most {MAX_SIDE_PX} per side, {MAX_PIXELS} pixels)")
    if expect_hw is not None and (height, width) != tuple(expect_hw):
        raise ImageConversionError(
            f"{what} is {height}x{width} but {expect_hw[0]}x{expect_hw[1]} is needed (height "
            "x width, the policy bundle's): a V4L2 driver answers a size it lacks with its "
            "nearest mode; set the config's camera_driver width/height to a mode the camera "
            "has (v4l2-ctl --list-formats-ext) and export the bundle for it (theia export "
            "--image-size HxW; the bundle resizes to the encoder)")


def encoded_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """``(height, width)`` a PNG or JPEG declares in its header, without decoding; None when
    ``data`` is neither or the header is cut short."""
    buf = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if buf.startswith(PNG_SIGNATURE):
        if len(buf) < 24 or buf[12:16] != b"IHDR":
            return None
        return int.from_bytes(buf[20:24], "big"), int.from_bytes(buf[16:20], "big")
    if not buf.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 1 < len(buf):  # walk the marker segments up to the first start-of-frame
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA) or i + 4 > len(buf):  # image data before any frame header
            return None
        length = int.from_bytes(buf[i + 2:i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > len(buf):
                return None
            return int.from_bytes(buf[i + 5:i + 7], "big"), int.from_bytes(buf[i + 7:i + 9], "big")
        if length < 2:
            return None
        i += 2 + length
    return None


def _raw_bytes(data: Any) -> np.ndarray:
    """``data`` of a message (bytes, array.array, list of ints or numpy) -> uint8 view."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_to_rgb(msg: Any, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` -> uint8 RGB ``[H, W, 3]`` (a new, contiguous array).

    Raises :class:`ImageConversionError` for an unknown encoding, a zero or absurd size (or
    not ``expect_hw``), a ``step`` shorter than one packed row, or ``data`` shorter than
    ``step * height``.
    """
    encoding = str(msg.encoding).lower()
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ImageConversionError(f"image encoding {msg.encoding!r} is not supported; "
                                   f"expected one of {sorted(ENCODINGS)}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_size(height, width, "image", expect_hw)
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


def compressed_to_rgb(msg: Any, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg or png, colour or grey) -> uint8 RGB ``[H, W, 3]``.

    ``format`` may be ``jpeg`` or the ``image_transport`` style ``"bgr8; jpeg compressed bgr8"``;
    the codec is detected from the bytes, the format string only has to name a supported one.
    The declared size is checked (see the module docstring) before anything is decoded.
    """
    fmt = str(getattr(msg, "format", "")).lower()
    if fmt and not any(f in fmt for f in COMPRESSED_FORMATS):
        raise ImageConversionError(f"compressed image format {msg.format!r} is not supported; "
                                   f"expected jpeg or png")
    raw = _raw_bytes(msg.data)
    if raw.size == 0:
        raise ImageConversionError("compressed image has no data")
    declared = encoded_size(raw)
    if declared is None:
        raise ImageConversionError(f"compressed image ({raw.size} bytes, format {fmt!r}) could "
                                   "not be decoded: no complete PNG/JPEG header (truncated or "
                                   "not jpeg/png)")
    check_size(*declared, "compressed image (declared)", expect_hw)
    try:
        decoded = cv2.imdecode(raw, cv2.IMREAD_COLOR)  # BGR, grey expanded to 3 channels
    except cv2.error:  # OpenCV refuses some malformed headers by raising, not returning None
        decoded = None
    if decoded is None or decoded.shape[:2] != declared:
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
