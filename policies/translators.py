"""Feature translators: shallow CNN heads mapping Theia tokens to each teacher's features.

Only used for distillation (and to check imported checkpoints): robot policies consume the
encoder's spatial tokens, never translator outputs. The layer layout follows the published
Theia checkpoints exactly (paper Table 4; ``official-theia-format.md``) so that their
state-dict keys ``translator.translator_heads.<teacher id>.pad.1.weight``, ``...adapter.0..8``
load 1:1 into :class:`TheiaModel`.

16x16 teachers (CLIP, DINOv2, ViT)::

    [B,196,C] -> map [B,C,14,14] -> pad.1 ConvT(k3,s1) -> [B,C,16,16]
      -> adapter: LN[C,16,16], Conv3x3, ReLU, LN, Conv3x3, ReLU, LN, to tokens, Linear(C, C_t)
      -> [B, 256, C_t]

64x64 teachers (SAM, Depth-Anything)::

    ... pad.1 -> [B,C,16,16] -> adapter: LN[C,16,16], ConvT(k3,s2,p1) -> 31x31, ReLU,
      LN[C,31,31], ConvT(k3,s2,output_padding 1) -> 64x64, ReLU, LN[C,64,64], to tokens,
      Linear(C, C_t) -> [B, 4096, C_t]

Outputs are in the teacher's *normalised* feature space ((x - mean) / std per channel);
:meth:`TheiaModel.decode` maps them back with ``x * std + mean``.

Example::

    model = TheiaModel(create_encoder("theia_tiny"), teacher_shapes("cdiv"))
    out = model(preprocess(images))        # {"facebook/dinov2-large": [B, 256, 1024], ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from policies.encoder import TheiaEncoder, tokens_to_map
from policies.teacher_specs import resolve_teachers, teacher_id
from theia_ros.errors import TheiaError

TeacherShapes = Mapping[str, Sequence[int]]  # hub id -> (C_t, H_t, W_t)


class TokensToMap(nn.Module):
    """``[B, N, C]`` (N square) -> ``[B, C, sqrt N, sqrt N]``; parameter-free (``pad.0``)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens_to_map(tokens)


class MapToTokens(nn.Module):
    """``[B, C, H, W]`` -> ``[B, H*W, C]`` (row-major tokens); parameter-free (``adapter.7``)."""

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.flatten(2).transpose(1, 2)


class FeatureTranslator(nn.Module):
    """One teacher's head: spatial tokens ``[B, 196, C]`` -> ``[B, H_t*W_t, C_t]``.

    Args:
        in_dim: student token width C.
        out_shape: teacher feature shape ``(C_t, H_t, W_t)``; H_t = W_t = 16 or 64.
        in_grid: student tokens per side (14).
        hidden_factor: translator width = ``round(C * hidden_factor)`` (1.0 published).
    """

    def __init__(self, in_dim: int, out_shape: Sequence[int], in_grid: int = 14,
                 hidden_factor: float = 1.0):
        super().__init__()
        c_t, h_t, w_t = (int(v) for v in out_shape)
        hid = round(in_dim * hidden_factor)
        self.out_shape = (c_t, h_t, w_t)
        pad_side = in_grid + 2  # ConvTranspose2d k3 s1 p0 grows each side by 2
        self.pad = nn.Sequential(TokensToMap(), nn.ConvTranspose2d(in_dim, hid, 3, stride=1))
        if (h_t, w_t) == (pad_side, pad_side):
            layers: list[nn.Module] = [
                nn.LayerNorm((hid, h_t, w_t)),
                nn.Conv2d(hid, hid, 3, padding=1), nn.ReLU(),
                nn.LayerNorm((hid, h_t, w_t)),
                nn.Conv2d(hid, hid, 3, padding=1), nn.ReLU(),
                nn.LayerNorm((hid, h_t, w_t)),
            ]
        elif (h_t, w_t) == (4 * pad_side, 4 * pad_side):
            mid = 2 * pad_side - 1  # ConvT k3 s2 p1: 16 -> 31
            layers = [
                nn.LayerNorm((hid, pad_side, pad_side)),
                nn.ConvTranspose2d(hid, hid, 3, stride=2, padding=1), nn.ReLU(),
                nn.LayerNorm((hid, mid, mid)),
                nn.ConvTranspose2d(hid, hid, 3, stride=2, output_padding=1), nn.ReLU(),  # 64
                nn.LayerNorm((hid, h_t, w_t)),
            ]
        else:
            raise TheiaError(f"teacher feature size {h_t}x{w_t} not supported; translators "
                             f"exist for {pad_side}x{pad_side} and {4 * pad_side}x{4 * pad_side}")
        self.adapter = nn.Sequential(*layers, MapToTokens(), nn.Linear(hid, c_t))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, H_t*W_t, C_t]`` normalised teacher features."""
        return self.adapter(self.pad(tokens))


class TranslatorBank(nn.Module):
    """All heads, in a ModuleDict keyed by teacher id (published name ``translator_heads``)."""

    def __init__(self, in_dim: int, shapes: TeacherShapes, in_grid: int = 14,
                 hidden_factor: float = 1.0):
        super().__init__()
        self.translator_heads = nn.ModuleDict({
            teacher_id(hub): FeatureTranslator(in_dim, shape, in_grid, hidden_factor)
            for hub, shape in shapes.items()
        })


class FeatureStats(nn.Module):
    """Per-channel teacher statistics ``mean [C_t]``, ``std [C_t]`` (buffers: move with .to)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(-1))


def teacher_shapes(teachers: str | Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """Teacher set name (``cdiv``/``cddsv``) or names -> ``{hub id: (C_t, H_t, W_t)}``."""
    return {spec.hub_id: spec.shape for spec in resolve_teachers(teachers)}


class TheiaModel(nn.Module):
    """Encoder + one translator per teacher + (optional) teacher feature statistics.

    Args:
        encoder: the Theia backbone (its spatial tokens are the representation).
        shapes: ``{teacher hub id: (C_t, H_t, W_t)}``, in a fixed order.
        hidden_factor: translator width factor (1.0 in the published models).
        stats: ``{hub id: (mean [C_t], std [C_t])}`` for :meth:`decode`; the published
            checkpoints ship without them, so they are optional.
    """

    def __init__(self, encoder: TheiaEncoder, shapes: TeacherShapes, hidden_factor: float = 1.0,
                 stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None):
        super().__init__()
        if not shapes:
            raise TheiaError("a TheiaModel needs at least one teacher")
        self.encoder = encoder
        self.shapes: dict[str, tuple[int, int, int]] = {
            hub: tuple(int(v) for v in shape) for hub, shape in shapes.items()}  # type: ignore
        self.hidden_factor = float(hidden_factor)
        self.translator = TranslatorBank(encoder.embed_dim, self.shapes, encoder.config.grid,
                                         hidden_factor)
        self.feature_stats = nn.ModuleDict()
        for hub, (mean, std) in (stats or {}).items():
            self.set_stats(hub, mean, std)

    @property
    def teachers(self) -> list[str]:
        """Teacher hub ids in order."""
        return list(self.shapes)

    def set_stats(self, hub_id: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Attach one teacher's per-channel statistics (``[C_t]`` each)."""
        if hub_id not in self.shapes:
            raise TheiaError(f"stats given for {hub_id!r}, which is not a teacher of this model "
                             f"({self.teachers})")
        stats = FeatureStats(mean, std)
        c_t = self.shapes[hub_id][0]
        if stats.mean.numel() != c_t or stats.std.numel() != c_t:
            raise TheiaError(f"stats for {hub_id!r}: expected mean and std of length {c_t}, got "
                             f"{stats.mean.numel()} and {stats.std.numel()}")
        self.feature_stats[teacher_id(hub_id)] = stats

    def has_stats(self, hub_id: str) -> bool:
        return teacher_id(hub_id) in self.feature_stats

    def translate(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Spatial tokens ``[B, 196, C]`` -> ``{hub id: [B, H_t*W_t, C_t]}`` (normalised)."""
        return {hub: self.translator.translator_heads[teacher_id(hub)](tokens)
                for hub in self.shapes}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised images ``[B, 3, 224, 224]`` -> ``{hub id: [B, H_t*W_t, C_t]}``."""
        return self.translate(self.encoder.forward_features(x))

    def decode(self, hub_id: str, feats: torch.Tensor) -> torch.Tensor:
        """Normalised ``[B, N, C_t]`` -> teacher feature space (``x * std + mean``)."""
        if not self.has_stats(hub_id):
            raise TheiaError(f"no feature statistics for teacher {hub_id!r} in this model; "
                             "the published checkpoints ship without them")
        stats = self.feature_stats[teacher_id(hub_id)]
        return feats * stats.std + stats.mean

    def to_teacher_map(self, hub_id: str, feats: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, H_t*W_t, C_t]`` -> map ``[B, C_t, H_t, W_t]`` (teacher layout)."""
        c_t, h_t, w_t = self.shapes[hub_id]
        if feats.shape[1:] != (h_t * w_t, c_t):
            raise TheiaError(f"{hub_id}: expected [B, {h_t * w_t}, {c_t}] features, got "
                             f"{tuple(feats.shape)}")
        return feats.transpose(1, 2).reshape(feats.shape[0], c_t, h_t, w_t)


def count_parameters(module: nn.Module) -> int:
    """Total number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())

