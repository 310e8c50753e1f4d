"""TensorRT backend: engines built *on the target* from the bundle's ONNX, cached, no torch.

- Precision: fp16 by default (I/O stays float32/uint8 as in the ONNX); ``int8`` quantises the
  encoder with entropy calibration on frames the caller provides (e.g. from a dataset), the
  heads stay fp16; ``fp32`` for parity checks.
- Engine cache: one file per graph, keyed by the ONNX SHA-256, the precision, the TensorRT
  version and the GPU (name + compute capability). An engine for another TensorRT version or
  GPU is never loaded: it is rebuilt, and the log says which key changed. One timing cache
  per (TensorRT version, GPU) makes rebuilds of the other graphs fast.
- Device memory and streams go through the CUDA driver via ctypes (``cuda_driver``).

``tensorrt`` is imported when this module is, and this module only when the backend is
chosen, so machines without TensorRT never touch it.

Example::

    sessions = open_engines(meta, ["encoder", "head"], precision="fp16")
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorrt as trt

from theia_ros.errors import TheiaError
from theia_ros.runtime import cuda_driver
from theia_ros.runtime.bundle import GRAPH_IO, BundleMeta, read_sums, sha256_file

PRECISIONS = ("fp32", "fp16", "int8")
WORKSPACE_BYTES = 1 << 30
_LOGGER = trt.Logger(trt.Logger.WARNING)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/theia_ros/tensorrt`` (``~/.cache/theia_ros/tensorrt``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "theia_ros" / "tensorrt"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


@dataclass(frozen=True)
class EngineKey:
    """What an engine depends on; any change means a rebuild."""

    graph: str
    onnx_sha256: str
    precision: str
    trt_version: str
    gpu: str

    @property
    def stem(self) -> str:
        return (f"{self.graph}-{self.onnx_sha256[:16]}-{self.precision}-"
                f"trt{self.trt_version}-{_slug(self.gpu)}")

    @property
    def family(self) -> str:
        """Engines of the same graph and precision, whatever TensorRT/GPU built them."""
        return f"{self.graph}-{self.onnx_sha256[:16]}-{self.precision}-"


def _say(msg: str) -> None:
    print(f"[theia tensorrt] {msg}", file=sys.stderr, flush=True)


class Int8Calibrator(trt.IInt8EntropyCalibrator2):
    """Feeds calibration frames (one ``[1, H, W, 3]`` uint8 image per batch) to the builder."""

    def __init__(self, frames: Sequence[np.ndarray], input_name: str, cache_file: Path):
        trt.IInt8EntropyCalibrator2.__init__(self)
        self.frames = [np.ascontiguousarray(f[None] if f.ndim == 3 else f) for f in frames]
        self.input_name = input_name
        self.cache_file = cache_file
        self.index = 0
        self.stream = cuda_driver.Stream()
        self.buffer = cuda_driver.DeviceBuffer(self.frames[0].shape, self.frames[0].dtype)

    def get_batch_size(self) -> int:
        return 1

    def get_batch(self, names: list[str]) -> list[int] | None:
        if self.index >= len(self.frames):
            return None
        self.buffer.upload(self.frames[self.index], self.stream)
        self.stream.synchronize()
        self.index += 1
        return [self.buffer.ptr]

    def read_calibration_cache(self) -> bytes | None:
        return self.cache_file.read_bytes() if self.cache_file.is_file() else None

    def write_calibration_cache(self, cache: object) -> None:
        _atomic_write(self.cache_file, bytes(memoryview(cache)))

    def close(self) -> None:
        self.buffer.close()
        self.stream.close()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _network_flags() -> int:
    """TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it."""
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def build_engine(onnx_path: Path, key: EngineKey, cache_dir: Path,
                 calibration: Sequence[np.ndarray] | None = None) -> bytes:
    """Parse ``onnx_path`` and build a serialised engine with the timing cache of this GPU."""
    builder = trt.Builder(_LOGGER)
    network = builder.create_network(_network_flags())
    parser = trt.OnnxParser(network, _LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TheiaError(f"{onnx_path}: TensorRT cannot parse this ONNX graph ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if key.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if key.precision == "int8":
        if not calibration:
            raise TheiaError("TensorRT int8 needs calibration frames (uint8 [H, W, 3] images "
                             "from the robot's camera, e.g. 'theia bench --calib-dataset DS')")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = Int8Calibrator(calibration, network.get_input(0).name,
                                    cache_dir / f"{key.family}calib.cache")
        config.int8_calibrator = calibrator
    timing_path = cache_dir / f"timing-trt{key.trt_version}-{_slug(key.gpu)}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file()
                                        else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    _say(f"building the {key.precision} engine for {onnx_path.name} on {key.gpu} "
         f"(TensorRT {key.trt_version}); minutes on a Jetson, cached afterwards")
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    if serialized is None:
        raise TheiaError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    _atomic_write(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def engine_key(graph: str, onnx_path: Path, onnx_sha256: str, precision: str) -> EngineKey:
    return EngineKey(graph, onnx_sha256, precision, trt.__version__,
                     cuda_driver.device_name())


def load_or_build(graph: str, onnx_path: Path, onnx_sha256: str, precision: str,
                  cache_dir: Path, calibration: Sequence[np.ndarray] | None = None
                  ) -> trt.ICudaEngine:
    """Deserialise the cached engine for this exact key, else (re)build and cache it."""
    key = engine_key(graph, onnx_path, onnx_sha256, precision)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key.stem}.engine"
    runtime = trt.Runtime(_LOGGER)
    if path.is_file():
        meta_path = path.with_suffix(".json")
        recorded = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if recorded == asdict(key):
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is not None:
                return engine
            _say(f"{path.name}: TensorRT could not deserialise the cached engine; rebuilding")
        else:
            _say(f"{path.name}: cache metadata {recorded} does not match {asdict(key)}; "
                 "rebuilding")
    else:
        for other in sorted(cache_dir.glob(f"{key.family}*.engine")):
            meta = other.with_suffix(".json")
            old = json.loads(meta.read_text()) if meta.is_file() else {}
            _say(f"cached engine {other.name} was built with TensorRT "
                 f"{old.get('trt_version', '?')} on {old.get('gpu', '?')}; this machine has "
                 f"TensorRT {key.trt_version} on {key.gpu}: building a new one")
    data = build_engine(onnx_path, key, cache_dir, calibration)
    _atomic_write(path, data)
    _atomic_write(path.with_suffix(".json"), json.dumps(asdict(key), indent=2).encode())
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise TheiaError(f"{path}: TensorRT could not load the engine it just built")
    return engine


class TrtGraph:
    """One engine + execution context with fixed-shape device buffers."""

    def __init__(self, engine: trt.ICudaEngine, name: str, inputs: tuple[str, ...], output: str):
        self.engine = engine
        self.name = name
        self.context = engine.create_execution_context()
        self.stream = cuda_driver.Stream()
        self.buffers: dict[str, cuda_driver.DeviceBuffer] = {}
        io = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if set(io) != {*inputs, output}:
            raise TheiaError(f"engine for {name!r} has tensors {io}, expected "
                             f"{[*inputs, output]}")
        for tensor in io:
            shape = tuple(engine.get_tensor_shape(tensor))
            if any(s < 0 for s in shape):
                raise TheiaError(f"engine for {name!r}: tensor {tensor!r} has a dynamic shape "
                                 f"{shape}; bundle graphs are static")
            buf = cuda_driver.DeviceBuffer(shape, trt.nptype(engine.get_tensor_dtype(tensor)))
            self.buffers[tensor] = buf
            self.context.set_tensor_address(tensor, buf.ptr)
        self.inputs = inputs
        self.output = output

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        for name in self.inputs:
            self.buffers[name].upload(inputs[name], self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise TheiaError(f"TensorRT failed to run the {self.name!r} engine")
        return self.buffers[self.output].download(self.stream)

    def close(self) -> None:
        for buf in self.buffers.values():
            buf.close()
        self.stream.close()
        self.context = None
        self.engine = None


def is_usable() -> bool:
    """A CUDA GPU is present (the module import already proved TensorRT is)."""
    return cuda_driver.device_count() > 0


def open_engines(meta: BundleMeta, names: Sequence[str], precision: str = "fp16",
                 cache_dir: Path | None = None,
                 calibration: Sequence[np.ndarray] | None = None) -> dict[str, TrtGraph]:
    """{graph name: engine session}; engines come from the cache or are built now.

    Args:
        meta: the parsed bundle.
        names: graph names (see ``GRAPH_IO``).
        precision: ``fp16`` (default), ``fp32`` or ``int8`` (encoder only; needs calibration).
        cache_dir: engine/timing cache directory (default ``default_cache_dir()``).
        calibration: uint8 ``[H, W, 3]`` frames for int8 calibration of the encoder.
    """
    if precision not in PRECISIONS:
        raise TheiaError(f"TensorRT precision {precision!r} unknown; choose one of {PRECISIONS}")
    if not is_usable():
        raise TheiaError("TensorRT backend: no CUDA GPU found")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        sums = read_sums(meta.root)
    except TheiaError:
        sums = {}
    out: dict[str, TrtGraph] = {}
    for name in names:
        path = meta.graph_path(name)
        sha = sums.get(meta.graphs[name]) or sha256_file(path)
        graph_precision = precision if (precision != "int8" or name in ("encoder", "fused")) \
            else "fp16"
        engine = load_or_build(name, path, sha, graph_precision, cache,
                               calibration if graph_precision == "int8" else None)
        out[name] = TrtGraph(engine, name, *GRAPH_IO[name])
    return out
