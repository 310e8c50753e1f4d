"""The encoder's input resize, before (plain bilinear) and after (antialiased, the default).

Two tables, both measured in this run:

1. Deviation from the reference processor, per camera size and image kind: the Hugging Face
   processor the published Theia models were trained with (``ViTImageProcessor`` configured
   from ``facebook/deit-*-patch16-224``'s ``preprocessor_config.json``: 224 x 224, bilinear,
   mean = std = 0.5, no crop; torchvision backend, and the PIL backend of transformers 4.x)
   against ``policies.preprocess`` in each mode. Max and mean absolute difference in the
   model's [-1, 1] input units (one grey level = 2/255 = 0.0078).
2. Latency on onnxruntime CPU of the exported encoder graph (uint8 camera frame in, tokens
   out: resize + ViT) with each resize, per camera size, interleaved call by call so machine
   noise hits both alike; also the resize alone (a graph of just the resize). The ratio
   new / old is the number to read; absolute times on a shared machine are noisy.

Example::

    python benchmarks/preprocess_resize.py --quick          # ~2 min on 2 cores
    python benchmarks/preprocess_resize.py --threads 4 --model theia_small
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from policies.encoder import ENCODERS, TheiaEncoder
from policies.preprocess import preprocess
from theia_ros.runtime.backend_onnxruntime import session_options
from theia_ros.runtime.torch_modules import EncoderGraph
from theia_ros.runtime.torch_resize import AntialiasResize, BilinearResizeNHWC
from training.export.onnx_export import export_graph

SIZES = [(480, 640), (720, 1280), (96, 128), (1080, 1920)]
MODES = ("bilinear", "antialias")
DEIT = {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2,
        "do_center_crop": False, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}


def camera_frame(h: int, w: int, kind: str, seed: int = 0) -> np.ndarray:
    """uint8 ``[h, w, 3]``: ``textured`` (edges, fine stripes, sensor noise) or ``smooth``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = 128 + 90 * np.sin(yy[..., None] / (h / 3) + np.arange(3)) * np.cos(
        xx[..., None] / (w / 4))
    if kind == "textured":
        img = (img + 60 * np.sign(np.sin(xx / 1.7 + yy / 2.3))[..., None]
               + 40 * ((yy // 23 + xx // 31) % 2)[..., None] + rng.normal(0, 12, (h, w, 3)))
    return np.clip(img, 0, 255).astype(np.uint8)


def deviation_rows(sizes: list[tuple[int, int]]) -> list[dict]:
    from transformers import ViTImageProcessor
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    refs = {"torchvision": ViTImageProcessor(**DEIT), "pil": ViTImageProcessorPil(**DEIT)}
    rows = []
    for h, w in sizes:
        for kind in ("textured", "smooth"):
            frame = camera_frame(h, w, kind)
            row = {"size": f"{h}x{w}", "kind": kind}
            for backend, proc in refs.items():
                ref = np.asarray(proc(frame, return_tensors="np")["pixel_values"], np.float32)
                for mode in MODES:
                    d = np.abs(preprocess(frame, resize=mode).numpy() - ref)
                    row[f"{backend}/{mode}"] = (float(d.max()), float(d.mean()))
            rows.append(row)
    return rows


def _session(module: torch.nn.Module, image: torch.Tensor, path: Path, threads: int
             ) -> ort.InferenceSession:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_graph(module.eval(), {"image": image}, "out", path)
    return ort.InferenceSession(str(path), session_options(threads),
                                providers=["CPUExecutionProvider"])


def _interleaved(sessions: dict[str, ort.InferenceSession], feed: np.ndarray, reps: int,
                 warmup: int) -> dict[str, np.ndarray]:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for i in range(warmup + reps):
        for key, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, {"image": feed})
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
    return {k: np.array(v) for k, v in times.items()}


def latency_rows(sizes: list[tuple[int, int]], model: str, threads: int, reps: int,
                 warmup: int) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for h, w in sizes:
            image = torch.from_numpy(camera_frame(h, w, "textured")[None])
            sessions = {}
            for mode in MODES:
                torch.manual_seed(0)
                encoder = TheiaEncoder(ENCODERS[model](resize=mode)).eval()
                sessions[f"enc/{mode}"] = _session(EncoderGraph(encoder, (h, w)), image,
                                                   Path(tmp) / f"enc_{mode}_{h}.onnx", threads)
            sessions["resize/bilinear"] = _session(BilinearResizeNHWC((h, w), 224), image,
                                                   Path(tmp) / f"rb_{h}.onnx", threads)
            sessions["resize/antialias"] = _session(AntialiasResize((h, w), 224), image,
                                                    Path(tmp) / f"ra_{h}.onnx", threads)
            t = _interleaved(sessions, image.numpy(), reps, warmup)
            p50 = {k: float(np.percentile(v, 50) * 1e3) for k, v in t.items()}
            rows.append({"size": f"{h}x{w}", **p50,
                         "ratio": p50["enc/antialias"] / p50["enc/bilinear"],
                         "resize_share": p50["resize/antialias"] / p50["enc/antialias"]})
    return rows


def format_tables(dev: list[dict], lat: list[dict], model: str, threads: int) -> str:
    lines = ["deviation from the DeiT processor, [-1, 1] units, max / mean "
             "(one grey level = 0.0078)"]
    head = f"{'size':<11}{'image':<10}" + "".join(
        f"{b + ' ' + m:>24}" for b in ("torchvision", "pil") for m in MODES)
    lines += [head, "-" * len(head)]
    for r in dev:
        cells = "".join(f"{r[f'{b}/{m}'][0]:>13.4f} /{r[f'{b}/{m}'][1]:>8.5f}"
                        for b in ("torchvision", "pil") for m in MODES)
        lines.append(f"{r['size']:<11}{r['kind']:<10}{cells}")
    lines += ["", f"encoder graph latency, onnxruntime {ort.__version__} CPU, {threads} "
              f"thread(s), {model}, uint8 frame -> tokens, p50 ms"]
    head = (f"{'size':<11}{'bilinear':>10}{'antialias':>11}{'new/old':>9}"
            f"{'resize old':>12}{'resize new':>12}{'resize share':>14}")
    lines += [head, "-" * len(head)]
    for r in lat:
        lines.append(f"{r['size']:<11}{r['enc/bilinear']:>10.2f}{r['enc/antialias']:>11.2f}"
                     f"{r['ratio']:>9.3f}{r['resize/bilinear']:>12.2f}"
                     f"{r['resize/antialias']:>12.2f}{r['resize_share']:>13.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few repetitions")
    parser.add_argument("--model", default="theia_tiny", choices=list(ENCODERS))
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reps, warmup = (20, 3) if args.quick else (100, 10)
    lat_sizes = SIZES[:3] if args.quick else SIZES
    dev = deviation_rows(SIZES)
    lat = latency_rows(lat_sizes, args.model, args.threads, reps, warmup)
    print(format_tables(dev, lat, args.model, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
