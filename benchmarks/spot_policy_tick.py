"""Diffusion policy inference per control tick on CPU, default Spot configuration.

The Spot drawer policy (paper App. D.3.2; ``config/spot_drawer.yaml``): Theia-Tiny encoder,
the diffusion head with its defaults (``policies.diffusion.DiffusionConfig``: horizon 4,
10 DDIM steps), one camera frame + the 7-number arm state in, ``[4, 7]`` absolute hand poses
out. Random weights (timings do not depend on them). The policy is exported with
``training.export.export_bundle`` and run through ``theia_ros.runtime`` (onnxruntime, CPU),
which is what ``policy_node`` runs; the torch eager model is timed as a reference.

Rows: encoder (image -> tokens), head (tokens + state -> chunk: condition graph + 10 DDIM
denoiser calls), full predict. With ``replan_every: 4`` and async planning (the YAML's
setting) one prediction serves 4 ticks of 0.2 s, so the budget per prediction is 0.8 s.

Example::

    python benchmarks/spot_policy_tick.py --threads 2 --repeats 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from theia_ros.runtime.bench import time_calls_ms


def _time(fn: Callable[[], object], repeats: int, warmup: int = 3) -> np.ndarray:
    """Milliseconds per call."""
    return np.asarray(time_calls_ms(fn, repeats, warmup))


def _row(name: str, ms: np.ndarray) -> str:
    return (f"{name:<40} {np.percentile(ms, 50):9.1f} {np.percentile(ms, 90):9.1f} "
            f"{ms.max():9.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (both backends)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--image-hw", type=int, nargs=2, default=(480, 640),
                        help="camera frame size (Spot's cameras: 480 x 640)")
    parser.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    args = parser.parse_args()

    import torch

    from policies.diffusion import DiffusionConfig
    from policies.encoder import create_encoder
    from policies.normalize import Normalizer
    from policies.policy import PolicyConfig, build_policy, save_policy
    from theia_ros import runtime
    from training.export import ExportOptions, export_bundle

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = create_encoder("theia_tiny", seed=0)
    head = DiffusionConfig(feature_dim=encoder.embed_dim, state_dim=7)
    cfg = PolicyConfig(type="diffusion", action_kind="ee_absolute", state_dim=7,
                       horizon=head.horizon)
    policy = build_policy(cfg, encoder, head, Normalizer.identity(7, 7)).eval()
    hw = tuple(args.image_hw)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    state = rng.normal(size=7).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        save_policy(policy, Path(tmp) / "policy")
        t0 = time.perf_counter()
        bundle, _ = export_bundle(Path(tmp) / "policy", Path(tmp) / "bundle",
                                  ExportOptions(image_hw=hw, exporter=args.exporter,
                                                torch_copy=False), log=lambda *_: None)
        export_s = time.perf_counter() - t0
        rt = runtime.load(bundle, backend="onnxruntime", threads=args.threads, seed=0)
        feats = rt.encode(image)
        rows = [("onnxruntime encoder (image -> tokens)", _time(lambda: rt.encode(image),
                                                                args.repeats)),
                ("onnxruntime head (10 DDIM steps)", _time(lambda: rt.act(feats, state),
                                                           args.repeats)),
                ("onnxruntime predict (per prediction)", _time(lambda: rt.predict(image, state),
                                                              args.repeats))]
        chunk = rt.predict(image, state)
        assert chunk.shape == (head.horizon, 7) and np.all(np.isfinite(chunk))

    images = torch.from_numpy(image)[None]
    states = torch.from_numpy(state)[None]
    with torch.inference_mode():
        rows.append(("torch eager predict_action_chunk", _time(
            lambda: policy.predict_action_chunk(images, states), args.repeats)))

    print(f"Spot diffusion policy on CPU ({args.threads} threads), Theia-Tiny, horizon "
          f"{head.horizon}, {head.num_inference_steps} DDIM steps, image {hw[0]}x{hw[1]}; "
          f"export ({args.exporter}) {export_s:.0f} s")
    print(f"{'measure':<40} {'p50 ms':>9} {'p90 ms':>9} {'max ms':>9}")
    for name, ms in rows:
        print(_row(name, ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
