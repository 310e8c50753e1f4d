"""Latency of the encoder, the head and the whole control step, per backend and model size.

The control step is what the robot does every tick: decode a camera JPEG, preprocess,
encode, act, postprocess (first action of the chunk -> ``Action``). Every backend is timed
in the same run as the reference, torch eager fp32 running the same policy through its own
code (``Policy.predict_action_chunk``, torch preprocessing), and the table reports the
ratios, since absolute times on shared machines are noisy. Measurements are interleaved
(one call of each backend and part in turn, the order rotated every round) so background
load hits all of them alike; an encoder p50 above the step p50 that contains it is flagged
as noise.

``--sizes`` builds random-weight policies of the named encoder sizes and exports them with
``theia export`` (a subprocess: the deploy package does not import ``training``) into
``--work-dir`` (reused next time); ``--bundle`` benchmarks an exported bundle instead.

Example::

    theia bench --quick          # tiny + base, CNN-MLP, 10 iterations (see --quick)
    theia bench --sizes tiny,small,base --json > bench.json
    theia bench --bundle bundles/door --backends tensorrt,onnxruntime --precision fp16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from theia_ros.errors import TheiaError
from theia_ros.runtime import available_backends
from theia_ros.runtime.bench import (
    REFERENCE,
    SIZES,
    add_speedups,
    bench_bundle,
    consistency_lines,
    format_table,
    random_bundle,
    target_lines,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bundle", default=None, help="benchmark this exported bundle")
    src.add_argument("--sizes", default="tiny,base",
                     help="random-weight encoder sizes to build: tiny,small,base "
                          "(default tiny,base)")
    parser.add_argument("--head", choices=("cnn_mlp", "diffusion"), default="cnn_mlp",
                        help="policy head for --sizes (default cnn_mlp)")
    parser.add_argument("--backends", "--backend", dest="backends", default="auto",
                        help="comma list of tensorrt,onnxruntime,torch (default: every one "
                             "available); the torch eager reference always runs")
    parser.add_argument("--quick", action="store_true",
                        help="10 iterations instead of 50; the first run also builds and "
                             "exports the random-weight bundles (cached in --work-dir)")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed iterations per measurement (default 50, --quick 10)")
    parser.add_argument("--image-size", type=_hw, default=(480, 640), metavar="HxW",
                        help="camera size for --sizes (default 480x640)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for every backend (default: usable cores)")
    parser.add_argument("--precision", choices=("fp16", "fp32", "int8"), default="fp16",
                        help="TensorRT precision (default fp16)")
    parser.add_argument("--calib-dataset", default=None,
                        help="demo dataset whose frames calibrate TensorRT int8")
    parser.add_argument("--calib-frames", type=int, default=64,
                        help="calibration frames to take from --calib-dataset (default 64)")
    parser.add_argument("--work-dir", default=None,
                        help="where --sizes keeps its bundles (default ~/.cache/theia_ros/bench)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def main(args: argparse.Namespace) -> int:
    iters = args.iters or (10 if args.quick else 50)
    if iters < 1:
        raise TheiaError("--iters must be >= 1")
    backends = _backends(args.backends)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.bundle:
        bundles = [Path(args.bundle)]
    else:
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        bad = [s for s in sizes if s not in SIZES]
        if bad or not sizes:
            raise TheiaError(f"--sizes: unknown {bad or sizes}; choose from {sorted(SIZES)}")
        work = _work_dir(args.work_dir)
        bundles = [random_bundle(s, args.head, args.image_size, work, log) for s in sizes]
    calibration = None
    if args.calib_dataset:
        calibration = _calibration_frames(args.calib_dataset, args.calib_frames)
    rows = []
    for b in bundles:
        log(f"timing {b} on {backends} + {REFERENCE} ({iters} iterations each)")
        rows += [t.summary() for t in bench_bundle(b, backends, iters, args.threads,
                                                   args.precision, calibration)]
    add_speedups(rows)
    load_1min = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if args.json:
        print(json.dumps({"rows": rows, "targets": target_lines(rows),
                          "warnings": consistency_lines(rows), "iters": iters,
                          "threads": args.threads, "cpu_count": os.cpu_count(),
                          "load_avg_1min": load_1min}, indent=2))
    else:
        print(format_table(rows))
        for line in target_lines(rows) + consistency_lines(rows):
            print(line)
        if load_1min is not None:
            # other processes on the cores distort absolute times (torch's OpenMP most)
            print(f"load average (1 min) {load_1min:.2f} on {os.cpu_count()} cores")
    return 0


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 480x640, got {text!r}") from exc
    return h, w


# --- bundles for --sizes ---------------------------------------------------------------------
def _work_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "theia_ros" / "bench"


def _calibration_frames(root: str, n: int) -> list[np.ndarray]:
    """Up to ``n`` camera frames spread over a dataset (torch-free reader)."""
    from theia_ros.dataset import EpisodeDataset

    ds = EpisodeDataset(root)
    if not ds.cameras or ds.num_episodes == 0:
        raise TheiaError(f"{root}: no camera frames to calibrate with")
    frames: list[np.ndarray] = []
    key = f"observation.images.{ds.cameras[0]}"
    per = max(1, n // ds.num_episodes)
    for i in range(ds.num_episodes):
        video = ds.episode(i)[key]
        frames += [video[j] for j in np.linspace(0, len(video) - 1, per).astype(int)]
        if len(frames) >= n:
            break
    return frames[:n]


def _backends(arg: str) -> list[str]:
    have = [b for b in available_backends() if b != "torch"]
    if arg == "auto":
        if not have:
            raise TheiaError("no runtime backend to benchmark (install onnxruntime)")
        return have
    chosen = [b.strip() for b in arg.split(",") if b.strip()]
    bad = [b for b in chosen if b not in ("tensorrt", "onnxruntime", "torch")]
    if bad:
        raise TheiaError(f"--backends: unknown {bad}; choose from tensorrt,onnxruntime,torch")
    return chosen
