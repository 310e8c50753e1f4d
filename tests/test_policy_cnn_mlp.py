"""CNN-MLP head: the paper's layer shapes, config validation, and that it really learns."""

from __future__ import annotations

import pytest
import torch

from policies.cnn_mlp import CnnMlpConfig, CnnMlpHead
from theia_ros.errors import TheiaError


def test_paper_architecture_shapes() -> None:
    head = CnnMlpHead(CnnMlpConfig(feature_dim=192, state_dim=7, horizon=10))
    convs = [m for m in head.neck if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] \
        == [(192, 256, (4, 4), (2, 2), (1, 1)), (256, 256, (3, 3), (2, 2), (0, 0)),
            (256, 256, (3, 3), (1, 1), (0, 0))]
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256 + 7, 256), (256, 256),
                                                                  (256, 70)]
    out = head(torch.randn(3, 192, 14, 14), torch.randn(3, 7))
    assert out.shape == (3, 10, 7)


@pytest.mark.parametrize("bad", [{"horizon": 0}, {"feature_dim": -1}, {"grid": 4},
                                 {"hidden_dim": 2.5}])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(TheiaError):
        CnnMlpConfig(**bad)


def test_config_round_trip_and_unknown_field() -> None:
    cfg = CnnMlpConfig(feature_dim=32, state_dim=3, horizon=5)
    assert CnnMlpConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TheiaError, match="unknown"):
        CnnMlpConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})


def test_mask_drops_padded_steps_from_loss() -> None:
    torch.manual_seed(0)
    head = CnnMlpHead(CnnMlpConfig(feature_dim=8, state_dim=2, horizon=4, neck_channels=16,
                                   hidden_dim=16))
    f, s = torch.randn(2, 8, 14, 14), torch.randn(2, 2)
    target = head(f, s).detach().clone()
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[:, 2:] = False
    target[:, 2:] += 100.0  # garbage in the padded steps only
    assert head.compute_loss(f, s, target, mask).item() < 1e-6
    assert head.compute_loss(f, s, target).item() > 10.0


def test_fits_synthetic_features_to_chunk_mapping() -> None:
    """Actions depend on WHERE a blob sits in the feature map and on the state: the head must
    use both the spatial features and the state to reach a low held-out error."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    c, horizon, n_train, n_val = 4, 3, 768, 256

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.rand(n, 2, generator=g) * 2 - 1  # blob position in [-1, 1]^2
        lin = torch.linspace(-1, 1, 14)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        blob = torch.exp(-((xx - pos[:, 0, None, None]) ** 2 + (yy - pos[:, 1, None, None]) ** 2)
                         / 0.1)
        feats = blob[:, None].repeat(1, c, 1, 1) + 0.05 * torch.randn(n, c, 14, 14, generator=g)
        state = torch.randn(n, 2, generator=g)
        steps = torch.arange(1, horizon + 1, dtype=torch.float32)[None, :, None]
        act = torch.cat([pos[:, None] * steps / horizon,
                         0.5 * state[:, None, :1].expand(-1, horizon, -1)], dim=-1)
        return feats, state, act  # act [n, H, 3]

    f_tr, s_tr, a_tr = make(n_train)
    f_va, s_va, a_va = make(n_val)
    torch.manual_seed(0)
    head = CnnMlpHead(CnnMlpConfig(feature_dim=c, state_dim=2, action_dim=3, horizon=horizon,
                                   neck_channels=32, hidden_dim=64))
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=0.01)
    for step in range(500):
        idx = torch.randint(0, n_train, (64,), generator=g)
        loss = head.compute_loss(f_tr[idx], s_tr[idx], a_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss), step
    with torch.no_grad():
        mse = ((head.predict(f_va, s_va) - a_va) ** 2).mean().item()
    baseline = ((a_va - a_tr.mean(0)) ** 2).mean().item()
    assert mse < 0.1 * baseline, (mse, baseline)
