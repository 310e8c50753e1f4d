"""Frozen-encoder features, computed once per episode and kept on disk.

Training a head on a frozen encoder only needs each frame's spatial tokens, so they are
computed once (the slow part on a CPU) and stored as ``[T, 196, C]`` npy files:

    <cache_root>/<encoder hash>/encoder.json       encoder config + hash
    <cache_root>/<encoder hash>/<episode hash>.npy  one per episode and camera (float16/32)

The encoder hash covers its config and every weight; the episode hash covers one camera's
images and the episode's states and actions, so the key is "this dataset content + this
encoder" and a cache is shared between runs and datasets. Each file is written atomically,
so an interrupted extraction resumes where it stopped and never leaves a half file behind.

Example::

    feats = cached_features(encoder, demos, cache_root="~/.cache/theia-ros/features")
    # [N, K, 196, C] float16 (K = len(demos.cameras)), aligned with demos.states
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from policies.encoder import TheiaEncoder
from policies.preprocess import preprocess
from theia_ros.atomic import atomic_write, atomic_write_json
from theia_ros.errors import TheiaError
from training.bc.data import Demos

DTYPES = {"float16": np.float16, "float32": np.float32}


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "theia-ros" / "features"


def encoder_hash(encoder: TheiaEncoder) -> str:
    """SHA-256 (first 16 hex) of the encoder config and all its weights."""
    h = hashlib.sha256(json.dumps(encoder.config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode_frames(encoder: TheiaEncoder, images: np.ndarray, batch_size: int = 32,
                  device: str | torch.device = "cpu", progress: tqdm | None = None
                  ) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> spatial tokens ``[T, 196, C]`` float32."""
    out = []
    size, mode = encoder.config.img_size, encoder.config.resize
    for start in range(0, len(images), batch_size):
        x = preprocess(images[start:start + batch_size], size=size, resize=mode).to(device)
        out.append(encoder.forward_features(x).float().cpu().numpy())
        if progress is not None:
            progress.update(len(x))
    return np.concatenate(out)


def cached_features(encoder: TheiaEncoder, demos: Demos, cache_root: str | os.PathLike,
                    dtype: str = "float16", batch_size: int = 32,
                    device: str | torch.device = "cpu", show_progress: bool = True
                    ) -> np.ndarray:
    """Features of every frame and camera of ``demos`` ``[N, K, 196, C]``, computing only
    the missing (episode, camera) files."""
    if dtype not in DTYPES:
        raise TheiaError(f"feature cache dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if demos.images is None:
        raise TheiaError("feature cache needs the demos' images (load with keep_images=True)")
    ehash = encoder_hash(encoder)
    root = Path(cache_root).expanduser() / ehash
    root.mkdir(parents=True, exist_ok=True)
    meta = root / "encoder.json"
    if not meta.exists():
        atomic_write_json(meta, {"encoder_hash": ehash, **encoder.config.to_dict()})
    tokens = encoder.config.num_spatial_tokens
    width = encoder.embed_dim
    starts = np.concatenate([[0], np.cumsum(demos.lengths)])
    jobs = [(k, cam, i, root / f"{fp}_{dtype}.npy") for k, cam in enumerate(demos.cameras)
            for i, fp in enumerate(demos.fingerprints[cam])]
    missing = [j for j in jobs if not j[3].exists()]
    todo = sum(demos.lengths[i] for _, _, i, _ in missing)
    encoder = encoder.to(device).eval()
    with tqdm(total=todo, desc="features", unit="frame", disable=not show_progress or not todo
              ) as bar:
        for _, cam, i, path in missing:
            frames = demos.images[cam][starts[i]:starts[i + 1]]
            feats = encode_frames(encoder, frames, batch_size, device, bar)
            _save_npy_atomic(path, feats.astype(DTYPES[dtype]))
    out = np.empty((demos.num_frames, len(demos.cameras), tokens, width), dtype=DTYPES[dtype])
    for k, _, i, path in jobs:
        arr = np.load(path, allow_pickle=False)
        if arr.shape != (demos.lengths[i], tokens, width):
            raise TheiaError(f"{path}: cached features have shape {arr.shape}, expected "
                             f"{(demos.lengths[i], tokens, width)}; delete the file")
        out[starts[i]:starts[i + 1], k] = arr
    return out


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, array)

    atomic_write(path, write)
