"""Per-channel teacher feature statistics, exact in float64 and mergeable across workers.

Each teacher's targets are normalised per channel, ``(x - mean) / std``, with mean and std
over all training images and spatial positions (paper Sec. 3.2). We keep, per teacher and
channel, the count, mean and sum of squared deviations ``M2`` in float64 and merge partial
results with Chan et al.'s pairwise formula, so a sum over 1.2 M images x 4096 positions
neither overflows nor cancels, and N workers (GPUs, nodes, separate runs) give the same
result as one pass up to float64 rounding.

File format (``stats.safetensors``): for each teacher id ``<id>/count`` (float64 [1]),
``<id>/mean`` and ``<id>/m2`` (float64 [C]); metadata ``format``, ``teachers`` (JSON list),
``images``, ``teacher_inputs`` (how the teachers' inputs were made; absent in files from
before it was recorded). Partial files from ``--rank k`` runs merge with
``theia distill stats --merge``.

:func:`load_stats` also takes the statistics the Theia authors publish (a folder of their
``.npy`` files, or ``published`` to download them; ``training.distill.published_stats``).

Example::

    stats = compute_stats(ImageShards("data/in1k_224"), teachers, batch_size=64)
    stats.save("stats.safetensors")
    mean, std = load_stats("stats.safetensors").mean_std()["facebook/dinov2-large"]
    mean, std = load_stats("published").mean_std()["facebook/dinov2-large"]  # downloaded
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from theia_ros.atomic import atomic_write
from theia_ros.errors import TheiaError
from training.distill.images import ImageShards
from training.distill.published_stats import (
    PUBLISHED,
    fetch_published_stats,
    read_published_stats,
)
from training.distill.teachers import Teacher, run_teachers

STATS_FORMAT = "theia-feature-stats/1"
MIN_STD = 1e-6  # a dead (constant) channel normalises to 0 instead of inf


class RunningStats:
    """Per-channel count / mean / M2 in float64 (numpy, so merges are device-independent)."""

    def __init__(self, channels: int):
        self.count = 0.0
        self.mean = np.zeros(channels, dtype=np.float64)
        self.m2 = np.zeros(channels, dtype=np.float64)

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def update(self, feats: torch.Tensor) -> None:
        """Add features ``[..., C]`` (any leading shape; computed in float64 on their device)."""
        x = feats.detach().reshape(-1, feats.shape[-1]).double()
        if x.shape[1] != self.channels:
            raise TheiaError(f"stats update: expected {self.channels} channels, got {x.shape[1]}")
        n = x.shape[0]
        if n == 0:
            return
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        self.merge_parts(float(n), mean_b.cpu().numpy(), m2_b.cpu().numpy())

    def merge_parts(self, n_b: float, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Chan et al.: combine (count, mean, M2) of a disjoint part into this one."""
        if n_b == 0:
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta * delta * (n_a * n_b / n)
        self.count = n

    def merge(self, other: RunningStats) -> None:
        if other.channels != self.channels:
            raise TheiaError(f"cannot merge stats of {other.channels} and {self.channels} "
                             "channels")
        self.merge_parts(other.count, other.mean, other.m2)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation ``[C]`` (float64), at least ``MIN_STD``."""
        var = self.m2 / max(self.count, 1.0)
        return np.maximum(np.sqrt(np.maximum(var, 0.0)), MIN_STD)


class TeacherStats:
    """Running statistics for a set of teachers, keyed by hub id (insertion order kept)."""

    def __init__(self, channels: Mapping[str, int], images: int = 0,
                 teacher_inputs: str | None = None):
        self.parts: dict[str, RunningStats] = {h: RunningStats(c) for h, c in channels.items()}
        self.images = images
        self.teacher_inputs = teacher_inputs  # None: not recorded (older files)

    @classmethod
    def from_mean_var(cls, mean_var: Mapping[str, tuple[np.ndarray, np.ndarray]],
                      teacher_inputs: str | None = None) -> TeacherStats:
        """Statistics given as ``{hub id: (mean [C], variance [C])}`` (no sample count)."""
        out = cls({h: int(np.asarray(m).shape[0]) for h, (m, _) in mean_var.items()},
                  teacher_inputs=teacher_inputs)
        for hub, (mean, var) in mean_var.items():
            part = out.parts[hub]
            part.count = 1.0  # a nominal count: std = sqrt(m2 / count) = sqrt(var)
            part.mean = np.asarray(mean, dtype=np.float64)
            part.m2 = np.asarray(var, dtype=np.float64)
        return out

    @property
    def teachers(self) -> list[str]:
        return list(self.parts)

    def update(self, feats: Mapping[str, torch.Tensor]) -> None:
        """Add one batch ``{hub id: [B, N, C]}`` (every teacher of this set, same images)."""
        if set(feats) != set(self.parts):
            raise TheiaError(f"stats update for {sorted(feats)}, expected {self.teachers}")
        for hub, x in feats.items():
            self.parts[hub].update(x)
        self.images += int(next(iter(feats.values())).shape[0])

    def merge(self, other: TeacherStats) -> None:
        if other.teachers != self.teachers:
            raise TheiaError(f"cannot merge stats for {other.teachers} into {self.teachers}")
        if other.teacher_inputs != self.teacher_inputs:
            raise TheiaError(f"cannot merge stats of {other.teacher_inputs!r} teacher inputs "
                             f"into {self.teacher_inputs!r} ones")
        for hub, part in other.parts.items():
            self.parts[hub].merge(part)
        self.images += other.images

    def mean_std(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{hub id: (mean [C] float32, std [C] float32)}`` for normalising targets."""
        return {h: (p.mean.astype(np.float32), p.std.astype(np.float32))
                for h, p in self.parts.items()}

    def torch_mean_std(self, device: str | torch.device = "cpu"
                       ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {h: (torch.from_numpy(m).to(device), torch.from_numpy(s).to(device))
                for h, (m, s) in self.mean_std().items()}

    def hash(self) -> str:
        """Content hash of the float32 mean/std actually used (recorded in feature caches)."""
        digest = hashlib.sha256()
        for hub, (mean, std) in sorted(self.mean_std().items()):
            digest.update(hub.encode())
            digest.update(mean.tobytes())
            digest.update(std.tobytes())
        return digest.hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        """safetensors (float64 count/mean/M2 per teacher), written atomically."""

        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for hub, p in self.parts.items():
            tensors[f"{hub}/count"] = np.array([p.count], dtype=np.float64)
            tensors[f"{hub}/mean"] = p.mean
            tensors[f"{hub}/m2"] = p.m2
        meta = {"format": STATS_FORMAT, "teachers": json.dumps(self.teachers),
                "images": str(self.images)}
        if self.teacher_inputs is not None:
            meta["teacher_inputs"] = self.teacher_inputs
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> TeacherStats:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        from safetensors.torch import safe_open

        path = Path(path)
        if not path.is_file():
            raise TheiaError(f"{path}: feature statistics not found (run `theia distill stats` "
                             "first, or use the published ones: a folder of them or "
                             "'published')")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise TheiaError(f"{path}: unreadable feature statistics ({exc})") from exc
        if meta.get("format") != STATS_FORMAT:
            raise TheiaError(f"{path}: format {meta.get('format')!r}, expected {STATS_FORMAT!r}")
        teachers = json.loads(meta["teachers"])
        out = cls({h: int(tensors[f"{h}/mean"].shape[0]) for h in teachers},
                  int(meta.get("images", 0)), meta.get("teacher_inputs"))
        for hub in teachers:
            p = out.parts[hub]
            p.count = float(tensors[f"{hub}/count"][0])
            p.mean = tensors[f"{hub}/mean"].astype(np.float64)
            p.m2 = tensors[f"{hub}/m2"].astype(np.float64)
        return out

    def check(self, shapes: Mapping[str, Sequence[int]], source: str = "statistics") -> None:
        """Every teacher in ``shapes`` present with ``C`` channels and a non-zero count."""
        for hub, shape in shapes.items():
            if hub not in self.parts:
                raise TheiaError(f"{source}: no statistics for teacher {hub!r} (has "
                                 f"{self.teachers}); rerun `theia distill stats` for this set")
            part = self.parts[hub]
            if part.channels != int(shape[0]):
                raise TheiaError(f"{source}: teacher {hub!r} has {part.channels} channels in "
                                 f"the statistics, the teacher gives {int(shape[0])}")
            if part.count <= 0:
                raise TheiaError(f"{source}: statistics for {hub!r} are empty (0 samples)")

    def subset(self, teachers: Iterable[str]) -> TeacherStats:
        out = TeacherStats({}, self.images, self.teacher_inputs)
        out.parts = {h: self.parts[h] for h in teachers}
        return out


def load_stats(source: str | os.PathLike, teacher_inputs: str | None = None,
               teachers: Sequence[str] | None = None) -> TeacherStats:
    """Statistics from ``source``: a ``theia distill stats`` file, a folder of the published
    ``.npy`` files, or ``published`` (download them; cached).

    ``teacher_inputs``: the mode the caller runs its teachers in; statistics recorded with
    another one normalise a little off, which is worth a warning but not a stop.
    ``teachers``: hub ids to fetch for ``published`` (default: every published teacher).
    """
    from policies.teacher_specs import TEACHERS

    text = str(source)
    if text == PUBLISHED or Path(source).is_dir():
        folder = (fetch_published_stats(list(teachers or TEACHERS)) if text == PUBLISHED
                  else Path(source))
        stats = TeacherStats.from_mean_var(read_published_stats(folder, teachers), "published")
    else:
        stats = TeacherStats.load(source)
    if teacher_inputs is not None and stats.teacher_inputs != teacher_inputs:
        made = repr(stats.teacher_inputs) if stats.teacher_inputs else "unrecorded"
        warnings.warn(f"{source}: feature statistics of {made} teacher inputs, but the "
                      f"teachers run with {teacher_inputs!r} inputs; "
                      "targets will be normalised slightly off", stacklevel=2)
    return stats


def merge_stats_files(paths: Sequence[str | Path]) -> TeacherStats:
    """Merge partial statistics files (e.g. one per rank) into one."""
    if not paths:
        raise TheiaError("no statistics files to merge")
    total = TeacherStats.load(paths[0])
    for p in paths[1:]:
        total.merge(TeacherStats.load(p))
    return total


def all_reduce_stats(stats: TeacherStats) -> TeacherStats:
    """Merge the statistics of every rank of the default process group (same result on all).

    Parts are gathered (count, mean, M2 as float64) and merged in rank order, so the result
    is deterministic and identical on every rank.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return stats
    world = dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if (
        dist.get_backend() == "nccl") else torch.device("cpu")
    packed = [np.concatenate([[p.count], p.mean, p.m2]) for p in stats.parts.values()]
    flat = torch.from_numpy(np.concatenate([*packed, np.array([stats.images], np.float64)])
                            ).to(device)
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    out = TeacherStats({h: p.channels for h, p in stats.parts.items()},
                       teacher_inputs=stats.teacher_inputs)
    for g in gathered:
        arr = g.cpu().numpy()
        pos = 0
        for part in out.parts.values():
            c = part.channels
            part.merge_parts(float(arr[pos]), arr[pos + 1:pos + 1 + c],
                             arr[pos + 1 + c:pos + 1 + 2 * c])
            pos += 1 + 2 * c
        out.images += int(arr[pos])
    return out


@torch.no_grad()
def compute_stats(shards: ImageShards, teachers: Sequence[Teacher], batch_size: int = 64,
                  rank: int = 0, world_size: int = 1, max_images: int | None = None,
                  progress: bool = True) -> TeacherStats:
    """Run the teachers over the images and accumulate per-channel statistics.

    Blocks of ``batch_size`` consecutive images go to rank ``block % world_size``; the result
    is this rank's part (merge with :func:`all_reduce_stats` or :func:`merge_stats_files`).
    ``max_images`` limits the pass to the first N images (a subset estimate).
    """
    total = shards.num_images if max_images is None else min(max_images, shards.num_images)
    modes = {t.inputs for t in teachers}
    stats = TeacherStats({t.hub_id: t.shape[0] for t in teachers},
                         teacher_inputs=modes.pop() if len(modes) == 1 else None)
    starts = list(range(0, total, batch_size))[rank::world_size]
    for start in tqdm(starts, desc=f"stats r{rank}", unit="batch", disable=not progress):
        images = torch.from_numpy(shards.read(start, min(total, start + batch_size)))
        images = images.permute(0, 3, 1, 2)
        stats.update(run_teachers(teachers, images))
    return stats
