"""Inference runtime: one policy bundle, any backend (onnxruntime, TensorRT, torch).

Importing this package imports neither torch nor onnxruntime nor tensorrt: each backend's
module is imported by ``load`` when that backend is chosen, so a robot running the
onnxruntime or TensorRT backend never loads torch.

Example::

    from theia_ros.runtime import load
    rt = load("bundles/door", backend="auto")   # tensorrt > onnxruntime CUDA > onnxruntime CPU
    chunk = rt.predict(image_u8, state)          # [H, 7] float32, physical units
    print(rt.backend, rt.meta.horizon, rt.meta.control_rate_hz)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from theia_ros.errors import TheiaError
from theia_ros.runtime.bundle import REQUIRED_GRAPHS, BundleMeta, read_bundle
from theia_ros.runtime.policy_runtime import GraphSession, PolicyRuntime

__all__ = ["BACKENDS", "BundleMeta", "PolicyRuntime", "available_backends", "load",
           "read_bundle", "resolve_backend"]

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _has_gpu() -> bool:
    from theia_ros.runtime import cuda_driver
    return cuda_driver.device_count() > 0


def available_backends() -> list[str]:
    """Backends that can run here, fastest first (without importing torch)."""
    out = []
    if _has("tensorrt") and _has_gpu():
        out.append("tensorrt")
    if _has("onnxruntime"):
        out.append("onnxruntime")
    if _has("torch") and _has("policies"):
        out.append("torch")
    return out


def resolve_backend(backend: str) -> str:
    """``auto`` -> the fastest available backend; others are checked and returned as is."""
    if backend not in BACKENDS:
        raise TheiaError(f"backend {backend!r} unknown; choose one of {BACKENDS}")
    have = available_backends()
    if backend == "auto":
        if not have:
            raise TheiaError("no inference backend here: install onnxruntime (pip install "
                             "onnxruntime) or TensorRT")
        return have[0]
    if backend not in have:
        why = {"tensorrt": "needs the tensorrt Python package and a CUDA GPU",
               "onnxruntime": "needs the onnxruntime package",
               "torch": "needs torch and the policies package (pip install -e '.[train]')"}
        raise TheiaError(f"backend {backend!r} is not available here ({why[backend]}); "
                         f"available: {have}")
    return backend


def load(bundle: str | os.PathLike, backend: str = "auto", *, verify: bool = True,
         fused: bool | None = None, threads: int | None = None,
         providers: Sequence[str] | None = None, precision: str = "fp16",
         cache_dir: str | os.PathLike | None = None,
         calibration: Sequence[np.ndarray] | None = None, device: str = "cpu",
         seed: int | None = None) -> PolicyRuntime:
    """Open a policy bundle on a backend.

    Args:
        bundle: the bundle directory written by ``theia export``.
        backend: ``auto`` (tensorrt > onnxruntime [CUDA, else CPU] > torch), ``onnxruntime``,
            ``tensorrt`` or ``torch``.
        verify: check every file's SHA-256 against ``SHA256SUMS`` first.
        fused: use the fused encoder+head graph for ``predict`` (default: when the bundle
            has one).
        threads: CPU threads (onnxruntime intra-op / torch); default: the usable cores.
        providers: onnxruntime execution providers, fastest first.
        precision: TensorRT precision ``fp16`` | ``fp32`` | ``int8``.
        cache_dir: TensorRT engine cache (default ``~/.cache/theia_ros/tensorrt``).
        calibration: uint8 ``[H, W, 3]`` frames for TensorRT int8 calibration.
        device: torch device for the torch backend.
        seed: seed of the diffusion policy's initial noise.
    """
    name = resolve_backend(backend)
    meta = read_bundle(bundle, verify=verify)
    names = list(REQUIRED_GRAPHS[meta.policy_type])
    if (fused is None and "fused" in meta.graphs) or fused:
        names.append("fused")
    sessions: dict[str, GraphSession]
    if name == "onnxruntime":
        from theia_ros.runtime.backend_onnxruntime import open_sessions
        sessions = open_sessions(meta, names, providers=providers, threads=threads,
                                 cache_dir=Path(cache_dir) if cache_dir else None)
    elif name == "tensorrt":
        from theia_ros.runtime.backend_tensorrt import open_engines
        sessions = open_engines(meta, names, precision=precision,
                                cache_dir=Path(cache_dir) if cache_dir else None,
                                calibration=calibration)
    else:
        from theia_ros.runtime.backend_torch import open_modules
        sessions = open_modules(meta, names, device=device, threads=threads)
    return PolicyRuntime(meta, sessions, name, seed=seed)
