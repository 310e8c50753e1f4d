"""Image message conversion: every supported encoding, row padding, compressed images, and
the specific error for malformed messages (the nodes turn it into a throttled warning)."""

from __future__ import annotations

import resource
import time
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from theia_ros.errors import TheiaError
from theia_ros.ros.image_conversion import (
    ENCODINGS,
    PNG_SIGNATURE,
    ImageConversionError,
    compressed_to_rgb,
    encoded_size,
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


# -- decompression bombs: the declared size is checked before decoding ---------------------
def _png_bomb(height: int, width: int) -> bytes:
    """A real, valid PNG of ``height x width`` black 1-bit grey pixels: a few dozen KB that
    OpenCV would decode into ``height * width * 3`` bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (len(body).to_bytes(4, "big") + kind + body
                + zlib.crc32(kind + body).to_bytes(4, "big"))

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    rows = bytes(1 + (width + 7) // 8) * 500  # filter byte 0, then the packed bits
    z = zlib.compressobj(9)
    body = b"".join(z.compress(rows) for _ in range(height // 500)) + z.flush()
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_png_bomb_is_refused_before_decoding() -> None:
    bomb = _png_bomb(25_000, 25_000)  # 1.9 GB as RGB (sides multiples of 500)
    assert len(bomb) < 200_000 and encoded_size(bomb) == (25_000, 25_000)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for _ in range(5):
        with pytest.raises(ImageConversionError, match=r"25000x25000 .* is invalid"):
            compressed_to_rgb(_msg(format="png", data=bomb))
    assert time.perf_counter() - t0 < 0.5  # decoding it takes seconds
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kb) / 1024
    assert grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB"


def test_bomb_within_the_side_limit_is_refused_by_pixel_count() -> None:
    bomb = _png_bomb(12_000, 12_000)  # each side allowed, 144 Mpx is not
    with pytest.raises(ImageConversionError, match="pixels"):
        compressed_to_rgb(_msg(format="png", data=bomb))


def test_jpeg_declaring_a_huge_frame_is_refused() -> None:
    ok, buf = cv2.imencode(".jpg", _rgb(16, 24))
    assert ok
    raw = bytearray(buf.tobytes())
    assert encoded_size(bytes(raw)) == (16, 24)
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5:sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    with pytest.raises(ImageConversionError, match="60000x60000"):
        compressed_to_rgb(_msg(format="jpeg", data=bytes(raw)))


@pytest.mark.parametrize("params", [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]])
def test_jpeg_header_size_matches_opencv(params: list[int]) -> None:
    ok, buf = cv2.imencode(".jpg", _rgb(37, 53), params)
    assert ok
    assert encoded_size(buf) == (37, 53) == compressed_to_rgb(_msg(format="jpeg",
                                                                    data=buf)).shape[:2]


def test_expected_size_is_checked_before_decoding() -> None:
    ok, buf = cv2.imencode(".png", _rgb(40, 60))
    assert ok
    with pytest.raises(ImageConversionError, match="40x60 but 96x128 is needed"):
        compressed_to_rgb(_msg(format="png", data=buf.tobytes()), expect_hw=(96, 128))
    assert compressed_to_rgb(_msg(format="png", data=buf.tobytes()),
                             expect_hw=(40, 60)).shape == (40, 60, 3)
    fields = rgb_to_image_fields(_rgb(40, 60))
    with pytest.raises(ImageConversionError, match="is needed"):
        image_to_rgb(_msg(**fields), expect_hw=(96, 128))
