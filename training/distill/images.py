"""Resize-once image shards: the input of statistics, feature extraction and training.

ImageNet JPEGs cost ~10 ms each to decode and resize; doing it once, up front, and keeping
uint8 ``224 x 224 x 3`` arrays in fixed-shape memory-mappable shards turns every later pass
into sequential reads. Layout of a prepared directory::

    plan.json               source files (shuffled once, seed-fixed) and shard size
    images_00000.npy        uint8 [n, 224, 224, 3], n <= shard_size (corrupt files dropped)
    images_00000.json       that shard's files, labels and skipped files (with the error)
    ...
    index.json              written last: shard counts, skipped count, content hash

Files are shuffled once so that any contiguous slice is a class-mixed sample (the trainer
reads contiguous slices). Corrupt/unreadable images are skipped and counted, never fatal.
Each shard is written to a temporary name and renamed, so a killed run resumes where it
stopped; shard ``i`` belongs to rank ``i % world_size`` for multi-node preparation.

Example::

    prepare_images("imagenet/train", "data/in1k_224", shard_size=1024, workers=8)
    shards = ImageShards("data/in1k_224")
    batch = shards.read(0, 128)            # uint8 [128, 224, 224, 3]
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from theia_ros.atomic import atomic_write_json, commit, temp_path
from theia_ros.errors import TheiaError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
INDEX_FORMAT = "theia-image-shards/1"


def read_json(path: Path, what: str) -> dict:
    """Read a JSON object, naming the file in the error when it is missing or broken."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TheiaError(f"{path}: missing {what}") from exc
    except (OSError, ValueError) as exc:
        raise TheiaError(f"{path}: unreadable {what} ({exc})") from exc
    if not isinstance(obj, dict):
        raise TheiaError(f"{path}: {what} must be a JSON object")
    return obj


def scan_images(src: str | Path) -> tuple[list[str], list[int], list[str]]:
    """ImageNet-style (class sub-folders) or flat folder -> (relative files, labels, classes).

    A folder with sub-folders is read as one class per sub-folder (label = sorted position);
    image files directly inside a flat folder get label -1.
    """
    root = Path(src)
    if not root.is_dir():
        raise TheiaError(f"{root}: not a folder of images")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[str] = []
    labels: list[int] = []
    if classes:
        for label, cls in enumerate(classes):
            for p in sorted((root / cls).rglob("*")):
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                    files.append(p.relative_to(root).as_posix())
                    labels.append(label)
    else:
        for p in sorted(root.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                files.append(p.name)
                labels.append(-1)
    if not files:
        raise TheiaError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files, labels, classes


def load_resized(path: str | Path, size: int = 224, resize: str = "crop") -> np.ndarray:
    """Decode one image file -> uint8 ``[size, size, 3]`` RGB.

    ``crop``: shorter side to ``size`` then centre crop (keeps aspect ratio);
    ``stretch``: both sides to ``size``. Bicubic with PIL's antialiasing; JPEGs are
    DCT-downscaled while decoding (``draft``) when much larger than needed.
    Raises OSError/ValueError (and PIL's errors, subclasses of them) for corrupt files.
    """
    from PIL import Image

    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        im = im.convert("RGB")
        w, h = im.size
        if w < 1 or h < 1:
            raise ValueError("empty image")
        if resize == "stretch":
            im = im.resize((size, size), Image.BICUBIC)
        else:
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.BICUBIC)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise ValueError(f"decoded shape {arr.shape}")
    return arr


def _decode_or_error(args: tuple[str, int, str]) -> np.ndarray | str:
    path, size, resize = args
    try:
        return load_resized(path, size, resize)
    except Exception as exc:  # one bad file must never stop a 1.2M-image run
        # PIL raises UnidentifiedImageError (OSError), truncation OSErrors, SyntaxError,
        # DecompressionBombError, ValueError ...: all mean "skip and count this file".
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


@dataclass(frozen=True)
class ShardInfo:
    """One prepared shard: file name and number of images in it."""

    file: str
    count: int


class ImageShards:
    """Reader of a prepared directory (``index.json`` + ``images_*.npy`` memmaps)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index = read_json(self.root / "index.json", "image-shard index (run `theia distill "
                                                    "prepare` first)")
        if index.get("format") != INDEX_FORMAT:
            raise TheiaError(f"{self.root / 'index.json'}: format {index.get('format')!r}, "
                             f"expected {INDEX_FORMAT!r}")
        self.index = index
        self.size = int(index["size"])
        self.shards = [ShardInfo(s["file"], int(s["count"])) for s in index["shards"]]
        counts = np.array([s.count for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.num_images = int(self.offsets[-1])
        self.hash = str(index["hash"])
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_images

    def array(self, shard: int) -> np.ndarray:
        """Memory-mapped uint8 ``[n, S, S, 3]`` of one shard (opened once, then cached)."""
        if shard not in self._arrays:
            path = self.root / self.shards[shard].file
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise TheiaError(f"{path}: unreadable image shard ({exc})") from exc
            expect = (self.shards[shard].count, self.size, self.size, 3)
            if arr.shape != expect or arr.dtype != np.uint8:
                raise TheiaError(f"{path}: expected uint8 {expect}, got {arr.dtype} {arr.shape}")
            self._arrays[shard] = arr
        return self._arrays[shard]

    def locate(self, index: int) -> tuple[int, int]:
        """Global image index -> (shard, row)."""
        shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return shard, index - int(self.offsets[shard])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Images ``[start, stop)`` (may span shards) -> uint8 ``[n, S, S, 3]`` copy."""
        parts = []
        for shard, lo, hi in split_range(self.offsets, start, stop):
            parts.append(self.array(shard)[lo:hi])
        return np.concatenate(parts) if len(parts) != 1 else np.array(parts[0])


def split_range(offsets: np.ndarray, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
    """Global ``[start, stop)`` -> ``(shard, row_lo, row_hi)`` pieces, in order."""
    if not 0 <= start <= stop <= int(offsets[-1]):
        raise IndexError(f"range [{start}, {stop}) outside 0..{int(offsets[-1])}")
    pos = start
    while pos < stop:
        shard = int(np.searchsorted(offsets, pos, side="right")) - 1
        end = min(stop, int(offsets[shard + 1]))
        yield shard, pos - int(offsets[shard]), end - int(offsets[shard])
        pos = end


def _shard_paths(out: Path, shard: int) -> tuple[Path, Path]:
    return out / f"images_{shard:05d}.npy", out / f"images_{shard:05d}.json"


def prepare_images(src: str | Path, out: str | Path, shard_size: int = 1024, size: int = 224,
                   resize: str = "crop", seed: int = 0, workers: int = 1, rank: int = 0,
                   world_size: int = 1, progress: bool = True,
                   stop_after_shards: int | None = None) -> dict | None:
    """Decode, resize once and write uint8 shards; resumable; returns the index when complete.

    Args:
        src: ImageNet-style or flat image folder.
        out: output directory (created).
        shard_size: images per shard (the last one and shards with corrupt files are shorter).
        size: output side in pixels (224 for Theia).
        resize: ``crop`` (shorter side + centre crop) or ``stretch``.
        seed: seed of the one-off shuffle of the file list.
        workers: decoding processes (1 = in this process).
        rank, world_size: this process writes shards ``i`` with ``i % world_size == rank``.
        progress: show a tqdm bar.
        stop_after_shards: write at most this many shards then return (tests of resuming).

    Returns:
        The ``index.json`` content once every shard exists (any rank may finish it), else None.
    """
    if resize not in ("crop", "stretch"):
        raise TheiaError(f"resize must be 'crop' or 'stretch', got {resize!r}")
    if shard_size < 1 or size < 16:
        raise TheiaError(f"shard_size must be >= 1 and size >= 16, got {shard_size}, {size}")
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = _load_or_write_plan(src, out, shard_size, size, resize, seed)
    files, labels = plan["files"], plan["labels"]
    num_shards = (len(files) + shard_size - 1) // shard_size
    todo = [i for i in range(num_shards)
            if i % world_size == rank and not _shard_paths(out, i)[0].exists()]
    if stop_after_shards is not None:
        todo = todo[:stop_after_shards]
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        sizes = [min(len(files), (i + 1) * shard_size) - i * shard_size for i in todo]
        bar = tqdm(total=sum(sizes), unit="img", desc="prepare", disable=not progress)
        for shard in todo:
            lo, hi = shard * shard_size, min(len(files), (shard + 1) * shard_size)
            _write_shard(src, out, shard, files[lo:hi], labels[lo:hi], size, resize, pool,
                         bar.update)
        bar.close()
    finally:
        if pool is not None:
            pool.shutdown()
    return finalize_index(out)


def _load_or_write_plan(src: Path, out: Path, shard_size: int, size: int, resize: str,
                        seed: int) -> dict:
    plan_path = out / "plan.json"
    if plan_path.exists():
        plan = read_json(plan_path, "preparation plan")
        mine = {"shard_size": shard_size, "size": size, "resize": resize, "seed": seed}
        theirs = {k: plan.get(k) for k in mine}
        if mine != theirs or Path(plan.get("source", "")) != src.resolve():
            raise TheiaError(f"{plan_path}: this folder was prepared with {theirs} from "
                             f"{plan.get('source')}; asked for {mine} from {src.resolve()} "
                             "(use a new output folder)")
        return plan
    files, labels, classes = scan_images(src)
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    plan = {"source": str(src.resolve()), "shard_size": shard_size, "size": size,
            "resize": resize, "seed": seed, "classes": classes,
            "files": [files[i] for i in order], "labels": [labels[i] for i in order]}
    write_json_atomic(plan_path, plan)
    return plan


def _write_shard(src: Path, out: Path, shard: int, files: list[str], labels: list[int],
                 size: int, resize: str, pool: ProcessPoolExecutor | None,
                 on_image: Callable[[int], object]) -> None:
    npy_path, meta_path = _shard_paths(out, shard)
    jobs = [(str(src / f), size, resize) for f in files]
    results = pool.map(_decode_or_error, jobs, chunksize=16) if pool else map(
        _decode_or_error, jobs)
    images, kept, kept_labels, skipped = [], [], [], []
    for f, label, res in zip(files, labels, results):
        if isinstance(res, str):
            skipped.append({"file": f, "error": res})
        else:
            images.append(res)
            kept.append(f)
            kept_labels.append(label)
        on_image(1)
    tmp = temp_path(npy_path, suffix=".npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                    shape=(len(images), size, size, 3))
    for i, im in enumerate(images):
        arr[i] = im
    arr.flush()
    del arr
    # Metadata first, then the array: the .npy's existence marks the shard as done.
    write_json_atomic(meta_path, {"count": len(kept), "files": kept, "labels": kept_labels,
                                  "skipped": skipped})
    commit(tmp, npy_path)


def finalize_index(out: str | Path) -> dict | None:
    """Write ``index.json`` if every shard exists; returns it (None while shards are missing)."""
    out = Path(out)
    plan = read_json(out / "plan.json", "preparation plan")
    num_shards = (len(plan["files"]) + plan["shard_size"] - 1) // plan["shard_size"]
    shards, skipped = [], []
    digest = hashlib.sha256()
    for i in range(num_shards):
        npy_path, meta_path = _shard_paths(out, i)
        if not npy_path.exists():
            return None
        meta = read_json(meta_path, "shard metadata")
        shards.append({"file": npy_path.name, "count": meta["count"]})
        skipped.extend(meta["skipped"])
        digest.update(json.dumps([npy_path.name, meta["files"]]).encode())
    index = {"format": INDEX_FORMAT, "size": plan["size"], "resize": plan["resize"],
             "source": plan["source"], "classes": plan["classes"], "shards": shards,
             "num_images": sum(s["count"] for s in shards), "skipped_count": len(skipped),
             "skipped": skipped, "hash": digest.hexdigest()[:16]}
    write_json_atomic(out / "index.json", index)
    return index


def write_json_atomic(path: Path, obj: object) -> None:
    """Manifests and indices: sorted keys, so every rank writes identical bytes."""
    atomic_write_json(path, obj, indent=1, sort_keys=True)
