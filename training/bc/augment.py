"""Random-shift image augmentation for fine-tuning (pad by replication, crop back, per sample).

The DrQ-style shift is the augmentation that helps visuomotor BC most at small data sizes and
keeps the image content (no colour or scale change that the frozen features never saw).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, max_shift_px: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, C, H, W]`` -> same shape, each image shifted by up to ``max_shift_px`` pixels."""
    if max_shift_px <= 0:
        return images
    b, _, h, w = images.shape
    p = max_shift_px
    padded = F.pad(images, (p, p, p, p), mode="replicate")
    offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator)
    return torch.stack([padded[i, :, int(dy):int(dy) + h, int(dx):int(dx) + w]
                        for i, (dy, dx) in enumerate(offsets)])
