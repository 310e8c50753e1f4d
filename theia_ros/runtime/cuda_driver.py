"""The few CUDA driver calls the TensorRT backend needs, through ctypes.

Why not pycuda / cuda-python / torch: ``libcuda.so.1`` is on every machine with an NVIDIA
driver (Jetson included), so the TensorRT backend needs nothing beyond the ``tensorrt``
wheel. We use the device's *primary* context, the one the CUDA runtime (and so TensorRT)
uses, so buffers allocated here are valid for TensorRT's kernels.
"""

from __future__ import annotations

import ctypes
from functools import cache, lru_cache

import numpy as np

from theia_ros.errors import TheiaError

_CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_{MAJOR,MINOR}
_STREAM_NON_BLOCKING = 1


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        lib.cuMemcpyHtoDAsync_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t,
                                             ctypes.c_void_p]
        lib.cuMemcpyDtoHAsync_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t,
                                             ctypes.c_void_p]
        lib.cuStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cuStreamDestroy_v2.argtypes = [ctypes.c_void_p]
        lib.cuCtxSetCurrent.argtypes = [ctypes.c_void_p]
        return lib
    raise TheiaError("CUDA driver library (libcuda.so.1) not found: no NVIDIA driver here")


def _check(result: int, what: str) -> None:
    if result != 0:
        msg = ctypes.c_char_p()
        _lib().cuGetErrorString(result, ctypes.byref(msg))
        text = msg.value.decode() if msg.value else f"error {result}"
        raise TheiaError(f"CUDA {what} failed: {text}")


@cache
def _primary_context(ordinal: int) -> tuple[int, ctypes.c_void_p]:
    """Initialise the driver and retain device ``ordinal``'s primary context (once)."""
    lib = _lib()
    _check(lib.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    _check(lib.cuDeviceGet(ctypes.byref(dev), ordinal), f"cuDeviceGet({ordinal})")
    ctx = ctypes.c_void_p()
    _check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    return dev.value, ctx


def init_device(ordinal: int = 0) -> int:
    """Make device ``ordinal``'s primary context current on *this* thread; -> device.

    The driver's current context is per thread: a runtime loaded on the main thread is run
    from a node's control thread or an async planner, so every operation below calls this
    first (cheap once the context is retained).
    """
    dev, ctx = _primary_context(ordinal)
    _check(_lib().cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    return dev


def device_count() -> int:
    """Number of CUDA devices (0 when there is no driver or no GPU)."""
    try:
        lib = _lib()
    except TheiaError:
        return 0
    if lib.cuInit(0) != 0:
        return 0
    n = ctypes.c_int()
    return n.value if lib.cuDeviceGetCount(ctypes.byref(n)) == 0 else 0


def device_name(ordinal: int = 0) -> str:
    """E.g. ``Orin (sm_87)`` or ``NVIDIA H100 80GB HBM3 (sm_90)``."""
    lib = _lib()
    dev = init_device(ordinal)
    buf = ctypes.create_string_buffer(256)
    _check(lib.cuDeviceGetName(buf, 256, dev), "cuDeviceGetName")
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev), "cuDeviceGetAttribute")
    _check(lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev), "cuDeviceGetAttribute")
    return f"{buf.value.decode().strip()} (sm_{major.value}{minor.value})"


class Stream:
    """A non-blocking CUDA stream; ``handle`` is what ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        init_device()
        s = ctypes.c_void_p()
        _check(_lib().cuStreamCreate(ctypes.byref(s), _STREAM_NON_BLOCKING), "cuStreamCreate")
        self._s = s

    @property
    def handle(self) -> int:
        return int(self._s.value or 0)

    def synchronize(self) -> None:
        init_device()
        _check(_lib().cuStreamSynchronize(self._s), "cuStreamSynchronize")

    def close(self) -> None:
        if self._s.value:
            init_device()
            _lib().cuStreamDestroy_v2(self._s)
            self._s = ctypes.c_void_p()


class DeviceBuffer:
    """Device memory for one fixed-shape array."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        init_device()
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        ptr = ctypes.c_uint64()
        _check(_lib().cuMemAlloc_v2(ctypes.byref(ptr), max(self.nbytes, 1)), "cuMemAlloc")
        self.ptr = int(ptr.value)

    def upload(self, array: np.ndarray, stream: Stream) -> None:
        init_device()
        a = np.ascontiguousarray(array, dtype=self.dtype)
        if a.shape != self.shape:
            raise TheiaError(f"input shape {a.shape} != engine input shape {self.shape}")
        _check(_lib().cuMemcpyHtoDAsync_v2(self.ptr, a.ctypes.data, self.nbytes,
                                           ctypes.c_void_p(stream.handle)), "cuMemcpyHtoD")
        # pageable source: the copy is staged before the call returns, ``a`` may go away

    def download(self, stream: Stream) -> np.ndarray:
        init_device()
        out = np.empty(self.shape, dtype=self.dtype)
        _check(_lib().cuMemcpyDtoHAsync_v2(out.ctypes.data, self.ptr, self.nbytes,
                                           ctypes.c_void_p(stream.handle)), "cuMemcpyDtoH")
        stream.synchronize()
        return out

    def close(self) -> None:
        if self.ptr:
            init_device()
            _lib().cuMemFree_v2(self.ptr)
            self.ptr = 0
