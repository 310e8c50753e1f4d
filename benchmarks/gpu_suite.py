"""GPU figures in one run: distillation throughput and batch-1 inference latency on one GPU.

Distillation (``gpu_distill``): Theia-B + cdiv translators, teachers CLIP-L/14, DINOv2-L/14
and ViT-H/14 at their real sizes with random weights, at the largest batch that fits
(doubling search, out-of-memory caught), fed three ways: the published recipe's data path
(per-sample files, float32 made on the CPU; the reference row), our bf16 memmap cache, and
teachers on the fly in bf16 inside the step. Per row: images/s, x reference, x the paper's
~117 images/s per GPU, MFU (matmul/conv/attention FLOPs counted by
``torch.utils.flop_counter`` / dense BF16 peak), peak GPU memory and where a step's time
goes (CUDA events: host-to-device copy and conversion, teachers, student forward + backward
+ AdamW; and how long the host waited for the loader).

Inference (``gpu_inference``): Theia-T/S/B + CNN-MLP head and the diffusion head with 10
DDIM steps, batch 1, eager fp32 vs bf16 / fp16 vs CUDA graphs vs ``torch.compile``: p50 /
p99 and the max deviation of the actions from fp32.

One table is printed and everything is written as JSON (``--json``). ``--budget-s`` bounds
the run (default 420 s: fits 8 minutes on one H200 with start-up); each phase stops at its
deadline and compile rows are skipped when too little is left. Needs only torch, timm,
numpy, safetensors, pyyaml and tqdm (no diffusers, onnx or TensorRT) and no network.

``--quick``: CPU dry run with tiny models through the same code (CUDA graphs are reported
as skipped; the OOM branch of the batch search is unit-tested), about a minute on 2 cores.
Its numbers say nothing about a GPU.

Example::

    python benchmarks/gpu_suite.py --json gpu_suite.json          # on a CUDA machine
    python benchmarks/gpu_suite.py --quick --json /tmp/gpu_quick.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_common import Clock, peak_tflops
from benchmarks.gpu_distill import PAPER_IMAGES_PER_S, run_distill
from benchmarks.gpu_inference import run_inference

TARGET_IMAGES_PER_S = 1000.0  # Theia-B, cdiv on the fly, per GPU
DISTILL_SHARE = 0.55  # of the budget; inference gets the rest
REFERENCE_PEAK_TFLOPS = 989.0  # H100 / H200 SXM dense BF16, when the device's is unknown


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="CPU dry run with tiny models (checks the code, not the GPU)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="whole-run time budget in seconds (default 420)")
    ap.add_argument("--max-batch", type=int, default=1024,
                    help="upper end of the distillation batch search (default 1024)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense BF16 peak for MFU (default: from the GPU's name)")
    ap.add_argument("--sections", default="distill,inference",
                    help="comma-separated: distill, inference")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--compile-reserve-s", type=float, default=75.0,
                    help="start a compile row only with this much budget left")
    ap.add_argument("--workdir", default=None, help="where to write synthetic data (tmp)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; 1 with --quick, where small "
                         "ops on a shared machine are fastest single-threaded)")
    args = ap.parse_args(argv)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if not sections or sections - {"distill", "inference"}:
        ap.error(f"--sections: expected distill and/or inference, got {args.sections!r}")
    args.sections = sections
    return args


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict) -> None:
    meta = result["meta"]
    print(f"\n{meta['device_name']} | torch {meta['torch']} | quick={meta['quick']} | "
          f"{meta['elapsed_s']:.0f} s of {meta['budget_s']:.0f} s budget")
    if result.get("distill"):
        print(f"\ndistillation ({meta['distill']['student']} + {meta['distill']['teachers']})"
              f"{'':<14}{'batch':>6} {'img/s':>9} {'x ref':>6} {'x 117':>6} {'MFU':>6} "
              f"{'GiB':>6}  ms/step: {'h2d':>6} {'teach':>7} {'stud':>7} {'wait':>6}")
        for r in result["distill"]:
            s = r["split_ms"]
            mfu = None if r["mfu"] is None else 100 * r["mfu"]
            print(f"{r['name']:<50}{r['batch']:>6} {r['images_per_s']:>9.1f} "
                  f"{r['vs_reference']:>6.2f} {r['vs_paper']:>6.2f} {_fmt(mfu, '>5.1f'):>5}% "
                  f"{_fmt(r['peak_mem_gib'], '>6.1f'):>6}           {s['h2d']:>6.1f} "
                  f"{s['teachers']:>7.1f} {s['student']:>7.1f} {s['host_wait']:>6.1f}")
        real = meta["distill"]["real_size_gflops_per_image"]
        peak = meta["peak_bf16_tflops"] or REFERENCE_PEAK_TFLOPS
        need_fly = (real["student_step"] + real["teachers"]) * TARGET_IMAGES_PER_S / 1e3
        need_cache = real["student_step"] * TARGET_IMAGES_PER_S / 1e3
        print(f"real sizes: student step {real['student_step']:.0f} GFLOPs/image, teachers "
              f"{real['teachers']:.0f}; {TARGET_IMAGES_PER_S:.0f} images/s needs "
              f"{need_fly:.0f} TFLOP/s on the fly ({100 * need_fly / peak:.0f}% of "
              f"{peak:.0f}), {need_cache:.0f} from the cache ({100 * need_cache / peak:.0f}%)")
        fly = next(r for r in result["distill"] if r["mode"] == "on the fly")
        print(f"target >= {TARGET_IMAGES_PER_S:.0f} images/s on the fly: "
              f"{'MET' if fly['images_per_s'] >= TARGET_IMAGES_PER_S else 'NOT MET'} "
              f"({fly['images_per_s']:.1f}; the paper: ~{PAPER_IMAGES_PER_S:.0f})")
    if result.get("inference"):
        print(f"\ninference, batch 1{'':<25}{'p50 ms':>8} {'p99 ms':>8} {'x fp32':>7} "
              f"{'max|dev|':>9}  status")
        for r in result["inference"]:
            print(f"{r['model'] + ' / ' + r['variant']:<42}{_fmt(r.get('p50_ms'), '>8.3f'):>8} "
                  f"{_fmt(r.get('p99_ms'), '>8.3f'):>8} "
                  f"{_fmt(r.get('speedup_vs_fp32'), '>7.2f'):>7} "
                  f"{_fmt(r.get('max_dev'), '>9.2e'):>9}  {r['status']}")


def main(argv: list[str] | None = None) -> dict:
    """Run the selected sections; print the table; return (and write) the results."""
    args = parse_args(argv)
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.quick:
        print("no CUDA device: running the --quick dry run instead", file=sys.stderr)
        args.quick = True
    clock = Clock(args.budget_s)
    peak = peak_tflops(device, args.peak_tflops)

    def log(msg: str) -> None:
        print(f"[{clock.elapsed():6.1f} s] {msg}", flush=True)

    import timm
    from timm.layers import use_fused_attn

    meta: dict = {"device": device.type, "quick": args.quick, "budget_s": args.budget_s,
                  "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                  else platform.processor() or "cpu"),
                  "torch": torch.__version__, "timm": timm.__version__,
                  "python": platform.python_version(), "peak_bf16_tflops": peak,
                  "timm_fused_attention": bool(use_fused_attn()),
                  "threads": torch.get_num_threads()}
    result: dict = {"meta": meta}
    if "distill" in args.sections:
        share = args.budget_s * (DISTILL_SHARE if "inference" in args.sections else 1.0)
        result["distill"], meta["distill"] = run_distill(
            clock, share, device, args.quick, args.max_batch, peak, args.workdir, log)
    if "inference" in args.sections:
        result["inference"] = run_inference(clock, max(clock.left(), 1.0), device, args.quick,
                                            args.compile_reserve_s, args.no_compile, log)
    meta["elapsed_s"] = clock.elapsed()
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
