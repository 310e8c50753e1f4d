"""Small random-weight policies and bundles for the export/runtime tests.

The encoder is a real Theia ViT (timm ``VisionTransformer``), only shrunk (1 block, width 32)
so an export takes seconds; every other part is the production code path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from policies.cnn_mlp import CnnMlpConfig
from policies.diffusion import DiffusionConfig
from policies.encoder import EncoderConfig, TheiaEncoder
from policies.normalize import Normalizer
from policies.policy import Policy, PolicyConfig, build_policy, save_policy
from training.export import ExportOptions, export_bundle

STATE_DIM = 7
HORIZON = 4
IMAGE_HW = (40, 56)  # not 224: the in-graph resize is exercised


def make_policy(kind: str, seed: int = 0, cameras: tuple[str, ...] = ("front",),
                n_obs_steps: int = 1, resize: str = "antialias") -> Policy:
    """A tiny random ``cnn_mlp`` or ``diffusion`` policy with non-trivial normalisation."""
    views = {"num_views": len(cameras) * n_obs_steps, "n_obs_steps": n_obs_steps}
    torch.manual_seed(seed)
    enc = TheiaEncoder(EncoderConfig(name="theia_test", embed_dim=32, depth=1, num_heads=2,
                                     resize=resize))
    rng = np.random.default_rng(seed)
    states = rng.normal(0.3, 0.5, (64, STATE_DIM))
    actions = rng.normal(0.0, 0.02, (64, 7))
    if kind == "cnn_mlp":
        head = CnnMlpConfig(feature_dim=32, state_dim=STATE_DIM, horizon=HORIZON,
                            neck_channels=16, hidden_dim=32, **views)
        norm = Normalizer.from_data("mean_std", states, actions)
    else:
        head = DiffusionConfig(feature_dim=32, state_dim=STATE_DIM, horizon=HORIZON,
                               proj_channels=8, image_cond_dim=16, down_dims=(16, 32),
                               n_groups=4, step_embed_dim=8, num_inference_steps=5, **views)
        norm = Normalizer.from_data("min_max", states, actions)
    config = PolicyConfig(kind, "ee_delta", STATE_DIM, HORIZON, encoder_source="theia_test",
                          cameras=cameras, n_obs_steps=n_obs_steps)
    return build_policy(config, enc, head, norm).eval()


def make_bundle(tmp: Path, kind: str, exporter: str = "torchscript", fused: bool = False,
                cameras: tuple[str, ...] = ("front",), n_obs_steps: int = 1,
                resize: str = "antialias", **opts: object) -> tuple[Path, Path, list]:
    """Save a tiny policy under ``tmp`` and export it; -> (policy dir, bundle dir, parity)."""
    policy = make_policy(kind, cameras=cameras, n_obs_steps=n_obs_steps, resize=resize)
    policy_dir = save_policy(policy, tmp / f"policy_{kind}")
    out, results = export_bundle(policy_dir, tmp / f"bundle_{kind}",
                                 ExportOptions(image_hw=opts.pop("image_hw", IMAGE_HW),
                                               exporter=exporter, fused=fused, **opts),
                                 log=lambda _msg: None)
    return policy_dir, out, results
