"""CNN-MLP behaviour-cloning head (Theia paper, Table 8 neck + Table 9 WidowX training).

Spatial features ``[B, C, 14, 14]`` go through the "compression layer"
Conv(C,256,k4,s2,p1)-ReLU-Conv(256,256,k3,s2)-ReLU-Conv(256,256,k3,s1) (14 -> 7 -> 3 -> 1),
are flattened, concatenated with the normalised joint state ``[B, S]`` and fed to a 3-layer
MLP (hidden 256) that outputs a whole action chunk ``[B, H, A]`` (H = 10 for door opening and
microwave, 5 for pick-and-place). Trained with SmoothL1 on normalised actions.

Several views (cameras x observation steps, ``num_views = n_cameras * n_obs_steps``) arrive
as ``[B, V, C, 14, 14]`` in time-major order (oldest step first, cameras in the policy's
order within a step): the same compression layer squeezes each map, and the V codes and the
``n_obs_steps`` states ``[B, T, S]`` are concatenated before the MLP. With one view the head
is exactly the paper's (and reads checkpoints written before views existed).

Example::

    head = CnnMlpHead(CnnMlpConfig(feature_dim=192, state_dim=7, horizon=10))
    chunk = head.predict(fmap, state_n)  # [B, 10, 7] (normalised units)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from theia_ros.errors import TheiaError
from theia_ros.schema import check_positive_ints, fld, parse
from theia_ros.types import ACTION_DIM


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class CnnMlpConfig:
    """CNN-MLP head hyper-parameters.

    Args:
        feature_dim: encoder token width C (192 / 384 / 768).
        state_dim: joint-state length S (arm joints + gripper).
        action_dim: numbers per action (7: xyz, rpy, gripper).
        horizon: actions predicted per step (chunk length H).
        grid: feature-map side (14 for a 224 / 16 ViT).
        neck_channels: width of the compression convs (256 in the paper).
        hidden_dim: MLP hidden width (256 in the paper).
        num_views: feature maps per sample (cameras x observation steps).
        n_obs_steps: joint states per sample (observation steps T).
    """

    feature_dim: int = fld(192, ge=1, le=8192)
    state_dim: int = fld(7, ge=1, le=64)
    action_dim: int = fld(ACTION_DIM, ge=1, le=64)
    horizon: int = fld(10, ge=1, le=1000)
    grid: int = fld(14, ge=1, le=128)
    neck_channels: int = fld(256, ge=1, le=8192)
    hidden_dim: int = fld(256, ge=1, le=65536)
    num_views: int = fld(1, ge=1, le=64)  # cameras x observation steps
    n_obs_steps: int = fld(1, ge=1, le=64)

    def __post_init__(self) -> None:
        check_positive_ints(self, ("feature_dim", "state_dim", "action_dim", "horizon", "grid",
                                   "neck_channels", "hidden_dim", "num_views", "n_obs_steps"),
                            "cnn_mlp config")
        if self.neck_side < 1:
            raise TheiaError(f"cnn_mlp config: grid {self.grid} is too small for the "
                             "compression convs (need at least 6)")

    @property
    def neck_side(self) -> int:
        """Spatial side after the three compression convs (1 for a 14 x 14 grid)."""
        s = _conv_out(self.grid, 4, 2, 1)
        s = _conv_out(s, 3, 2, 0)
        return _conv_out(s, 3, 1, 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "cnn_mlp config") -> CnnMlpConfig:
        """Typed and bounded (see ``theia_ros.schema``); errors name ``where`` and the field."""
        return parse(cls, d, where, "head")


def check_views(features: torch.Tensor, num_views: int) -> torch.Tensor:
    """``[B, C, g, g]`` (one view) or ``[B, V, C, g, g]`` -> ``[B, V, C, g, g]``, V checked."""
    if features.ndim == 4:
        features = features[:, None]
    if features.ndim != 5 or features.shape[1] != num_views:
        raise TheiaError(f"head expects {num_views} feature map(s) [B, {num_views}, C, g, g], "
                         f"got {tuple(features.shape)}")
    return features


def check_states(state: torch.Tensor, n_obs_steps: int) -> torch.Tensor:
    """``[B, S]`` (one step) or ``[B, T, S]`` -> ``[B, T * S]``, T checked."""
    if state.ndim == 2:
        state = state[:, None]
    if state.ndim != 3 or state.shape[1] != n_obs_steps:
        raise TheiaError(f"head expects {n_obs_steps} state step(s) [B, {n_obs_steps}, S], "
                         f"got {tuple(state.shape)}")
    return state.flatten(1)


class CnnMlpHead(nn.Module):
    """Compression convs + MLP: (``[B, C, g, g]``, ``[B, S]``) -> ``[B, H, A]``."""

    def __init__(self, config: CnnMlpConfig):
        super().__init__()
        self.config = config
        c, n = config.feature_dim, config.neck_channels
        self.neck = nn.Sequential(
            nn.Conv2d(c, n, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(n, n, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(n, n, kernel_size=3, stride=1),
            nn.Flatten(),
        )
        flat = n * config.neck_side ** 2
        h = config.hidden_dim
        self.mlp = nn.Sequential(
            nn.Linear(config.num_views * flat + config.n_obs_steps * config.state_dim, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, config.horizon * config.action_dim),
        )

    def forward(self, features: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Maps ``[B, V, C, g, g]`` (or ``[B, C, g, g]`` for one view) + normalised state
        ``[B, T, S]`` (or ``[B, S]``) -> ``[B, H, A]``."""
        views = check_views(features, self.config.num_views)
        b = views.shape[0]
        codes = self.neck(views.flatten(0, 1)).reshape(b, -1)  # each map compressed alike
        x = torch.cat([codes, check_states(state, self.config.n_obs_steps)], dim=1)
        return self.mlp(x).view(-1, self.config.horizon, self.config.action_dim)

    def predict(self, features: torch.Tensor, state: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised action chunk ``[B, H, A]`` (``generator`` unused: deterministic head)."""
        return self(features, state)

    def compute_loss(self, features: torch.Tensor, state: torch.Tensor, actions: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """SmoothL1 between predicted and target normalised chunks ``[B, H, A]``.

        ``mask`` ``[B, H]`` (1 = real step) drops padded steps from the mean.
        """
        err = F.smooth_l1_loss(self(features, state), actions, reduction="none")
        if mask is None:
            return err.mean()
        weight = mask.to(err.dtype)[..., None].expand_as(err)
        return (err * weight).sum() / weight.sum().clamp_min(1.0)
