"""How far apart a teacher's targets are under ``published`` and ``aligned`` teacher inputs.

``published`` feeds DINOv2 what its hub processor makes of a prepared 224 x 224 image (resize
the shorter side to 256, bicubic, centre crop 224: the middle 87.5 % of the view, zoomed);
``aligned`` feeds it the whole 224 x 224 view. For each image both inputs go through the
same teacher; the table gives the per-token cosine similarity of the two 16 x 16 target maps
(tokens at the same grid cell, which see different parts of the scene under the zoom) and
their relative L2 distance, per image and on average.

Without ``--pretrained`` the teacher is the small *random-weight* DINOv2 of the tests (same
architecture, no download): its numbers show how much the input change moves a ViT's token
features, not the released DINOv2's targets. With ``--pretrained`` (downloads ~1.2 GB once)
they are the real ones.

Example::

    python benchmarks/teacher_inputs.py                     # tiny random DINOv2, ~20 s
    python benchmarks/teacher_inputs.py --pretrained --teacher facebook/dinov2-large
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from training.distill.images import load_resized
from training.distill.teachers import SOURCES, TINY_OVERRIDES, build_teacher

SAMPLES = Path(__file__).resolve().parents[1] / "theia_ros" / "data" / "samples"


def images() -> dict[str, np.ndarray]:
    """Prepared uint8 224 x 224 images: the bundled scenes and two procedural textures."""
    out = {p.stem: load_resized(p, 224, "crop") for p in sorted(SAMPLES.glob("*.png"))}
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224]
    stripes = 128 + 90 * np.sign(np.sin(xx / 3.1 + yy / 5.3))[..., None]
    out["stripes+noise"] = np.clip(stripes + rng.normal(0, 20, (224, 224, 3)), 0,
                                   255).astype(np.uint8)
    blocks = 60 + 140 * ((yy // 28 + xx // 28) % 2)[..., None] * np.array([1.0, 0.6, 0.3])
    out["checkerboard"] = blocks.astype(np.uint8)
    return out


def compare(hub_id: str, pretrained: bool) -> list[dict]:
    if pretrained:
        teacher = build_teacher(hub_id, pretrained=True)
    else:
        torch.manual_seed(0)
        teacher = build_teacher(hub_id, pretrained=False, overrides=TINY_OVERRIDES[hub_id])
    rows = []
    for name, img in images().items():
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]
        feats = {}
        for mode in ("published", "aligned"):
            teacher.inputs = mode
            feats[mode] = teacher(x)[0].double()  # [H*W, C]
        a, b = feats["published"], feats["aligned"]
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        rows.append({"image": name, "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                     "rel_l2": float((a - b).norm() / a.norm())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="facebook/dinov2-large", choices=sorted(SOURCES))
    parser.add_argument("--pretrained", action="store_true",
                        help="the released weights (download) instead of a tiny random teacher")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = compare(args.teacher, args.pretrained)
    kind = "released weights" if args.pretrained else "tiny RANDOM-weight stand-in"
    proc = SOURCES[args.teacher].processor
    print(f"{args.teacher} ({kind}): published ({proc.name}) vs aligned targets, "
          "per-token cosine and relative L2")
    head = f"{'image':<16}{'cos mean':>10}{'cos min':>10}{'rel L2':>9}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['image']:<16}{r['cos_mean']:>10.3f}{r['cos_min']:>10.3f}{r['rel_l2']:>9.3f}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("cos_mean", "cos_min", "rel_l2")}
    print(f"{'mean':<16}{mean['cos_mean']:>10.3f}{mean['cos_min']:>10.3f}{mean['rel_l2']:>9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
