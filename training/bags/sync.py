"""Resample asynchronous sensor streams onto the control-rate grid (pure numpy, no ROS).

For each grid tick ``t_k = start + k / fps`` every sensor stream contributes its message
nearest in time. A tick is skipped (and counted) when

- ``skew``: the chosen messages are further apart than ``max_skew_s`` (max - min stamp), or
- ``gap``: some chosen message is more than ``max(1 / fps, max_skew_s)`` from the tick
  (that stream had a dropout).

Commands are zero-order held: the latest command at or before the tick, unless older than
a timeout. All times here are float seconds on one clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SyncPlan:
    """Which message of each stream makes each kept frame. ``picks[name]``: ``[N]`` indices."""

    times_s: np.ndarray  # [N] grid times of the kept frames
    picks: dict[str, np.ndarray] = field(default_factory=dict)
    skipped_skew: int = 0
    skipped_gap: int = 0


def nearest_index(stamps_s: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Index of the stamp nearest to each time. ``stamps_s`` sorted ``[M]`` -> ``[N]``."""
    right = np.clip(np.searchsorted(stamps_s, times_s), 0, len(stamps_s) - 1)
    left = np.clip(right - 1, 0, len(stamps_s) - 1)
    take_left = np.abs(times_s - stamps_s[left]) <= np.abs(stamps_s[right] - times_s)
    return np.where(take_left, left, right)


def held_index(stamps_s: np.ndarray, times_s: np.ndarray, timeout_s: float) -> np.ndarray:
    """Latest stamp at or before each time, or -1 if none or older than ``timeout_s``."""
    if len(stamps_s) == 0:
        return np.full(len(times_s), -1)
    idx = np.searchsorted(stamps_s, times_s, side="right") - 1
    age = times_s - stamps_s[np.clip(idx, 0, None)]
    return np.where((idx >= 0) & (age <= timeout_s), idx, -1)


def coverage(streams: dict[str, np.ndarray]) -> tuple[float, float]:
    """The time range every stream covers: (latest first stamp, earliest last stamp)."""
    return (max(float(s[0]) for s in streams.values()),
            min(float(s[-1]) for s in streams.values()))


def split_on_gaps(stamps_s: np.ndarray, gap_s: float) -> list[tuple[float, float]]:
    """Spans of a stream separated by silences longer than ``gap_s``."""
    if len(stamps_s) == 0:
        return []
    cuts = np.flatnonzero(np.diff(stamps_s) > gap_s)
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(stamps_s) - 1]])
    return [(float(stamps_s[a]), float(stamps_s[b])) for a, b in zip(starts, ends)]


def plan_frames(streams: dict[str, np.ndarray], start_s: float, end_s: float, fps: int,
                max_skew_s: float) -> SyncPlan:
    """Grid ticks in ``[start_s, end_s]`` and the nearest message of each stream per tick."""
    if end_s < start_s:
        return SyncPlan(times_s=np.zeros(0))
    n = int(np.floor((end_s - start_s) * fps + 1e-9)) + 1
    times = start_s + np.arange(n) / fps
    picks = {name: nearest_index(stamps, times) for name, stamps in streams.items()}
    chosen = np.stack([streams[name][picks[name]] for name in streams])  # [S, N]
    skew_bad = (chosen.max(axis=0) - chosen.min(axis=0)) > max_skew_s
    gap_bad = np.abs(chosen - times[None]).max(axis=0) > max(1.0 / fps, max_skew_s)
    keep = ~(skew_bad | gap_bad)
    return SyncPlan(
        times_s=times[keep],
        picks={name: p[keep] for name, p in picks.items()},
        skipped_skew=int(np.sum(skew_bad & ~gap_bad)),
        skipped_gap=int(np.sum(gap_bad)),
    )


def integrate_held(stamps_s: np.ndarray, values: np.ndarray, times_s: np.ndarray,
                   step_s: float, timeout_s: float, substeps: int = 10) -> np.ndarray:
    """``∫ v dt`` over ``[t, t + step_s)`` for each tick, ``v`` zero-order held (0 when stale).

    ``values``: ``[M, D]`` velocities at ``stamps_s``; returns ``[N, D]`` displacements.
    This is how a Twist velocity stream becomes per-step end-effector deltas.
    """
    offsets = (np.arange(substeps) + 0.5) * step_s / substeps
    sample_t = (times_s[:, None] + offsets[None]).reshape(-1)
    idx = held_index(stamps_s, sample_t, timeout_s)
    v = np.where(idx[:, None] >= 0, values[np.clip(idx, 0, None)], 0.0)
    return v.reshape(len(times_s), substeps, -1).sum(axis=1) * (step_s / substeps)
