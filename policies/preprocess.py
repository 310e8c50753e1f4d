"""Image preprocessing built into every Theia encoder.

What the published Theia models expect (and what we do, in this order):

1. uint8 RGB, 0..255, laid out ``[H, W, 3]``, ``[B, H, W, 3]`` or ``[B, 3, H, W]``;
2. scaled to [0, 1] as float32;
3. resized to 224 x 224, bilinear, ``align_corners=False``, no antialiasing (the same maths
   as ONNX ``Resize`` linear / half_pixel, so exported graphs match);
4. normalised with mean = std = 0.5, i.e. mapped to [-1, 1].

Grey, RGBA and BGR(A) inputs are converted only when the caller names the colour order;
anything else that is not 3-channel RGB is a clear error.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from theia_ros.errors import TheiaError

ColorOrder = Literal["rgb", "bgr", "rgba", "bgra", "gray"]
IMAGE_SIZE = 224
MEAN = 0.5
STD = 0.5
_CHANNELS = {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4, "gray": 1}


def to_nchw_uint8(images: np.ndarray | torch.Tensor, color: ColorOrder | None = None
                  ) -> torch.Tensor:
    """Any accepted layout/colour order -> uint8 RGB ``[B, 3, H, W]`` tensor."""
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray)
                        else images)
    if x.dtype != torch.uint8:
        raise TheiaError(f"images must be uint8 (0..255), got {x.dtype}")
    if x.ndim == 2 and color == "gray":
        x = x[None, :, :, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise TheiaError(f"images must be [H,W,C], [B,H,W,C] or [B,C,H,W], got {tuple(x.shape)}")
    # Channels-last when the last axis looks like channels, else channels-first.
    if x.shape[-1] in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)
    channels = x.shape[1]
    if channels not in (1, 3, 4):
        raise TheiaError(f"cannot find the channel axis in images of shape {tuple(x.shape)}")
    if color is None:
        if channels != 3:
            raise TheiaError(f"images have {channels} channels; pass color='gray', 'rgba' or "
                             "'bgra' to convert them (only 3-channel RGB is taken as is)")
        return x.contiguous()
    if _CHANNELS[color] != channels:
        raise TheiaError(f"color={color!r} needs {_CHANNELS[color]} channels, images have "
                         f"{channels}")
    if color == "gray":
        x = x.expand(-1, 3, -1, -1)
    elif color in ("bgr", "bgra"):
        x = x[:, [2, 1, 0]]
    else:
        x = x[:, :3]
    return x.contiguous()


def normalize_uint8(x: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 RGB ``[B, 3, H, W]`` -> float ``[B, 3, size, size]`` in [-1, 1] (steps 2-4)."""
    x = x.float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - MEAN) / STD


def preprocess(images: np.ndarray | torch.Tensor, color: ColorOrder | None = None,
               size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 images in any accepted layout -> model input ``[B, 3, size, size]`` float32."""
    return normalize_uint8(to_nchw_uint8(images, color), size)
