"""Diffusion-policy head (Chi et al. 2023; Theia paper Table 10, Spot): a 1-D temporal U-Net.

The head has two networks, kept apart so export can put each in its own ONNX graph and run the
sampling loop on the host:

- ``ConditionEncoder``: feature map ``[B, C, 14, 14]`` + normalised state ``[B, S]`` ->
  condition ``[B, D]`` (1x1 conv to a few channels, a strided 3x3 conv, flatten, linear; then
  the state is appended). Runs once per control step.
- ``TemporalUnet1d`` (the denoiser): ``(noisy_actions [B, H, A], timestep [B], cond [B, D])
  -> [B, H, A]`` (the predicted noise for ``prediction_type="epsilon"``). Residual conv blocks
  over the time axis, each modulated by FiLM (per-channel scale and bias) from the diffusion
  step embedding concatenated with the condition; skip connections between the down and up
  paths. Horizons that are not a multiple of ``2 ** (levels - 1)`` are zero-padded inside.

Training is DDPM (``DDPMScheduler``, 100 steps, ``squaredcos_cap_v2``); sampling is DDIM with
10 steps (``DDIMScheduler`` from the same config, eta = 0, so sampling is deterministic given
the initial noise). Actions are normalised to [-1, 1] (min/max) so ``clip_sample`` applies.

Example::

    head = DiffusionHead(DiffusionConfig(feature_dim=192, state_dim=7))
    loss = head.compute_loss(fmap, state_n, actions_n)        # MSE on the noise
    chunk_n = head.predict(fmap, state_n)                     # [B, 4, 7] after 10 DDIM steps
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from policies.cnn_mlp import check_states, check_views
from theia_ros.errors import TheiaError
from theia_ros.schema import check_positive_ints, fld, parse
from theia_ros.types import ACTION_DIM

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DDPMScheduler

PREDICTION_TYPES = ("epsilon", "sample")
# Schedules that diffusers' DDPM (training) and DDIM (sampling) schedulers and the robot's
# numpy DDIM sampler all implement. diffusers is imported only where a scheduler is built,
# so the networks load on machines without it (GPU benchmarks, inference-only set-ups).
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class DiffusionConfig:
    """Diffusion head hyper-parameters (defaults: the Spot configuration, <= 100 ms on 2 cores).

    Args:
        feature_dim: encoder token width C.
        state_dim: joint-state length S.
        action_dim: numbers per action (7).
        horizon: prediction horizon H (4 in the paper's Spot policy).
        grid: feature-map side (14).
        proj_channels: channels of the condition encoder's convs.
        image_cond_dim: length of the image part of the condition vector.
        down_dims: U-Net channel widths per level (one downsampling between levels).
        kernel_size: temporal conv kernel.
        n_groups: GroupNorm groups (must divide every width).
        step_embed_dim: sinusoidal diffusion-step embedding width.
        num_train_timesteps: DDPM steps (100).
        num_inference_steps: DDIM steps (10).
        beta_schedule: one of ``BETA_SCHEDULES`` (``squaredcos_cap_v2`` = squared cosine).
        clip_sample: clip the predicted clean sample to [-1, 1] in each scheduler step.
        prediction_type: ``epsilon`` (predict the noise) or ``sample`` (predict the actions).
        num_views: feature maps per sample (cameras x observation steps, time-major).
        n_obs_steps: joint states per sample (observation steps T; 2 in Chi et al.).
    """

    feature_dim: int = fld(192, ge=1, le=8192)
    state_dim: int = fld(7, ge=1, le=64)
    action_dim: int = fld(ACTION_DIM, ge=1, le=64)
    horizon: int = fld(4, ge=1, le=1000)
    grid: int = fld(14, ge=1, le=128)
    proj_channels: int = fld(32, ge=1, le=8192)
    image_cond_dim: int = fld(256, ge=1, le=65536)
    down_dims: tuple[int, ...] = fld((256, 512), ge=1, le=8192, min_len=1, max_len=8)
    kernel_size: int = fld(3, ge=1, le=31)
    n_groups: int = fld(8, ge=1, le=512)
    step_embed_dim: int = fld(128, ge=1, le=8192)
    num_train_timesteps: int = fld(100, ge=1, le=100_000)
    num_inference_steps: int = fld(10, ge=1, le=1000)
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    prediction_type: str = "epsilon"
    num_views: int = 1
    n_obs_steps: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "down_dims", tuple(int(d) for d in self.down_dims))
        check_positive_ints(self, ("feature_dim", "state_dim", "action_dim", "horizon", "grid",
                                   "proj_channels", "image_cond_dim", "kernel_size", "n_groups",
                                   "step_embed_dim", "num_train_timesteps",
                                   "num_inference_steps", "num_views", "n_obs_steps"),
                            "diffusion config")
        if not self.down_dims:
            raise TheiaError("diffusion config: down_dims must name at least one width")
        bad = [d for d in (*self.down_dims, self.proj_channels) if d % self.n_groups]
        if bad:
            raise TheiaError(f"diffusion config: widths {bad} are not divisible by "
                             f"n_groups={self.n_groups}")
        if self.kernel_size % 2 == 0:
            raise TheiaError(f"diffusion config: kernel_size must be odd, got {self.kernel_size}")
        if self.step_embed_dim % 2 or self.step_embed_dim < 4:
            raise TheiaError("diffusion config: step_embed_dim must be even and >= 4")
        if self.num_inference_steps > self.num_train_timesteps:
            raise TheiaError("diffusion config: num_inference_steps > num_train_timesteps")
        if self.prediction_type not in PREDICTION_TYPES:
            raise TheiaError(f"diffusion config: prediction_type {self.prediction_type!r} not "
                             f"in {PREDICTION_TYPES}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise TheiaError(f"diffusion config: beta_schedule {self.beta_schedule!r} not in "
                             f"{BETA_SCHEDULES}")

    @property
    def cond_dim(self) -> int:
        """Length D of the condition vector (one image part per view + every state)."""
        return self.num_views * self.image_cond_dim + self.n_obs_steps * self.state_dim

    def to_dict(self) -> dict:
        d = asdict(self)
        d["down_dims"] = list(self.down_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "diffusion config") -> DiffusionConfig:
        """Typed and bounded (see ``theia_ros.schema``); errors name ``where`` and the field."""
        return parse(cls, d, where, "head")

    def scheduler_kwargs(self) -> dict:
        """Shared diffusers scheduler settings (the DDIM sampler reuses the DDPM config)."""
        return {"num_train_timesteps": self.num_train_timesteps,
                "beta_schedule": self.beta_schedule, "clip_sample": self.clip_sample,
                "prediction_type": self.prediction_type}


def make_train_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**config.scheduler_kwargs())


def make_sample_scheduler(config: DiffusionConfig) -> DDIMScheduler:
    """DDIM sampler with ``num_inference_steps`` timesteps set (eta = 0)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**config.scheduler_kwargs(), set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(config.num_inference_steps)
    return sched


class SinusoidalStepEmbedding(nn.Module):
    """Diffusion step ``[B]`` (int or float) -> ``[B, dim]`` sin/cos features."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.to(torch.float32)[:, None] * self.freqs[None]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class ConvNormAct1d(nn.Sequential):
    """Conv1d (same padding) -> GroupNorm -> Mish on ``[B, C, L]``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int):
        super().__init__(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
                         nn.GroupNorm(groups, c_out), nn.Mish())


class FilmResBlock1d(nn.Module):
    """Two conv blocks; the condition scales and shifts the first one's output per channel."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int):
        super().__init__()
        self.block1 = ConvNormAct1d(c_in, c_out, kernel, groups)
        self.block2 = ConvNormAct1d(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, L]``, ``[B, D']`` -> ``[B, C_out, L]``."""
        scale, bias = self.film(cond)[..., None].chunk(2, dim=1)
        h = self.block1(x) * scale + bias
        return self.block2(h) + self.skip(x)


class TemporalUnet1d(nn.Module):
    """The denoiser: ``(noisy [B, H, A], timestep [B], cond [B, D]) -> [B, H, A]``."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        dims, k, g = config.down_dims, config.kernel_size, config.n_groups
        e = config.step_embed_dim
        self.step_embed = nn.Sequential(SinusoidalStepEmbedding(e), nn.Linear(e, 4 * e),
                                        nn.Mish(), nn.Linear(4 * e, e))
        film_dim = e + config.cond_dim
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c_prev = config.action_dim
        for i, c in enumerate(dims):
            self.down.append(nn.ModuleList([FilmResBlock1d(c_prev, c, film_dim, k, g),
                                            FilmResBlock1d(c, c, film_dim, k, g)]))
            last = i == len(dims) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv1d(c, c, 3, 2, 1))
            c_prev = c
        self.mid = nn.ModuleList([FilmResBlock1d(dims[-1], dims[-1], film_dim, k, g),
                                  FilmResBlock1d(dims[-1], dims[-1], film_dim, k, g)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(dims))):
            c_out = dims[max(i - 1, 0)]
            self.up.append(nn.ModuleList([FilmResBlock1d(2 * dims[i], c_out, film_dim, k, g),
                                          FilmResBlock1d(c_out, c_out, film_dim, k, g)]))
            self.upsample.append(nn.ConvTranspose1d(c_out, c_out, 4, 2, 1) if i > 0
                                 else nn.Identity())
        self.final = nn.Sequential(ConvNormAct1d(dims[0], dims[0], k, g),
                                   nn.Conv1d(dims[0], config.action_dim, 1))
        self.pad_multiple = 2 ** (len(dims) - 1)

    def forward(self, noisy_actions: torch.Tensor, timestep: torch.Tensor,
                cond: torch.Tensor) -> torch.Tensor:
        """``[B, H, A]``, ``[B]``, ``[B, D]`` -> ``[B, H, A]``."""
        horizon = noisy_actions.shape[1]
        x = noisy_actions.transpose(1, 2)  # [B, A, H]
        pad = (-horizon) % self.pad_multiple
        if pad:
            x = F.pad(x, (0, pad))
        film = torch.cat([self.step_embed(timestep.reshape(-1)), cond], dim=-1)
        skips = []
        for (res1, res2), down in zip(self.down, self.downsample):
            x = res2(res1(x, film), film)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, film)
        for (res1, res2), up in zip(self.up, self.upsample):
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, film), film))
        x = self.final(x)[..., :horizon]
        return x.transpose(1, 2)


class ConditionEncoder(nn.Module):
    """Feature maps ``[B, V, C, g, g]`` + normalised states ``[B, T, S]`` -> condition
    ``[B, D]``: each map through the same projection, the V codes and T states concatenated
    (Chi et al.'s global conditioning over cameras and observation steps). One view and one
    state may come without their axis (``[B, C, g, g]``, ``[B, S]``)."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        p = config.proj_channels
        side = (config.grid - 1) // 2 + 1
        self.image = nn.Sequential(
            nn.Conv2d(config.feature_dim, p, 1), nn.GroupNorm(config.n_groups, p), nn.Mish(),
            nn.Conv2d(p, p, 3, stride=2, padding=1), nn.Mish(),
            nn.Flatten(), nn.Linear(p * side * side, config.image_cond_dim),
        )
        self.num_views, self.n_obs_steps = config.num_views, config.n_obs_steps

    def forward(self, features: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        views = check_views(features, self.num_views)
        b = views.shape[0]
        codes = self.image(views.flatten(0, 1)).reshape(b, -1)
        return torch.cat([codes, check_states(state, self.n_obs_steps)], dim=-1)


class DiffusionHead(nn.Module):
    """Condition encoder + denoiser, with DDPM training and DDIM sampling."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        self.cond_encoder = ConditionEncoder(config)
        self.denoiser = TemporalUnet1d(config)
        self.train_scheduler = make_train_scheduler(config)

    def compute_loss(self, features: torch.Tensor, state: torch.Tensor, actions: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """DDPM loss: MSE between the denoiser output and the noise (or the clean chunk).

        ``features`` ``[B, C, g, g]``, ``state`` ``[B, S]``, ``actions`` ``[B, H, A]`` (all
        normalised); ``mask`` ``[B, H]`` (1 = real step) drops padded steps from the mean.
        """
        b = actions.shape[0]
        cond = self.cond_encoder(features, state)
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.config.num_train_timesteps, (b,), device=actions.device)
        noisy = self.train_scheduler.add_noise(actions, noise, t)
        pred = self.denoiser(noisy, t, cond)
        target = noise if self.config.prediction_type == "epsilon" else actions
        err = (pred - target) ** 2
        if mask is None:
            return err.mean()
        weight = mask.to(err.dtype)[..., None].expand_as(err)
        return (err * weight).sum() / weight.sum().clamp_min(1.0)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, state: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``num_inference_steps`` DDIM steps from Gaussian noise -> normalised ``[B, H, A]``."""
        cfg = self.config
        b = state.shape[0]
        cond = self.cond_encoder(features, state)
        gen_device = generator.device if generator is not None else features.device
        x = torch.randn((b, cfg.horizon, cfg.action_dim), generator=generator,
                        device=gen_device).to(features.device)
        sched = make_sample_scheduler(cfg)
        for t in sched.timesteps:
            step = t.to(features.device).expand(b)
            out = self.denoiser(x, step, cond)
            x = sched.step(out, t, x).prev_sample
        return x
