"""Teacher-feature cache: normalised targets as fixed-shape bf16 arrays, one file per teacher
per shard, aligned row-for-row with the image shards.

Why this layout: the published pipeline stored one file per sample in tar shards and spent
its time reading ~3.4 MB of features per image through per-sample decoding. Here a batch is
a handful of contiguous ``memmap`` slices (see ``training.distill.loader``): no per-sample
files, no decoding, and bf16 -> float32 conversion happens on the device.

Layout::

    manifest.json                       teachers (id, shape, tokens), dtype, image count,
                                        image-shard hash, statistics hash
    feats_00000__openai--clip-vit-large-patch14.npy   uint16 [n, H*W, C] (bf16 bit patterns)
    feats_00000__facebook--dinov2-large.npy
    feats_00000.done                    written last: the shard is complete
    ...

Targets are stored *normalised* ((x - mean) / std, with the statistics whose hash the
manifest records): bf16 keeps ~3 significant digits of the value it stores, and a normalised
value is O(1), so the rounding error stays ~0.4% of a standard deviation whatever the
channel's mean. Shard ``i`` is extracted by rank ``i % world_size``; every file goes through a
temporary name + rename, so a killed extraction resumes shard by shard.

Example::

    extract_features(ImageShards("data/in1k_224"), teachers, stats, "data/cache_cdiv")
    cache = FeatureCache("data/cache_cdiv", teacher_shapes("cdiv"), stats_hash=stats.hash())
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from theia_ros.atomic import atomic_write_text, commit
from theia_ros.errors import TheiaError
from training.distill.images import ImageShards, read_json, write_json_atomic
from training.distill.stats import TeacherStats
from training.distill.teachers import Teacher, run_teachers

CACHE_FORMAT = "theia-feature-cache/1"


def file_key(hub_id: str) -> str:
    """Hub id -> a file-name-safe key (``openai/clip-vit...`` -> ``openai--clip-vit...``)."""
    return hub_id.replace("/", "--")


def to_bf16_bits(x: torch.Tensor) -> np.ndarray:
    """float tensor -> numpy uint16 holding its bf16 bit patterns (round-to-nearest-even)."""
    return x.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)


def from_bf16_bits(bits: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"
                   ) -> torch.Tensor:
    """uint16/int16 bf16 bit patterns -> float32 on ``device`` (moved first, converted there)."""
    if isinstance(bits, np.ndarray):
        bits = torch.from_numpy(np.require(bits, requirements=["C", "W"]).view(np.int16))
    t = bits
    return t.to(device, non_blocking=True).view(torch.bfloat16).float()


def _manifest(shards: ImageShards, shapes: Mapping[str, Sequence[int]], stats_hash: str,
              teacher_inputs: str) -> dict:
    return {
        "format": CACHE_FORMAT,
        "dtype": "bfloat16",
        "storage": "uint16 bit patterns, [n, H*W, C] per teacher per shard, normalised",
        "teachers": [{"id": h, "shape": [int(v) for v in s], "tokens": int(s[1]) * int(s[2]),
                      "file_key": file_key(h)} for h, s in shapes.items()],
        "num_images": shards.num_images,
        "shard_counts": [s.count for s in shards.shards],
        "images_hash": shards.hash,
        "stats_hash": stats_hash,
        "teacher_inputs": teacher_inputs,
    }


def _compare(found: dict, expected: dict, path: Path) -> None:
    """Raise a one-line TheiaError naming the first field where two manifests differ."""
    found_t = {t["id"]: t["shape"] for t in found.get("teachers", [])}
    want_t = {t["id"]: t["shape"] for t in expected["teachers"]}
    if set(found_t) != set(want_t):
        raise TheiaError(f"{path}: cache built for teachers {sorted(found_t)}, but "
                         f"{sorted(want_t)} were asked for (use another cache folder)")
    for hub, shape in want_t.items():
        if list(found_t[hub]) != list(shape):
            raise TheiaError(f"{path}: teacher {hub} has shape {found_t[hub]} in the cache, "
                             f"expected {shape}")
    for field, what in (("format", "format"), ("images_hash", "image shards"),
                        ("shard_counts", "shard sizes"), ("stats_hash", "statistics"),
                        ("teacher_inputs", "teacher inputs")):
        if found.get(field) != expected[field]:
            raise TheiaError(f"{path}: cache {what} differ ({field} {found.get(field)!r} != "
                             f"{expected[field]!r}); it was built from other "
                             f"{what} - rebuild it or point at the matching ones")


def _shard_files(root: Path, shard: int, hub_id: str) -> Path:
    return root / f"feats_{shard:05d}__{file_key(hub_id)}.npy"


def _done_marker(root: Path, shard: int) -> Path:
    return root / f"feats_{shard:05d}.done"


@torch.no_grad()
def extract_features(shards: ImageShards, teachers: Sequence[Teacher], stats: TeacherStats,
                     out: str | Path, batch_size: int = 64, rank: int = 0, world_size: int = 1,
                     progress: bool = True, stop_after_shards: int | None = None) -> int:
    """Write this rank's shards of normalised bf16 teacher features; returns shards written.

    Existing complete shards (``.done``) are skipped, so rerunning after a kill resumes.
    A folder holding a cache for other teachers, shapes, images or statistics is an error.
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    shapes = {t.hub_id: t.shape for t in teachers}
    stats.check(shapes, "feature statistics")
    stats = stats.subset(shapes)  # hash what the trainer hashes: these teachers only
    modes = {t.inputs for t in teachers}
    if len(modes) != 1:
        raise TheiaError(f"teachers run with different input modes {sorted(modes)}")
    manifest = _manifest(shards, shapes, stats.hash(), modes.pop())
    man_path = root / "manifest.json"
    if man_path.exists():
        _compare(read_json(man_path, "cache manifest"), manifest, man_path)
    else:
        write_json_atomic(man_path, manifest)  # identical content whichever rank writes it
    device = teachers[0].mean.device
    norm = stats.torch_mean_std(device)
    todo = [i for i in range(len(shards.shards))
            if i % world_size == rank and not _done_marker(root, i).exists()]
    if stop_after_shards is not None:
        todo = todo[:stop_after_shards]
    bar = tqdm(total=sum(shards.shards[i].count for i in todo), unit="img",
               desc=f"extract r{rank}", disable=not progress)
    for shard in todo:
        n = shards.shards[shard].count
        tmp = {h: _shard_files(root, shard, h).with_suffix(f".tmp{os.getpid()}.npy")
               for h in shapes}
        arrays = {h: np.lib.format.open_memmap(tmp[h], mode="w+", dtype=np.uint16,
                                               shape=(n, s[1] * s[2], s[0]))
                  for h, s in shapes.items()}
        images = shards.array(shard)
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            batch = torch.from_numpy(np.array(images[lo:hi])).permute(0, 3, 1, 2)
            feats = run_teachers(teachers, batch)
            for hub, x in feats.items():
                mean, std = norm[hub]
                arrays[hub][lo:hi] = to_bf16_bits((x - mean) / std)
            bar.update(hi - lo)
        for hub, arr in arrays.items():
            arr.flush()
            del arr
            commit(tmp[hub], _shard_files(root, shard, hub))
        arrays.clear()
        marker = _done_marker(root, shard)
        atomic_write_text(marker, "ok\n")
    bar.close()
    return len(todo)


class FeatureCache:
    """Reader of a complete cache, checked against what the trainer expects.

    Args:
        root: cache folder.
        shapes: ``{hub id: (C, H, W)}`` the student's translators produce.
        images: the image shards the trainer reads (their hash must match).
        stats_hash: hash of the statistics the run uses (must match the cache's).
        teacher_inputs: the run's teacher input mode (must match the cache's).
    """

    def __init__(self, root: str | Path, shapes: Mapping[str, Sequence[int]],
                 images: ImageShards, stats_hash: str, teacher_inputs: str = "published"):
        self.root = Path(root)
        man_path = self.root / "manifest.json"
        self.manifest = read_json(man_path, "feature-cache manifest (run `theia distill "
                                            "extract` first)")
        _compare(self.manifest, _manifest(images, shapes, stats_hash, teacher_inputs),
                 man_path)
        missing = [i for i in range(len(images.shards))
                   if not _done_marker(self.root, i).exists()]
        if missing:
            raise TheiaError(f"{self.root}: cache incomplete, {len(missing)} of "
                             f"{len(images.shards)} shards missing (first: {missing[0]}); "
                             "rerun `theia distill extract` to finish it")
        self.shapes = {h: tuple(int(v) for v in s) for h, s in shapes.items()}
        self.offsets = images.offsets
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    def array(self, shard: int, hub_id: str) -> np.ndarray:
        """Memory-mapped uint16 ``[n, H*W, C]`` of one teacher in one shard."""
        key = (shard, hub_id)
        if key not in self._arrays:
            path = _shard_files(self.root, shard, hub_id)
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise TheiaError(f"{path}: unreadable cache file ({exc})") from exc
            c, h, w = self.shapes[hub_id]
            n = int(self.offsets[shard + 1] - self.offsets[shard])
            if arr.shape != (n, h * w, c) or arr.dtype != np.uint16:
                raise TheiaError(f"{path}: expected uint16 {(n, h * w, c)}, got {arr.dtype} "
                                 f"{arr.shape}")
            self._arrays[key] = arr
        return self._arrays[key]
