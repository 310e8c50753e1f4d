"""Distillation data-path and training-step throughput, against a per-sample-file baseline.

Same synthetic data in two layouts, read in the same (shuffled) order of images:

- **baseline**: one small file per sample per teacher (plus one per image), as the published
  pipeline stores samples; a batch is ``B x (1 + M)`` ``np.load`` calls and a stack.
- **ours**: the resize-once image shards + bf16 feature cache; a batch is a few contiguous
  memmap slices (``training.distill.loader.BatchReader``), with and without read-ahead
  threads.

Both end with float32 targets ready for the loss (bf16 -> float32 on the device, here CPU).
Then training-step images/s of the student on this machine: Theia-T with cdiv translators
fed from the cache, and with (tiny, random) teachers on the fly. Reads hit the page cache
("warm", files just read) and from the disk ("cold": our own files are evicted from the
page cache with ``posix_fadvise(DONTNEED)`` first, as for a data set larger than RAM).

Targets: ours >= 10x the baseline. Real teachers cannot be downloaded here, so the on-the-fly
row uses small random teachers; GPU rows (Theia-B, cdiv, cache vs on the fly, vs the paper's
~117 images/s/GPU) need a CUDA device and are skipped without one.

Example::

    .venv/bin/python benchmarks/distill_throughput.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.encoder import ENCODERS, TheiaEncoder
from policies.preprocess import normalize_uint8
from policies.teacher_specs import TEACHERS, resolve_teachers
from policies.translators import TheiaModel
from training.distill.cache import _done_marker, _manifest, _shard_files
from training.distill.images import ImageShards, finalize_index, write_json_atomic
from training.distill.loader import BatchPlan, BatchReader, iterate_batches, to_device
from training.distill.loss import distill_loss
from training.distill.teachers import build_teachers, run_teachers


def make_data(root: Path, n: int, shard_size: int, shapes: dict[str, tuple[int, int, int]],
              seed: int = 0) -> tuple[ImageShards, Path, Path]:
    """Synthetic prepared shards + feature cache + the per-sample-file baseline copy."""
    rng = np.random.default_rng(seed)
    img_dir, cache_dir, base_dir = root / "images", root / "cache", root / "per_sample"
    for d in (img_dir, cache_dir, base_dir):
        d.mkdir(parents=True)
    num_shards = (n + shard_size - 1) // shard_size
    files = [f"s{i:06d}.png" for i in range(n)]
    write_json_atomic(img_dir / "plan.json", {
        "source": "synthetic", "shard_size": shard_size, "size": 224, "resize": "crop",
        "seed": seed, "classes": [], "files": files, "labels": [-1] * n})
    for s in range(num_shards):
        lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
        imgs = rng.integers(0, 256, (hi - lo, 224, 224, 3), dtype=np.uint8)
        np.save(img_dir / f"images_{s:05d}.npy", imgs)
        write_json_atomic(img_dir / f"images_{s:05d}.json", {
            "count": hi - lo, "files": files[lo:hi], "labels": [-1] * (hi - lo),
            "skipped": []})
        for i in range(hi - lo):
            np.save(base_dir / f"{lo + i:06d}.image.npy", imgs[i])
        for hub, (c, h, w) in shapes.items():
            bits = rng.integers(0, 2 ** 16, (hi - lo, h * w, c), dtype=np.uint16)
            # keep values finite: clear the exponent's top bit (|x| < 2)
            bits &= np.uint16(0xBFFF)
            np.save(_shard_files(cache_dir, s, hub), bits)
            key = hub.replace("/", "--")
            for i in range(hi - lo):
                np.save(base_dir / f"{lo + i:06d}.{key}.npy", bits[i])
        _done_marker(cache_dir, s).write_text("ok\n")
    finalize_index(img_dir)
    shards = ImageShards(img_dir)
    write_json_atomic(cache_dir / "manifest.json",
                      _manifest(shards, shapes, "synthetic", "published"))
    return shards, cache_dir, base_dir


def bench_baseline(base_dir: Path, order: np.ndarray, batch: int,
                   shapes: dict[str, tuple[int, int, int]], convert: bool = False) -> float:
    """images/s of per-sample files: 1 + M ``np.load`` per image and a stack per batch
    (what a per-sample Dataset + default collate does); ``convert``: also bf16 -> float32
    on the CPU, as a per-sample transform would."""
    keys = [h.replace("/", "--") for h in shapes]
    t0 = time.perf_counter()
    done = 0
    for b in range(len(order) // batch):
        idx = order[b * batch:(b + 1) * batch]
        images = torch.from_numpy(np.stack([np.load(base_dir / f"{i:06d}.image.npy")
                                            for i in idx]))
        for key in keys:
            stacked = torch.from_numpy(np.stack(
                [np.load(base_dir / f"{i:06d}.{key}.npy") for i in idx]).view(np.int16))
            if convert:
                stacked.view(torch.bfloat16).float()
        done += images.shape[0]
    return done / (time.perf_counter() - t0)


def evict(paths: list[Path]) -> None:
    """Drop these files (only ours) from the page cache: fsync, then POSIX_FADV_DONTNEED,
    so the next pass reads from the disk as a data set larger than RAM would."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def bench_ours(shards: ImageShards, cache_dir: Path, shapes: dict, batch: int, depth: int,
               workers: int) -> float:
    """images/s of contiguous memmap slices into (pinnable) batch buffers (+ read-ahead
    threads): everything the host does before the copy to the GPU, where bf16 -> float32
    happens."""
    from training.distill.cache import FeatureCache

    cache = FeatureCache(cache_dir, shapes, shards, "synthetic")
    plan = BatchPlan(shards.num_images, batch, chunk=16, seed=1)
    reader = BatchReader(shards, cache)
    t0 = time.perf_counter()
    done = 0
    for _, b in iterate_batches(plan, reader, epoch=0, depth=depth, workers=workers):
        assert len(b["targets"]) == len(shapes)
        done += b["n"]
    return done / (time.perf_counter() - t0)


def bench_steps(model: TheiaModel, batch: int, steps: int, shapes: dict,
                teachers: list | None = None) -> float:
    """Student training steps/s x batch on CPU (fwd + Eq. 1 + bwd + AdamW)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8)
    targets = {h: torch.randn(batch, s[1] * s[2], s[0]) for h, s in shapes.items()}

    def step() -> None:
        tg = targets
        if teachers is not None:
            tg = run_teachers(teachers, images)
        loss, _ = distill_loss(model(normalize_uint8(images)), tg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def bench_gpu(args: argparse.Namespace, shapes: dict[str, tuple[int, int, int]],
              n_images: int) -> dict[str, float]:
    """Theia-B + translators on one GPU, bf16 autocast: targets from the cache (pinned
    memmap slices -> GPU -> float32) and from full-size teachers on the fly.

    The teachers are the real architectures; without downloaded weights they are randomly
    initialised, which costs the same FLOPs.
    """
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    batch, steps = args.gpu_batch, (5 if args.quick else 20)
    model = TheiaModel(TheiaEncoder(ENCODERS["theia_base"]()), shapes).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    root = Path(tempfile.mkdtemp(prefix="distill_gpu_", dir=args.workdir))
    rows: dict[str, float] = {}
    try:
        n = max(n_images, 2 * batch)
        shards, cache_dir, _ = make_data(root, n, 256, shapes)
        from training.distill.cache import FeatureCache

        reader = BatchReader(shards, FeatureCache(cache_dir, shapes, shards, "synthetic"),
                             pin=True)
        plan = BatchPlan(n, batch, chunk=16, seed=0)

        def train_step(images: torch.Tensor, targets: dict) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                preds = model(normalize_uint8(images))
            loss, _ = distill_loss(preds, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def cached_loop(total: int) -> float:
            done, epoch = 0, 0
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            while done < total:
                for _, b in iterate_batches(plan, reader, epoch, depth=4, workers=4):
                    train_step(*to_device(b, dev))
                    done += batch
                    if done >= total:
                        break
                epoch += 1
            torch.cuda.synchronize()
            return done / (time.perf_counter() - t0)

        cached_loop(2 * batch)
        rows["gpu: Theia-B cdiv, cached targets"] = cached_loop(steps * batch)
        teachers = build_teachers(args.teachers, pretrained=False, tiny=False, device=dev)
        images = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device=dev)
        for i in range(steps + 2):
            if i == 2:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            train_step(images, run_teachers(teachers, images))
        torch.cuda.synchronize()
        rows["gpu: Theia-B cdiv, teachers on the fly"] = steps * batch / (
            time.perf_counter() - t0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{torch.cuda.get_device_name()} (batch {batch}/GPU, bf16)"
          f"{'':<12} {'images/s':>10} {'vs paper 117':>13}")
    for name, ips in rows.items():
        print(f"{name:<52} {ips:>10.0f} {ips / 117:>12.1f}x")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sub-minute run")
    ap.add_argument("--images", type=int, default=None, help="synthetic images")
    ap.add_argument("--batch", type=int, default=32, help="images per batch (data path)")
    ap.add_argument("--teachers", default="cdiv", help="teacher set for the feature shapes")
    ap.add_argument("--gpu-batch", type=int, default=128, help="images per GPU step (GPU rows)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--workdir", default=None, help="where to write the data (default tmp)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.images or (256 if args.quick else 2048)
    shapes = {s.hub_id: s.shape for s in resolve_teachers(args.teachers)}
    mb_per_img = sum(c * h * w * 2 for c, h, w in shapes.values()) / 1e6
    root = Path(tempfile.mkdtemp(prefix="distill_bench_", dir=args.workdir))
    results: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        shards, cache_dir, base_dir = make_data(root, n, 128, shapes)
        print(f"data: {n} images, teachers {args.teachers} "
              f"({', '.join(TEACHERS[h].short for h in shapes)}), {mb_per_img:.2f} MB bf16 "
              f"features/image, written in {time.perf_counter() - t0:.1f}s to {root}")
        order = np.random.default_rng(1).permutation(n)
        all_files = [p for d in (shards.root, cache_dir, base_dir) for p in d.iterdir()
                     if p.suffix == ".npy"]
        for state in ("cold", "warm"):
            if state == "cold":
                evict(all_files)
            else:  # one untimed pass each: both layouts fully in the page cache
                bench_baseline(base_dir, order, args.batch, shapes)
                bench_ours(shards, cache_dir, shapes, args.batch, 0, 1)
            results[f"{state}: baseline, per-sample files"] = bench_baseline(
                base_dir, order, args.batch, shapes)
            if state == "cold":
                evict(all_files)
            results[f"{state}: ours, memmap slices"] = bench_ours(
                shards, cache_dir, shapes, args.batch, 0, 1)
            if state == "cold":
                evict(all_files)
            results[f"{state}: ours, memmap slices + read-ahead"] = bench_ours(
                shards, cache_dir, shapes, args.batch, 4, 2)
        results["warm: baseline + bf16->fp32 on CPU"] = bench_baseline(
            base_dir, order, args.batch, shapes, convert=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'host data path (batch ' + str(args.batch) + ')':<44} {'images/s':>10} "
          f"{'MB/s':>8} {'vs baseline':>12}")
    best = 0.0
    for name, ips in results.items():
        base = results[f"{name.split(':')[0]}: baseline, per-sample files"]
        print(f"{name:<44} {ips:>10.0f} {ips * mb_per_img:>8.0f} {ips / base:>11.1f}x")
        if "ours" in name:
            best = max(best, ips / base)
    print(f"target >= 10x: {'MET' if best >= 10 else 'NOT MET'} (best {best:.1f}x)")

    steps = 1 if args.quick else 5
    batch = 4 if args.quick else 16
    enc = TheiaEncoder(ENCODERS["theia_tiny"]())
    model = TheiaModel(enc, shapes).train()
    step_rows = {"Theia-T + cdiv translators, cached targets":
                 bench_steps(model, batch, steps, shapes)}
    tiny = build_teachers(args.teachers, pretrained=False, tiny=True)
    tiny_shapes = {t.hub_id: t.shape for t in tiny}
    model_tiny = TheiaModel(TheiaEncoder(ENCODERS["theia_tiny"]()), tiny_shapes).train()
    step_rows["Theia-T, tiny random teachers on the fly"] = bench_steps(
        model_tiny, batch, steps, tiny_shapes, tiny)
    title = f"training step on CPU ({args.threads} threads, batch {batch})"
    print(f"\n{title:<52} {'images/s':>10}")
    for name, ips in step_rows.items():
        print(f"{name:<52} {ips:>10.1f}")
    results.update({f"step: {k}": v for k, v in step_rows.items()})
    if torch.cuda.is_available():
        results.update(bench_gpu(args, shapes, n_images=n))
    else:
        print("\nNo CUDA device here: the GPU rows (Theia-B cdiv, cache vs on the fly, vs the "
              "paper's ~117 images/s/GPU; target >= 1000 images/s per H100) are not measured.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
