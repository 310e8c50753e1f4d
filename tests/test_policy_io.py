"""Policy = encoder + head + normaliser: physical-unit I/O, and the checkpoint contract
(``policy.json`` + ``model.safetensors``) round trip for every head type."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.cnn_mlp import CnnMlpConfig
from policies.diffusion import DiffusionConfig
from policies.encoder import EncoderConfig, TheiaEncoder
from policies.normalize import Normalizer, compute_stats
from policies.policy import (
    HEADS,
    MODEL_FILE,
    POLICY_JSON,
    PolicyConfig,
    build_policy,
    load_policy,
    save_policy,
)
from theia_ros.errors import TheiaError

HEAD_CONFIGS = {
    "cnn_mlp": CnnMlpConfig(feature_dim=32, state_dim=4, horizon=5, neck_channels=16,
                            hidden_dim=32),
    "diffusion": DiffusionConfig(feature_dim=32, state_dim=4, horizon=4, proj_channels=8,
                                 image_cond_dim=16, down_dims=(16, 32), step_embed_dim=8),
}


def _policy(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    encoder = TheiaEncoder(EncoderConfig(name="test", embed_dim=32, depth=1, num_heads=2))
    rng = np.random.default_rng(seed)
    norm = Normalizer.from_data("min_max" if kind == "diffusion" else "mean_std",
                                rng.normal(size=(40, 4)), rng.normal(2.0, 3.0, size=(40, 7)))
    hc = HEAD_CONFIGS[kind]
    cfg = PolicyConfig(kind, "ee_absolute", state_dim=4, horizon=hc.horizon, fps=10.0,
                       cameras=("hand",))
    return build_policy(cfg, encoder, hc, norm).eval()


def test_every_registered_head_is_covered() -> None:
    assert set(HEADS) == set(HEAD_CONFIGS)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_save_load_round_trip_gives_identical_actions(kind: str, tmp_path: Path) -> None:
    policy = _policy(kind)
    images = np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    state = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    before = policy.predict_action_chunk(images, state, torch.Generator().manual_seed(5))
    save_policy(policy, tmp_path / "p")
    meta = json.loads((tmp_path / "p" / POLICY_JSON).read_text())
    assert meta["type"] == kind and meta["horizon"] == HEAD_CONFIGS[kind].horizon
    assert meta["cameras"] == ["hand"] and meta["encoder"]["embed_dim"] == 32
    assert len(meta["normalization"]["action"]["mean"]) == 7
    loaded = load_policy(tmp_path / "p")
    after = loaded.predict_action_chunk(images, state, torch.Generator().manual_seed(5))
    assert before.shape == (2, HEAD_CONFIGS[kind].horizon, 7)
    assert torch.equal(before, after)
    # a different policy really gives different actions (the comparison can fail)
    other = _policy(kind, seed=1).predict_action_chunk(images, state,
                                                       torch.Generator().manual_seed(5))
    assert not torch.allclose(before, other)


def test_actions_come_out_in_physical_units() -> None:
    policy = _policy("cnn_mlp")
    with torch.no_grad():
        for p in policy.head.mlp[-1].parameters():
            p.zero_()  # head outputs 0 in normalised units -> the action mean
    out = policy.predict_action_chunk(np.zeros((1, 32, 32, 3), np.uint8), np.zeros(4))
    mean = torch.tensor(policy.normalizer.action.stats["mean"], dtype=torch.float32)
    torch.testing.assert_close(out[0], mean.expand(5, 7))


def test_normalizer_modes_and_constant_dimension() -> None:
    x = np.array([[0.0, 1.0, 5.0], [2.0, 3.0, 5.0], [4.0, 5.0, 5.0]])
    stats = compute_stats(x)
    for mode in ("mean_std", "min_max"):
        norm = Normalizer(mode, stats, stats).state
        xt = torch.tensor(x, dtype=torch.float32)
        torch.testing.assert_close(norm.unnormalize(norm.normalize(xt)), xt)
        assert norm.scale[2].item() == 1.0  # constant dim is not blown up
    mm = Normalizer("min_max", stats, stats).state.normalize(
        torch.tensor([[0.0, 1.0, 5.0], [4.0, 5.0, 5.0]]))
    torch.testing.assert_close(mm, torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]))
    ms = Normalizer("mean_std", stats, stats).state.normalize(torch.tensor(x).float())
    torch.testing.assert_close(ms.mean(0), torch.zeros(3))
    with pytest.raises(TheiaError):
        compute_stats(np.array([[np.nan]]))


def test_corrupted_or_mismatched_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    save_policy(_policy("cnn_mlp"), tmp_path / "p")
    with pytest.raises(TheiaError, match=r"no policy\.json"):
        load_policy(tmp_path / "missing")
    model = tmp_path / "p" / MODEL_FILE
    model.write_bytes(model.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(TheiaError, match="checksum"):
        load_policy(tmp_path / "p")
    meta_path = tmp_path / "p" / POLICY_JSON
    meta = json.loads(meta_path.read_text())
    meta["type"] = "transformer"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(TheiaError, match="transformer"):
        load_policy(tmp_path / "p", verify=False)


def test_state_shape_is_checked() -> None:
    with pytest.raises(TheiaError, match="state"):
        _policy("cnn_mlp").predict_action_chunk(np.zeros((1, 32, 32, 3), np.uint8),
                                                np.zeros(3))
