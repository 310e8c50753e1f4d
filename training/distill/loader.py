"""Batches for distillation: contiguous slices, deterministic per-rank sharding, exact resume.

Every epoch cuts the training range ``[0, N)`` into chunks of ``chunk`` consecutive images,
permutes the chunks with ``seed + epoch``, and lays them end to end into one stream. Global
batch ``g`` is stream positions ``[g * B * W, (g + 1) * B * W)``; rank ``r`` takes the
``r``-th ``B`` of them. A batch is therefore a few contiguous runs (``B / chunk`` of them,
plus cut ends) that read as big sequential ``memmap`` slices, while its composition changes
every epoch (the image shards were shuffled once at ``prepare`` time, so a chunk is already
a class-mixed sample). Same plan on every rank, no communication; a batch is a pure function
of ``(epoch, step, rank)``, which is what makes resuming after a kill exact. The tail of an
epoch that does not fill a whole global batch is dropped (< B * W images).

Images come back uint8 ``[B, 3, 224, 224]``; cached targets as int16 bf16 bit patterns
``{hub id: [B, H*W, C]}`` in pinned memory on GPU, converted with
``training.distill.cache.from_bf16_bits`` on the device. A small thread pool reads ahead.

Example::

    plan = BatchPlan(num_train=len(images) - 500, batch_size=16, world_size=8, rank=r)
    for step, batch in iterate_batches(plan, images, cache, epoch=3, start_step=120):
        ...
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from theia_ros.errors import TheiaError
from training.distill.cache import FeatureCache
from training.distill.images import ImageShards, split_range


@dataclass(frozen=True)
class BatchPlan:
    """Which images make each batch of each rank.

    Args:
        num_train: images ``[0, num_train)`` are training images (the rest held out).
        batch_size: images per rank per step.
        world_size: number of ranks.
        rank: this rank.
        chunk: consecutive images per shuffled chunk.
        seed: base seed of the chunk permutation.
    """

    num_train: int
    batch_size: int
    world_size: int = 1
    rank: int = 0
    chunk: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk < 1 or not 0 <= self.rank < self.world_size:
            raise TheiaError(f"bad batch plan: batch_size={self.batch_size}, chunk={self.chunk},"
                             f" rank={self.rank}, world_size={self.world_size}")
        if self.steps_per_epoch < 1:
            raise TheiaError(f"{self.num_train} training images cannot fill one global batch "
                             f"of {self.batch_size} x {self.world_size}")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.global_batch

    def epoch_stream(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Permuted chunk starts ``[K]`` and the cumulative stream length at each ``[K+1]``."""
        starts = np.arange(0, self.num_train, self.chunk, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch])
        starts = starts[rng.permutation(len(starts))]
        lengths = np.minimum(starts + self.chunk, self.num_train) - starts
        return starts, np.concatenate([[0], np.cumsum(lengths)])

    def ranges(self, epoch: int, step: int, stream: tuple[np.ndarray, np.ndarray] | None = None
               ) -> list[tuple[int, int]]:
        """This rank's batch at ``(epoch, step)`` as global image ranges ``[(start, stop)]``."""
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside 0..{self.steps_per_epoch - 1}")
        starts, cum = stream if stream is not None else self.epoch_stream(epoch)
        pos = step * self.global_batch + self.rank * self.batch_size
        end = pos + self.batch_size
        out: list[tuple[int, int]] = []
        k = int(np.searchsorted(cum, pos, side="right")) - 1
        while pos < end:
            seg_lo, seg_hi = int(cum[k]), int(cum[k + 1])
            take = min(end, seg_hi) - pos
            first = int(starts[k]) + (pos - seg_lo)
            out.append((first, first + take))
            pos += take
            k += 1
        return out


def contiguous_ranges(start: int, stop: int, rank: int, world_size: int, batch_size: int
                      ) -> list[list[tuple[int, int]]]:
    """Held-out evaluation: ``[start, stop)`` in batches, batch ``j`` to rank ``j % world``."""
    out = []
    for j, lo in enumerate(range(start, stop, batch_size)):
        if j % world_size == rank:
            out.append([(lo, min(stop, lo + batch_size))])
    return out


class BatchReader:
    """Reads one batch (a list of global ranges) from image shards and (optionally) a cache.

    Args:
        images: prepared image shards.
        cache: feature cache, or None for on-the-fly teachers (images only).
        pin: allocate pinned host buffers (GPU training) for asynchronous copies.
    """

    def __init__(self, images: ImageShards, cache: FeatureCache | None, pin: bool = False):
        self.images = images
        self.cache = cache
        self.pin = pin

    def _alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
        tdtype = torch.uint8 if dtype == np.uint8 else torch.int16
        return torch.empty(shape, dtype=tdtype, pin_memory=self.pin)

    def read(self, ranges: list[tuple[int, int]]) -> dict:
        """-> ``{"images": uint8 [B, S, S, 3], "targets": {id: int16 [B, N, C]}, "n": B}``."""
        n = sum(hi - lo for lo, hi in ranges)
        size = self.images.size
        img = self._alloc((n, size, size, 3), np.uint8)
        img_np = img.numpy()
        targets: dict[str, torch.Tensor] = {}
        if self.cache is not None:
            for hub, (c, h, w) in self.cache.shapes.items():
                targets[hub] = self._alloc((n, h * w, c), np.int16)
        tgt_np = {h: t.numpy().view(np.uint16) for h, t in targets.items()}
        row = 0
        for lo, hi in ranges:
            for shard, a, b in split_range(self.images.offsets, lo, hi):
                img_np[row:row + b - a] = self.images.array(shard)[a:b]
                for hub, dst in tgt_np.items():
                    dst[row:row + b - a] = self.cache.array(shard, hub)[a:b]  # type: ignore
                row += b - a
        return {"images": img, "targets": targets, "n": n}


def prefetch(reader: BatchReader, batches: Iterator[list[tuple[int, int]]], depth: int = 2,
             workers: int = 1) -> Iterator[dict]:
    """Read batches ahead of use in a thread pool (memmap copies release the GIL); ordered."""
    if depth <= 0:
        for ranges in batches:
            yield reader.read(ranges)
        return
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="distill-read") as pool:
        pending: deque = deque()
        for ranges in batches:
            pending.append(pool.submit(reader.read, ranges))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def iterate_batches(plan: BatchPlan, reader: BatchReader, epoch: int, start_step: int = 0,
                    depth: int = 2, workers: int = 1) -> Iterator[tuple[int, dict]]:
    """``(step, batch)`` for steps ``start_step .. steps_per_epoch - 1`` of ``epoch``."""
    stream = plan.epoch_stream(epoch)
    steps = range(start_step, plan.steps_per_epoch)
    batches = prefetch(reader, (plan.ranges(epoch, s, stream) for s in steps), depth, workers)
    yield from zip(steps, batches)


def to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Host batch -> (uint8 images ``[B, 3, S, S]``, float32 targets) on ``device``."""
    images = batch["images"].to(device, non_blocking=True).permute(0, 3, 1, 2)
    targets = {h: t.to(device, non_blocking=True).view(torch.bfloat16).float()
               for h, t in batch["targets"].items()}
    return images, targets
