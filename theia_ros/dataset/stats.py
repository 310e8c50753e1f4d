"""Feature statistics in LeRobot's ``stats.json`` shape, and their exact running merge.

Per feature: ``min``, ``max``, ``mean``, ``std`` (population), ``count``. Vectors ``[T, D]``
give ``[D]`` stats; scalars ``[T]`` give ``[1]``; images give per-channel ``[3, 1, 1]`` in
``[0, 1]`` (LeRobot's convention), estimated from a subsample of each episode's frames.
Merging per-episode stats with pooled variance is exact, so saving an episode never has to
re-read the earlier ones.
"""

from __future__ import annotations

import numpy as np

Stats = dict[str, dict[str, np.ndarray]]

MAX_IMAGE_SAMPLES = 64
MAX_IMAGE_SIDE = 96


def _vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """``[T, ...]`` -> stats over axis 0 (float64)."""
    x = values.astype(np.float64)
    return {"min": x.min(axis=0), "max": x.max(axis=0), "mean": x.mean(axis=0),
            "std": x.std(axis=0), "count": np.array([x.shape[0]], np.int64)}


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """``[T, H, W, 3]`` uint8 -> per-channel stats ``[3, 1, 1]`` in ``[0, 1]``.

    Estimated from at most ``MAX_IMAGE_SAMPLES`` frames on a pixel grid of at most
    ``MAX_IMAGE_SIDE`` per side (as LeRobot does, it downsamples): a few ms per episode.
    """
    stride = max(1, int(np.ceil(frames.shape[0] / MAX_IMAGE_SAMPLES)))
    step = max(1, int(np.ceil(max(frames.shape[1:3]) / MAX_IMAGE_SIDE)))
    sample = np.asarray(frames[::stride, ::step, ::step])
    x = sample.reshape(-1, 3).astype(np.float32) / 255.0
    per_channel = {"min": x.min(axis=0), "max": x.max(axis=0),
                   "mean": x.mean(axis=0, dtype=np.float64),
                   "std": x.std(axis=0, dtype=np.float64)}
    out = {k: np.asarray(v, np.float64).reshape(3, 1, 1) for k, v in per_channel.items()}
    out["count"] = np.array([sample.shape[0]], np.int64)
    return out


def episode_stats(arrays: dict[str, np.ndarray], image_keys: list[str]) -> Stats:
    """Stats of one episode's arrays (images ``[T, H, W, 3]``, vectors ``[T, D]``, scalars)."""
    stats: Stats = {}
    for key, values in arrays.items():
        if key in image_keys:
            stats[key] = image_stats(values)
        else:
            stats[key] = _vector_stats(values.reshape(values.shape[0], -1))
    return stats


def merge_stats(a: Stats | None, b: Stats) -> Stats:
    """Pool two stats dicts (same features) as if computed over the union of their samples."""
    if not a:
        return {k: dict(v) for k, v in b.items()}
    merged: Stats = {}
    for key in b:
        if key not in a:
            merged[key] = dict(b[key])
            continue
        sa, sb = a[key], b[key]
        na, nb = float(np.sum(sa["count"])), float(np.sum(sb["count"]))
        n = na + nb
        mean_a, mean_b = np.asarray(sa["mean"], np.float64), np.asarray(sb["mean"], np.float64)
        mean = (na * mean_a + nb * mean_b) / n
        var = (na * (np.asarray(sa["std"]) ** 2 + (mean_a - mean) ** 2)
               + nb * (np.asarray(sb["std"]) ** 2 + (mean_b - mean) ** 2)) / n
        merged[key] = {
            "min": np.minimum(sa["min"], sb["min"]),
            "max": np.maximum(sa["max"], sb["max"]),
            "mean": mean,
            "std": np.sqrt(np.maximum(var, 0.0)),
            "count": np.array([int(n)], np.int64),
        }
    return merged


def stats_from_json(raw: dict) -> Stats:
    """Parsed stats.json -> numpy arrays."""
    return {key: {stat: np.asarray(value) for stat, value in feats.items()}
            for key, feats in raw.items()}
