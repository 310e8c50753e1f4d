"""Per-dimension normalisation of states and actions: outside the networks, saved with them.

Every statistic lives in a tensor buffer (so it travels in ``model.safetensors``) and as plain
numbers in ``policy.json`` (so export and the runtime can read it without torch). Both modes
reduce to one affine map ``normalised = (x - offset) / scale``:

- ``mean_std``: offset = mean, scale = std  (CNN-MLP; zero-mean, unit-variance targets);
- ``min_max``: offset = (max + min) / 2, scale = (max - min) / 2  (diffusion: maps the data
  range to [-1, 1], which is what ``clip_sample`` in the schedulers assumes).

A dimension that never varied in the demonstrations (scale below ``MIN_SCALE``) gets scale 1,
so it is shifted but not blown up when the robot later sees a value the demos never had.

Example::

    norm = Normalizer.from_stats("mean_std", state_stats, action_stats)
    a_n = norm.action.normalize(actions)        # [B, H, 7]
    a = norm.action.unnormalize(a_n)            # physical units again
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from theia_ros.errors import TheiaError

NormMode = Literal["mean_std", "min_max"]
NORM_MODES: tuple[str, ...] = ("mean_std", "min_max")
MIN_SCALE = 1e-4
STAT_KEYS: tuple[str, ...] = ("mean", "std", "min", "max")


def compute_stats(x: np.ndarray) -> dict[str, list[float]]:
    """``[N, D]`` samples -> ``{"mean", "std", "min", "max"}``, each a list of D floats."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise TheiaError(f"statistics need a non-empty [N, D] array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise TheiaError("statistics input contains NaN or inf values")
    return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(),
            "min": x.min(0).tolist(), "max": x.max(0).tolist()}


def _check_stats(name: str, stats: dict, dim: int | None) -> int:
    missing = [k for k in STAT_KEYS if k not in stats]
    if missing:
        raise TheiaError(f"normalisation stats for {name!r} miss {missing}; "
                         f"expected keys {list(STAT_KEYS)}")
    lengths = {len(stats[k]) for k in STAT_KEYS}
    if len(lengths) != 1:
        raise TheiaError(f"normalisation stats for {name!r} have mixed lengths {lengths}")
    n = lengths.pop()
    if dim is not None and n != dim:
        raise TheiaError(f"normalisation stats for {name!r} have {n} dims, expected {dim}")
    return n


class FeatureNormalizer(nn.Module):
    """Affine per-dimension map for one vector field (``offset``/``scale`` buffers ``[D]``)."""

    def __init__(self, mode: NormMode, stats: dict[str, list[float]], name: str = "field"):
        super().__init__()
        if mode not in NORM_MODES:
            raise TheiaError(f"normalisation mode {mode!r} unknown; choose one of {NORM_MODES}")
        self.dim = _check_stats(name, stats, None)
        self.mode = mode
        self.name = name
        self.stats = {k: [float(v) for v in stats[k]] for k in STAT_KEYS}
        t = {k: torch.tensor(self.stats[k], dtype=torch.float32) for k in STAT_KEYS}
        if mode == "mean_std":
            offset, scale = t["mean"], t["std"]
        else:
            offset, scale = (t["max"] + t["min"]) / 2, (t["max"] - t["min"]) / 2
        scale = torch.where(scale < MIN_SCALE, torch.ones_like(scale), scale)
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Physical ``[..., D]`` -> normalised ``[..., D]``."""
        return (x - self.offset) / self.scale

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``[..., D]`` -> physical ``[..., D]``."""
        return x * self.scale + self.offset

    def to_dict(self) -> dict:
        """JSON-ready: mode, raw stats and the effective offset/scale."""
        return {"mode": self.mode, **self.stats,
                "offset": self.offset.tolist(), "scale": self.scale.tolist()}


class Normalizer(nn.Module):
    """State and action normalisers of one policy (``.state``, ``.action``)."""

    def __init__(self, mode: NormMode, state_stats: dict, action_stats: dict):
        super().__init__()
        self.mode = mode
        self.state = FeatureNormalizer(mode, state_stats, "observation.state")
        self.action = FeatureNormalizer(mode, action_stats, "action")

    @classmethod
    def from_stats(cls, mode: NormMode, state_stats: dict, action_stats: dict) -> Normalizer:
        return cls(mode, state_stats, action_stats)

    @classmethod
    def from_data(cls, mode: NormMode, states: np.ndarray, actions: np.ndarray) -> Normalizer:
        """Stats from ``[N, S]`` states and ``[N, A]`` actions (one row per frame)."""
        return cls(mode, compute_stats(states), compute_stats(actions))

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> Normalizer:
        """No-op normaliser (mean 0, std 1): for tests and heads trained on normalised data."""
        def unit(d: int) -> dict:
            return {"mean": [0.0] * d, "std": [1.0] * d, "min": [-1.0] * d, "max": [1.0] * d}
        return cls("mean_std", unit(state_dim), unit(action_dim))

    def to_dict(self) -> dict:
        return {"mode": self.mode, "state": self.state.to_dict(),
                "action": self.action.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        for key in ("mode", "state", "action"):
            if key not in d:
                raise TheiaError(f"policy.json: normalization misses {key!r}")
        return cls(d["mode"], d["state"], d["action"])
