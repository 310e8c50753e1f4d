"""Distillation throughput rows of ``gpu_suite``: one training step, three data paths.

The step is the trainer's (``training.distill.trainer``): targets -> Theia student under
bf16 autocast (GPU) -> Eq. 1 loss -> backward -> AdamW with the trainer's parameter groups.
What feeds it:

- ``reference``: the published recipe's data path: one file per sample per teacher,
  stacked and converted to float32 on the CPU, float32 copied to the GPU;
- ``cache``: our bf16 memmap cache, contiguous slices, converted on the GPU
  (``training.distill.loader``);
- ``on the fly``: images only; the teachers run inside the step (``run_teachers``: bf16
  autocast, no grad), then the targets are normalised.

Teachers are the real architectures with random weights (same FLOPs as trained ones); the
files are synthetic and were just written, so reads come from the page cache.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.distill_throughput import make_data
from benchmarks.gpu_common import Clock, Marks, count_flops, free_memory, largest_batch, sync
from policies.encoder import ENCODERS, TheiaEncoder
from policies.preprocess import normalize_uint8
from policies.teacher_specs import resolve_teachers
from policies.translators import TheiaModel
from training.distill.cache import FeatureCache
from training.distill.config import DataConfig
from training.distill.images import ImageShards
from training.distill.loader import BatchPlan, BatchReader, prefetch, to_device
from training.distill.loss import distill_loss
from training.distill.teachers import Teacher, build_teachers, teacher_shapes_of
from training.distill.trainer import normalised_targets, param_groups

PAPER_IMAGES_PER_S = 117.0  # published recipe, per H100 (data-loading bound)
# the trainer's read-ahead defaults (data.prefetch, data.read_workers, data.chunk)
DATA_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DataConfig)}
MODES = ("reference", "cache", "on the fly")
ROW_NAMES = {"reference": "per-sample files, fp32 on CPU (reference)",
             "cache": "bf16 memmap cache, fp32 on GPU",
             "on the fly": "teachers on the fly, bf16"}


@dataclass
class DistillSizes:
    """Model sizes and loop lengths (real for the GPU, tiny for ``--quick``)."""

    student: str
    shrink: dict
    tiny_teachers: bool
    batch_start: int
    batch_limit: int
    warmup: int
    max_steps: int
    shard_size: int

    @classmethod
    def for_run(cls, quick: bool, max_batch: int) -> DistillSizes:
        if quick:
            return cls("theia_tiny", {"depth": 1, "embed_dim": 48, "num_heads": 2}, True,
                       2, min(max_batch, 4), 1, 2, 4)
        return cls("theia_base", {}, False, 32, max_batch, 3, 30, 256)


class PerSampleReader:
    """The reference data path: ``1 + M`` ``np.load`` per image, float32 made on the CPU.

    Same ``read(ranges)`` contract as ``BatchReader`` (so the same read-ahead threads
    serve it); the targets are float32 already.
    """

    def __init__(self, root: Path, shapes: dict[str, tuple[int, int, int]], pin: bool):
        self.root, self.shapes, self.pin = root, shapes, pin

    def read(self, ranges: list[tuple[int, int]]) -> dict:
        idx = [i for lo, hi in ranges for i in range(lo, hi)]
        images = torch.from_numpy(np.stack([np.load(self.root / f"{i:06d}.image.npy")
                                             for i in idx]))
        targets = {}
        for hub, (c, h, w) in self.shapes.items():
            key = hub.replace("/", "--")
            bits = np.stack([np.load(self.root / f"{i:06d}.{key}.npy") for i in idx])
            out = torch.empty((len(idx), h * w, c), dtype=torch.float32, pin_memory=self.pin)
            out.copy_(torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16))
            targets[hub] = out
        if self.pin:
            images = images.pin_memory()
        return {"images": images, "targets": targets, "n": len(idx)}


def _fp32_to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, dict]:
    images = batch["images"].to(device, non_blocking=True).permute(0, 3, 1, 2)
    return images, {h: t.to(device, non_blocking=True) for h, t in batch["targets"].items()}


class Student:
    """Student + optimiser + the trainer's step, with timing marks around its parts."""

    def __init__(self, sizes: DistillSizes, shapes: dict, device: torch.device):
        torch.manual_seed(0)
        self.model = TheiaModel(TheiaEncoder(ENCODERS[sizes.student](**sizes.shrink)),
                                shapes).to(device).train()
        self.opt = torch.optim.AdamW(param_groups(self.model, 0.05), lr=1e-4)
        self.device = device
        self.amp = device.type == "cuda"
        self.shapes = shapes
        self._flops: int | None = None

    def step(self, images_u8: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            preds = self.model(normalize_uint8(images_u8))
        loss, _ = distill_loss(preds, targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def synthetic(self, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8,
                               device=self.device)
        targets = {h: torch.randn(batch, s[1] * s[2], s[0], device=self.device)
                   for h, s in self.shapes.items()}
        return images, targets

    def flops_per_image(self) -> int:
        """Forward + backward FLOPs per image (two images counted, halved)."""
        if self._flops is not None:
            return self._flops
        images, targets = self.synthetic(2)

        def fwd_bwd() -> None:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                preds = self.model(normalize_uint8(images))
            distill_loss(preds, targets)[0].backward()

        self._flops = count_flops(fwd_bwd) // 2
        self.opt.zero_grad(set_to_none=True)
        return self._flops


def real_size_flops() -> dict[str, float]:
    """GFLOPs per image at the real sizes: Theia-B + cdiv translators' training step (forward
    + backward) and the cdiv teachers' forward. Counted on the meta device: no memory, no
    arithmetic, seconds on any machine."""
    with torch.device("meta"):
        teachers = build_teachers("cdiv", pretrained=False, device="meta")
        shapes = teacher_shapes_of(teachers)
        x = torch.empty(1, 3, 224, 224, dtype=torch.uint8)
        teacher = sum(count_flops(lambda t=t: t(x)) for t in teachers)
        model = TheiaModel(TheiaEncoder(ENCODERS["theia_base"]()), shapes)
        targets = {h: torch.empty(1, c[1] * c[2], c[0]) for h, c in shapes.items()}
        student = count_flops(
            lambda: distill_loss(model(normalize_uint8(x)), targets)[0].backward())
    return {"student_step": student / 1e9, "teachers": teacher / 1e9}


def _timed(step: Callable[[dict, Marks], tuple], batches: Iterator[dict], device: torch.device,
           warmup: int, max_steps: int, deadline: float) -> dict:
    """``warmup`` untimed steps, then timed ones until ``max_steps`` or ``deadline``."""
    marks = Marks(device)
    for _ in range(warmup):
        step(next(batches), marks)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    spans, images, wait_s = [], 0, 0.0
    t0 = time.perf_counter()
    while len(spans) < max_steps and (not spans or time.perf_counter() < deadline):
        tw = time.perf_counter()
        batch = next(batches)
        wait_s += time.perf_counter() - tw
        spans.append(step(batch, marks))
        images += batch["n"]
    sync(device)
    wall = time.perf_counter() - t0
    n = len(spans)
    parts = {"h2d": 0.0, "teachers": 0.0, "student": 0.0}
    for m0, m1, m2, m3 in spans:
        parts["h2d"] += marks.ms(m0, m1)
        parts["teachers"] += marks.ms(m1, m2)
        parts["student"] += marks.ms(m2, m3)
    split = {k: v / n for k, v in parts.items()}
    split["host_wait"] = wait_s * 1e3 / n
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 30
            if device.type == "cuda" else None)
    return {"steps": n, "images_per_s": images / wall, "ms_per_step": wall * 1e3 / n,
            "split_ms": split, "peak_mem_gib": peak}


def _batches(plan: BatchPlan, reader: object, depth: int, workers: int) -> Iterator[dict]:
    """Endless read-ahead batches, epoch after epoch."""
    epoch = 0
    while True:
        stream = plan.epoch_stream(epoch)
        ranges = (plan.ranges(epoch, s, stream) for s in range(plan.steps_per_epoch))
        yield from prefetch(reader, ranges, depth, workers)  # type: ignore[arg-type]
        epoch += 1


def run_distill(clock: Clock, share_s: float, device: torch.device, quick: bool,
                max_batch: int, peak: float | None, workdir: str | None,
                log: Callable[[str], None]) -> tuple[list[dict], dict]:
    """All distillation rows (in ``MODES`` order) and what the search found."""
    sizes = DistillSizes.for_run(quick, max_batch)
    end = time.perf_counter() + share_s
    prefetch_depth, workers = DATA_DEFAULTS["prefetch"], DATA_DEFAULTS["read_workers"]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer sets it
        torch.backends.cudnn.allow_tf32 = True
    # feature shapes: published for the real teachers, known only once built for tiny ones
    if quick:
        shapes = teacher_shapes_of(build_teachers("cdiv", pretrained=False, tiny=True))
    else:
        shapes = {s.hub_id: s.shape for s in resolve_teachers("cdiv")}
    student = Student(sizes, shapes, device)
    student_flops = student.flops_per_image()
    info: dict = {"real_size_gflops_per_image": real_size_flops(),
                  "student": sizes.student, "teachers": "cdiv", "shapes": shapes,
                  "student_gflops_per_image": student_flops / 1e9,
                  "read_workers": workers, "prefetch": prefetch_depth}

    def trial_cache(batch: int) -> None:
        student.step(*student.synthetic(batch))
        sync(device)

    b_cache, tried = largest_batch(trial_cache, sizes.batch_start, sizes.batch_limit,
                                   clock.deadline(min(0.15 * share_s, end - time.perf_counter())),
                                   lambda: (student.opt.zero_grad(set_to_none=True),
                                            free_memory(device)))
    info["search_student"] = tried
    log(f"distill: student batch {b_cache} fits (tried {[t['batch'] for t in tried]})")
    # one full batch of the largest size either mode may use: enough, since every read
    # comes from the page cache anyway, and it keeps the data written small
    n_images = max(b_cache, sizes.batch_limit)
    root = Path(tempfile.mkdtemp(prefix="gpu_suite_", dir=workdir))
    rows: dict[str, dict] = {}
    try:
        t0 = time.perf_counter()
        shards, cache_dir, per_sample = make_data(root, n_images, sizes.shard_size, shapes)
        info["data"] = {"images": n_images, "gib": sum(p.stat().st_size for p in
                                                       root.rglob("*.npy")) / 2 ** 30,
                        "write_s": time.perf_counter() - t0}
        log(f"distill: wrote {info['data']['gib']:.1f} GiB of synthetic data in "
            f"{info['data']['write_s']:.0f} s")
        pin = device.type == "cuda"
        readers = {"reference": PerSampleReader(per_sample, shapes, pin),
                   "cache": BatchReader(shards, FeatureCache(cache_dir, shapes, shards,
                                                             "synthetic"), pin=pin)}
        to_dev = {"reference": _fp32_to_device, "cache": to_device}
        for mode in ("reference", "cache"):
            def step(batch: dict, marks: Marks, mode: str = mode) -> tuple:
                m0 = marks.now()
                images, targets = to_dev[mode](batch, device)
                m1 = marks.now()
                student.step(images, targets)
                return m0, m1, m1, marks.now()

            plan = BatchPlan(n_images, b_cache, chunk=DATA_DEFAULTS["chunk"], seed=0)
            batches = _batches(plan, readers[mode], prefetch_depth, workers)
            rows[mode] = {"batch": b_cache, "flops_per_image": student_flops,
                          **_timed(step, batches, device, sizes.warmup, sizes.max_steps,
                                   clock.deadline(min(0.15 * share_s,
                                                      end - time.perf_counter())))}
            batches.close()
            log(f"distill: {mode}: {rows[mode]['images_per_s']:.1f} images/s")
        rows["on the fly"] = _on_the_fly(clock, share_s, end, device, sizes, student, shards,
                                         info, log)
        free_memory(device)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ref = rows["reference"]["images_per_s"]
    out = []
    for mode in MODES:
        r = rows[mode]
        tflops = r["flops_per_image"] * r["images_per_s"] / 1e12
        out.append({"name": ROW_NAMES[mode], "mode": mode, "status": "ok", **r,
                    "vs_reference": r["images_per_s"] / ref,
                    "vs_paper": r["images_per_s"] / PAPER_IMAGES_PER_S,
                    "tflops": tflops, "mfu": tflops / peak if peak else None})
    return out, info


def _on_the_fly(clock: Clock, share_s: float, end: float, device: torch.device,
                sizes: DistillSizes, student: Student, shards: ImageShards,
                info: dict, log: Callable[[str], None]) -> dict:
    """Teachers inside the step: build them, search the batch again, time it."""
    t0 = time.perf_counter()
    with torch.device(device):  # initialise the 1.2 B teacher parameters on the device
        teachers: list[Teacher] = build_teachers("cdiv", pretrained=False,
                                                 tiny=sizes.tiny_teachers, device=device)
    info["teacher_build_s"] = time.perf_counter() - t0
    norm = {t.hub_id: (torch.randn(t.shape[0], device=device),
                       torch.rand(t.shape[0], device=device) + 0.5) for t in teachers}
    probe = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8, device=device)
    teacher_flops = count_flops(lambda: normalised_targets(teachers, probe, norm)) // 2
    info["teacher_gflops_per_image"] = teacher_flops / 1e9

    def trial(batch: int) -> None:
        images = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device=device)
        student.step(images, normalised_targets(teachers, images, norm))
        sync(device)

    b_fly, tried = largest_batch(trial, sizes.batch_start, sizes.batch_limit,
                                 clock.deadline(min(0.15 * share_s, end - time.perf_counter())),
                                 lambda: (student.opt.zero_grad(set_to_none=True),
                                          free_memory(device)))
    info["search_on_the_fly"] = tried
    log(f"distill: on-the-fly batch {b_fly} fits (tried {[t['batch'] for t in tried]})")

    def step(batch: dict, marks: Marks) -> tuple:
        m0 = marks.now()
        images, _ = to_device(batch, device)
        m1 = marks.now()
        targets = normalised_targets(teachers, images, norm)
        m2 = marks.now()
        student.step(images, targets)
        return m0, m1, m2, marks.now()

    plan = BatchPlan(shards.num_images, b_fly, chunk=DATA_DEFAULTS["chunk"], seed=0)
    batches = _batches(plan, BatchReader(shards, None, pin=device.type == "cuda"),
                       DATA_DEFAULTS["prefetch"], DATA_DEFAULTS["read_workers"])
    row = {"batch": b_fly, "flops_per_image": student.flops_per_image() + teacher_flops,
           **_timed(step, batches, device, sizes.warmup, sizes.max_steps,
                    clock.deadline(end - time.perf_counter()))}
    batches.close()
    log(f"distill: on the fly: {row['images_per_s']:.1f} images/s")
    return row  # the teachers go with this frame; the caller returns their memory
