"""Demonstrations in memory, and the (observation, state, action chunk) samples BC trains on.

Episodes are read once from a ``theia_ros.dataset.EpisodeDataset`` into flat arrays
(``Demos``); a sample at frame ``i`` is the observation (every policy camera) and state at
frames ``i - T + 1 .. i`` (``T = n_obs_steps``) plus the actions ``i .. i+H-1``. At an
episode's start the observation history is padded by repeating the episode's first frame
(as LeRobot does; ``obs_pad`` marks those steps); near its end the chunk is padded by
repeating the last action (a "hold" target), and ``mask`` ``[H]`` marks the real steps.

Example::

    demos = load_demos(EpisodeDataset("ds"), [0, 1, 2], cameras=["front", "wrist"])
    data = ChunkDataset(demos, horizon=10, n_obs_steps=2)
    batch = data.batch(np.arange(16))   # obs {camera: [16, 2, H, W, 3]}, state [16, 2, S]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from theia_ros.errors import TheiaError
from theia_ros.types import ActionKind

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."


class EpisodeSource(Protocol):
    """What BC needs from ``theia_ros.dataset.EpisodeDataset``."""

    num_episodes: int
    fps: int
    cameras: list[str]  # in the dataset's order; the first is the default camera
    action_kind: ActionKind | None  # None: the dataset does not say (e.g. LeRobot's own)
    robot_type: str | None  # LeRobot's free-text robot name (None: not recorded)

    def episode(self, index: int) -> dict[str, np.ndarray]: ...


@dataclass
class Demos:
    """Flat per-frame arrays of a set of episodes (N frames in total).

    Attributes:
        states: ``[N, S]`` float32 joint states.
        actions: ``[N, A]`` float32 commanded actions.
        episode_end: ``[N]`` int64, exclusive flat index where each frame's episode ends.
        images: {camera: ``[N, H, W, 3]`` uint8 frames}, or None when not kept.
        episodes: dataset episode indices, in order.
        lengths: frames per episode.
        fingerprints: {camera: content hash per episode (that camera's images, states,
            actions)}; keys the feature cache.
        cameras: camera names, in the policy's order.
    """

    states: np.ndarray
    actions: np.ndarray
    episode_end: np.ndarray
    images: dict[str, np.ndarray] | None
    episodes: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    fingerprints: dict[str, list[str]] = field(default_factory=dict)
    cameras: list[str] = field(default_factory=lambda: ["front"])

    @property
    def num_frames(self) -> int:
        return int(self.states.shape[0])

    @property
    def episode_start(self) -> np.ndarray:
        """``[N]`` int64, flat index where each frame's episode starts."""
        ends = np.cumsum(self.lengths)
        return np.repeat(ends - np.asarray(self.lengths), self.lengths).astype(np.int64)


def _fingerprint(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def read_episode(source: EpisodeSource, index: int, camera: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episode ``index`` -> (images ``[T, H, W, 3]`` u8, states ``[T, S]``, actions ``[T, A]``)."""
    return episode_arrays(source.episode(index), index, camera)


def episode_arrays(ep: dict, index: int, camera: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_episode` on an episode already read (one read serves every camera)."""
    key = IMAGE_PREFIX + camera
    for k in (key, STATE_KEY, ACTION_KEY):
        if k not in ep:
            cams = sorted(c[len(IMAGE_PREFIX):] for c in ep if c.startswith(IMAGE_PREFIX))
            hint = f" (cameras: {cams})" if k == key else ""
            raise TheiaError(f"dataset episode {index}: no field {k!r}{hint}")
    images = np.asarray(ep[key])
    states = np.asarray(ep[STATE_KEY], dtype=np.float32)
    actions = np.asarray(ep[ACTION_KEY], dtype=np.float32)
    t = len(states)
    if t == 0:
        raise TheiaError(f"dataset episode {index}: has no frames")
    if images.shape[0] != t or actions.shape[0] != t:
        raise TheiaError(f"dataset episode {index}: {images.shape[0]} images, {t} states, "
                         f"{actions.shape[0]} actions (expected equal counts)")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise TheiaError(f"dataset episode {index}: images must be uint8 [T, H, W, 3], got "
                         f"{images.dtype} {images.shape}")
    if not (np.all(np.isfinite(states)) and np.all(np.isfinite(actions))):
        raise TheiaError(f"dataset episode {index}: NaN or inf in state or action")
    return images, states, actions


def load_demos(source: EpisodeSource, episodes: list[int], cameras: str | list[str],
               keep_images: bool = True) -> Demos:
    """Read ``episodes`` into one ``Demos`` (images dropped unless ``keep_images``)."""
    cameras = [cameras] if isinstance(cameras, str) else list(cameras)
    if not cameras or len(set(cameras)) != len(cameras):
        raise TheiaError(f"cameras must be distinct names, got {cameras}")
    imgs: dict[str, list[np.ndarray]] = {c: [] for c in cameras}
    prints: dict[str, list[str]] = {c: [] for c in cameras}
    states, actions, ends, lengths = [], [], [], []
    total = 0
    for i in episodes:
        ep = source.episode(i)  # decoded once, whatever the number of cameras
        for cam in cameras:
            im, st, ac = episode_arrays(ep, i, cam)
            prints[cam].append(_fingerprint([im, st, ac]))
            if keep_images:
                imgs[cam].append(im)
        total += len(st)
        ends.append(np.full(len(st), total, dtype=np.int64))
        lengths.append(len(st))
        states.append(st)
        actions.append(ac)
    if not episodes:
        raise TheiaError("no episodes to load")
    shapes = {s.shape[1] for s in states}, {a.shape[1] for a in actions}
    if len(shapes[0]) != 1 or len(shapes[1]) != 1:
        raise TheiaError(f"episodes disagree on state/action sizes: {shapes}")
    images = None
    if keep_images:
        images = {}
        for cam in cameras:
            sizes = {im.shape[1:] for im in imgs[cam]}
            if len(sizes) != 1:
                raise TheiaError(f"camera {cam!r}: episodes have different image sizes {sizes}")
            images[cam] = np.concatenate(imgs[cam])
    return Demos(
        states=np.concatenate(states), actions=np.concatenate(actions),
        episode_end=np.concatenate(ends), images=images,
        episodes=list(episodes), lengths=lengths, fingerprints=prints, cameras=cameras,
    )


def split_episodes(num_episodes: int, val_fraction: float, seed: int
                   ) -> tuple[list[int], list[int]]:
    """Held-out episodes for validation: ``round(n * val_fraction)``, at least 1 when n >= 2."""
    if num_episodes < 1:
        raise TheiaError("dataset has no episodes")
    if not 0.0 <= val_fraction < 1.0:
        raise TheiaError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0
    if num_episodes >= 2 and val_fraction > 0:
        n_val = min(num_episodes - 1, max(1, round(num_episodes * val_fraction)))
    order = np.random.default_rng(seed).permutation(num_episodes)
    val = sorted(int(i) for i in order[:n_val])
    train = sorted(int(i) for i in order[n_val:])
    return train, val


def history_indices(episode_start: np.ndarray, index: np.ndarray, n_obs_steps: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Flat frame indices ``[B]`` -> observation rows ``[B, T]`` (oldest first; before the
    episode's start the first frame repeats) and ``[B, T]`` True where padded."""
    steps = index[:, None] - np.arange(n_obs_steps - 1, -1, -1)[None]
    first = episode_start[index][:, None]
    return np.maximum(steps, first), steps < first


def chunk_indices(episode_end: np.ndarray, index: np.ndarray, horizon: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Flat frame indices ``[B]`` -> action rows ``[B, H]`` (last one repeated) and mask."""
    steps = index[:, None] + np.arange(horizon)[None]
    last = episode_end[index][:, None] - 1
    return np.minimum(steps, last), steps <= last


class ChunkDataset(torch.utils.data.Dataset):
    """Samples for BC: ``obs`` (cached features ``[T * K, 196, C]``, time-major, or
    {camera: images ``[T, H, W, 3]`` u8}), ``state`` ``[T, S]``, ``action`` ``[H, A]``,
    ``mask`` ``[H]`` (bool), ``obs_pad`` ``[T]`` (bool, history steps before the episode).

    Steps past an episode's end repeat its last action. That is "stay put" for absolute
    poses; for end-effector deltas (``deltas=True``) it would teach the policy to keep moving
    at the end, so there the padded motion is zero and only the gripper command is repeated.
    """

    def __init__(self, demos: Demos, horizon: int, features: np.ndarray | None = None,
                 deltas: bool = False, n_obs_steps: int = 1):
        """``features``: ``[N, K, 196, C]`` cached per camera (``[N, 196, C]`` for one)."""
        if features is None and demos.images is None:
            raise TheiaError("ChunkDataset needs cached features or images")
        if features is not None and len(features) != demos.num_frames:
            raise TheiaError(f"{len(features)} cached features for {demos.num_frames} frames")
        if n_obs_steps < 1:
            raise TheiaError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        if features is not None and features.ndim == 3:
            features = features[:, None]
        self.demos = demos
        self.horizon = horizon
        self.features = features
        self.deltas = deltas
        self.n_obs_steps = n_obs_steps
        self._episode_start = demos.episode_start

    def __len__(self) -> int:
        return self.demos.num_frames

    def batch(self, index: np.ndarray) -> dict[str, Any]:
        """Stacked samples for flat frame indices ``[B]`` (numpy arrays)."""
        index = np.asarray(index, dtype=np.int64)
        rows, mask = chunk_indices(self.demos.episode_end, index, self.horizon)
        hist, pad = history_indices(self._episode_start, index, self.n_obs_steps)
        if self.features is not None:
            obs: Any = self.features[hist]  # [B, T, K, 196, C]
            obs = obs.reshape(len(index), -1, *obs.shape[-2:])
        else:
            obs = {cam: im[hist] for cam, im in self.demos.images.items()}
        action = self.demos.actions[rows]  # fancy indexing: a copy
        if self.deltas:
            action[..., :6] = np.where(mask[..., None], action[..., :6], 0.0)
        return {"obs": obs, "state": self.demos.states[hist], "action": action, "mask": mask,
                "obs_pad": pad}

    def __getitem__(self, i: int) -> dict[str, Any]:
        batch = self.batch(np.array([i]))
        return {k: ({c: a[0] for c, a in v.items()} if isinstance(v, dict) else v[0])
                for k, v in batch.items()}
