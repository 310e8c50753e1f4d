"""Test-wide settings: headless rendering, no network, deterministic small thread pools."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no downloads here; loading code must say so
os.environ.setdefault("OMP_NUM_THREADS", "2")
