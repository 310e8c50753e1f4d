"""The Theia encoder: a DeiT-style ViT whose 196 spatial tokens are the representation.

The backbone is timm's ``VisionTransformer`` configured like DeiT-Tiny/Small/Base (patch 16,
224 x 224, 12 blocks, MLP 4x) with LayerNorm eps 1e-12 (as the published Hugging Face
checkpoints use). The CLS token is kept as an unsupervised register; optional extra register
tokens follow it (paper Table 3b). Only the spatial tokens are returned.

Example::

    enc = create_encoder("theia_tiny")
    tokens = enc.encode(np_uint8_image)          # [1, 196, 192]
    fmap = enc.forward_spatial(preprocess(img))  # [1, 192, 14, 14]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from policies.preprocess import ColorOrder, preprocess
from theia_ros.errors import TheiaError
from theia_ros.runtime.resize_weights import DEFAULT_RESIZE, LEGACY_RESIZE, check_resize_mode
from theia_ros.schema import fld, parse


@dataclass(frozen=True)
class EncoderConfig:
    """Backbone hyper-parameters.

    Args:
        name: registry name, e.g. ``theia_tiny``.
        embed_dim: token width C (192 / 384 / 768 for tiny / small / base).
        depth: number of transformer blocks.
        num_heads: attention heads.
        num_reg_tokens: extra register tokens after CLS (0 in the published models).
        img_size: input side in pixels.
        patch_size: patch side in pixels.
        ln_eps: LayerNorm epsilon (1e-12 to match the published checkpoints).
        resize: how images of another size are resized to ``img_size``: ``antialias`` (the
            published processor's kernel, the default) or ``bilinear`` (plain, what
            theia-ros used before; configs saved without this field mean it). See
            ``policies.preprocess``.
    """

    name: str = "theia_tiny"
    embed_dim: int = fld(192, ge=1, le=8192)
    depth: int = fld(12, ge=1, le=64)
    num_heads: int = fld(3, ge=1, le=128)
    num_reg_tokens: int = fld(0, ge=0, le=64)
    img_size: int = fld(224, ge=16, le=2048)
    patch_size: int = fld(16, ge=1, le=64)
    ln_eps: float = fld(1e-12, gt=0, le=0.1)
    resize: str = DEFAULT_RESIZE

    def __post_init__(self) -> None:
        check_resize_mode(self.resize, "encoder config resize")
        if self.embed_dim % self.num_heads:
            raise TheiaError(f"encoder config: embed_dim {self.embed_dim} is not divisible by "
                             f"num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise TheiaError(f"encoder config: img_size {self.img_size} is not a multiple of "
                             f"patch_size {self.patch_size}")

    @property
    def grid(self) -> int:
        """Tokens per side (14 for 224 / 16)."""
        return self.img_size // self.patch_size

    @property
    def num_spatial_tokens(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "encoder config") -> EncoderConfig:
        """Typed and bounded (see ``theia_ros.schema``); errors name ``where`` and the field.
        A saved config without ``resize`` predates it and so used ``bilinear``."""
        return parse(cls, {"resize": LEGACY_RESIZE, **d}, where, "encoder")


class TheiaEncoder(nn.Module):
    """ViT backbone -> spatial tokens ``[B, 196, C]`` (CLS and registers dropped)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.backbone = VisionTransformer(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            class_token=True,
            reg_tokens=config.num_reg_tokens,
            global_pool="",
            num_classes=0,
            norm_layer=partial(nn.LayerNorm, eps=config.ln_eps),
        )

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[B, 3, 224, 224]`` -> spatial tokens ``[B, 196, C]``."""
        tokens = self.backbone.forward_features(x)
        return tokens[:, self.backbone.num_prefix_tokens:]

    def forward_spatial(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> spatial feature map ``[B, C, 14, 14]``."""
        return tokens_to_map(self.forward_features(x))

    forward = forward_features

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor, color: ColorOrder | None = None
               ) -> torch.Tensor:
        """uint8 images (any accepted layout, see ``policies.preprocess``) -> ``[B, 196, C]``."""
        x = preprocess(images, color, self.config.img_size, self.config.resize)
        param = next(self.parameters())
        return self.forward_features(x.to(device=param.device, dtype=param.dtype))


def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """``[B, N, C]`` with N a square -> ``[B, C, sqrt N, sqrt N]``."""
    b, n, c = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} tokens do not form a square grid")
    return tokens.transpose(1, 2).reshape(b, c, side, side)


# Named variants: three-line entries calling one factory.
ENCODERS: dict[str, Callable[..., EncoderConfig]] = {
    "theia_tiny": partial(EncoderConfig, name="theia_tiny", embed_dim=192, num_heads=3),
    "theia_small": partial(EncoderConfig, name="theia_small", embed_dim=384, num_heads=6),
    "theia_base": partial(EncoderConfig, name="theia_base", embed_dim=768, num_heads=12),
}


def create_encoder(name: str = "theia_tiny", num_reg_tokens: int = 0, seed: int | None = None
                   ) -> TheiaEncoder:
    """A randomly initialised encoder of a registered size (``theia_tiny|small|base``)."""
    if name not in ENCODERS:
        raise TheiaError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    if seed is not None:
        torch.manual_seed(seed)
    return TheiaEncoder(ENCODERS[name](num_reg_tokens=num_reg_tokens)).eval()
