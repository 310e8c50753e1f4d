"""Diffusion head: U-Net shapes, scheduler settings, the host-side DDIM tables, and the test
that it really diffuses: trained on a bimodal action distribution it samples both modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.diffusion import (
    DiffusionConfig,
    DiffusionHead,
    TemporalUnet1d,
    make_sample_scheduler,
    make_train_scheduler,
)
from theia_ros.errors import TheiaError
from theia_ros.runtime.ddim import DDIMSampler

TINY = {"feature_dim": 4, "state_dim": 2, "action_dim": 2, "proj_channels": 8,
        "image_cond_dim": 16, "down_dims": (32, 64), "n_groups": 8, "step_embed_dim": 16}


def test_default_is_the_paper_spot_setup() -> None:
    cfg = DiffusionConfig()
    assert (cfg.horizon, cfg.num_train_timesteps, cfg.num_inference_steps) == (4, 100, 10)
    train, sample = make_train_scheduler(cfg), make_sample_scheduler(cfg)
    assert train.config.beta_schedule == "squaredcos_cap_v2"
    assert len(train.timesteps) == 100
    assert sample.timesteps.tolist() == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]


@pytest.mark.parametrize("horizon", [1, 4, 5, 10])
def test_denoiser_signature_and_odd_horizons(horizon: int) -> None:
    cfg = DiffusionConfig(**{**TINY, "down_dims": (16, 32, 64)}, horizon=horizon)
    net = TemporalUnet1d(cfg)
    out = net(torch.randn(3, horizon, 2), torch.tensor([0, 50, 99]), torch.randn(3, cfg.cond_dim))
    assert out.shape == (3, horizon, 2)
    # the timestep matters (FiLM conditioning on the step embedding)
    out2 = net(torch.randn(3, horizon, 2), torch.tensor([10, 10, 10]),
               torch.randn(3, cfg.cond_dim))
    assert not torch.allclose(out, out2)


@pytest.mark.parametrize("bad", [{"down_dims": (30, 64)}, {"kernel_size": 4},
                                 {"num_inference_steps": 200}, {"prediction_type": "v"},
                                 {"beta_schedule": "nope"}, {"down_dims": ()}])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(TheiaError):
        DiffusionConfig(**{**TINY, **bad})


def test_numpy_ddim_loop_from_tables_matches_diffusers() -> None:
    """What export runs on the host (numpy, no diffusers) gives the same chunk."""
    torch.manual_seed(0)
    cfg = DiffusionConfig(**TINY)
    head = DiffusionHead(cfg).eval()
    feats, state = torch.randn(2, 4, 14, 14), torch.randn(2, 2)
    ref = head.predict(feats, state, torch.Generator().manual_seed(3)).numpy()

    sampler = DDIMSampler(cfg.scheduler_kwargs(), cfg.num_inference_steps)
    t = {"timesteps": sampler.timesteps, "alphas_cumprod": sampler.alphas_cumprod,
         "final_alpha_cumprod": sampler.final_alpha_cumprod, "step_ratio": sampler.step_ratio}
    x = torch.randn((2, cfg.horizon, 2), generator=torch.Generator().manual_seed(3)).numpy()
    with torch.no_grad():
        cond = head.cond_encoder(feats, state)
    a = t["alphas_cumprod"]
    for step in t["timesteps"]:
        with torch.no_grad():
            eps = head.denoiser(torch.from_numpy(x), torch.full((2,), int(step)), cond).numpy()
        prev = step - t["step_ratio"]
        a_t, a_p = a[step], (a[prev] if prev >= 0 else t["final_alpha_cumprod"])
        x0 = np.clip((x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t), -1, 1)
        x = (np.sqrt(a_p) * x0 + np.sqrt(1 - a_p) * eps).astype(np.float32)
    np.testing.assert_allclose(x, ref, atol=1e-4)


def test_samples_both_modes_of_a_bimodal_distribution() -> None:
    """Same observation, actions +0.7 or -0.7 (50/50): a regressor would output ~0; the
    diffusion head must put most samples near one of the two modes, and both modes appear."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = DiffusionConfig(**{**TINY, "down_dims": (16, 32)})
    head = DiffusionHead(cfg)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    feats = torch.zeros(64, 4, 14, 14)
    state = torch.zeros(64, 2)
    for _ in range(300):
        sign = torch.randint(0, 2, (64, 1, 1)).float() * 2 - 1
        actions = 0.7 * sign.expand(-1, cfg.horizon, 2)
        loss = head.compute_loss(feats, state, actions)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    samples = head.predict(torch.zeros(400, 4, 14, 14), torch.zeros(400, 2),
                           torch.Generator().manual_seed(1))
    mean = samples.mean(dim=(1, 2))
    upper, lower = (mean > 0.4).float().mean().item(), (mean < -0.4).float().mean().item()
    assert upper > 0.2 and lower > 0.2, (upper, lower)
    assert upper + lower > 0.8, (upper, lower)  # few samples in between (the average)
    assert abs(samples.mean().item()) < 0.35  # ... though the average itself is ~0
