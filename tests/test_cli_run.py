"""``theia run``: an exported bundle drives the sim through the real control core at 5 Hz.

Everything is real: a small random-weight CNN-MLP policy is exported with ``theia export``'s
code, loaded with the onnxruntime backend, and run by ``ControlLoop`` + ``SafetyFilter`` on
``SimWidowX`` (64 x 64 camera to keep it quick).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo  # before any MuJoCo EGL context (importing triton after one segfaults)

from policies.cnn_mlp import CnnMlpConfig
from policies.encoder import EncoderConfig, TheiaEncoder
from policies.normalize import Normalizer
from policies.policy import PolicyConfig, build_policy, save_policy
from theia_ros import cli
from theia_ros.evaluate.rollout import RunSettings, percentiles_ms, run_episodes
from theia_ros.evaluate.video import VideoWriter, annotate
from theia_ros.sim.success import DoorStage
from training.export import ExportOptions, export_bundle

HORIZON = 4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    encoder = TheiaEncoder(EncoderConfig(name="theia_test", embed_dim=32, depth=1, num_heads=2))
    states = rng.normal(0.0, 0.3, (64, 7)).astype(np.float32)
    actions = rng.normal(0.0, 0.005, (64, 7)).astype(np.float32)  # small EE deltas
    norm = Normalizer.from_data("mean_std", states, actions)
    head = CnnMlpConfig(feature_dim=32, state_dim=7, horizon=HORIZON, neck_channels=16,
                        hidden_dim=32)
    policy = build_policy(PolicyConfig("cnn_mlp", "ee_delta", 7, HORIZON), encoder, head, norm)
    save_policy(policy, root / "policy")
    out, _ = export_bundle(root / "policy", root / "bundle", ExportOptions(image_hw=(64, 64)),
                           log=lambda s: None)
    return out


def test_closed_loop_episode_through_the_control_core(bundle, tmp_path) -> None:
    from theia_ros.runtime import load

    runtime = load(bundle, backend="onnxruntime", threads=1)
    calls: list[np.ndarray] = []

    def policy(obs):
        assert obs.images["front"].shape == (64, 64, 3)
        chunk = runtime(obs)
        calls.append(chunk)
        return chunk

    video = tmp_path / "roll.mp4"
    settings = RunSettings(max_steps=5, replan_every=2, temporal_ensemble=False)
    result = run_episodes(policy, [7], settings, image_size=64, video=video)
    runtime.close()

    (ep,) = result.episodes
    assert ep.seed == 7 and ep.steps + ep.holds == 5
    assert ep.steps >= 3  # a fresh observation every tick: the loop acts, not holds
    assert len(calls) == 3  # ticks 0, 2, 4 re-plan (replan_every=2)
    assert all(c.shape == (HORIZON, 7) for c in calls)
    assert ep.final_stage == DoorStage.CLOSED.name  # a random policy does not open doors
    # real-time pacing: 5 ticks at 5 Hz take at least 4 periods
    assert ep.wall_s >= 0.8 - 0.05
    assert len(result.tick_s) == ep.steps and all(0 < t < 1.0 for t in result.tick_s)
    assert all(0 < c <= t + 1e-6 for c, t in zip(result.command_latency_s, result.tick_s))
    assert video.exists() and video.stat().st_size > 1000


def test_fast_mode_runs_several_seeds_without_waiting(bundle) -> None:
    from theia_ros.runtime import load

    runtime = load(bundle, backend="onnxruntime", threads=1)
    settings = RunSettings(max_steps=6, fast=True)
    seen: list[int] = []
    result = run_episodes(runtime, [1, 2], settings, image_size=64,
                          on_episode=lambda e: seen.append(e.seed))
    runtime.close()
    assert seen == [1, 2]
    assert all(e.steps == 6 for e in result.episodes)
    assert all(e.wall_s < 6 * 0.2 for e in result.episodes)  # no pacing
    assert result.summary()["episodes"] == 2


def test_cli_run_writes_json(bundle, tmp_path, capsys) -> None:
    out = tmp_path / "run.json"
    rc = cli.main(["run", "--bundle", str(bundle), "--robot", "sim", "--episodes", "1",
                   "--seed", "5", "--max-steps", "3", "--fast", "--backend", "onnxruntime",
                   "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["summary"]["episodes"] == 1
    assert doc["episodes"][0]["seed"] == 5 and doc["episodes"][0]["steps"] == 3
    assert "success 0/1" in capsys.readouterr().out


def test_cli_run_rejects_bad_episode_count(bundle, capsys) -> None:
    rc = cli.main(["run", "--bundle", str(bundle), "--robot", "sim", "--episodes", "0"])
    assert rc == 2
    assert "--episodes" in capsys.readouterr().err


def test_percentiles_and_annotation() -> None:
    p = percentiles_ms([0.001 * i for i in range(1, 101)])
    assert p["p50"] == pytest.approx(50.5) and p["p90"] == pytest.approx(90.1)
    assert percentiles_ms([])["p99"] is None
    img = annotate(np.zeros((32, 32, 3), np.uint8), ["seed 1"], DoorStage.FULLY_OPEN)
    assert img.shape == (64, 64, 3) and img[0, 0, 1] > img[0, 0, 0]  # green border


def test_video_writer_leaves_nothing_without_frames(tmp_path) -> None:
    w = VideoWriter(tmp_path / "empty.mp4", 5.0)
    assert w.close() is None
    assert list(tmp_path.iterdir()) == []
