"""Latency of the encoder, the head and the whole control step, per backend (``theia bench``).

Every backend is timed in the same run as the reference, torch eager fp32 running the same
policy through its own code, and the table reports ratios, since absolute times on shared
machines are noisy. Measurements are interleaved so background load hits all alike.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from theia_ros.errors import TheiaError
from theia_ros.runtime import load, read_bundle
from theia_ros.runtime.bundle import BundleMeta
from theia_ros.types import Action, ActionKind

SIZES = {"tiny": "theia_tiny", "small": "theia_small", "base": "theia_base"}
REFERENCE = "torch-eager"
# Latency targets on a 2-core CPU (onnxruntime, CNN-MLP head): step p50 and speed-up over
# torch eager; Theia-T must leave most of a 5 Hz period (200 ms) free.
TARGETS_MS = {"theia_tiny": 40.0, "theia_base": 250.0}
TARGET_SPEEDUP = 1.5
PARTS = ("encoder", "head", "step")


@dataclass
class Timing:
    """Latencies of one (model, backend) in milliseconds."""

    model: str
    head: str
    backend: str
    encoder_ms: list[float] = field(default_factory=list)
    head_ms: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "head": self.head, "backend": self.backend}
        for part in ("encoder", "head", "step"):
            xs = np.asarray(getattr(self, f"{part}_ms"))
            for q in (50, 90, 99):
                out[f"{part}_p{q}_ms"] = float(np.percentile(xs, q)) if xs.size else None
        out["n"] = len(self.step_ms)
        return out


# --- inputs ----------------------------------------------------------------------------------
def camera_jpeg(hw: tuple[int, int], seed: int = 0) -> bytes:
    """A camera-like JPEG (smooth shading + texture + noise), so decoding costs what it does."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 17.0) * np.cos(yy / 23.0)], -1)
    img = np.clip(base * 200 + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise TheiaError("could not encode the benchmark JPEG")
    return buf.tobytes()


def decode_rgb(jpeg: np.ndarray) -> np.ndarray:
    """JPEG bytes -> uint8 RGB ``[H, W, 3]`` (what the camera node does)."""
    return cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def random_bundle(size: str, head: str, hw: tuple[int, int], work: Path,
                  log: Callable[[str], None]) -> Path:
    """Random-weight policy of ``size`` exported to a bundle under ``work`` (reused)."""
    name = SIZES[size]
    root = work / f"{name}-{head}-{hw[0]}x{hw[1]}"
    bundle = root / "bundle"
    try:
        read_bundle(bundle, verify=False)
        return bundle
    except TheiaError:
        pass
    try:
        import torch

        from policies.cnn_mlp import CnnMlpConfig
        from policies.diffusion import DiffusionConfig
        from policies.encoder import create_encoder
        from policies.normalize import Normalizer
        from policies.policy import PolicyConfig, build_policy, save_policy
    except ImportError as exc:
        raise TheiaError(f"--sizes needs torch and the policies package ({exc.name} missing); "
                         "pass --bundle to benchmark an exported bundle") from exc
    log(f"building a random {name} + {head} policy and exporting it to {bundle}")
    torch.manual_seed(0)
    enc = create_encoder(name, seed=0)
    rng = np.random.default_rng(0)
    state_dim, horizon = 7, (10 if head == "cnn_mlp" else 4)
    mode = "mean_std" if head == "cnn_mlp" else "min_max"
    norm = Normalizer.from_data(mode, rng.normal(0, 0.5, (64, state_dim)),
                                rng.normal(0, 0.01, (64, 7)))
    head_cfg = (CnnMlpConfig(enc.embed_dim, state_dim, horizon=horizon) if head == "cnn_mlp"
                else DiffusionConfig(enc.embed_dim, state_dim, horizon=horizon))
    policy = build_policy(PolicyConfig(head, "ee_delta", state_dim, horizon,
                                       encoder_source=name), enc, head_cfg, norm)
    save_policy(policy, root / "policy")
    # The TorchScript exporter: same graph speed as dynamo here, several times faster to run.
    cmd = [sys.executable, "-m", "theia_ros.cli", "export", "--policy", str(root / "policy"),
           "--out", str(bundle), "--image-size", f"{hw[0]}x{hw[1]}", "--exporter",
           "torchscript", "--force"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise TheiaError(f"exporting the benchmark policy failed:\n{done.stderr[-2000:]}")
    return bundle


# --- timing ----------------------------------------------------------------------------------
def time_calls_ms(fn: Callable[[], object], n: int, warmup: int = 0) -> list[float]:
    """Wall time of ``n`` calls of ``fn`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _runners(meta: BundleMeta, backends: list[str], threads: int | None, precision: str,
             jpeg: np.ndarray, state: np.ndarray, calibration: list[np.ndarray] | None
             ) -> dict[str, dict[str, Callable[[], object]]]:
    """{backend: {"encoder"|"head"|"step": fn}} for the runtime backends + the torch reference."""
    kind = ActionKind(meta.action_kind)
    image = decode_rgb(jpeg)
    # A step decodes and encodes one new frame per camera (older history steps are kept
    # encoded by the control core), then runs the head on every view.
    k, older = len(meta.cameras), meta.num_views - len(meta.cameras)
    states = np.tile(state, (meta.n_obs_steps, 1)) if meta.n_obs_steps > 1 else state
    runners: dict[str, dict[str, Callable[[], object]]] = {}
    for name in backends:
        rt = load(meta.root, backend=name, verify=False, fused=False, threads=threads,
                  precision=precision, calibration=calibration, seed=0)
        tokens = rt.encode(image)
        views = np.concatenate([tokens] * meta.num_views)

        def step(rt: Any = rt, tokens: np.ndarray = tokens) -> object:
            new = [rt.encode(decode_rgb(jpeg)) for _ in range(k)]
            chunk = rt.act(np.concatenate([tokens] * older + new), states)
            return Action.from_vector(kind, chunk[0])

        label = "torch (bundle graphs)" if name == "torch" else name
        runners[label] = {"encoder": lambda rt=rt: rt.encode(image),
                          "head": lambda rt=rt, views=views: rt.act(views, states),
                          "step": step}
    ref = _reference(meta, threads, jpeg, state, image, kind)
    if ref is not None:
        runners[REFERENCE] = ref
    return runners


def _reference(meta: BundleMeta, threads: int | None, jpeg: np.ndarray, state: np.ndarray,
               image: np.ndarray, kind: ActionKind) -> dict[str, Callable[[], object]] | None:
    """Torch eager fp32: the policy's own code path, no export involved (None: no torch)."""
    try:
        import torch

        from policies.policy import load_policy
    except ImportError as exc:
        print(f"no torch reference: {exc.name} is not installed", file=sys.stderr)
        return None
    from theia_ros.runtime.backend_onnxruntime import default_threads

    if meta.torch_dir is None:
        print(f"no torch reference: {meta.root} has no torch/ copy", file=sys.stderr)
        return None
    torch.set_num_threads(threads or default_threads())
    policy = load_policy(meta.torch_dir, verify=False)
    k, older = len(meta.cameras), meta.num_views - len(meta.cameras)
    states = np.tile(state, (1, meta.n_obs_steps, 1))
    with torch.inference_mode():
        tokens = policy.encoder.encode(image)
        views = torch.cat([tokens] * meta.num_views)[None]

    @torch.inference_mode()
    def encoder() -> object:
        return policy.encoder.encode(image)

    @torch.inference_mode()
    def head() -> object:
        return policy.predict_from_features(views, states)

    @torch.inference_mode()
    def step() -> object:
        new = [policy.encoder.encode(decode_rgb(jpeg)) for _ in range(k)]
        feats = torch.cat([tokens] * older + new)[None]
        chunk = policy.predict_from_features(feats, states)[0].numpy()
        return Action.from_vector(kind, chunk[0])

    return {"encoder": encoder, "head": head, "step": step}


def bench_bundle(bundle: Path, backends: list[str], iters: int, threads: int | None = None,
                 precision: str = "fp16", calibration: list[np.ndarray] | None = None
                 ) -> list[Timing]:
    """Interleaved timings of every backend (and the torch reference) on one bundle."""
    meta = read_bundle(bundle)
    jpeg = np.frombuffer(camera_jpeg(meta.image_hw), dtype=np.uint8)
    state = meta.state_norm.offset.copy()
    runners = _runners(meta, backends, threads, precision, jpeg, state, calibration)
    model = str(meta.raw["encoder"].get("id") or meta.raw["encoder"]["config"].get("name"))
    timings = {b: Timing(model, meta.policy_type, b) for b in runners}
    for fns in runners.values():  # warm-up: first runs allocate and plan
        for fn in fns.values():
            time_calls_ms(fn, 2)
    for (b, part), ms in interleaved(runners, iters).items():
        getattr(timings[b], f"{part}_ms").extend(ms)
    return list(timings.values())


def interleaved(runners: dict[str, dict[str, Callable[[], object]]], iters: int,
                timer: Callable[[Callable[[], object], int], list[float]] = time_calls_ms
                ) -> dict[tuple[str, str], list[float]]:
    """``iters`` timings of every (backend, part), one call each per round, the order
    rotated every round.

    Every measurement thus samples the same stretches of background load. Blocks of
    consecutive calls per part (5 at a time before) let a burst of load on a shared machine
    land on one part only: that printed an eager encoder p50 of 460 ms beside an eager
    whole-step p50 of 145 ms, although the step contains the encoder.
    """
    order = [(b, part) for b, fns in runners.items() for part in PARTS if part in fns]
    out: dict[tuple[str, str], list[float]] = {key: [] for key in order}
    for i in range(iters):
        k = i % len(order)
        for b, part in order[k:] + order[:k]:
            out[b, part] += timer(runners[b][part], 1)
    return out


def consistency_lines(rows: list[dict[str, Any]], slack: float = 1.1) -> list[str]:
    """Warnings for rows whose encoder p50 exceeds the step p50 that contains it (noise)."""
    lines = []
    for r in rows:
        enc, step = r.get("encoder_p50_ms"), r.get("step_p50_ms")
        if enc is not None and step is not None and enc > slack * step:
            lines.append(f"warning: {r['model']} {r['backend']}: encoder p50 {enc:.1f} ms > "
                         f"step p50 {step:.1f} ms, which includes the encoder: the cores were "
                         "busy (see the load average); rerun with more --iters, or --threads 1 "
                         "for steadier (if slower) numbers")
    return lines


# --- report ----------------------------------------------------------------------------------
def add_speedups(rows: list[dict[str, Any]]) -> None:
    ref = {r["model"]: r for r in rows if r["backend"] == REFERENCE}
    for r in rows:
        base = ref.get(r["model"])
        for part in ("encoder", "head", "step"):
            key = f"{part}_p50_ms"
            r[f"{part}_speedup"] = (base[key] / r[key]) if base and r[key] else None


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The latency targets for onnxruntime + CNN-MLP rows, met or missed."""
    lines = []
    for r in rows:
        goal = TARGETS_MS.get(r["model"])
        if r["backend"] != "onnxruntime" or r["head"] != "cnn_mlp" or goal is None:
            continue
        verdict = "met" if r["step_p50_ms"] <= goal else "MISSED"
        line = (f"target {r['model']} + cnn_mlp, onnxruntime step p50 "
                f"{r['step_p50_ms']:.1f} ms <= {goal:.0f} ms: {verdict}")
        x = r.get("step_speedup")
        if x is not None:
            line += (f"; {x:.2f}x vs torch eager >= {TARGET_SPEEDUP}x: "
                     f"{'met' if x >= TARGET_SPEEDUP else 'MISSED'}")
        lines.append(line)
    return lines


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<12} {'head':<9} {'backend':<22} {'encoder p50/p90/p99 ms':>24} "
            f"{'head p50/p90/p99 ms':>22} {'step p50/p90/p99 ms':>24} {'step x':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def trio(part: str, r: dict = r) -> str:
            return "/".join(f"{r[f'{part}_p{q}_ms']:.1f}" for q in (50, 90, 99))
        x = r["step_speedup"]
        lines.append(f"{r['model']:<12} {r['head']:<9} {r['backend']:<22} "
                     f"{trio('encoder'):>24} {trio('head'):>22} {trio('step'):>24} "
                     f"{(f'{x:.2f}x' if x else '-'):>7}")
    return "\n".join(lines)


