"""The two resizes of an encoder's input, as torch modules that export to plain ONNX.

``antialias`` (the default, ``AntialiasResize``): the published processors' antialiased kernel
as two small matrix products with the weights of ``resize_weights`` and a uint8 rounding
after each (MatMul, Floor, Clip in the graph). The weights make every sum an exact float32,
so torch and onnxruntime agree bit for bit (TensorRT multiplies in TF32/fp16 unless told
otherwise, which moves some pixels by one grey level).

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

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from theia_ros.runtime.resize_weights import axis_weights


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
    with torch.autocast(x.device.type, enabled=False):
        y = x.to(dtype)
        if w != out_w:
            y = (y @ _weights(w, out_w, kernel, device, dtype).T).add_(0.5).floor_()
            y = y.clamp_(0, 255)
        if h != out_h:
            y = (_weights(h, out_h, kernel, device, dtype) @ y).add_(0.5).floor_()
            y = y.clamp_(0, 255)
    return y.to(torch.float32)


class AntialiasResize(nn.Module):
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, out, out]`` holding whole numbers 0..255.

    The published processors' antialiased bilinear resize (see ``resize_weights``) for a fixed
    input size, as it goes into the encoder graph: permute (on uint8, 4x less memory than on
    float), then width and height matrix products, each followed by ``floor(x + 0.5)`` and a
    clip, i.e. a uint8 rounding.

    Args:
        in_hw: the input height and width the weights are built for.
        out_size: the square output side (224 for Theia).
    """

    def __init__(self, in_hw: tuple[int, int], out_size: int):
        super().__init__()
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.out_size = int(out_size)
        width = torch.from_numpy(axis_weights(self.in_hw[1], out_size).T.copy())
        height = torch.from_numpy(axis_weights(self.in_hw[0], out_size).copy())
        self.register_buffer("width_t", width, persistent=False)  # [W, out]
        self.register_buffer("height", height, persistent=False)  # [out, H]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).to(torch.float32)  # [B, 3, H, W]
        if self.in_hw[1] != self.out_size:
            x = torch.clamp(torch.floor(x @ self.width_t + 0.5), 0.0, 255.0)
        if self.in_hw[0] != self.out_size:
            x = torch.clamp(torch.floor(self.height @ x + 0.5), 0.0, 255.0)
        return x
