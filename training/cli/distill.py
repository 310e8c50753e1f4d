"""Distil Theia from teacher models: prepare | stats | extract | train.

1. ``prepare``: decode + resize every image once into uint8 224x224 shards (corrupt files
   are skipped and counted; resumable; ``--workers`` decoding processes).
2. ``stats``: per-channel mean/std of each teacher's features (float64, mergeable: run one
   ``--rank`` per machine and ``--merge`` the parts, or one ``torchrun`` job). Optional: the
   Theia authors publish theirs (for ``--teacher-inputs published``); give ``extract
   --stats`` / ``data.stats`` a folder holding those ``.npy`` files, or ``published`` to
   download them, and no ImageNet pass is needed.
3. ``extract`` (optional): normalised bf16 teacher features into a memory-mappable cache
   (resumable; shard i on rank i % world). Without it, ``train`` runs the teachers on the fly.
4. ``train``: the distillation run from a YAML config plus ``section.key=value`` overrides;
   writes ``<train.out>/final`` that ``theia encode --checkpoint`` loads.

Under ``torchrun``, ``stats``, ``extract`` and ``train`` take their rank and world size from
the environment. ``--tiny-teachers`` builds small random-weight teachers (tests, CPU demos).
``--teacher-inputs`` (``model.teacher_inputs`` in ``train``): ``published`` (default) feeds
each teacher what its hub processor makes, as the released targets were made; ``aligned``
shows every teacher the student's whole view (see ``training.distill.teachers``).

Example::

    theia distill prepare --src imagenet/train --out data/in1k_224 --workers 16
    torchrun --nproc-per-node 8 -m training.cli.distill stats --images data/in1k_224 \\
        --teachers cdiv --out data/stats_cdiv.safetensors
    torchrun --nproc-per-node 8 -m training.cli.distill extract --images data/in1k_224 \\
        --teachers cdiv --stats data/stats_cdiv.safetensors --out data/cache_cdiv
    torchrun --nproc-per-node 8 -m training.cli.distill train \\
        --config training/configs/distill_cdiv_base.yaml data.cache=data/cache_cdiv
    theia encode --checkpoint runs/distill_cdiv_base/final --image door.png --out f.npz

Without ImageNet statistics (the published ones, downloaded once)::

    theia distill train --config training/configs/distill_cdiv_tiny.yaml data.stats=published
"""

from __future__ import annotations

import argparse
import os
import sys

from theia_ros.errors import TheiaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")

    p = sub.add_parser("prepare", help="resize images once into uint8 224x224 shards")
    p.add_argument("--src", required=True, help="ImageNet-style (class folders) or flat folder")
    p.add_argument("--out", required=True, help="output folder for the shards")
    p.add_argument("--shard-size", type=int, default=1024, help="images per shard")
    p.add_argument("--size", type=int, default=224, help="output side in pixels")
    p.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                   help="shorter side + centre crop (default) or stretch")
    p.add_argument("--seed", type=int, default=0, help="seed of the one-off shuffle")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="decoding processes")
    _add_rank(p)

    p = sub.add_parser("stats", help="per-channel mean/std of teacher features")
    p.add_argument("--out", required=True, help="statistics file (.safetensors)")
    p.add_argument("--merge", nargs="+", metavar="PART",
                   help="merge these partial statistics files into --out (no teachers run)")
    p.add_argument("--images", help="prepared image shards")
    p.add_argument("--max-images", type=int, help="use only the first N images")
    _add_teacher_args(p)
    _add_rank(p)

    p = sub.add_parser("extract", help="precompute normalised bf16 teacher features")
    p.add_argument("--images", required=True, help="prepared image shards")
    p.add_argument("--stats", required=True,
                   help="statistics file from `stats`, a folder of the published statistics "
                        "(.npy), or 'published' to download them")
    p.add_argument("--out", required=True, help="cache folder")
    _add_teacher_args(p)
    _add_rank(p)

    p = sub.add_parser("train", help="train the student (YAML config + key=value overrides)")
    p.add_argument("--config", help="YAML config (see training/configs/)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="e.g. train.epochs=5 data.cache=null optim.lr=1e-3")


def _add_teacher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teachers", default="cdiv", help="teacher set: cdiv, cddsv, letters, names")
    p.add_argument("--batch-size", type=int, default=64, help="images per teacher pass")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tiny-teachers", action="store_true",
                   help="small random-weight teachers (tests/demos; no downloads)")
    p.add_argument("--teacher-inputs", choices=("published", "aligned"), default="published",
                   help="published: each teacher's hub processor (default, as the released "
                        "targets); aligned: every teacher sees the student's whole view")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_rank(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rank", type=int, default=None, help="this worker (default: $RANK or 0)")
    p.add_argument("--world-size", type=int, default=None,
                   help="number of workers (default: $WORLD_SIZE or 1)")


def _rank_world(args: argparse.Namespace) -> tuple[int, int]:
    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", 0))
    world = args.world_size if args.world_size is not None else int(
        os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise TheiaError(f"--rank {rank} must be in 0..{world - 1} (--world-size {world})")
    return rank, world


def _teachers(args: argparse.Namespace, rank: int):  # -> list[Teacher]
    import torch

    from training.distill.teachers import build_teachers

    want_cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if want_cuda and not torch.cuda.is_available():
        raise TheiaError("--device cuda but no CUDA device is available")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if want_cuda else "cpu"
    if want_cuda:
        torch.cuda.set_device(device)
    try:
        return build_teachers(args.teachers, pretrained=not args.tiny_teachers,
                              tiny=args.tiny_teachers, device=device, inputs=args.teacher_inputs)
    except TheiaError as exc:
        if args.tiny_teachers:
            raise
        raise TheiaError(f"{exc}; for a run without downloads pass --tiny-teachers (small "
                         "random-weight teachers: tests, CPU demos)") from exc


def _run_prepare(args: argparse.Namespace) -> int:
    from training.distill.images import prepare_images

    rank, world = _rank_world(args)
    index = prepare_images(args.src, args.out, args.shard_size, args.size, args.resize,
                           args.seed, args.workers, rank, world)
    if index is None:
        print(f"rank {rank}: shards done; other ranks still running (index.json pending)")
    else:
        print(f"{args.out}: {index['num_images']} images in {len(index['shards'])} shards; "
              f"skipped {index['skipped_count']} unreadable file(s)")
        for item in index["skipped"][:10]:
            print(f"  skipped {item['file']}: {item['error']}")
    return 0


def _run_stats(args: argparse.Namespace) -> int:
    from training.distill.stats import TeacherStats, merge_stats_files

    if args.merge:
        merged = merge_stats_files(args.merge)
        merged.save(args.out)
        print(f"{args.out}: merged {len(args.merge)} parts, {merged.images} images")
        return 0
    if not args.images:
        raise TheiaError("stats: give --images (or --merge PART...)")
    import torch.distributed as dist

    from training.distill.images import ImageShards
    from training.distill.stats import all_reduce_stats, compute_stats

    rank, world = _rank_world(args)
    torchrun = "LOCAL_RANK" in os.environ and args.rank is None and world > 1
    teachers = _teachers(args, rank)
    if torchrun and not dist.is_initialized():
        dist.init_process_group("nccl" if teachers[0].mean.is_cuda else "gloo")
    stats: TeacherStats = compute_stats(ImageShards(args.images), teachers, args.batch_size,
                                        rank, world, args.max_images,
                                        progress=not args.no_progress and rank == 0)
    if torchrun:
        stats = all_reduce_stats(stats)
    if rank == 0 or not torchrun:
        stats.save(args.out)
        print(f"{args.out}: {stats.images} images, teachers {stats.teachers}, "
              f"hash {stats.hash()}")
    if torchrun:
        dist.barrier()
    return 0


def _run_extract(args: argparse.Namespace) -> int:
    from training.distill.cache import extract_features
    from training.distill.images import ImageShards
    from training.distill.stats import load_stats

    rank, world = _rank_world(args)
    shards = ImageShards(args.images)
    teachers = _teachers(args, rank)
    stats = load_stats(args.stats, args.teacher_inputs, [t.hub_id for t in teachers])
    done = extract_features(shards, teachers, stats, args.out, args.batch_size, rank, world,
                            progress=not args.no_progress)
    print(f"{args.out}: rank {rank}/{world} wrote {done} shard(s)")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from training.distill.config import load_config
    from training.distill.trainer import train

    cfg = load_config(args.config, args.overrides)
    try:
        final = train(cfg)
    except TheiaError as exc:
        if cfg.model.tiny_teachers or "cannot load teacher" not in str(exc):
            raise
        raise TheiaError(f"{exc}; for a run without downloads set model.tiny_teachers=true "
                         "(small random-weight teachers)") from exc
    if int(os.environ.get("RANK", 0)) != 0:
        return 0  # one report per run, from the main process
    if final is not None:
        print(f"encoder checkpoint: {final}  (theia encode --checkpoint {final} ...)")
    else:
        print(f"stopped at train.max_steps={cfg.train.max_steps}; rerun to resume from "
              f"{cfg.train.out}/checkpoints")
    return 0


_ACTIONS = {"prepare": _run_prepare, "stats": _run_stats, "extract": _run_extract,
            "train": _run_train}


def main(args: argparse.Namespace) -> int:
    return _ACTIONS[args.action](args)


if __name__ == "__main__":  # torchrun -m training.cli.distill <action> ...
    from theia_ros.cli import main as theia_main

    sys.exit(theia_main(["distill", *sys.argv[1:]]))
