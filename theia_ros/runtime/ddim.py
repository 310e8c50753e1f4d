"""DDIM sampling (eta = 0) in numpy, the same maths as ``diffusers.DDIMScheduler``.

The exported denoiser graph predicts one step's noise (or clean sample) with the timestep as
an explicit input; this module runs the loop on the host so no ONNX loop, no torch and no
diffusers are needed on the robot. Arithmetic is float32 like the torch scheduler's tables;
``tests/test_ddim_numpy.py`` checks it step by step against diffusers.

Configured by the diffusers scheduler config dict (what ``DDIMScheduler.config`` holds; it is
stored in ``bundle.yaml`` under ``diffusion.scheduler``). Supported: beta schedules
``linear | scaled_linear | squaredcos_cap_v2`` (or ``trained_betas``), timestep spacing
``leading | trailing | linspace``, prediction types ``epsilon | sample | v_prediction``,
``clip_sample``, ``set_alpha_to_one``, ``steps_offset``, ``rescale_betas_zero_snr``.
Dynamic thresholding is not (it is for image models): a clear error.

Example::

    ddim = DDIMSampler(bundle.meta.scheduler, num_inference_steps=10)
    x = rng.standard_normal((1, H, 7), dtype=np.float32)
    for t in ddim.timesteps:
        x = ddim.step(denoiser(x, t, cond), int(t), x)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from theia_ros.errors import TheiaError
from theia_ros.schema import check, fld, parse

_IGNORED_KEYS = {"_class_name", "_diffusers_version", "_use_default_values"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class DDIMConfig:
    """The subset of ``DDIMScheduler.config`` that changes the numbers (diffusers defaults).

    Bounds keep a tampered config from asking for huge tables (``num_train_timesteps``).
    """

    num_train_timesteps: int = fld(1000, ge=1, le=100_000)
    beta_start: float = fld(0.0001, gt=0, le=1)
    beta_end: float = fld(0.02, gt=0, le=1)
    beta_schedule: str = fld("linear", choices=BETA_SCHEDULES)
    trained_betas: list[float] | None = fld(None, gt=0, le=1)
    clip_sample: bool = True
    set_alpha_to_one: bool = True
    steps_offset: int = fld(0, ge=0)
    prediction_type: str = fld("epsilon", choices=("epsilon", "sample", "v_prediction"))
    thresholding: bool = False  # dynamic thresholding (image models): not supported
    dynamic_thresholding_ratio: float = 0.995
    clip_sample_range: float = fld(1.0, gt=0)
    sample_max_value: float = 1.0
    timestep_spacing: str = fld("leading", choices=("leading", "trailing", "linspace"))
    rescale_betas_zero_snr: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | object = "scheduler config"
                  ) -> DDIMConfig:
        """A diffusers scheduler config (its ``_class_name``-style keys ignored), checked."""
        if not isinstance(d, dict):
            raise TheiaError(f"{where}: diffusion.scheduler: must be a mapping, got {d!r:.60}")
        cfg = parse(cls, {k: v for k, v in d.items() if k not in _IGNORED_KEYS}, where,
                    "diffusion.scheduler")
        check(where, "diffusion.scheduler.thresholding", not cfg.thresholding,
              "true is not supported by the numpy DDIM sampler (use clip_sample)")
        n = cfg.num_train_timesteps
        check(where, "diffusion.scheduler.trained_betas",
              cfg.trained_betas is None or len(cfg.trained_betas) == n,
              f"has {len(cfg.trained_betas or [])} values, expected num_train_timesteps={n}")
        return cfg


def _betas_for_alpha_bar(n: int, max_beta: float = 0.999) -> np.ndarray:
    """Squared-cosine schedule (Nichol & Dhariwal 2021, eq. 17), computed in float64 then cast."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return np.asarray(betas, dtype=np.float32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023, Algorithm 1 (shift/scale sqrt(alpha_bar) so the last one is 0)."""
    abar_sqrt = np.sqrt(np.cumprod(1.0 - betas, dtype=np.float32))
    a0, at = abar_sqrt[0].copy(), abar_sqrt[-1].copy()
    abar_sqrt = (abar_sqrt - at) * (a0 / (a0 - at))
    abar = abar_sqrt ** 2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return (1.0 - alphas).astype(np.float32)


def make_betas(cfg: DDIMConfig) -> np.ndarray:
    """``[num_train_timesteps]`` float32 betas for the configured schedule."""
    n = cfg.num_train_timesteps
    if cfg.trained_betas is not None:
        betas = np.asarray(cfg.trained_betas, dtype=np.float32)
    elif cfg.beta_schedule == "linear":
        betas = np.linspace(cfg.beta_start, cfg.beta_end, n, dtype=np.float32)
    elif cfg.beta_schedule == "scaled_linear":
        betas = np.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n,
                            dtype=np.float32) ** 2
    elif cfg.beta_schedule == "squaredcos_cap_v2":
        betas = _betas_for_alpha_bar(n)
    else:
        raise TheiaError(f"diffusion.scheduler: beta_schedule {cfg.beta_schedule!r} unknown")
    if cfg.rescale_betas_zero_snr:
        betas = _rescale_zero_terminal_snr(betas)
    return betas.astype(np.float32)


class DDIMSampler:
    """Deterministic DDIM (eta = 0) over ``num_inference_steps`` steps.

    Args:
        config: a diffusers scheduler config dict or a ``DDIMConfig``.
        num_inference_steps: number of denoising steps.
    """

    def __init__(self, config: dict[str, Any] | DDIMConfig, num_inference_steps: int,
                 where: str | object = "scheduler config"):
        self.config = (config if isinstance(config, DDIMConfig)
                       else DDIMConfig.from_dict(config, where))
        n = self.config.num_train_timesteps
        check(where, "diffusion.num_inference_steps", 1 <= num_inference_steps <= n,
              f"must be in 1..{n} (num_train_timesteps), got {num_inference_steps}")
        self.num_inference_steps = int(num_inference_steps)
        self.betas = make_betas(self.config)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas, dtype=np.float32)
        self.final_alpha_cumprod = (np.float32(1.0) if self.config.set_alpha_to_one
                                    else self.alphas_cumprod[0])
        self.timesteps = self._timesteps()
        self.step_ratio = n // self.num_inference_steps
        check(where, "diffusion.scheduler.steps_offset",
              int(self.timesteps.min()) >= 0 and int(self.timesteps.max()) < n,
              f"{self.config.steps_offset} puts timestep {int(self.timesteps.max())} outside "
              f"0..{n - 1}")

    def _timesteps(self) -> np.ndarray:
        """``[num_inference_steps]`` int64, descending (diffusers ``set_timesteps``)."""
        cfg, k = self.config, self.num_inference_steps
        n = cfg.num_train_timesteps
        if cfg.timestep_spacing == "linspace":
            return np.linspace(0, n - 1, k).round()[::-1].copy().astype(np.int64)
        if cfg.timestep_spacing == "leading":
            ratio = n // k
            return (np.arange(0, k) * ratio).round()[::-1].astype(np.int64) + cfg.steps_offset
        ratio = n / k  # trailing
        return np.round(np.arange(n, 0, -ratio)).astype(np.int64) - 1

    def step(self, model_output: np.ndarray, timestep: int, sample: np.ndarray) -> np.ndarray:
        """One reverse step x_t -> x_{t-1}, ``[..]`` float32 arrays of the sample's shape."""
        cfg = self.config
        # 1. previous step (diffusers uses T // steps whatever the spacing)
        prev_t = timestep - self.step_ratio
        # 2. alpha_bar_t and alpha_bar_{t-1}
        a_t = self.alphas_cumprod[timestep]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t = np.float32(1.0) - a_t
        # 3. predicted x_0 and epsilon (DDIM paper eq. 12)
        if cfg.prediction_type == "epsilon":
            x0 = (sample - b_t ** 0.5 * model_output) / a_t ** 0.5
            eps = model_output
        elif cfg.prediction_type == "sample":
            x0 = model_output
            eps = (sample - a_t ** 0.5 * x0) / b_t ** 0.5
        else:  # v_prediction
            x0 = a_t ** 0.5 * sample - b_t ** 0.5 * model_output
            eps = a_t ** 0.5 * model_output + b_t ** 0.5 * sample
        # 4. clip x_0
        if cfg.clip_sample:
            x0 = np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
        # 5-7. eta = 0: sigma_t = 0, direction pointing to x_t, then x_{t-1} (eq. 12)
        direction = (np.float32(1.0) - a_prev) ** 0.5 * eps
        return (a_prev ** 0.5 * x0 + direction).astype(np.float32)
