"""Shared builders for the distillation tests: synthetic image folders, prepared shards,
statistics and caches from small random-weight teachers (no downloads), tiny configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.distill.cache import extract_features
from training.distill.config import DistillConfig, config_from_dict
from training.distill.images import ImageShards, prepare_images
from training.distill.stats import TeacherStats, compute_stats
from training.distill.teachers import Teacher, build_teachers

CDIV_TINY_SHAPES = {
    "openai/clip-vit-large-patch14": (48, 16, 16),
    "facebook/dinov2-large": (40, 16, 16),
    "google/vit-huge-patch14-224-in21k": (56, 16, 16),
}


def write_images(root: Path, n: int, classes: int = 2, corrupt: int = 0, seed: int = 0,
                 flat: bool = False) -> Path:
    """``n`` random images of varied sizes (JPEG and PNG) plus ``corrupt`` broken files.

    Images are smooth colour gradients plus noise so teachers see some structure.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-1, 1, (2, 3))
        img = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
        img = np.clip(img + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        folder = root if flat else root / f"class_{i % classes}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(img).save(folder / f"img_{i:04d}.{'png' if i % 3 == 0 else 'jpg'}")
    for j in range(corrupt):
        folder = root if flat else root / f"class_{j % classes}"
        folder.mkdir(exist_ok=True)
        data = b"" if j % 2 else b"\xff\xd8\xff\xe0 not really a jpeg"
        (folder / f"broken_{j}.jpg").write_bytes(data)
    return root


def tiny_teachers(names: str = "cdiv") -> list[Teacher]:
    """Small random-weight teachers (fixed seed inside: same weights in every process)."""
    return build_teachers(names, pretrained=False, tiny=True)


def make_dataset(tmp: Path, n: int = 48, shard_size: int = 16, corrupt: int = 0,
                 teachers: list[Teacher] | None = None, cache: bool = True
                 ) -> tuple[ImageShards, TeacherStats, Path | None]:
    """Images -> shards -> stats (-> cache) under ``tmp``; returns (shards, stats, cache)."""
    write_images(tmp / "src", n, corrupt=corrupt)
    prepare_images(tmp / "src", tmp / "images", shard_size=shard_size, workers=1,
                   progress=False)
    shards = ImageShards(tmp / "images")
    teachers = teachers if teachers is not None else tiny_teachers()
    stats = compute_stats(shards, teachers, batch_size=16, progress=False)
    stats.save(tmp / "stats.safetensors")
    cache_dir = None
    if cache:
        cache_dir = tmp / "cache"
        extract_features(shards, teachers, stats, cache_dir, batch_size=16, progress=False)
    return shards, stats, cache_dir


def tiny_config(tmp: Path, out: str = "run", **sections: dict) -> DistillConfig:
    """A config for a tiny student (width 32, 2 blocks) on the data from :func:`make_dataset`."""
    raw = {
        "data": {"images": str(tmp / "images"), "stats": str(tmp / "stats.safetensors"),
                 "cache": str(tmp / "cache"), "val_images": 8, "chunk": 4, "prefetch": 2,
                 "read_workers": 1},
        "model": {"encoder": "theia_tiny", "embed_dim": 32, "depth": 2, "num_heads": 2,
                  "teachers": "cdiv", "tiny_teachers": True},
        "optim": {"lr": 2e-3, "warmup_epochs": 1},
        "train": {"out": str(tmp / out), "epochs": 4, "batch_size": 8, "ckpt_every_steps": 3,
                  "log_every_steps": 1, "progress": False, "tensorboard": False,
                  "device": "cpu"},
    }
    for name, values in sections.items():
        raw[name].update(values)
    return config_from_dict(raw)
