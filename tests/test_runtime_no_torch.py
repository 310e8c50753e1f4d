"""The onnxruntime deploy path never imports torch (a Jetson image should not need it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_export import IMAGE_HW, STATE_DIM, make_bundle

CHILD = """
import json, sys
import numpy as np
import theia_ros.runtime as runtime
after_import = sorted(m for m in ("torch", "onnxruntime", "tensorrt") if m in sys.modules)
rt = runtime.load(sys.argv[1], backend="onnxruntime")
image = np.zeros(({h}, {w}, 3), np.uint8)
chunk = rt.predict(image, np.zeros({s}, np.float32))
import theia_ros.runtime.bench  # the bench verb's module too (its torch reference is lazy)
print(json.dumps({{"after_import": after_import, "torch": "torch" in sys.modules,
                  "shape": list(chunk.shape), "backend": rt.backend}}))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("nt"), "cnn_mlp")[1]


def test_onnxruntime_path_imports_no_torch(bundle: Path) -> None:
    code = CHILD.format(h=IMAGE_HW[0], w=IMAGE_HW[1], s=STATE_DIM)
    done = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True,
                          text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []  # the package import loads no backend at all
    assert report["torch"] is False
    assert report["backend"] == "onnxruntime" and report["shape"] == [4, 7]
