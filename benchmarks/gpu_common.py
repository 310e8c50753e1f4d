"""Shared pieces of ``gpu_suite``: the time budget, timing marks, FLOP counting, peak FLOP/s.

Everything here works on CPU too (``--quick``), so the GPU run exercises no untested path
apart from the CUDA-only calls (events, graphs, memory statistics).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from theia_ros.errors import TheiaError

# Dense BF16 tensor-core peak, TFLOP/s, from NVIDIA's data sheets (SXM unless named);
# matched against torch.cuda.get_device_name() in this order. --peak-tflops overrides.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("A100", 312.0),
)


class Clock:
    """A run's time budget: phases ask for a deadline and stop when it passes."""

    def __init__(self, budget_s: float):
        self.budget_s = float(budget_s)
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def deadline(self, seconds: float) -> float:
        """``perf_counter`` value ``seconds`` from now, never past the end of the budget."""
        now = time.perf_counter()
        return min(now + max(seconds, 0.0), self.t0 + self.budget_s)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Marks:
    """Points in time on the device's stream: CUDA events on GPU, wall clock on CPU (where
    work is synchronous, so the two mean the same)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> torch.cuda.Event | float:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, a: torch.cuda.Event | float, b: torch.cuda.Event | float) -> float:
        """Milliseconds from ``a`` to ``b`` (call after synchronising)."""
        if self.cuda:
            return float(a.elapsed_time(b))  # type: ignore[union-attr]
        return (b - a) * 1e3  # type: ignore[operator]


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of matmuls, convolutions and attention in ``fn()`` (forward and any backward).

    Attention runs through the math backend while counting, so it is counted the same way
    on every device (the fused CPU kernel is invisible to the counter).
    """
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """Dense BF16 peak of ``device`` in TFLOP/s (None when unknown: MFU is then not shown)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key in name), None)


def free_memory(device: torch.device) -> None:
    """Return cached device memory (after an out-of-memory or between models); GPU only."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def largest_batch(trial: Callable[[int], None], start: int, limit: int, deadline: float,
                  free: Callable[[], None] = lambda: None) -> tuple[int, list[dict]]:
    """Largest batch ``trial`` runs without running out of device memory.

    Tries ``start, 2 start, 4 start, ...`` up to ``limit`` (stopping at ``deadline``), then
    once halfway between the last fit and the first miss. Returns (batch, what was tried).
    """
    tried: list[dict] = []

    def fits(batch: int) -> bool:
        t0 = time.perf_counter()
        try:
            trial(batch)
            ok = True
        except torch.OutOfMemoryError:
            ok = False
        finally:
            free()
        tried.append({"batch": batch, "fits": ok, "s": round(time.perf_counter() - t0, 2)})
        return ok

    best, miss, batch = 0, None, start
    while batch <= limit and time.perf_counter() < deadline:
        if not fits(batch):
            miss = batch
            break
        best, batch = batch, batch * 2
    if best and miss is not None and time.perf_counter() < deadline:
        mid = (best + miss) // 2 // 8 * 8 or (best + miss) // 2
        if best < mid < miss and fits(mid):
            best = mid
    if not best:
        raise TheiaError(f"batch {start} does not fit in device memory (tried {tried})")
    return best, tried


def percentiles_ms(times_s: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    arr = np.asarray(times_s) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))
