"""Separable image resizing as two small matrix products, with the weights computed in numpy.

Why: the published Theia encoders (and their teachers) were trained on images that a Hugging
Face image processor resized: an *antialiased* kernel (PIL in transformers 4.x, torchvision
with ``antialias=True`` in 5.x; the two agree to one grey level), applied to uint8 images and
rounded back to uint8 after each of its two passes (width first, then height). A camera frame
downscaled any other way (plain bilinear samples 2 of the ~3-6 pixels each output covers)
looks different to the network: on textured 480 x 640 frames plain bilinear is up to 1.1 off
in the model's [-1, 1] input units, 0.25 on average.

The kernel, per axis (PIL's ``ImagingResample`` = torch's ``_upsample_bilinear2d_aa``): with
``scale = in / out``, output ``i`` is centred on input coordinate ``scale * (i + 0.5)`` and
averages the inputs within ``support = radius * max(scale, 1)`` with the filter stretched by
``max(scale, 1)`` (bilinear: triangle of radius 1; bicubic: Keys a = -0.5, radius 2), weights
normalised to sum 1. So downscaling averages every covered pixel, and upscaling is ordinary
half-pixel bilinear/bicubic interpolation.

Exactness: the float64 weights are rounded to integers over ``2**p`` as torch does for uint8
images (``p`` = the most bits for which the largest weight still fits int16), with ``p``
capped where needed so that every partial sum of 8-bit pixels times weights is an exact
float32. Then ``clip(floor(W @ x + 0.5), 0, 255)`` gives the *same bits* in numpy, torch,
onnxruntime and TensorRT fp32, in whatever order their matrix kernels add (no parity drift
between backends, no rounding flips). Up to a 4x downscale ``p`` is torch's own and the
result equals torchvision's uint8 resize bit for bit; beyond that (e.g. 1280 -> 224) it
differs from it by one grey level at a few tenths of a percent of the pixels.

Torch-free: the deploy path and the tests use it without torch.

Example::

    w = axis_weights(640, 224)                      # [224, 640] float32, rows sum to ~1
    small = resize_uint8(frame_u8, (224, 224))      # [224, 224, 3] uint8, the DeiT processor's
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from theia_ros.errors import TheiaError

# How a camera frame is resized to the encoder's 224 x 224 input (recorded in every bundle
# and checkpoint). ``bilinear`` is what theia-ros did before ``antialias`` existed: bundles
# and checkpoints that do not say which mode they use were made with it.
RESIZE_MODES: dict[str, str] = {
    "antialias": "antialiased bilinear (PIL/torchvision kernel), uint8-rounded after each pass "
                 "(the published DeiT/Theia processor)",
    "bilinear": "plain bilinear, align_corners=false, no antialias, no rounding (theia-ros "
                "before the antialiased resize)",
}
DEFAULT_RESIZE = "antialias"
LEGACY_RESIZE = "bilinear"
KERNELS = ("bilinear", "bicubic")
_INT16_LIMIT = 1 << 15
_FLOAT32_EXACT = 1 << 24  # integers below this are exact float32 values


def check_resize_mode(mode: object, where: str = "resize mode") -> str:
    """``mode`` if it names a resize mode, else a one-line TheiaError naming ``where``."""
    if mode not in RESIZE_MODES:
        raise TheiaError(f"{where}: {mode!r} is not a resize mode; expected one of "
                         f"{sorted(RESIZE_MODES)}")
    return str(mode)


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return 0.0


_FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


def _float_weights(in_size: int, out_size: int, kernel: str) -> list[tuple[int, list[float]]]:
    """Per output: (first input index, normalised float64 weights), PIL/torch's windowing."""
    filt, radius = _FILTERS[kernel]
    scale = in_size / out_size
    support = radius * scale if scale >= 1.0 else radius
    max_taps = math.ceil(support) * 2 + 1
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    rows = []
    for i in range(out_size):
        center = scale * (i + 0.5)
        first = max(int(center - support + 0.5), 0)
        count = min(max(min(int(center + support + 0.5), in_size) - first, 0), max_taps)
        ws = [filt((j + first - center + 0.5) * inv) for j in range(count)]
        total = sum(ws)
        rows.append((first, [w / total for w in ws] if total != 0.0 else ws))
    return rows


def _fixed_point(rows: list[tuple[int, list[float]]], p: int) -> list[list[int]]:
    """Weights as integers over 2**p, rounded half away from zero (torch's conversion)."""
    out = []
    for _, ws in rows:
        out.append([int(-0.5 + w * (1 << p)) if w * (1 << p) < 0 else int(0.5 + w * (1 << p))
                    for w in ws])
    return out


@lru_cache(maxsize=64)
def axis_weights(in_size: int, out_size: int, kernel: str = "bilinear") -> np.ndarray:
    """One axis's resize matrix ``[out_size, in_size]`` float32 (read-only, cached).

    Row ``i`` holds the weights of output ``i`` over the inputs: dyadic values ``k / 2**p``
    (see the module docstring) that sum to 1 within ``K / 2**(p+1)`` for ``K`` taps.
    """
    if kernel not in _FILTERS:
        raise TheiaError(f"resize kernel {kernel!r} unknown; expected one of {KERNELS}")
    if in_size < 1 or out_size < 1:
        raise TheiaError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    rows = _float_weights(int(in_size), int(out_size), kernel)
    wt_max = max((max(ws) for _, ws in rows if ws), default=0.0)
    p = 0
    while p < 22 and int(0.5 + wt_max * (1 << (p + 1))) < _INT16_LIMIT:
        p += 1
    ints = _fixed_point(rows, p)
    # 255 * sum|k| bounds every partial sum (in units of 2**-p); keep it an exact float32.
    while p > 0 and 255 * max(sum(abs(k) for k in ks) for ks in ints) >= _FLOAT32_EXACT:
        p -= 1
        ints = _fixed_point(rows, p)
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for i, ((first, _), ks) in enumerate(zip(rows, ints)):
        matrix[i, first:first + len(ks)] = ks
    matrix = (matrix / (1 << p)).astype(np.float32)
    matrix.setflags(write=False)
    return matrix


@dataclass(frozen=True)
class Polyphase:
    """``axis_weights`` as a strided convolution, for graphs: the same sums, 10-25x fewer.

    With ``in / out = stride / phases`` in lowest terms, output ``j = m * phases + r`` sits at
    the same sub-pixel phase ``r`` in every group ``m``, so its weights are ``taps[r]``
    applied at input ``m * stride + start`` (zero-padded where that runs past an edge). The
    first ``head`` and last ``tail`` outputs are the exceptions: the image edge clips and
    renormalises their windows, so they keep their own rows of ``matrix``.
    """

    stride: int
    phases: int
    groups: int
    start: int  # input index (may be negative) where group 0's window begins
    taps: np.ndarray  # [phases, K] float32
    head: int
    tail: int
    matrix: np.ndarray  # [out, in], the axis_weights

    @property
    def kernel_size(self) -> int:
        return int(self.taps.shape[1])


@lru_cache(maxsize=64)
def polyphase(in_size: int, out_size: int, kernel: str = "bilinear") -> Polyphase | None:
    """The :class:`Polyphase` form of ``axis_weights(in_size, out_size, kernel)``, or None where
    it saves nothing (fewer than 4 groups) or the rows are not exact shifts of one another."""
    matrix = axis_weights(in_size, out_size, kernel)
    g = math.gcd(in_size, out_size)
    stride, phases, groups = in_size // g, out_size // g, g
    if groups < 4:
        return None
    nonzero = [np.flatnonzero(row) for row in matrix]
    mid = groups // 2
    spans = [(nz[0] - mid * stride, nz[-1] + 1 - mid * stride)
             for nz in (nonzero[mid * phases + r] for r in range(phases))]
    start = min(lo for lo, _ in spans)
    size = max(hi for _, hi in spans) - start
    taps = np.zeros((phases, size), dtype=np.float32)
    for r, (lo, hi) in enumerate(spans):
        taps[r, lo - start:hi - start] = matrix[mid * phases + r, lo + mid * stride:
                                                hi + mid * stride]
    regular = np.zeros(out_size, dtype=bool)
    for j in range(out_size):
        m, r = divmod(j, phases)
        first = m * stride + start
        row = np.zeros(in_size + 2 * size, dtype=np.float32)  # room for windows off the edge
        row[first + size:first + 2 * size] = taps[r]
        regular[j] = (not row[:size].any() and not row[size + in_size:].any()
                      and np.array_equal(row[size:size + in_size], matrix[j]))
    irregular = np.flatnonzero(~regular)
    head = int(np.argmax(regular)) if regular.any() else out_size
    tail = int(np.argmax(regular[::-1])) if regular.any() else 0
    if len(irregular) != head + tail:  # an exception in the middle: keep the plain matrix
        return None
    taps.setflags(write=False)
    return Polyphase(stride, phases, groups, int(start), taps, head, tail, matrix)


def resize_uint8(images: np.ndarray, out_hw: tuple[int, int], kernel: str = "bilinear"
                 ) -> np.ndarray:
    """uint8 channels-last ``[..., H, W, C]`` -> uint8 ``[..., out_h, out_w, C]``.

    Width pass, round, height pass, round: the reference processors' order. An axis whose
    size does not change is left as it is (as torch and PIL do).
    """
    if images.dtype != np.uint8 or images.ndim < 3:
        raise TheiaError(f"resize_uint8 expects uint8 [..., H, W, C], got {images.dtype} "
                         f"{images.shape}")
    h, w = images.shape[-3:-1]
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    x = np.moveaxis(images, -1, -3).astype(np.float32)  # [..., C, H, W]: BLAS matmuls
    if w != out_w:
        x = np.clip(np.floor(x @ axis_weights(w, out_w, kernel).T + np.float32(0.5)), 0, 255)
    if h != out_h:
        x = np.clip(np.floor(axis_weights(h, out_h, kernel) @ x + np.float32(0.5)), 0, 255)
    return np.ascontiguousarray(np.moveaxis(x, -3, -1).astype(np.uint8))
