"""One policy runtime for every backend: input checks, normalisation, DDIM loop, units.

A backend only has to run graphs (``GraphSession.run``); everything around them lives here,
once, in numpy, so onnxruntime, TensorRT and torch give the same numbers by construction.

Example::

    rt = theia_ros.runtime.load("bundles/door", backend="onnxruntime")
    tokens = rt.encode(image_u8)            # [1, 196, C] float32
    chunk = rt.act(tokens, state)           # [H, 7] float32, physical units
    chunk = rt.predict(image_u8, state)     # the same in one call

Several cameras / an observation history (``meta.cameras``, ``meta.n_obs_steps``): encode
each frame once (``encode``), stack the views time-major (``[V, 196, C]``: oldest step first,
cameras in ``meta.cameras`` order) with the states ``[T, S]``, then ``act``. As the control
core's policy, the runtime encodes every camera of the observation itself when T = 1; with
T > 1 it needs the ``StackedObservation`` that ``control.history`` assembles (features of the
last T ticks, each frame encoded once).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from theia_ros.control.history import ObservationHistory, StackedObservation
from theia_ros.errors import TheiaError
from theia_ros.runtime.bundle import BundleMeta
from theia_ros.runtime.ddim import DDIMSampler
from theia_ros.types import Observation


class GraphSession(Protocol):
    """One compiled graph: named numpy inputs -> its single output."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


class PolicyRuntime:
    """A loaded bundle on one backend (see ``theia_ros.runtime.load``).

    Args:
        meta: the parsed ``bundle.yaml``.
        sessions: graph name -> session (``encoder`` plus ``head`` or ``condition`` and
            ``denoiser``; ``fused`` optional).
        backend: the backend's name, for reports.
        seed: seed of the diffusion policy's initial-noise generator (None: fresh entropy).
    """

    def __init__(self, meta: BundleMeta, sessions: dict[str, GraphSession], backend: str,
                 seed: int | None = None):
        self.meta = meta
        self.sessions = sessions
        self.backend = backend
        self._rng = np.random.default_rng(seed)
        self._sampler = (DDIMSampler(meta.scheduler, meta.num_inference_steps)
                         if meta.policy_type == "diffusion" else None)

    # --- input checks -----------------------------------------------------------------------
    def _image(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` or ``[1, H, W, 3]`` at the camera size -> ``[1, H, W, 3]``."""
        h, w = self.meta.image_hw
        if not isinstance(image, np.ndarray):
            raise TheiaError(f"image must be a numpy uint8 array [{h}, {w}, 3], got "
                             f"{type(image).__name__}")
        if image.dtype != np.uint8:
            raise TheiaError(f"image must be uint8 RGB [{h}, {w}, 3], got dtype {image.dtype}")
        x = image[None] if image.ndim == 3 else image
        if x.shape != (1, h, w, 3):
            raise TheiaError(f"image must be [{h}, {w}, 3] uint8 RGB (the camera size this "
                             f"bundle was exported for, camera {self.meta.camera!r}), got "
                             f"{tuple(image.shape)}; resize at the source or re-export with "
                             "'theia export --image-size HxW'")
        return np.ascontiguousarray(x)

    def _features(self, features: np.ndarray) -> np.ndarray:
        """Tokens of every view ``[V, 196, C]`` (a leading 1 allowed; ``[196, C]`` when
        V = 1) -> the graphs' ``tokens`` input."""
        n, c, v = self.meta.num_tokens, self.meta.embed_dim, self.meta.num_views
        x = np.asarray(features)
        if x.ndim >= 3 and x.shape[0] == 1 and x.size == v * n * c:
            x = x[0]
        if x.ndim == 2:
            x = x[None]
        if x.shape != (v, n, c):
            want = f"[{v}, {n}, {c}] (V = cameras x steps, time-major)" if v > 1 \
                else f"[1, {n}, {c}] (from encode())"
            raise TheiaError(f"features must be {want}, got {tuple(np.shape(features))}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TheiaError(f"features must be float32, got dtype {x.dtype}")
        return np.ascontiguousarray(x.reshape(self.meta.tokens_shape), dtype=np.float32)

    def _state(self, state: np.ndarray) -> np.ndarray:
        """Physical joint state ``[S]`` (``[T, S]`` with a history) -> normalised graph input."""
        s = np.asarray(state)
        dim, steps = self.meta.state_dim, self.meta.n_obs_steps
        if s.ndim >= 2 and s.shape[0] == 1 and s.size == steps * dim:
            s = s[0]
        want = (steps, dim) if steps > 1 else (dim,)
        if s.shape != want:
            raise TheiaError(f"state must be {list(want)} (joint positions in rad, then gripper "
                             f"open fraction{', oldest step first' if steps > 1 else ''}), got "
                             f"shape {tuple(np.shape(state))}")
        if not np.issubdtype(s.dtype, np.number) or not np.all(np.isfinite(s)):
            raise TheiaError(f"state must be finite numbers, got {s!r}")
        return self.meta.state_norm.normalize(s.astype(np.float32)).reshape(
            self.meta.state_shape)

    # --- inference --------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[H, W, 3]`` -> spatial tokens ``[1, 196, C]`` float32."""
        return self.sessions["encoder"].run({"image": self._image(image)})

    def encode_cameras(self, images: Mapping[str, np.ndarray]) -> np.ndarray:
        """{camera: uint8 image} of one step -> tokens ``[K, 196, C]`` in ``meta.cameras``
        order (each camera through the same encoder)."""
        missing = [c for c in self.meta.cameras if c not in images]
        if missing:
            raise TheiaError(f"observation has no image from camera(s) {missing} (has "
                             f"{sorted(images)}; the bundle needs {list(self.meta.cameras)})")
        return np.concatenate([self.encode(images[c]) for c in self.meta.cameras])

    def act(self, features: np.ndarray, state: np.ndarray,
            noise: np.ndarray | None = None) -> np.ndarray:
        """Tokens ``[1, 196, C]`` + joint state ``[S]`` -> action chunk ``[H, 7]`` (physical).

        Several views: tokens ``[V, 196, C]`` (time-major) and, with T > 1 steps, states
        ``[T, S]`` (oldest first).

        ``noise`` ``[1, H, 7]``: the diffusion policy's initial sample (default: drawn from
        the runtime's generator); ignored by the CNN-MLP policy.
        """
        tokens, state_n = self._features(features), self._state(state)
        if self.meta.policy_type == "cnn_mlp":
            out = self.sessions["head"].run({"tokens": tokens, "state": state_n})
            return self._finish(out)
        cond = self.sessions["condition"].run({"tokens": tokens, "state": state_n})
        return self._finish(self._sample(cond, noise))

    def predict(self, image: np.ndarray, state: np.ndarray,
                noise: np.ndarray | None = None) -> np.ndarray:
        """uint8 image + joint state -> ``[H, 7]``; one graph call with the fused graph.
        One-camera, one-step bundles only (others: ``encode_cameras`` + ``act``)."""
        if self.meta.num_views != 1:
            raise TheiaError(f"predict() takes one image; this bundle looks through cameras "
                             f"{list(self.meta.cameras)} x {self.meta.n_obs_steps} step(s): "
                             "use encode_cameras() and act()")
        if "fused" not in self.sessions:
            return self.act(self.encode(image), state, noise)
        out = self.sessions["fused"].run({"image": self._image(image),
                                          "state": self._state(state)})
        if self.meta.policy_type == "diffusion":
            out = self._sample(out, noise)
        return self._finish(out)

    def __call__(self, obs: Observation) -> np.ndarray:
        """The control core's policy callable: ``Observation -> [H, 7]``."""
        if isinstance(obs, StackedObservation):  # features of the last T ticks, ready
            return self.act(obs.features, obs.states)
        if self.meta.n_obs_steps > 1:
            raise TheiaError(f"this bundle conditions on {self.meta.n_obs_steps} observation "
                             "steps: run it with an ObservationHistory in the control loop")
        if self.meta.num_views == 1:
            if self.meta.camera not in obs.images:
                raise TheiaError(f"observation has no image from camera {self.meta.camera!r} "
                                 f"(has {sorted(obs.images)})")
            return self.predict(obs.images[self.meta.camera], obs.state_vector())
        return self.act(self.encode_cameras(obs.images), obs.state_vector())

    def make_history(self, period_s: float) -> ObservationHistory | None:
        """The observation history the control loop must keep for this bundle (None when it
        conditions on the current step only)."""
        if self.meta.n_obs_steps == 1:
            return None
        return ObservationHistory(self.encode, self.meta.cameras, self.meta.n_obs_steps,
                                  period_s)

    # --- helpers ----------------------------------------------------------------------------
    def _sample(self, cond: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        """DDIM from ``noise`` ``[1, H, 7]`` with the denoiser graph -> normalised actions."""
        shape = (1, self.meta.horizon, self.meta.action_dim)
        if noise is None:
            x = self._rng.standard_normal(shape, dtype=np.float32)
        else:
            x = np.asarray(noise, dtype=np.float32).reshape(shape)
        denoiser = self.sessions["denoiser"]
        for t in self._sampler.timesteps:
            out = denoiser.run({"noisy": x, "timestep": np.array([t], dtype=np.float32),
                                "cond": cond})
            x = self._sampler.step(out, int(t), x)
        return x

    def _finish(self, actions_n: np.ndarray) -> np.ndarray:
        """Normalised ``[1, H, 7]`` -> physical ``[H, 7]`` float32 (non-finite values pass
        through unchanged: rejecting them is the safety filter's job)."""
        return self.meta.action_norm.unnormalize(np.asarray(actions_n, np.float32)[0])

    def close(self) -> None:
        """Release backend resources (GPU buffers, sessions)."""
        for s in self.sessions.values():
            closer = getattr(s, "close", None)
            if closer is not None:
                closer()
        self.sessions = {}

    def __enter__(self) -> PolicyRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
