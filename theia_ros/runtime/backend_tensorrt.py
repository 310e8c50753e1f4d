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

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorrt as trt

from theia_ros.checksums import sha256_file
from theia_ros.errors import TheiaError
from theia_ros.runtime import cuda_driver
from theia_ros.runtime.bundle import GRAPH_IO, BundleMeta
from theia_ros.runtime.engine_cache import EngineCache, EngineKey, default_cache_dir

PRECISIONS = ("fp32", "fp16", "int8")
WORKSPACE_BYTES = 1 << 30
_LOGGER = trt.Logger(trt.Logger.WARNING)


def _say(msg: str) -> None:
    print(f"[theia tensorrt] {msg}", file=sys.stderr, flush=True)


class Int8Calibrator(trt.IInt8EntropyCalibrator2):
    """Feeds calibration frames (one ``[1, H, W, 3]`` uint8 image per batch) to the builder."""

    def __init__(self, frames: Sequence[np.ndarray], cache: EngineCache, key: EngineKey):
        trt.IInt8EntropyCalibrator2.__init__(self)
        self.frames = [np.ascontiguousarray(f[None] if f.ndim == 3 else f) for f in frames]
        self.cache, self.key = cache, key
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
        path = self.cache.calibration_path(self.key)
        return path.read_bytes() if path.is_file() else None

    def write_calibration_cache(self, cache: object) -> None:
        self.cache.write_calibration(self.key, bytes(memoryview(cache)))

    def close(self) -> None:
        self.buffer.close()
        self.stream.close()


def _network_flags() -> int:
    """TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it."""
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _keep_norms_fp32(network: trt.INetworkDefinition, config: trt.IBuilderConfig) -> None:
    """LayerNorm in fp16 loses accuracy on ViT activations: ask for fp32 there (TRT >= 8.6)."""
    norm_type = getattr(trt.LayerType, "NORMALIZATION", None)
    if norm_type is None:
        return
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == norm_type:
            layer.precision = trt.float32
            layer.set_output_type(0, trt.float32)
            pinned += 1
    if pinned:
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)


def build_engine(onnx_path: Path, key: EngineKey, cache: EngineCache,
                 calibration: Sequence[np.ndarray] | None = None) -> bytes:
    """Parse ``onnx_path`` and build a serialised engine, with this GPU's timing cache."""
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
        _keep_norms_fp32(network, config)
    calibrator = None
    if key.precision == "int8":
        if not calibration:
            raise TheiaError("TensorRT int8 needs calibration frames: uint8 [H, W, 3] images "
                             "from the robot's camera (load(..., calibration=frames))")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = Int8Calibrator(calibration, cache, key)
        config.int8_calibrator = calibrator
    timing = config.create_timing_cache(cache.read_timing(key))
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
    cache.write_timing(key, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def load_or_build(key: EngineKey, onnx_path: Path, cache: EngineCache,
                  calibration: Sequence[np.ndarray] | None = None) -> trt.ICudaEngine:
    """Deserialise the cached engine for this exact key, else (re)build and cache it."""
    runtime = trt.Runtime(_LOGGER)
    data, why = cache.lookup(key)
    if data is not None:
        engine = runtime.deserialize_cuda_engine(data)
        if engine is not None:
            return engine
        why = f"{cache.engine_path(key).name}: TensorRT could not deserialise it; rebuilding"
    if why:
        _say(why)
    data = build_engine(onnx_path, key, cache, calibration)
    path = cache.store(key, data)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise TheiaError(f"{path}: TensorRT could not load the engine it just built")
    return engine


class TrtGraph:
    """One engine + execution context with fixed-shape device buffers."""

    def __init__(self, engine: trt.ICudaEngine, name: str, inputs: tuple[str, ...], output: str,
                 expected: dict[str, tuple[tuple[int, ...], str]] | None = None):
        self.engine = engine
        self.name = name
        self.context = engine.create_execution_context()
        self.stream = cuda_driver.Stream()
        self.buffers: dict[str, cuda_driver.DeviceBuffer] = {}
        io = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if set(io) != {*inputs, output}:
            raise TheiaError(f"engine for {name!r} has tensors {io}, expected "
                             f"{[*inputs, output]}")
        shapes = {t: tuple(engine.get_tensor_shape(t)) for t in io}
        dtypes = {t: np.dtype(trt.nptype(engine.get_tensor_dtype(t))) for t in io}
        for tensor, shape in shapes.items():
            if any(s < 0 for s in shape):
                raise TheiaError(f"engine for {name!r}: tensor {tensor!r} has a dynamic shape "
                                 f"{shape}; bundle graphs are static")
        for tensor, (shape, dtype) in (expected or {}).items():  # before any device buffer
            if shapes[tensor] != tuple(shape) or dtypes[tensor] != np.dtype(dtype):
                raise TheiaError(f"engine for {name!r}: tensor {tensor!r} is {dtypes[tensor]} "
                                 f"{list(shapes[tensor])}, but bundle.yaml says {dtype} "
                                 f"{list(shape)} (metadata and graphs disagree; re-export)")
        for tensor in io:
            buf = cuda_driver.DeviceBuffer(shapes[tensor], dtypes[tensor])
            self.buffers[tensor] = buf
            self.context.set_tensor_address(tensor, buf.ptr)
        self.inputs = inputs
        self.output = output

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        cuda_driver.init_device()  # this thread may not be the one that built the engine
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
    cache = EngineCache(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    gpu = cuda_driver.device_name()
    out: dict[str, TrtGraph] = {}
    for name in names:
        path = meta.graph_path(name)
        sha = sha256_file(path)  # always the file itself: the cache key must not trust a list
        graph_precision = "fp16" if precision == "int8" and name != "encoder" else precision
        key = EngineKey(name, sha, graph_precision, trt.__version__, gpu)
        engine = load_or_build(key, path, cache,
                               calibration if graph_precision == "int8" else None)
        out[name] = TrtGraph(engine, name, *GRAPH_IO[name], meta.tensor_specs(name))
    return out
