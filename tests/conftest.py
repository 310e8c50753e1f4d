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


import pytest


@pytest.fixture(scope="session")
def encoder_ckpt(tmp_path_factory: pytest.TempPathFactory):
    """A tiny Theia encoder checkpoint (random weights) written with the real ``save_theia``."""
    import torch

    from policies.checkpoint import save_theia
    from policies.encoder import EncoderConfig, TheiaEncoder

    torch.manual_seed(0)
    enc = TheiaEncoder(EncoderConfig(name="test_tiny", embed_dim=32, depth=1, num_heads=2))
    return save_theia(enc, tmp_path_factory.mktemp("enc") / "theia_test")
