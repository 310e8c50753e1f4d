"""Trainer (single process): loss falls, exact resume, on-the-fly teachers, config, errors.

The 2-process (gloo) runs, including a SIGKILL mid-run, are in test_distill_ddp.py (slow).
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers_distill import make_dataset, tiny_config, tiny_teachers
from safetensors.torch import load_file

from policies.checkpoint import load_encoder, load_theia
from theia_ros.errors import TheiaError
from training.distill.config import load_config
from training.distill.loss import cosine_loss, distill_loss
from training.distill.trainer import build_student, lr_factor, param_groups, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    make_dataset(tmp, n=40, shard_size=16, teachers=tiny_teachers())
    return tmp


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loss_falls_and_the_encoder_loads(data):
    cfg = tiny_config(data, "run_fall", train={"epochs": 5})
    final = train(cfg)
    log = _log(data / "run_fall" / "train_log.jsonl")
    losses = [r["loss"] for r in log]
    assert len(losses) == 5 * 4  # 32 training images / batch 8, 5 epochs
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3
    # warm-up: one epoch (4 steps) from 0.01 x LR, then constant
    lrs = [r["lr"] for r in log]
    assert lrs[0] < lrs[2] < lrs[3] == lrs[-1] == pytest.approx(2e-3 * 8 / 128)
    ev = _log(data / "run_fall" / "eval.jsonl")[-1]
    assert set(ev["cosine"]) == set(log[0]["teachers"])
    assert final is not None
    enc = load_encoder(final)
    assert enc.config.embed_dim == 32 and enc.config.depth == 2
    model = load_theia(final)
    assert all(model.has_stats(h) for h in model.teachers)
    tokens = enc.encode(torch.zeros(1, 224, 224, 3, dtype=torch.uint8))
    assert tokens.shape == (1, 196, 32)
    saved = (data / "run_fall" / "config.yaml").read_text()
    assert "embed_dim: 32" in saved and "cosine: token" in saved


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(data):
    full = tiny_config(data, "run_full", train={"epochs": 2})
    train(full)
    cut = tiny_config(data, "run_cut", train={"epochs": 2, "max_steps": 5})
    assert train(cut) is None
    ckpts = sorted(p.name for p in (data / "run_cut" / "checkpoints").glob("step_*"))
    assert ckpts == ["step_000000004", "step_000000005"]  # keep_checkpoints=2
    resumed = tiny_config(data, "run_cut", train={"epochs": 2})
    train(resumed)
    a = load_file(str(data / "run_full" / "final" / "model.safetensors"))
    b = load_file(str(data / "run_cut" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = _log(data / "run_full" / "train_log.jsonl"), _log(data / "run_cut" /
                                                               "train_log.jsonl")
    assert [r["step"] for r in lb] == list(range(1, 9))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_on_the_fly_teachers(data):
    cfg = tiny_config(data, "run_fly", data={"cache": None}, train={"epochs": 1})
    assert train(cfg) is not None
    log = _log(data / "run_fly" / "train_log.jsonl")
    assert len(log) == 4 and all(r["loss"] == r["loss"] for r in log)  # finite, no NaN
    # same first-step loss as from the cache, up to the cache's bf16 rounding
    cached = tiny_config(data, "run_fly_ref", train={"epochs": 1, "max_steps": 1})
    train(cached)
    ref = _log(data / "run_fly_ref" / "train_log.jsonl")[0]["loss"]
    assert log[0]["loss"] == pytest.approx(ref, rel=1e-2)


def test_bad_runs_are_clear_errors(data, tmp_path):
    with pytest.raises(TheiaError, match="feature statistics not found"):
        train(tiny_config(data, "e1", data={"stats": str(tmp_path / "none.safetensors")}))
    with pytest.raises(TheiaError, match="cache built for teachers"):
        train(tiny_config(data, "e2", model={"teachers": "c,di"}))
    with pytest.raises(TheiaError, match="no statistics for teacher"):
        train(tiny_config(data, "e3", model={"teachers": "cdis"}, data={"cache": None}))
    # a cache of tiny teachers is not the real teachers' cache (1024 channels expected)
    with pytest.raises(TheiaError, match=r"channels in the statistics|shape"):
        train(tiny_config(data, "e4", model={"tiny_teachers": False}))


def test_config_overrides_and_validation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {images: a, stats: b}\noptim: {lr: 5.0e-4}\n")
    cfg = load_config(path, ["optim.lr=1e-3", "train.epochs=3", "data.cache=null",
                             "optim.betas=[0.9, 0.95]", "train.amp=true"])
    assert cfg.optim.lr == 1e-3 and cfg.train.epochs == 3 and cfg.data.cache is None
    assert cfg.optim.betas == (0.9, 0.95) and cfg.train.amp is True
    for bad, msg in (["train.epoch=3"], "unknown key"), (["train.epochs=many"], "integer"), \
            (["optim.cosine=cube"], "optim.cosine"), (["epochs=3"], "section.key=value"), \
            (["optim.betas=[1]"], "list of 2"):
        with pytest.raises(TheiaError, match=msg):
            load_config(path, bad)
    with pytest.raises(TheiaError, match=r"data\.images"):
        load_config(None, [])


def test_loss_definition():
    torch.manual_seed(0)
    t = {"a": torch.randn(2, 16, 8), "b": torch.randn(2, 64, 4)}
    total, parts = distill_loss({k: v.clone() for k, v in t.items()}, t)
    assert float(total) == pytest.approx(0.0, abs=1e-6)
    p = {k: v + 0.5 for k, v in t.items()}
    total, parts = distill_loss(p, t)
    assert float(total) == pytest.approx((float(parts["a"]) + float(parts["b"])) / 2)
    smooth = 0.5 * 0.5 ** 2  # |d| < beta=1 -> 0.5 d^2
    expect_a = 0.9 * float(cosine_loss(p["a"], t["a"])) + 0.1 * smooth
    assert float(parts["a"]) == pytest.approx(expect_a, rel=1e-5)
    # per-token and flattened-map cosine differ when token norms differ
    scaled = t["a"] * torch.linspace(0.1, 10, 16).view(1, 16, 1)
    noisy = scaled + torch.randn_like(scaled)
    assert float(cosine_loss(noisy, scaled, "token")) != pytest.approx(
        float(cosine_loss(noisy, scaled, "map")), rel=1e-2)
    with pytest.raises(TheiaError, match="do not match targets"):
        distill_loss({"a": t["a"]}, t)


def test_schedule_and_weight_decay_groups(data):
    assert lr_factor(0, 10, 0.01) == pytest.approx(0.01)
    assert lr_factor(5, 10, 0.01) == pytest.approx(0.505)
    assert lr_factor(10, 10, 0.01) == lr_factor(999, 10, 0.01) == 1.0
    cfg = tiny_config(data)
    from training.distill.stats import TeacherStats
    stats = TeacherStats.load(data / "stats.safetensors")
    model = build_student(cfg, {h: (stats.parts[h].channels, 16, 16) for h in stats.teachers},
                          stats)
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert not any(n.endswith(".bias") for n in decayed)
    assert "encoder.backbone.pos_embed" in skipped and "encoder.backbone.cls_token" in skipped
    assert any(n.endswith("adapter.0.weight") for n in skipped)  # LN gain [C, 16, 16]
    assert any(n.endswith("adapter.1.weight") for n in decayed)  # conv kernel
    assert any(n.endswith("attn.qkv.weight") for n in decayed)
    assert len(decayed) + len(skipped) == len(names)
