"""Spatial tokens of a Theia encoder for image files (and PCA pictures of them).

``--checkpoint`` takes a checkpoint directory (ours or a published Theia one), a hub id
(``theaiinstitute/theia-tiny-patch16-224-cdiv``; downloaded when online), or a registry name
(``theia_tiny|small|base``) meaning a *randomly initialised* encoder (``--seed``).

Writes ``--out`` (.npz): ``tokens`` float32 [N, 196, C], ``names`` [N] (the image paths),
``image_hw`` int [N, 2] (original sizes), ``checkpoint``, ``random_init``, ``encoder_config``
(JSON). Images are read and checked before anything is written; files are written atomically.

``--decode`` (a checkpoint with translators) also writes, per teacher, the translator's output
mapped back into that teacher's feature space, ``decoded/<hub id>`` float32 [N, H*W, C_t]
(``x * std + mean``; what the paper's Figure 8 feeds to the teachers' own heads). The
statistics come from ``--stats`` (a folder of the published ``.npy`` files, ``published`` to
download them, or a ``theia distill stats`` file), else from the checkpoint; the published
checkpoints ship without any.

Example::

    theia encode --checkpoint theia_tiny --image theia_ros/data/samples/*.png \\
        --out feats.npz --pca-png pca/
    theia encode --checkpoint theaiinstitute/theia-tiny-patch16-224-cdiv \\
        --image door.png --out feats.npz --decode --stats published
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
    from policies.translators import TheiaModel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
    parser.add_argument("--image", nargs="+", required=True, metavar="FILE_OR_DIR",
                        help="image files (PNG, JPEG, ...; grey/RGBA converted to RGB) or "
                             "folders of them (their images in sorted order)")
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="output .npz file")
    parser.add_argument("--pca-png", metavar="DIR",
                        help="also write <image>_pca.png (input | 3-component PCA) per image")
    parser.add_argument("--decode", action="store_true",
                        help="also write each translator's output in its teacher's feature "
                             "space (decoded/<hub id>); needs translators and statistics")
    parser.add_argument("--stats", metavar="DIR|published|FILE",
                        help="teacher statistics for --decode: a folder of the published "
                             ".npy files, 'published' (download), or a `theia distill stats` "
                             "file (default: the checkpoint's own)")


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
    size, mode = encoder.config.img_size, encoder.config.resize
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="encode", unit="batch",
                          disable=len(images) <= batch_size):
            # Preprocess one by one (sizes differ), then one batched forward pass.
            x = torch.cat([preprocess(img, size=size, resize=mode)
                           for img in images[start:start + batch_size]])
            out.append(encoder.forward_features(x.to(param.device, param.dtype)).float().cpu())
    return torch.cat(out).numpy()


def open_translators(spec: str, stats_source: str | None) -> TheiaModel:
    """Encoder + translators of ``--checkpoint`` with the statistics ``--decode`` uses."""
    import torch

    from policies.checkpoint import is_registry_name, load_theia

    if is_registry_name(spec):
        raise TheiaError(f"--decode needs a checkpoint with translators, not the random "
                         f"encoder {spec!r}")
    model = load_theia(spec)
    if stats_source:
        from training.distill.stats import load_stats

        stats = load_stats(stats_source, teachers=model.teachers)
        stats.check({h: model.shapes[h] for h in model.teachers}, str(stats_source))
        for hub, (mean, std) in stats.mean_std().items():
            if hub in model.shapes:
                model.set_stats(hub, torch.from_numpy(mean), torch.from_numpy(std))
    missing = [hub for hub in model.teachers if not model.has_stats(hub)]
    if missing:
        raise TheiaError(f"{spec}: no feature statistics for {missing} to decode with (the "
                         "published checkpoints ship without them); pass --stats with a "
                         "folder of the published .npy files or 'published'")
    print(f"encoder + translators: {spec} ({model.encoder.config.name}, teachers "
          f"{model.teachers})")
    return model


def decode_tokens(model: TheiaModel, tokens: np.ndarray, batch_size: int = 8
                  ) -> dict[str, np.ndarray]:
    """Spatial tokens ``[N, 196, C]`` -> ``{"decoded/<hub id>": [N, H*W, C_t]}`` float32."""
    import torch

    param = next(model.parameters())
    out: dict[str, list[np.ndarray]] = {hub: [] for hub in model.teachers}
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            x = torch.from_numpy(tokens[start:start + batch_size]).to(param.device, param.dtype)
            for hub, feats in model.translate(x).items():
                out[hub].append(model.decode(hub, feats).float().cpu().numpy())
    return {f"decoded/{hub}": np.concatenate(v) for hub, v in out.items()}


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
    if args.stats and not args.decode:
        raise TheiaError("--stats is for --decode (teacher-space translator outputs)")
    paths = image_paths(args.image)
    images = [load_image(p) for p in paths]  # all inputs checked before any output
    model = open_translators(args.checkpoint, args.stats) if args.decode else None
    encoder, random_init = (model.encoder, False) if model else open_encoder(args.checkpoint,
                                                                            args.seed)
    tokens = encode_images(encoder, images, args.batch_size)
    extra = decode_tokens(model, tokens) if model else {}

    buffer = io.BytesIO()
    np.savez(buffer, tokens=tokens.astype(np.float32), names=np.array([str(p) for p in paths]),
             image_hw=np.array([img.shape[:2] for img in images], dtype=np.int64),
             checkpoint=np.array(args.checkpoint), random_init=np.array(random_init),
             encoder_config=np.array(json.dumps(encoder.config.to_dict())), **extra)
    atomic_write(out, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    print(f"wrote {out}: tokens {list(tokens.shape)} for {len(paths)} image(s)"
          + (f", decoded features of {len(extra)} teacher(s)" if extra else ""))

    if args.pca_png:
        pictures = pca_rgb(tokens)
        for stem, img, pic in zip(unique_stems(paths), images, pictures):
            write_png(Path(args.pca_png) / f"{stem}_pca.png", side_by_side(img, pic))
        print(f"wrote {len(paths)} PCA picture(s) to {args.pca_png}/ (input | PCA of tokens)")
    return 0
