"""Spatial tokens of a Theia encoder for image files (and PCA pictures of them).

``--checkpoint`` takes a checkpoint directory (ours or a published Theia one), a hub id
(``theaiinstitute/theia-tiny-patch16-224-cdiv``; downloaded when online), or a registry name
(``theia_tiny|small|base``) meaning a *randomly initialised* encoder (``--seed``).

Writes ``--out`` (.npz): ``tokens`` float32 [N, 196, C], ``names`` [N] (the image paths),
``image_hw`` int [N, 2] (original sizes), ``checkpoint``, ``random_init``, ``encoder_config``
(JSON). Images are read and checked before anything is written; files are written atomically.

Example::

    theia encode --checkpoint theia_tiny --image theia_ros/data/samples/*.png \\
        --out feats.npz --pca-png pca/
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from theia_ros.errors import TheiaError

if TYPE_CHECKING:
    from policies.encoder import TheiaEncoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
    parser.add_argument("--image", nargs="+", required=True, metavar="FILE_OR_DIR",
                        help="image files (PNG, JPEG, ...; grey/RGBA converted to RGB) or "
                             "folders of them (their images in sorted order)")
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="output .npz file")
    parser.add_argument("--pca-png", metavar="DIR",
                        help="also write <image>_pca.png (input | 3-component PCA) per image")


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--seed``, ``--batch-size`` (shared with ``theia analyze``)."""
    parser.add_argument("--checkpoint", required=True, metavar="PATH_OR_ID",
                        help="checkpoint directory, hub id, or theia_tiny|small|base (random)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for a random-init registry encoder (default 0)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")


def open_encoder(spec: str, seed: int) -> tuple[TheiaEncoder, bool]:
    """Load the encoder named by ``--checkpoint``; say loudly when it is random."""
    from policies.checkpoint import is_registry_name, load_encoder

    random_init = is_registry_name(spec)
    encoder = load_encoder(spec, seed=seed)
    if random_init:
        print(f"NOTE: '{spec}' is a RANDOMLY INITIALISED encoder (seed {seed}), not a trained "
              "Theia model: the features show the pipeline working, nothing more.")
    else:
        print(f"encoder: {spec} ({encoder.config.name}, C={encoder.embed_dim})")
    return encoder, random_init


def encode_images(encoder: TheiaEncoder, images: Sequence[np.ndarray], batch_size: int = 8
                  ) -> np.ndarray:
    """uint8 ``[H, W, 3]`` images (any sizes) -> tokens ``[N, 196, C]`` float32."""
    import torch
    from tqdm import tqdm

    from policies.preprocess import preprocess

    if batch_size < 1:
        raise TheiaError(f"--batch-size must be >= 1, got {batch_size}")
    param = next(encoder.parameters())
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="encode", unit="batch",
                          disable=len(images) <= batch_size):
            # Preprocess one by one (sizes differ), then one batched forward pass.
            x = torch.cat([preprocess(img, size=encoder.config.img_size)
                           for img in images[start:start + batch_size]])
            out.append(encoder.forward_features(x.to(param.device, param.dtype)).float().cpu())
    return torch.cat(out).numpy()


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """File stems, with ``_<index>`` added where two inputs share a stem."""
    stems = [p.stem for p in paths]
    return [s if stems.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(stems)]


def image_paths(args: Sequence[str]) -> list[Path]:
    """``--image`` arguments -> files; a folder stands for the images directly in it."""
    from policies.preprocess import list_images

    paths: list[Path] = []
    for arg in args:
        path = Path(arg)
        paths += list_images(path) if path.is_dir() else [path]
    return paths


def main(args: argparse.Namespace) -> int:
    from policies.preprocess import load_image
    from theia_ros.atomic import atomic_write
    from training.analysis import pca_rgb, side_by_side, write_png

    out = Path(args.out)
    if out.suffix != ".npz":
        raise TheiaError(f"--out {out}: expected a .npz file name")
    paths = image_paths(args.image)
    images = [load_image(p) for p in paths]  # all inputs checked before any output
    encoder, random_init = open_encoder(args.checkpoint, args.seed)
    tokens = encode_images(encoder, images, args.batch_size)

    buffer = io.BytesIO()
    np.savez(buffer, tokens=tokens.astype(np.float32), names=np.array([str(p) for p in paths]),
             image_hw=np.array([img.shape[:2] for img in images], dtype=np.int64),
             checkpoint=np.array(args.checkpoint), random_init=np.array(random_init),
             encoder_config=np.array(json.dumps(encoder.config.to_dict())))
    atomic_write(out, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    print(f"wrote {out}: tokens {list(tokens.shape)} for {len(paths)} image(s)")

    if args.pca_png:
        pictures = pca_rgb(tokens)
        for stem, img, pic in zip(unique_stems(paths), images, pictures):
            write_png(Path(args.pca_png) / f"{stem}_pca.png", side_by_side(img, pic))
        print(f"wrote {len(paths)} PCA picture(s) to {args.pca_png}/ (input | PCA of tokens)")
    return 0
