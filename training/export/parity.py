"""Export checks itself: onnxruntime (fp32, CPU) against torch on the same inputs.

Two levels, both must stay within ``TOLERANCE`` (max abs error, fp32):

1. per graph: each ONNX graph vs the torch module it was traced from, on random inputs
   (and dataset frames for the image graphs);
2. end to end: the runtime (``theia_ros.runtime.load(bundle, "onnxruntime")``: graphs +
   numpy normalisation + numpy DDIM) vs the policy itself (``Policy.encoder.encode`` with
   ``policies.preprocess``, ``Policy.predict_action_chunk``), tokens and physical actions,
   on random and dataset (image, state) pairs with the same initial noise for diffusion.

A miss raises ``ParityError`` whose message is the whole table, so the numbers are printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from theia_ros.errors import TheiaError
from theia_ros.runtime import load
from theia_ros.runtime.backend_onnxruntime import open_sessions
from theia_ros.runtime.bundle import read_bundle

TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParityResult:
    """One comparison: what, on which inputs, the max abs error and the budget."""

    check: str
    inputs: str
    max_abs_err: float
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_err) and self.max_abs_err <= self.tolerance)

    def line(self) -> str:
        flag = "ok" if self.ok else "FAIL"
        return (f"  {self.check:<22} {self.inputs:<12} max|err| {self.max_abs_err:.3e} "
                f"(<= {self.tolerance:.0e}) {flag}")


class ParityError(TheiaError):
    """Export parity failed; ``results`` holds every comparison."""

    def __init__(self, results: list[ParityResult]):
        self.results = results
        table = "\n".join(r.line() for r in results)
        super().__init__(f"export parity check failed (onnxruntime fp32 vs torch):\n{table}")


def _err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max())


def graph_parity(bundle_dir: Path, modules: dict[str, torch.nn.Module],
                 input_sets: dict[str, list[tuple[str, dict[str, torch.Tensor]]]]
                 ) -> list[ParityResult]:
    """Each ONNX graph vs its torch module: ``input_sets`` = {graph: [(label, inputs)]}."""
    meta = read_bundle(bundle_dir, verify=False)
    sessions = open_sessions(meta, list(modules), providers=["CPUExecutionProvider"])
    results = []
    for name, module in modules.items():
        for label, inputs in input_sets[name]:
            with torch.inference_mode():
                ref = module(*inputs.values()).numpy()
            out = sessions[name].run({k: v.numpy() for k, v in inputs.items()})
            results.append(ParityResult(f"graph {name}", label, _err(out, ref)))
    return results


def end_to_end_parity(bundle_dir: Path, policy: torch.nn.Module,
                      pairs: list[tuple[str, np.ndarray | dict, np.ndarray]], seed: int = 0
                      ) -> list[ParityResult]:
    """Runtime (onnxruntime) vs ``policy`` on (label, image, state) triples: image [H, W, 3]
    u8 and state [S] for a one-view policy, else {camera: [T, H, W, 3]} and states [T, S]."""
    results = []
    with load(bundle_dir, backend="onnxruntime", verify=False, fused=False) as rt:
        meta = rt.meta
        for i, (label, image, state) in enumerate(pairs):
            views = image if isinstance(image, dict) else {meta.camera: np.asarray(image)[None]}
            states = np.asarray(state, np.float32)
            states = states if states.ndim == 2 else states[None]
            first = views[meta.camera][-1]
            with torch.inference_mode():
                ref_tokens = policy.encoder.encode(first).numpy()
                gen = torch.Generator().manual_seed(seed + i)
                noise = torch.randn((1, meta.horizon, meta.action_dim), generator=gen).numpy()
                gen = torch.Generator().manual_seed(seed + i)
                ref_actions = policy.predict_action_chunk(
                    {c: v[None] for c, v in views.items()}, states[None],
                    generator=gen)[0].numpy()
            tokens = rt.encode(first)
            every = np.concatenate([rt.encode(views[c][t]) for t in range(meta.n_obs_steps)
                                    for c in meta.cameras])  # time-major, like the head
            actions = rt.act(every, states, noise=noise)
            results.append(ParityResult("tokens (encode)", label, _err(tokens, ref_tokens)))
            results.append(ParityResult("actions (physical)", label, _err(actions, ref_actions)))
    return results


def check(results: list[ParityResult]) -> list[ParityResult]:
    """Raise ``ParityError`` (with every number) unless all results are within budget."""
    if not results or not all(r.ok for r in results):
        raise ParityError(results)
    return results
