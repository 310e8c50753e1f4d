"""TensorRT engine-cache rules (which engine is reused, when and why one is rebuilt).

The cache logic is plain Python, tested here with placeholder engine bytes; building and
running real engines needs TensorRT and a GPU (``tests/test_runtime.py`` covers that where
they exist).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from theia_ros.runtime.engine_cache import EngineCache, EngineKey

KEY = EngineKey("encoder", "ab" * 32, "fp16", "10.3.0", "Orin (sm_87)")


def test_exact_key_is_reused(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert cache.lookup(KEY) == (None, None)  # empty cache: build, nothing to explain
    cache.store(KEY, b"engine-bytes")
    assert cache.lookup(KEY) == (b"engine-bytes", None)
    assert "Orin_sm_87" in cache.engine_path(KEY).name


def test_engine_for_another_gpu_or_tensorrt_is_rebuilt_with_a_message(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"old")
    other_gpu = replace(KEY, gpu="NVIDIA H100 (sm_90)")
    data, why = cache.lookup(other_gpu)
    assert data is None
    assert "Orin (sm_87)" in why and "NVIDIA H100 (sm_90)" in why and "gpu" in why
    data, why = cache.lookup(replace(KEY, trt_version="10.7.0"))
    assert data is None and "TensorRT 10.3.0" in why and "trt_version" in why
    # a new ONNX graph or precision is a different engine family: plain build, no message
    assert cache.lookup(replace(KEY, onnx_sha256="cd" * 32)) == (None, None)
    assert cache.lookup(replace(KEY, precision="int8")) == (None, None)


def test_engine_without_matching_metadata_is_not_trusted(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    path = cache.store(KEY, b"engine")
    path.with_suffix(".json").write_text("{not json")  # e.g. a crash between the two writes
    data, why = cache.lookup(KEY)
    assert data is None and "rebuilding" in why


def test_timing_cache_is_per_tensorrt_and_gpu(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert cache.read_timing(KEY) == b""
    cache.write_timing(KEY, b"t1")
    assert cache.read_timing(replace(KEY, graph="head", onnx_sha256="ef" * 32)) == b"t1"
    assert cache.read_timing(replace(KEY, gpu="other")) == b""
