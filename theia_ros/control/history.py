"""Observation history for policies that condition on the last T ticks (``n_obs_steps``).

Every tick that passes the freshness check pushes its observation: each camera's new frame
is encoded once (a repeated frame is found from its stamp before anything is encoded) and
the per-camera features and the joint state are kept for the last T ticks. The policy then gets a
:class:`StackedObservation` holding the features ``[T * K, 196, C]`` (time-major: oldest tick
first, cameras in the policy's order) and the states ``[T, S]``, so a planning thread works on
a snapshot, never on a history the next tick is changing.

The history must be T consecutive control ticks, as in training:

- right after ``reset()`` (the loop's ``start()``: a new episode) the missing older steps are
  the first frame repeated, exactly how the training sampler pads an episode's start;
- a tick more than 1.5 periods after the previous entry (a held or missed tick in between)
  leaves a gap: the history restarts and the loop holds until T new ticks are in;
- a camera frame with the same stamp as in the previous tick (no new frame arrived) would
  show one moment twice: the loop holds and the history restarts.

Example::

    history = ObservationHistory(runtime.encode, ("front", "wrist"), n_obs_steps=2,
                                 period_s=0.2)
    loop = ControlLoop(adapter, runtime, safety, config, history=history)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from theia_ros.control.observation import HoldReason
from theia_ros.errors import TheiaError
from theia_ros.types import Observation

Encoder = Callable[[np.ndarray], np.ndarray]  # uint8 [H, W, 3] -> tokens [(1,) N, C]
GAP_PERIODS = 1.5  # entries further apart than this many periods are not consecutive


@dataclass(frozen=True)
class StackedObservation(Observation):
    """The current observation plus the encoded history the policy conditions on."""

    features: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    states: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))


@dataclass(frozen=True)
class _Entry:
    time_s: float
    features: np.ndarray  # [K, N, C]
    state: np.ndarray  # [S]


class ObservationHistory:
    """The last ``n_obs_steps`` ticks' features and states (see the module docstring).

    Args:
        encode: one camera frame -> its tokens (``PolicyRuntime.encode``).
        cameras: camera names, in the policy's order.
        n_obs_steps: T, ticks per history.
        period_s: the control period (consecutive ticks are this far apart).
    """

    def __init__(self, encode: Encoder, cameras: Sequence[str], n_obs_steps: int,
                 period_s: float) -> None:
        if n_obs_steps < 1 or not cameras:
            raise TheiaError(f"observation history needs n_obs_steps >= 1 and a camera, got "
                             f"{n_obs_steps} and {list(cameras)}")
        self.encode = encode
        self.cameras = tuple(cameras)
        self.n_obs_steps = int(n_obs_steps)
        self.period_s = float(period_s)
        self.encoded_frames = 0  # frames that went through the encoder (each once)
        self._entries: deque[_Entry] = deque(maxlen=self.n_obs_steps)
        self._last: dict[str, float] = {}  # camera -> stamp of its last encoded frame
        self._episode_start = True

    def reset(self) -> None:
        """A new episode: forget everything; the next tick pads the history with itself."""
        self._entries.clear()
        self._last.clear()
        self._episode_start = True

    def _restart(self) -> None:
        self._entries.clear()
        self._episode_start = False

    def push(self, obs: Observation, now_s: float
             ) -> tuple[StackedObservation | None, HoldReason | None]:
        """Add this tick's ``obs``; -> (the stacked observation, None) or (None, hold reason)."""
        stamps = []
        for cam in self.cameras:
            if cam not in obs.images:
                self._restart()
                return None, HoldReason.MISSING_IMAGE
            stamps.append(float(obs.stamps_s.get(cam, obs.stamp_s)))
        if any(self._last.get(cam) == stamp for cam, stamp in zip(self.cameras, stamps)):
            self._restart()  # a frame shown twice: checked before any encoding is spent
            return None, HoldReason.STALE_HISTORY
        feats = []
        for cam, stamp in zip(self.cameras, stamps):
            tokens = np.asarray(self.encode(obs.images[cam]), np.float32)
            tokens = tokens.reshape(tokens.shape[-2:])
            self._last[cam] = stamp
            self.encoded_frames += 1
            feats.append(tokens)
        if self._entries and now_s - self._entries[-1].time_s > GAP_PERIODS * self.period_s:
            self._restart()
        self._entries.append(_Entry(float(now_s), np.stack(feats), obs.state_vector()))
        entries = list(self._entries)
        if len(entries) < self.n_obs_steps:
            if not self._episode_start:
                return None, HoldReason.HISTORY_GAP
            entries = [entries[0]] * (self.n_obs_steps - len(entries)) + entries
        else:
            self._episode_start = False
        features = np.concatenate([e.features for e in entries])  # [T * K, N, C]
        states = np.stack([e.state for e in entries])  # [T, S]
        return stacked(obs, features, states), None


def stacked(obs: Observation, features: np.ndarray, states: np.ndarray) -> StackedObservation:
    """``obs`` with a ready history attached (tests, offline replays)."""
    if isinstance(obs, StackedObservation):
        return replace(obs, features=features, states=states)
    base = {f: getattr(obs, f) for f in Observation.__dataclass_fields__}
    return StackedObservation(**base, features=features, states=states)
