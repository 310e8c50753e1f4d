"""Image preprocessing built into every Theia encoder.

What the published Theia models expect (and what we do, in this order):

1. uint8 RGB, 0..255, laid out ``[H, W, 3]``, ``[B, H, W, 3]`` or ``[B, 3, H, W]``;
2. resized to 224 x 224 (no crop), by one of two resize modes (``EncoderConfig.resize``):

   - ``antialias`` (default): the kernel of the Hugging Face processor the published models
     were trained with (``facebook/deit-*-patch16-224``: antialiased bilinear, uint8-rounded
     after the width and after the height pass; see ``theia_ros.runtime.resize_weights``).
     Matches that processor to within one grey level for any camera size (bit for bit up
     to a 4x downscale);
   - ``bilinear``: plain bilinear, ``align_corners=False``, no antialiasing, on [0, 1] floats
     (what theia-ros did before; kept for policies and bundles made with it);

3. scaled to [0, 1] and normalised with mean = std = 0.5, i.e. mapped to [-1, 1].

The same maths is inside every exported encoder graph (``theia_ros.runtime.torch_resize``).

Grey, RGBA and BGR(A) inputs are converted only when the caller names the colour order;
anything else that is not 3-channel RGB is a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from theia_ros.errors import TheiaError
from theia_ros.runtime.resize_weights import DEFAULT_RESIZE, check_resize_mode
from theia_ros.runtime.torch_resize import resize_uint8

ColorOrder = Literal["rgb", "bgr", "rgba", "bgra", "gray"]
IMAGE_SIZE = 224
MEAN = 0.5
STD = 0.5
_CHANNELS = {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4, "gray": 1}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# 8-bit PIL modes that convert to RGB without loss of meaning (alpha is dropped).
_PIL_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}


def to_nchw_uint8(images: np.ndarray | torch.Tensor, color: ColorOrder | None = None
                  ) -> torch.Tensor:
    """Any accepted layout/colour order -> uint8 RGB ``[B, 3, H, W]`` tensor.

    The channel axis is the last one when its size is 1, 3 or 4, else axis 1 (so a
    channels-first image only needs to be wider than 4 pixels). A 2-D ``[H, W]`` array is
    accepted with ``color='gray'``.
    """
    if color is not None and color not in _CHANNELS:
        raise TheiaError(f"color={color!r} not understood; use one of {sorted(_CHANNELS)}")
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise TheiaError(f"images must be uint8 (0..255), got {images.dtype}")
        arr = np.ascontiguousarray(images)
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    elif isinstance(images, torch.Tensor):
        x = images
    else:
        raise TheiaError(f"images must be a numpy array or torch tensor, got {type(images)}")
    if x.dtype != torch.uint8:
        raise TheiaError(f"images must be uint8 (0..255), got {x.dtype}")
    if x.ndim == 2:
        if color != "gray":
            raise TheiaError(f"a 2-D image {tuple(x.shape)} is taken as grey only with "
                             "color='gray'")
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
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise TheiaError(f"images are empty: shape [B, C, H, W] = {tuple(x.shape)}")
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


def normalize_uint8(x: torch.Tensor, size: int = IMAGE_SIZE, resize: str = DEFAULT_RESIZE
                    ) -> torch.Tensor:
    """uint8 RGB ``[B, 3, H, W]`` -> float ``[B, 3, size, size]`` in [-1, 1] (steps 2-3)."""
    if x.shape[-2:] == (size, size):
        x = x.float() / 255.0
    elif check_resize_mode(resize) == "antialias":
        x = resize_uint8(x, (size, size)) / 255.0
    else:
        x = F.interpolate(x.float() / 255.0, size=(size, size), mode="bilinear",
                          align_corners=False)
    return (x - MEAN) / STD


def preprocess(images: np.ndarray | torch.Tensor, color: ColorOrder | None = None,
               size: int = IMAGE_SIZE, resize: str = DEFAULT_RESIZE) -> torch.Tensor:
    """uint8 images in any accepted layout -> model input ``[B, 3, size, size]`` float32.

    ``resize``: ``antialias`` or ``bilinear`` (see the module docstring); callers with an
    encoder pass its ``config.resize``.
    """
    return normalize_uint8(to_nchw_uint8(images, color), size, resize)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file -> uint8 RGB ``[H, W, 3]``; unreadable/corrupt/empty -> TheiaError.

    Grey, palette and RGBA files are converted to RGB here (the file says what it holds, so
    no ``color`` argument is needed); 16-bit and float images are refused rather than guessed.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise TheiaError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise TheiaError(f"{path}: empty file, expected an image")
    try:
        with Image.open(path) as img:
            img.load()  # decode fully now so truncated files fail here
            if img.mode not in _PIL_MODES:
                raise TheiaError(f"{path}: image mode {img.mode!r} not supported; expected an "
                                 "8-bit grey, palette, RGB or RGBA image")
            array = np.array(img.convert("RGB"), dtype=np.uint8)  # writable copy
    except TheiaError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise TheiaError(f"{path}: cannot read image ({exc})") from None
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise TheiaError(f"{path}: image has no pixels (shape {array.shape})")
    return array


def list_images(directory: str | os.PathLike) -> list[Path]:
    """Image files (by suffix, sorted) directly in ``directory``; none -> TheiaError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TheiaError(f"{directory}: not a directory")
    files = sorted(p for p in directory.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TheiaError(f"{directory}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files
