"""The two resizes of an encoder's input, as torch modules that export to plain ONNX.

``antialias`` (the default): the published processors' antialiased kernel with the weights of
``resize_weights`` and a uint8 rounding after each pass. ``resize_uint8`` (for
``policies.preprocess``, any batch and device) is two matrix products; ``AntialiasResize``
(in the encoder graph) does the same sums as strided convolutions (Conv, MatMul, Floor, Clip
in the graph). The weights make every sum an exact float32, so torch and onnxruntime agree
bit for bit (TensorRT multiplies in TF32/fp16 unless told otherwise, which moves some pixels
by one grey level).

``bilinear`` (bundles exported before the antialiased resize, ``BilinearResizeNHWC``): torch's
plain bilinear resize written as two gathers. Why not ONNX ``Resize``: it computes source
coordinates with a different float32 formula than
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``; at a 720 x 1280
camera a one-ulp coordinate difference moves a pixel by up to 1.2e-4 (of a [0, 1] range),
and a ViT amplifies that past the 1e-4 parity budget. Here the per-axis source indices and
weights are *taken from torch itself* (by resizing one-hot rows) for a fixed input size and
stored as constants; the graph then does ``w0 * x[i0] + w1 * x[i1]`` per axis, in torch's
order (width inside, height outside), which matches torch to float32 rounding.

Imports torch: used by ``policies.preprocess``, at export time and by the torch backend,
never on the onnxruntime/TensorRT path (the weights themselves come from the torch-free
``resize_weights``).
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from theia_ros.runtime.resize_weights import axis_weights, polyphase


def axis_table(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor,
                                                      torch.Tensor, torch.Tensor]:
    """Torch's own bilinear taps for one axis: ``(idx0, idx1, w0, w1)``, each ``[out_size]``.

    Resizing the one-hot rows of an identity matrix gives the weight of every source pixel
    for every output pixel exactly as torch computes it; each output has at most two taps.
    """
    eye = torch.eye(in_size, dtype=torch.float32).reshape(in_size, 1, in_size, 1)
    dense = F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)
    dense = dense.reshape(in_size, out_size)  # [source, output]
    idx0 = torch.empty(out_size, dtype=torch.int64)
    idx1 = torch.empty(out_size, dtype=torch.int64)
    w0 = torch.zeros(out_size, dtype=torch.float32)
    w1 = torch.zeros(out_size, dtype=torch.float32)
    for j in range(out_size):
        taps = torch.nonzero(dense[:, j]).flatten()
        if taps.numel() == 0 or taps.numel() > 2 or (taps.numel() == 2 and taps[1] != taps[0] + 1):
            raise RuntimeError(f"unexpected bilinear taps {taps.tolist()} for output {j}")
        idx0[j] = taps[0]
        idx1[j] = taps[-1]
        w0[j] = dense[taps[0], j]
        w1[j] = dense[taps[-1], j] if taps.numel() == 2 else 0.0
    return idx0, idx1, w0, w1


class BilinearResizeNHWC(nn.Module):
    """``[B, H, W, C]`` (float or uint8) -> float ``[B, out, out, C]`` times ``out_scale``.

    Matches torch bilinear to float32 rounding. ``out_scale`` (folded into the height
    weights) applies a pixel scaling for free, saving a full-resolution pass. uint8 input is
    cast first: TensorRT takes uint8 only as a network input feeding a cast.

    Args:
        in_hw: the input height and width the tables are built for.
        out_size: the square output side (224 for Theia).
        out_scale: factor applied to the result (e.g. 2 / 255 for uint8 -> [0, 2]).
    """

    def __init__(self, in_hw: tuple[int, int], out_size: int, out_scale: float = 1.0):
        super().__init__()
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.out_size = int(out_size)
        h0, h1, hw0, hw1 = axis_table(self.in_hw[0], out_size)
        w0, w1, ww0, ww1 = axis_table(self.in_hw[1], out_size)
        hw0 = (hw0.double() * out_scale).float()
        hw1 = (hw1.double() * out_scale).float()
        self.register_buffer("h_idx0", h0, persistent=False)
        self.register_buffer("h_idx1", h1, persistent=False)
        self.register_buffer("h_w0", hw0.reshape(-1, 1, 1), persistent=False)  # [out, 1, 1]
        self.register_buffer("h_w1", hw1.reshape(-1, 1, 1), persistent=False)
        self.register_buffer("w_idx0", w0, persistent=False)
        self.register_buffer("w_idx1", w1, persistent=False)
        self.register_buffer("w_w0", ww0.reshape(-1, 1), persistent=False)  # [out, 1]
        self.register_buffer("w_w1", ww1.reshape(-1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Width taps first (torch's inner loop), then height taps (outer).
        x = x.to(torch.float32)
        x = (x.index_select(2, self.w_idx0) * self.w_w0
             + x.index_select(2, self.w_idx1) * self.w_w1)
        return (x.index_select(1, self.h_idx0) * self.h_w0
                + x.index_select(1, self.h_idx1) * self.h_w1)


@lru_cache(maxsize=32)
def _weights(in_size: int, out_size: int, kernel: str, device: str, dtype: torch.dtype
             ) -> torch.Tensor:
    return torch.from_numpy(axis_weights(in_size, out_size, kernel).copy()).to(device, dtype)


def resize_uint8(x: torch.Tensor, out_hw: tuple[int, int], kernel: str = "bilinear"
                 ) -> torch.Tensor:
    """uint8 (or 0..255 integer-valued) ``[..., H, W]`` -> float32 ``[..., out_h, out_w]``.

    The values are whole numbers 0..255, exactly what ``resize_weights.resize_uint8`` gives.
    Off the CPU the products run in float64, exact even where float32 matrix products are
    rounded to TF32; autocast is switched off for the same reason.
    """
    h, w = x.shape[-2:]
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    dtype = torch.float32 if x.device.type == "cpu" else torch.float64
    device = str(x.device)
    # autocast exists for cpu/cuda-like devices only (not "meta", used to count FLOPs)
    off = (torch.autocast(x.device.type, enabled=False) if x.device.type in ("cpu", "cuda")
           else contextlib.nullcontext())
    with off:
        y = x.to(dtype)
        if w != out_w:
            y = (y @ _weights(w, out_w, kernel, device, dtype).T).add_(0.5).floor_()
            y = y.clamp_(0, 255)
        if h != out_h:
            y = (_weights(h, out_h, kernel, device, dtype) @ y).add_(0.5).floor_()
            y = y.clamp_(0, 255)
    return y.to(torch.float32)


class _AxisResize(nn.Module):
    """One axis of ``AntialiasResize`` on ``[N, H, W]`` floats: ``axis`` -1 (width) or -2.

    A strided convolution (``resize_weights.Polyphase``) where the sizes allow it, plus small
    matrix products for the few edge outputs; else one matrix product. The weights are the
    same either way, so the result is too, bit for bit.
    """

    def __init__(self, in_size: int, out_size: int, axis: int):
        super().__init__()
        self.axis, self.in_size, self.out_size = axis, in_size, out_size
        plan = polyphase(in_size, out_size)
        self.plan = plan
        if plan is None:
            self.register_buffer("matrix", torch.from_numpy(
                axis_weights(in_size, out_size).copy()), persistent=False)
            return
        q, k = plan.phases, plan.kernel_size
        shape = (q, 1, 1, k) if axis == -1 else (q, 1, k, 1)
        self.register_buffer("taps", torch.from_numpy(plan.taps.copy()).reshape(shape),
                             persistent=False)
        # The convolution's own zero padding (no padded copy of the image): ``pad`` on both
        # sides, the smallest that covers both edges with conv window c starting at true
        # group c - skip's window, m * stride + start.
        before = -plan.start
        after = (plan.groups - 1) * plan.stride + plan.start + k - in_size
        self.pad = max(before, after, 0)
        self.pad += (before - self.pad) % plan.stride
        self.skip = (self.pad - before) // plan.stride
        rows = plan.matrix
        head, tail = plan.head, plan.tail
        self.head_cols = int(np.flatnonzero(rows[:head].any(0)).max()) + 1 if head else 0
        self.tail_from = int(np.flatnonzero(rows[out_size - tail:].any(0)).min()) if tail else 0
        self.register_buffer("head_rows", torch.from_numpy(
            rows[:head, :self.head_cols].copy()), persistent=False)
        self.register_buffer("tail_rows", torch.from_numpy(
            rows[out_size - tail:, self.tail_from:].copy()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plan is None:
            return x @ self.matrix.T if self.axis == -1 else self.matrix @ x
        plan, n = self.plan, x.shape[0]
        groups = slice(self.skip, self.skip + plan.groups)
        if self.axis == -1:
            y = F.conv2d(x.unsqueeze(1), self.taps, stride=(1, plan.stride),
                         padding=(0, self.pad))[..., groups]  # [N, q, H, groups]
            y = y.permute(0, 2, 3, 1).reshape(n, x.shape[1], self.out_size)
            parts = [x[..., :self.head_cols] @ self.head_rows.T,
                     y[..., plan.head:self.out_size - plan.tail],
                     x[..., self.tail_from:] @ self.tail_rows.T]
            return torch.cat([p for p in parts if p.shape[-1]], dim=-1)
        y = F.conv2d(x.unsqueeze(1), self.taps, stride=(plan.stride, 1),
                     padding=(self.pad, 0))[:, :, groups]  # [N, q, groups, W]
        y = y.permute(0, 2, 1, 3).reshape(n, self.out_size, x.shape[2])
        parts = [self.head_rows @ x[:, :self.head_cols], y[:, plan.head:self.out_size - plan.tail],
                 self.tail_rows @ x[:, self.tail_from:]]
        return torch.cat([p for p in parts if p.shape[-2]], dim=-2)


class AntialiasResize(nn.Module):
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, out, out]`` holding whole numbers 0..255.

    The published processors' antialiased bilinear resize (see ``resize_weights``) for a fixed
    input size, as it goes into the encoder graph: cast to float first (TensorRT accepts uint8
    only at a graph's inputs and outputs, so a uint8 permute would be refused), permute,
    then the width and the height pass, each followed by ``floor(x + 0.5)`` and a
    clip, i.e. a uint8 rounding. Each pass is a strided convolution over the sub-pixel phases
    (``Polyphase``: only the taps each output uses; a dense matrix product at 720 x 1280
    costs more than the ViT-Tiny it feeds) with a small matrix product at the edges.

    Args:
        in_hw: the input height and width the weights are built for.
        out_size: the square output side (224 for Theia).
    """

    def __init__(self, in_hw: tuple[int, int], out_size: int):
        super().__init__()
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.out_size = int(out_size)
        self.width = (_AxisResize(self.in_hw[1], out_size, -1)
                      if self.in_hw[1] != out_size else None)
        self.height = (_AxisResize(self.in_hw[0], out_size, -2)
                       if self.in_hw[0] != out_size else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = x.to(torch.float32).permute(0, 3, 1, 2).reshape(b * 3, *self.in_hw)
        for resize in (self.width, self.height):
            if resize is not None:
                x = torch.clamp(torch.floor(resize(x) + 0.5), 0.0, 255.0)
        return x.reshape(b, 3, self.out_size, self.out_size)
