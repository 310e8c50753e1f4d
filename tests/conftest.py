"""Test-wide settings: headless rendering, no network, deterministic small thread pools."""

import contextlib
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no downloads here; loading code must say so
os.environ.setdefault("OMP_NUM_THREADS", "2")

# Importing triton (torch._dynamo, pulled in by timm / torchvision / the ONNX exporter) after
# MuJoCo has opened an EGL context segfaults; import it first so no test order can hit that.
with contextlib.suppress(ImportError):  # a deploy-only set-up has no torch
    import torch._dynamo  # noqa: F401
