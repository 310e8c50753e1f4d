"""A policy folder (``policy.json`` + ``model.safetensors``) behind the bundle runtime's
interface, so ``theia eval`` runs a freshly trained policy without exporting it first.

It answers what the control core and ``evaluate.rollout`` ask of ``PolicyRuntime``: ``meta``
(cameras, n_obs_steps, image size, action kind, rate), ``encode``, ``act``, the
``Observation -> [H, 7]`` call and ``make_history``; the numbers come from torch eagerly.

Example::

    rt = PolicyFolderRuntime("runs/door")
    chunk = rt(observation)   # [H, 7] physical units
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from policies.policy import load_policy
from theia_ros.control.history import ObservationHistory, StackedObservation
from theia_ros.errors import TheiaError
from theia_ros.types import Observation


@dataclass(frozen=True)
class PolicyMeta:
    """The ``BundleMeta`` fields a sim evaluation reads."""

    root: Path
    policy_type: str
    action_kind: str
    state_dim: int
    horizon: int
    action_dim: int
    control_rate_hz: float
    cameras: tuple[str, ...]
    n_obs_steps: int
    image_hw: tuple[int, int]

    @property
    def camera(self) -> str:
        return self.cameras[0]


class PolicyFolderRuntime:
    """``policies.policy.Policy`` on the CPU (or ``device``) with the runtime's interface."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", seed: int | None = 0,
                 threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.policy = load_policy(path, device=device)
        cfg = self.policy.config
        size = self.policy.encoder.config.img_size
        self.meta = PolicyMeta(Path(path), cfg.type, cfg.action_kind, cfg.state_dim,
                               cfg.horizon, cfg.action_dim, float(cfg.fps), cfg.cameras,
                               cfg.n_obs_steps, (size, size))
        self.backend = f"torch ({device}, policy folder)"
        self._gen = torch.Generator(device=device)
        if seed is not None:
            self._gen.manual_seed(seed)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` -> tokens ``[1, 196, C]``."""
        return self.policy.encoder.encode(image).float().cpu().numpy()

    @torch.inference_mode()
    def act(self, features: np.ndarray, states: np.ndarray) -> np.ndarray:
        """Tokens ``[V, 196, C]`` + states ``[T, S]`` (or ``[S]``) -> ``[H, 7]`` physical."""
        x = torch.from_numpy(np.asarray(features, np.float32)).reshape(
            1, self.meta.n_obs_steps * len(self.meta.cameras), *np.shape(features)[-2:])
        s = torch.from_numpy(np.asarray(states, np.float32)).reshape(
            1, self.meta.n_obs_steps, self.meta.state_dim)
        return self.policy.predict_from_features(x, s, self._gen)[0].cpu().numpy()

    def __call__(self, obs: Observation) -> np.ndarray:
        if isinstance(obs, StackedObservation):
            return self.act(obs.features, obs.states)
        if self.meta.n_obs_steps > 1:
            raise TheiaError("this policy conditions on several observation steps: run it "
                             "with an ObservationHistory in the control loop")
        missing = [c for c in self.meta.cameras if c not in obs.images]
        if missing:
            raise TheiaError(f"observation has no image from camera(s) {missing}")
        feats = np.concatenate([self.encode(obs.images[c]) for c in self.meta.cameras])
        return self.act(feats, obs.state_vector())

    def make_history(self, period_s: float) -> ObservationHistory | None:
        if self.meta.n_obs_steps == 1:
            return None
        return ObservationHistory(self.encode, self.meta.cameras, self.meta.n_obs_steps,
                                  period_s)

    def close(self) -> None:
        """Nothing to release (the runtime's interface)."""
