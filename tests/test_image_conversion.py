"""Image message conversion: every supported encoding, row padding, compressed images, and
the specific error for malformed messages (the nodes turn it into a throttled warning)."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from theia_ros.errors import TheiaError
from theia_ros.ros.image_conversion import (
    ENCODINGS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_image_fields,
)


def _rgb(h: int = 5, w: int = 7) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _msg(**fields: object) -> SimpleNamespace:
    return SimpleNamespace(**fields)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3])
def test_every_encoding_round_trips_with_padding(encoding: str, pad: int) -> None:
    rgb = _rgb()
    msg = _msg(**rgb_to_image_fields(rgb, encoding, pad_bytes=pad))
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    if encoding == "mono8":  # grey: the three channels equal the luminance
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    else:
        np.testing.assert_array_equal(out, rgb)


def test_bgr_channel_order_is_swapped() -> None:
    bgr = np.zeros((1, 1, 3), np.uint8)
    bgr[0, 0] = (10, 20, 30)  # B, G, R
    msg = _msg(height=1, width=1, encoding="bgr8", step=3, data=bgr.tobytes())
    assert image_to_rgb(msg)[0, 0].tolist() == [30, 20, 10]


def test_data_as_list_of_ints_and_array() -> None:
    rgb = _rgb(2, 2)
    fields = rgb_to_image_fields(rgb)
    for data in (list(fields["data"]), np.frombuffer(fields["data"], np.uint8)):
        np.testing.assert_array_equal(image_to_rgb(_msg(**{**fields, "data": data})), rgb)


@pytest.mark.parametrize("change, match", [
    ({"encoding": "16UC1"}, "not supported"),
    ({"encoding": "yuv422"}, "not supported"),
    ({"step": 5}, "shorter than one row"),
    ({"height": 0}, "invalid"),
    ({"width": 100000}, "invalid"),
    ({"data": b"\x00" * 10}, "truncated"),
])
def test_malformed_images_raise_the_specific_error(change: dict, match: str) -> None:
    fields = {**rgb_to_image_fields(_rgb(4, 4)), **change}
    with pytest.raises(ImageConversionError, match=match) as info:
        image_to_rgb(_msg(**fields))
    assert isinstance(info.value, TheiaError)


@pytest.mark.parametrize("ext, fmt", [(".png", "png"), (".jpg", "jpeg"),
                                      (".png", "rgb8; png compressed bgr8")])
def test_compressed_images_decode_to_rgb(ext: str, fmt: str) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (255, 0, 0)  # left half red
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    out = compressed_to_rgb(_msg(format=fmt, data=buf.tobytes()))
    assert out.shape == (16, 16, 3)
    err = np.abs(out.astype(int) - rgb.astype(int))
    assert (err.max() == 0) if ext == ".png" else (err.mean() < 10)  # jpeg is lossy
    assert out[8, 2, 0] > 200 and out[8, 2, 2] < 60  # red stays red (no BGR mix-up)


def test_grey_png_becomes_three_channels() -> None:
    ok, buf = cv2.imencode(".png", np.full((4, 4), 77, np.uint8))
    assert ok
    out = compressed_to_rgb(_msg(format="png", data=buf.tobytes()))
    assert out.shape == (4, 4, 3) and np.all(out == 77)


@pytest.mark.parametrize("fmt, data, match", [
    ("jpeg", b"", "no data"),
    ("jpeg", b"\xff\xd8\xff\xe0 not really", "could not be decoded"),
    ("tiff", b"II*\x00", "not supported"),
])
def test_bad_compressed_images(fmt: str, data: bytes, match: str) -> None:
    with pytest.raises(ImageConversionError, match=match):
        compressed_to_rgb(_msg(format=fmt, data=data))


def test_truncated_jpeg_is_rejected() -> None:
    ok, buf = cv2.imencode(".jpg", _rgb(32, 32))
    assert ok
    raw = buf.tobytes()[:20]  # header only
    with pytest.raises(ImageConversionError):
        compressed_to_rgb(_msg(format="jpeg", data=raw))
