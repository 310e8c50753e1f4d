"""Export a trained policy to a policy bundle (ONNX graphs + bundle.yaml + SHA256SUMS).

The bundle runs on every backend of ``theia_ros.runtime`` (onnxruntime, TensorRT engines
built on the target, torch). Export checks itself: ``onnx.checker``, then onnxruntime vs
torch on random inputs and, with ``--dataset``, on real frames; fp32 max abs error must stay
<= 1e-4 on tokens and actions, else the export fails and prints the numbers. Every graph is
also checked statically against TensorRT's ONNX-parser table (``training.export.trt_support``).

Example::

    theia export --policy runs/door --out bundles/door --dataset data/door --fused
    theia export --policy runs/spot --out bundles/spot --image-size 480x640
    theia export --policy runs/door --out bundles/door_jp60 --opset 17 --trt 8.6
"""

from __future__ import annotations

import argparse
import re

from theia_ros.errors import TheiaError
from training.export import ExportOptions, export_bundle
from training.export.onnx_export import DEFAULT_OPSET, EXPORTERS


def _hw(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 480x640, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True,
                        help="policy checkpoint directory (policy.json + model.safetensors)")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--fused", action="store_true",
                        help="also write one fused encoder+head graph (one call per step)")
    parser.add_argument("--dataset", default=None,
                        help="demo dataset: its camera size and frames for the parity check")
    parser.add_argument("--dataset-frames", type=int, default=4,
                        help="dataset (image, state) pairs to check (default 4)")
    parser.add_argument("--image-size", type=_hw, default=None, metavar="HxW",
                        help="camera image size the encoder graph takes (default: the "
                             "dataset's, else 224x224)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET}; 17 for TensorRT 8.6 / "
                             "JetPack 6.0)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                        help="torch ONNX exporter (default dynamo)")
    parser.add_argument("--trt", default="auto", metavar="VERSIONS",
                        help="TensorRT versions to check the graphs against statically "
                             "(auto: each pinned version that reads the opset; none: skip; "
                             "or e.g. 8.6,10.3)")
    parser.add_argument("--image-topic", default=None, help="expected image topic (recorded)")
    parser.add_argument("--state-topic", default=None, help="expected joint-state topic")
    parser.add_argument("--no-torch-copy", action="store_true",
                        help="leave the torch/ checkpoint copy out (no torch backend)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")


def main(args: argparse.Namespace) -> int:
    if args.dataset_frames < 1:
        raise TheiaError("--dataset-frames must be >= 1")
    topics = {k: v for k, v in (("image", args.image_topic), ("state", args.state_topic)) if v}
    opts = ExportOptions(image_hw=args.image_size, fused=args.fused, dataset=args.dataset,
                         dataset_frames=args.dataset_frames, opset=args.opset,
                         exporter=args.exporter, torch_copy=not args.no_torch_copy,
                         topics=topics, overwrite=args.force, trt=args.trt)
    out, results = export_bundle(args.policy, args.out, opts)
    worst = max(r.max_abs_err for r in results)
    print(f"wrote {out} ({len(results)} parity checks passed, worst max|err| {worst:.2e})")
    return 0
