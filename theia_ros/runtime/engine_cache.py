"""TensorRT engine cache on disk: which engine may be reused, and why one is rebuilt.

An engine is only valid for the exact ONNX graph, precision, TensorRT version and GPU it was
built with. Each cached engine ``<stem>.engine`` has a ``<stem>.json`` beside it recording
that key; a lookup returns the engine only when the recorded key matches this machine's, and
otherwise says which part changed so the log explains the rebuild. Writes are atomic.

Plain Python (no tensorrt import), so the rules are testable anywhere.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from theia_ros.atomic import atomic_write_bytes as _atomic_write

KEY_FIELDS = ("graph", "onnx_sha256", "precision", "trt_version", "gpu")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/theia_ros/tensorrt`` (``~/.cache/theia_ros/tensorrt``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "theia_ros" / "tensorrt"


def slug(text: str) -> str:
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
    def family(self) -> str:
        """File-name prefix shared by engines of this graph + precision on any TRT/GPU."""
        return f"{self.graph}-{self.onnx_sha256[:16]}-{self.precision}-"

    @property
    def stem(self) -> str:
        return f"{self.family}trt{self.trt_version}-{slug(self.gpu)}"


def _read_key(meta_path: Path) -> dict:
    try:
        data = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class EngineCache:
    """Engines and timing caches in one directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def engine_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.stem}.engine"

    def timing_path(self, key: EngineKey) -> Path:
        """One timing cache per (TensorRT version, GPU), shared by every graph."""
        return self.root / f"timing-trt{key.trt_version}-{slug(key.gpu)}.cache"

    def calibration_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.family}calib.cache"

    def lookup(self, key: EngineKey) -> tuple[bytes | None, str | None]:
        """-> (engine bytes to reuse or None, why a (re)build is needed or None)."""
        path = self.engine_path(key)
        if path.is_file():
            recorded = _read_key(path.with_suffix(".json"))
            if recorded == asdict(key):
                return path.read_bytes(), None
            changed = [f for f in KEY_FIELDS if recorded.get(f) != getattr(key, f)]
            return None, (f"{path.name}: its recorded key differs in {changed}; rebuilding")
        for other in sorted(self.root.glob(f"{key.family}*.engine")):
            old = _read_key(other.with_suffix(".json"))
            changed = [f for f in ("trt_version", "gpu") if old.get(f) != getattr(key, f)]
            return None, (f"cached engine {other.name} was built with TensorRT "
                          f"{old.get('trt_version', '?')} on {old.get('gpu', '?')} "
                          f"({', '.join(changed) or 'key'} changed); this machine has "
                          f"TensorRT {key.trt_version} on {key.gpu}: building a new engine")
        return None, None

    def store(self, key: EngineKey, engine: bytes) -> Path:
        """Write the engine, then its key (a crash in between leaves no valid-looking pair)."""
        path = self.engine_path(key)
        _atomic_write(path, engine)
        _atomic_write(path.with_suffix(".json"), json.dumps(asdict(key), indent=2).encode())
        return path

    def read_timing(self, key: EngineKey) -> bytes:
        p = self.timing_path(key)
        return p.read_bytes() if p.is_file() else b""

    def write_timing(self, key: EngineKey, data: bytes) -> None:
        _atomic_write(self.timing_path(key), data)

    def write_calibration(self, key: EngineKey, data: bytes) -> None:
        _atomic_write(self.calibration_path(key), data)
