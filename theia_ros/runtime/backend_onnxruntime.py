"""onnxruntime backend: CPU, CUDA or TensorRT execution providers, no torch.

Session settings are tuned for one frame at a time on a small CPU (the robot's computer or
these 2-core machines): the image graphs get ``intra_op_num_threads`` = the cores this
process may use (capped at 8; more threads than cores thrash); the small head graphs run on
the calling thread only (waking a second session's thread pool cost ~5-40 ms per step on a
loaded 2-core machine, far more than the head itself); one inter-op thread and sequential
execution (the graphs are chains); every graph optimisation on (constant folding,
LayerNorm/GELU/MatMul+Add fusions); fp32 only (onnxruntime's CPU fp16 kernels are slower,
and the export parity budget is an fp32 one).

Example::

    sessions = open_sessions(meta, ["encoder", "head"], providers=["CPUExecutionProvider"])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from theia_ros.errors import TheiaError
from theia_ros.runtime.bundle import GRAPH_IO, BundleMeta

# Fastest first. The TensorRT execution provider is used only when asked for by name: it
# builds engines when a session opens (minutes on a Jetson); the native ``tensorrt`` backend
# is the better way to TensorRT.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
IMAGE_GRAPHS = ("encoder", "fused")


def default_threads() -> int:
    """Cores this process may run on, capped at 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def available_providers() -> list[str]:
    """Default execution providers this onnxruntime build offers, fastest first."""
    have = set(ort.get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in have]


def session_options(threads: int | None = None, spin: bool = False) -> ort.SessionOptions:
    """Latency-oriented options (see module docstring).

    ``spin`` (onnxruntime's default is on) keeps idle worker threads busy-waiting after each
    run. Off by default: on the 2-core machines it made no difference when the cores were
    free (Theia-Tiny step 21.0 vs 21.1 ms) and was 3x slower when other processes competed
    for them, and on a robot it would burn a core beside the ROS nodes.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return so


def _provider_list(providers: Sequence[str], cache_dir: Path | None) -> list:
    """Providers with options: the TensorRT EP caches engines and timings, fp16 on."""
    out: list = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            opts = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                    "trt_timing_cache_enable": True}
            if cache_dir is not None:
                cache_dir.mkdir(parents=True, exist_ok=True)
                opts["trt_engine_cache_path"] = str(cache_dir)
                opts["trt_timing_cache_path"] = str(cache_dir)
            out.append((p, opts))
        else:
            out.append(p)
    return out


# onnxruntime's element-type names for the dtypes bundle graphs use
_ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}


def check_io(path: Path, actual: dict[str, tuple[list, str]],
             expected: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """The graph's real tensor shapes and types are the ones ``bundle.yaml`` declares, so a
    bundle whose metadata disagrees with its graphs fails here, not in the first episode."""
    for name, (shape, dtype) in expected.items():
        got_shape, got_type = actual[name]
        if list(got_shape) != list(shape) or got_type != _ORT_TYPES[dtype]:
            raise TheiaError(f"{path}: tensor {name!r} is {got_type} {list(got_shape)} in the "
                             f"graph, but bundle.yaml says {dtype} {list(shape)} (metadata "
                             "and graphs disagree; re-export the bundle)")


class OrtGraph:
    """One ``InferenceSession`` with the bundle's input/output names."""

    def __init__(self, path: Path, inputs: tuple[str, ...], output: str,
                 options: ort.SessionOptions, providers: list,
                 expected: dict[str, tuple[tuple[int, ...], str]] | None = None):
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own, unexported exception types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
            raise TheiaError(f"{path}: onnxruntime cannot load this graph ({first}); "
                             "the file is corrupt or not an ONNX model") from exc
        names = tuple(i.name for i in self.session.get_inputs())
        outs = tuple(o.name for o in self.session.get_outputs())
        if set(names) != set(inputs) or output not in outs:
            raise TheiaError(f"{path}: graph has inputs {names} and outputs {outs}, expected "
                             f"inputs {inputs} and output {output!r}")
        if expected is not None:
            io = [*self.session.get_inputs(), *self.session.get_outputs()]
            check_io(path, {a.name: (a.shape, a.type) for a in io}, expected)
        self.path = path
        self.output = output
        self.providers = self.session.get_providers()

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output], dict(inputs))[0]


def open_sessions(meta: BundleMeta, names: Sequence[str], providers: Sequence[str] | None = None,
                  threads: int | None = None, spin: bool = False,
                  cache_dir: Path | None = None) -> dict[str, OrtGraph]:
    """{graph name: session} for ``names`` of the bundle.

    Args:
        meta: the parsed bundle.
        names: graph names to open (see ``GRAPH_IO``).
        providers: execution providers, fastest first (default: every preferred one present).
        threads: intra-op threads (default: the cores this process may use, at most 8).
        spin: let idle threads busy-wait between calls (see ``session_options``).
        cache_dir: where the TensorRT execution provider keeps engines and timing caches.
    """
    chosen = list(providers) if providers else available_providers()
    missing = [p for p in chosen if p not in ort.get_available_providers()]
    if missing:
        raise TheiaError(f"onnxruntime here has no {missing}; it has "
                         f"{ort.get_available_providers()}")
    plist = _provider_list(chosen, cache_dir)
    sessions = {}
    for name in names:
        # Only the image graphs are big enough to split across threads; the heads run on the
        # calling thread (a second thread pool to wake costs more than their whole run).
        n = threads if name in IMAGE_GRAPHS else 1
        sessions[name] = OrtGraph(meta.graph_path(name), GRAPH_IO[name][0], GRAPH_IO[name][1],
                                  session_options(n, spin), plist, meta.tensor_specs(name))
    return sessions
