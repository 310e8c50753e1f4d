"""The numpy DDIM sampler reproduces ``diffusers.DDIMScheduler`` (eta = 0) step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from theia_ros.errors import TheiaError
from theia_ros.runtime.ddim import DDIMSampler

CONFIGS = [
    # the policies' configuration (policies.diffusion.make_sample_scheduler)
    dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
         prediction_type="epsilon", set_alpha_to_one=True, steps_offset=0),
    dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
         prediction_type="sample"),
    dict(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
         prediction_type="v_prediction", timestep_spacing="trailing", set_alpha_to_one=False),
    dict(num_train_timesteps=1000, beta_schedule="scaled_linear", clip_sample=True,
         clip_sample_range=2.0, timestep_spacing="linspace", steps_offset=1),
    dict(num_train_timesteps=1000, beta_schedule="linear", timestep_spacing="leading",
         steps_offset=1, rescale_betas_zero_snr=True, prediction_type="v_prediction"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['beta_schedule']}-"
                         f"{c.get('prediction_type', 'epsilon')}-"
                         f"{c.get('timestep_spacing', 'leading')}")
@pytest.mark.parametrize("steps", [10, 7])
def test_numpy_ddim_matches_diffusers_step_by_step(cfg: dict, steps: int) -> None:
    ref = DDIMScheduler(**cfg)
    ref.set_timesteps(steps)
    # The bundle stores the scheduler's full config (with diffusers' private keys).
    ours = DDIMSampler(dict(ref.config), steps)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
    np.testing.assert_allclose(ours.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=2e-6,
                               atol=1e-7)

    rng = np.random.default_rng(0)
    x_ours = rng.standard_normal((2, 4, 7)).astype(np.float32)
    x_ref = torch.from_numpy(x_ours.copy())
    for t in ref.timesteps:
        # a fake "network": any deterministic function of (x, t) exercises the maths
        out = np.tanh(x_ours * 0.7 + 0.01 * int(t)).astype(np.float32)
        x_ref = ref.step(torch.from_numpy(out), t, x_ref).prev_sample
        x_ours = ours.step(out, int(t), x_ours)
        np.testing.assert_allclose(x_ours, x_ref.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=f"step t={int(t)}")
        x_ours = x_ref.numpy().copy()  # compare every step from the same input


def test_full_loop_stays_close_to_diffusers() -> None:
    cfg = CONFIGS[0]
    ref = DDIMScheduler(**cfg)
    ref.set_timesteps(10)
    ours = DDIMSampler(dict(ref.config), 10)
    x0 = np.random.default_rng(1).standard_normal((1, 4, 7)).astype(np.float32)
    x_ours, x_ref = x0.copy(), torch.from_numpy(x0.copy())
    for t in ref.timesteps:
        x_ref = ref.step(torch.sin(x_ref), t, x_ref).prev_sample
        x_ours = ours.step(np.sin(x_ours), int(t), x_ours)
    assert np.abs(x_ours - x_ref.numpy()).max() < 1e-5


def test_bad_scheduler_config_is_a_clear_error() -> None:
    with pytest.raises(TheiaError, match="thresholding"):
        DDIMSampler({"thresholding": True}, 10)
    with pytest.raises(TheiaError, match="betas_typo: unknown field"):
        DDIMSampler({"betas_typo": 1}, 10)
    with pytest.raises(TheiaError, match="num_inference_steps"):
        DDIMSampler({"num_train_timesteps": 10}, 11)
    with pytest.raises(TheiaError, match="beta_schedule"):
        DDIMSampler({"beta_schedule": "nope"}, 5)
