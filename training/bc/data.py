"""Demonstrations in memory, and the (observation, state, action chunk) samples BC trains on.

Episodes are read once from a ``theia_ros.dataset.EpisodeDataset`` into flat arrays
(``Demos``); a sample at frame ``i`` is the observation and state at ``i`` plus the actions
``i .. i+H-1``. Near the end of an episode the chunk is padded by repeating the episode's last
action (a "hold" target), and ``mask`` ``[H]`` marks the real steps.

Example::

    train, val = load_split(EpisodeDataset("ds"), camera="front", val_fraction=0.1, seed=0)
    data = ChunkDataset(train, horizon=10)       # torch Dataset
    batch = data.batch(np.arange(16))            # dict of stacked arrays
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
        images: ``[N, H, W, 3]`` uint8 camera frames, or None when not kept.
        episodes: dataset episode indices, in order.
        lengths: frames per episode.
        fingerprints: content hash per episode (images, states, actions), keys the cache.
    """

    states: np.ndarray
    actions: np.ndarray
    episode_end: np.ndarray
    images: np.ndarray | None
    episodes: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.states.shape[0])


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
    ep = source.episode(index)
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


def load_demos(source: EpisodeSource, episodes: list[int], camera: str,
               keep_images: bool = True) -> Demos:
    """Read ``episodes`` into one ``Demos`` (images dropped unless ``keep_images``)."""
    imgs, states, actions, ends, lengths, prints = [], [], [], [], [], []
    total = 0
    for i in episodes:
        im, st, ac = read_episode(source, i, camera)
        prints.append(_fingerprint([im, st, ac]))
        total += len(st)
        ends.append(np.full(len(st), total, dtype=np.int64))
        lengths.append(len(st))
        states.append(st)
        actions.append(ac)
        if keep_images:
            imgs.append(im)
    if not episodes:
        raise TheiaError("no episodes to load")
    shapes = {s.shape[1] for s in states}, {a.shape[1] for a in actions}
    if len(shapes[0]) != 1 or len(shapes[1]) != 1:
        raise TheiaError(f"episodes disagree on state/action sizes: {shapes}")
    return Demos(
        states=np.concatenate(states), actions=np.concatenate(actions),
        episode_end=np.concatenate(ends),
        images=np.concatenate(imgs) if keep_images else None,
        episodes=list(episodes), lengths=lengths, fingerprints=prints,
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


def chunk_indices(episode_end: np.ndarray, index: np.ndarray, horizon: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Flat frame indices ``[B]`` -> action rows ``[B, H]`` (last one repeated) and mask."""
    steps = index[:, None] + np.arange(horizon)[None]
    last = episode_end[index][:, None] - 1
    return np.minimum(steps, last), steps <= last


class ChunkDataset(torch.utils.data.Dataset):
    """Samples for BC: ``obs`` (cached features ``[196, C]`` or image ``[H, W, 3]`` u8),
    ``state`` ``[S]``, ``action`` ``[H, A]``, ``mask`` ``[H]`` (bool).

    Steps past an episode's end repeat its last action. That is "stay put" for absolute
    poses; for end-effector deltas (``deltas=True``) it would teach the policy to keep moving
    at the end, so there the padded motion is zero and only the gripper command is repeated.
    """

    def __init__(self, demos: Demos, horizon: int, features: np.ndarray | None = None,
                 deltas: bool = False):
        if features is None and demos.images is None:
            raise TheiaError("ChunkDataset needs cached features or images")
        if features is not None and len(features) != demos.num_frames:
            raise TheiaError(f"{len(features)} cached features for {demos.num_frames} frames")
        self.demos = demos
        self.horizon = horizon
        self.features = features
        self.deltas = deltas

    def __len__(self) -> int:
        return self.demos.num_frames

    def batch(self, index: np.ndarray) -> dict[str, Any]:
        """Stacked samples for flat frame indices ``[B]`` (numpy arrays)."""
        index = np.asarray(index, dtype=np.int64)
        rows, mask = chunk_indices(self.demos.episode_end, index, self.horizon)
        obs = self.features[index] if self.features is not None else self.demos.images[index]
        action = self.demos.actions[rows]  # fancy indexing: a copy
        if self.deltas:
            action[..., :6] = np.where(mask[..., None], action[..., :6], 0.0)
        return {"obs": obs, "state": self.demos.states[index], "action": action, "mask": mask}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[0] for k, v in self.batch(np.array([i])).items()}
