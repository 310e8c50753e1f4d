"""The paper's representation measures for a Theia encoder on a folder of images.

Prints and writes (``--out``, default ``analysis/``): ``metrics.json`` with the entropy of the
spatial-token L2-norm distribution (100 equal-width bins over [0, max] of all norms,
natural log, i.e. nats; max ln 100 = 4.61), the PCA explained-variance AUC, the cosine
similarity to the mean representation (definitions in ``training/analysis.py``), and one
norm map per image, ``norm_maps/<image>_norm.png`` (input | norms clipped to [0, 2*median],
with a colour bar). When every token has the same norm (a final LayerNorm with a uniform
weight: random-init or barely trained encoders) it says so instead of reporting a
meaningless entropy of 0 and flat maps.

``--checkpoint`` accepts what ``theia encode`` accepts (``theia_tiny`` = random init).

Example::

    theia analyze --checkpoint theia_tiny --images theia_ros/data/samples --out analysis/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.cli.encode import add_checkpoint_arguments, encode_images, open_encoder, unique_stems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="folder of images (png, jpg, ...; read in sorted order)")
    parser.add_argument("--out", default="analysis", metavar="DIR",
                        help="output folder (default: analysis/)")


def main(args: argparse.Namespace) -> int:
    from policies.preprocess import list_images, load_image
    from theia_ros.atomic import atomic_write
    from training.analysis import (
        CONSTANT_NORMS_NOTE,
        representation_measures,
        token_norms,
        write_norm_map,
    )

    paths = list_images(args.images)
    images = [load_image(p) for p in paths]  # all inputs checked before any output
    encoder, random_init = open_encoder(args.checkpoint, args.seed)
    tokens = encode_images(encoder, images, args.batch_size)
    measures = representation_measures(tokens)
    norms = token_norms(tokens)

    out = Path(args.out)
    stems = unique_stems(paths)
    per_image = [{"image": str(p), "norm_mean": float(n.mean()), "norm_median":
                  float(sorted(n)[len(n) // 2]), "norm_max": float(n.max())}
                 for p, n in zip(paths, norms)]
    for stem, path, img, n in zip(stems, paths, images, norms):
        write_norm_map(out / "norm_maps" / f"{stem}_norm.png", img, n,
                       f"{path.name}: {args.checkpoint}")
    report = {"checkpoint": args.checkpoint, "random_init": random_init,
              "encoder": encoder.config.to_dict(), "images": str(args.images),
              "measures": measures, "per_image": per_image}
    if measures["norms_constant"]:
        report["note"] = CONSTANT_NORMS_NOTE
    atomic_write(out / "metrics.json",
                 lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))

    print(f"{'measure':<34}value")
    for key, value in measures.items():
        print(f"{key:<34}{value:.4f}" if isinstance(value, float) else f"{key:<34}{value}")
    if random_init:
        print("(random-init encoder: these numbers describe untrained weights)")
    if measures["norms_constant"]:
        print(f"NOTE: {CONSTANT_NORMS_NOTE}")
    print(f"wrote {out / 'metrics.json'} and {len(paths)} norm map(s) in {out / 'norm_maps'}/")
    return 0
