"""Batch-1 inference rows of ``gpu_suite``: one control step's networks, several ways.

Models (random weights at the real sizes, the project's modules):

- ``theia_{tiny,small,base}+cnn_mlp``: uint8 image ``[1, 3, 224, 224]`` on the device ->
  ``normalize_uint8`` -> encoder -> CNN-MLP head -> normalised chunk ``[1, 10, 7]``;
- ``diffusion(10 DDIM)``: Theia-B feature map ``[1, 768, 14, 14]`` + state -> condition
  encoder -> 10 DDIM steps of the 1-D U-Net denoiser (eta = 0, fixed initial noise) ->
  ``[1, 4, 7]``. The DDIM tables are the robot's (``theia_ros.runtime.ddim``), so no
  diffusers.

Variants: eager fp32 (the reference; TF32 off), eager bf16 / fp16 (weights cast, autocast
for the ops that need fp32), CUDA graph fp32 / fp16 (the whole call captured once,
replayed), ``torch.compile`` fp16 (``mode="reduce-overhead"``: Inductor + CUDA graphs).
Latency is host-visible (call + synchronise) over many calls: p50 / p99. Deviation is the
max |output - fp32 output| over three fixed inputs, in normalised action units.
"""

from __future__ import annotations

import contextlib
import copy
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmarks.gpu_common import Clock, free_memory, percentiles_ms, sync
from policies.cnn_mlp import CnnMlpConfig, CnnMlpHead
from policies.diffusion import ConditionEncoder, DiffusionConfig, TemporalUnet1d
from policies.encoder import ENCODERS, EncoderConfig, TheiaEncoder
from policies.preprocess import normalize_uint8
from theia_ros.runtime.ddim import DDIMSampler

MODELS = ("theia_tiny+cnn_mlp", "theia_small+cnn_mlp", "theia_base+cnn_mlp",
          "diffusion(10 DDIM)")
VARIANTS = ("eager fp32", "eager bf16", "eager fp16", "cuda graph fp32", "cuda graph fp16",
            "compile fp16")
STATE_DIM = 7
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class CnnMlpStep(nn.Module):
    """uint8 image + normalised state -> normalised action chunk ``[1, H, 7]``."""

    def __init__(self, encoder: TheiaEncoder, head: CnnMlpHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, image_u8: torch.Tensor, state_n: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.forward_spatial(normalize_uint8(image_u8)), state_n)


class DiffusionStep(nn.Module):
    """Feature map + state + initial noise -> chunk after ``num_inference_steps`` DDIM steps.

    The loop is unrolled over the fixed timesteps (constants), so a CUDA graph or
    ``torch.compile`` captures all of it; the arithmetic is ``DDIMSampler.step``'s.
    """

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        self.cond_encoder = ConditionEncoder(config)
        self.denoiser = TemporalUnet1d(config)
        ddim = DDIMSampler({**config.scheduler_kwargs(), "set_alpha_to_one": True,
                            "steps_offset": 0}, config.num_inference_steps)
        self.coefs = []
        for t in ddim.timesteps:
            a_t = float(ddim.alphas_cumprod[t])
            prev = int(t) - ddim.step_ratio
            a_p = float(ddim.alphas_cumprod[prev] if prev >= 0 else ddim.final_alpha_cumprod)
            self.coefs.append((a_t ** 0.5, (1 - a_t) ** 0.5, a_p ** 0.5, (1 - a_p) ** 0.5))
        self.register_buffer("timesteps", torch.from_numpy(ddim.timesteps.copy()),
                             persistent=False)

    def forward(self, fmap: torch.Tensor, state_n: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        cond = self.cond_encoder(fmap, state_n)
        x = noise.float()
        b = x.shape[0]
        for i, (sa, sb, spa, spb) in enumerate(self.coefs):
            out = self.denoiser(x, self.timesteps[i:i + 1].expand(b), cond).float()
            if self.config.prediction_type == "epsilon":  # DDIM eq. 12, eta = 0
                x0, eps = (x - sb * out) / sa, out
            else:
                x0, eps = out, (x - sa * out) / sb
            if self.config.clip_sample:
                x0 = x0.clamp(-1.0, 1.0)
            x = spa * x0 + spb * eps
        return x


@dataclass
class Built:
    """One model ready to time: the module and its three fixed input sets."""

    name: str
    module: nn.Module
    inputs: list[tuple[torch.Tensor, ...]]


def build(name: str, device: torch.device, quick: bool, seed: int = 0) -> Built:
    """A model of ``MODELS`` (tiny widths with ``quick``) and three random input sets."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if name.endswith("+cnn_mlp"):
        size = name.split("+")[0]
        enc_cfg = (EncoderConfig(name=size, embed_dim=16 * (1 + MODELS.index(name)), depth=1,
                                 num_heads=2) if quick else ENCODERS[size]())
        head = CnnMlpHead(CnnMlpConfig(feature_dim=enc_cfg.embed_dim, state_dim=STATE_DIM,
                                       horizon=10, **({"neck_channels": 16, "hidden_dim": 32}
                                                      if quick else {})))
        module: nn.Module = CnnMlpStep(TheiaEncoder(enc_cfg), head)
        inputs = [(torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8, generator=gen),
                   torch.randn(1, STATE_DIM, generator=gen)) for _ in range(3)]
    else:
        small = dict(proj_channels=8, image_cond_dim=16, down_dims=(16, 32), n_groups=4,
                     step_embed_dim=8) if quick else {}
        feature_dim = 32 if quick else ENCODERS["theia_base"]().embed_dim
        cfg = DiffusionConfig(feature_dim=feature_dim, state_dim=STATE_DIM,
                              num_inference_steps=10, **small)
        module = DiffusionStep(cfg)
        inputs = [(torch.randn(1, feature_dim, cfg.grid, cfg.grid, generator=gen),
                   torch.rand(1, STATE_DIM, generator=gen) * 2 - 1,
                   torch.randn(1, cfg.horizon, cfg.action_dim, generator=gen))
                  for _ in range(3)]
    module = module.to(device).eval().requires_grad_(False)
    return Built(name, module, [tuple(x.to(device) for x in xs) for xs in inputs])


def _runner(built: Built, variant: str, device: torch.device, quick: bool
            ) -> Callable[..., torch.Tensor]:
    """A callable ``(*inputs) -> output`` for one variant (may compile / capture)."""
    kind, precision = variant.rsplit(" ", 1)
    if kind == "cuda graph" and device.type != "cuda":
        raise _Skip("needs CUDA")
    dtype = DTYPES[precision]
    module = built.module if dtype == torch.float32 else copy.deepcopy(built.module).to(dtype)

    def call(*xs: torch.Tensor) -> torch.Tensor:
        # no autocast weight-cast cache: it must stay off while a CUDA graph is captured
        with torch.no_grad(), (torch.autocast(device.type, dtype=dtype, cache_enabled=False)
                               if dtype != torch.float32 else contextlib.nullcontext()):
            return module(*xs)

    if kind == "eager":
        return call
    if kind == "compile":
        backend = "eager" if quick else "inductor"  # --quick: Dynamo capture, no codegen
        options = {} if quick else {"mode": "reduce-overhead"}
        compiled = torch.compile(call, backend=backend, **options)
        return lambda *xs: compiled(*xs).clone()
    static = [x.clone() for x in built.inputs[0]]
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            call(*static)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call(*static)

    def replay(*xs: torch.Tensor) -> torch.Tensor:
        for dst, src in zip(static, xs):
            dst.copy_(src)
        graph.replay()
        return out

    return replay


class _Skip(Exception):
    """A variant that cannot run here (the reason is recorded, the run goes on)."""


def _latency(fn: Callable[..., torch.Tensor], inputs: tuple, device: torch.device,
             warmup: int, iters: int, deadline: float) -> tuple[float, float, int]:
    for _ in range(warmup):
        fn(*inputs)
    sync(device)
    times: list[float] = []
    while len(times) < iters and (len(times) < 3 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn(*inputs)
        sync(device)
        times.append(time.perf_counter() - t0)
    p50, p99 = percentiles_ms(times)
    return p50, p99, len(times)


def run_inference(clock: Clock, share_s: float, device: torch.device, quick: bool,
                  compile_reserve_s: float, no_compile: bool,
                  log: Callable[[str], None]) -> list[dict]:
    """Every (model, variant) row, in ``MODELS`` x ``VARIANTS`` order."""
    if device.type == "cuda":  # the fp32 reference is true fp32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    end = time.perf_counter() + share_s
    warmup, iters = (1, 3) if quick else (10, 300)
    rows: dict[tuple[str, str], dict] = {}
    refs: dict[str, list[np.ndarray]] = {}
    ordered = [v for v in VARIANTS if not v.startswith("compile")]
    ordered += [v for v in VARIANTS if v.startswith("compile")]  # slowest to set up: last
    built = {name: build(name, device, quick) for name in MODELS}
    for variant in ordered:
        for name in MODELS:
            b = built[name]
            row: dict = {"model": name, "variant": variant}
            rows[(name, variant)] = row
            if variant.startswith("compile"):
                why = ("--no-compile" if no_compile else
                       f"< {compile_reserve_s:.0f} s of budget left"
                       if clock.left() < compile_reserve_s else
                       "--quick compiles the first model only" if quick and name != MODELS[0]
                       else None)
                if why:
                    row["status"] = f"skipped: {why}"
                    continue
            try:
                t0 = time.perf_counter()
                fn = _runner(b, variant, device, quick)
                outs = [fn(*xs).float().cpu().numpy().copy() for xs in b.inputs]
                row["setup_s"] = time.perf_counter() - t0
                if variant == "eager fp32":
                    refs[name] = outs
                slots = max(1, len(VARIANTS) * len(MODELS) - len(rows) + 1)
                row_s = max((end - time.perf_counter()) / slots, 0.05)
                p50, p99, n = _latency(fn, b.inputs[0], device, warmup, iters,
                                       clock.deadline(row_s))
                dev = max(float(np.abs(o - r).max()) for o, r in zip(outs, refs[name]))
                row.update(status="ok", p50_ms=p50, p99_ms=p99, iters=n, max_dev=dev)
            except _Skip as why:
                row["status"] = f"skipped: {why}"
            except Exception as exc:  # one failed variant must not end the run
                traceback.print_exc()
                row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            log(f"inference: {name} / {variant}: {row['status']}"
                + (f" p50 {row['p50_ms']:.2f} ms" if "p50_ms" in row else ""))
            free_memory(device)
    out = []
    for name in MODELS:
        ref = rows[(name, "eager fp32")].get("p50_ms")
        for variant in VARIANTS:
            row = rows[(name, variant)]
            if ref and "p50_ms" in row:
                row["speedup_vs_fp32"] = ref / row["p50_ms"]
            out.append(row)
    return out
