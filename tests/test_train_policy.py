"""``theia train-policy`` end to end on a tiny dataset written with the real DatasetWriter, a
tiny encoder checkpoint written with the real ``save_theia``; resume == uninterrupted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from policies.policy import load_policy
from theia_ros.cli import main as theia_main
from theia_ros.dataset import DatasetWriter, EpisodeDataset
from theia_ros.errors import TheiaError
from training.bc.config import TrainConfig
from training.bc.data import chunk_indices, split_episodes
from training.bc.trainer import BCTrainer, train_policy

TINY_DIFFUSION = {"down_dims": [16, 32], "proj_channels": 8, "image_cond_dim": 16,
                  "step_embed_dim": 8}
TINY_CNN = {"neck_channels": 16, "hidden_dim": 32}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 episodes x 6 frames; the action is a function of the image brightness."""
    root = tmp_path_factory.mktemp("ds") / "demo"
    rng = np.random.default_rng(0)
    writer = DatasetWriter.create(root, fps=5, robot_type="wx250s", cameras={"front": (32, 32)},
                                  state_dim=7, action_kind="ee_delta")
    for _ in range(4):
        writer.start_episode("open the door")
        for _ in range(6):
            level = rng.uniform(0.1, 0.9)
            img = np.full((32, 32, 3), int(level * 255), np.uint8)
            state = rng.normal(size=7).astype(np.float32)
            action = np.r_[level * np.ones(3), np.zeros(3), 1.0].astype(np.float32)
            writer.add_frame({"front": img}, state, np.zeros(6, np.float32), action)
        writer.save_episode(True)
    writer.close()
    return root


def test_chunks_pad_with_last_action_and_mask() -> None:
    ends = np.array([3, 3, 3, 5, 5])
    rows, mask = chunk_indices(ends, np.array([1, 2, 3]), 3)
    assert rows.tolist() == [[1, 2, 2], [2, 2, 2], [3, 4, 4]]
    assert mask.tolist() == [[True, True, False], [True, False, False], [True, True, False]]


def test_split_holds_out_whole_episodes() -> None:
    train, val = split_episodes(10, 0.2, seed=0)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert split_episodes(1, 0.2, 0) == ([0], [])
    with pytest.raises(TheiaError):
        split_episodes(5, 1.5, 0)


def test_cli_end_to_end_cnn_mlp(dataset: Path, encoder_ckpt: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["train-policy", "--dataset", str(dataset), "--policy", "cnn_mlp",
            "--encoder", str(encoder_ckpt), "--out", str(out), "--iters", "30",
            "--horizon", "3", "--lr", "1e-3", "--val-fraction", "0.25", "--head",
            json.dumps(TINY_CNN), "--cache-dir", str(cache), "--quiet"]
    assert theia_main(argv) == 0
    for name in ("policy.json", "model.safetensors", "train_config.json", "metrics.jsonl",
                 "train_state.safetensors"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["optimizer"] == "adamw" and cfg["weight_decay"] == 0.01 and cfg["iters"] == 30
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 30 and np.isfinite(metrics[-1]["val_loss"])
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    cached = list(cache.glob("*/*.npy"))
    assert len(cached) == 4  # one feature file per episode
    policy = load_policy(out)
    assert policy.config.action_kind == "ee_delta" and policy.config.fps == 5.0
    ep = EpisodeDataset(dataset).episode(0)
    chunk = policy.predict_action_chunk(ep["observation.images.front"][:2],
                                        ep["observation.state"][:2])
    assert chunk.shape == (2, 3, 7) and torch.isfinite(chunk).all()
    # a second run reuses the cached features (files untouched) and, finding the finished
    # state, does no more steps
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    assert theia_main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps
    # an incompatible config on top of an existing run is refused with one clear line
    assert theia_main([*argv[:-1], "--batch-size", "4", "--quiet"]) == 2


@pytest.mark.parametrize("policy", ["cnn_mlp", "diffusion"])
def test_resume_equals_uninterrupted(policy: str, dataset: Path, encoder_ckpt: Path,
                                     tmp_path: Path) -> None:
    torch.set_num_threads(1)
    head = TINY_CNN if policy == "cnn_mlp" else TINY_DIFFUSION

    def cfg(out: str) -> TrainConfig:
        return TrainConfig(dataset=str(dataset), out=str(tmp_path / out), policy=policy,
                           encoder=str(encoder_ckpt), iters=8, batch_size=4, head=head,
                           cache_dir=str(tmp_path / "cache"), checkpoint_every=100,
                           val_every=3)

    full = train_policy(cfg("full"), show_progress=False)
    first = train_policy(cfg("split"), show_progress=False, stop_at_step=5)
    assert first.step == 5
    mid = load_file(str(tmp_path / "split" / "model.safetensors"))
    second = train_policy(cfg("split"), show_progress=False)
    assert second.step == full.step == 8
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the last 3 steps did move the weights (so equality above is not trivially true)
    assert any(not torch.equal(a[k], mid[k]) for k in a)


def test_finetune_trains_encoder_with_its_own_lr(dataset: Path, encoder_ckpt: Path,
                                                 tmp_path: Path) -> None:
    torch.set_num_threads(1)
    trainer = BCTrainer(TrainConfig(dataset=str(dataset), out=str(tmp_path / "ft"),
                                    policy="cnn_mlp", encoder=str(encoder_ckpt), finetune=True,
                                    iters=2, batch_size=2, lr=1e-3, head=TINY_CNN,
                                    val_fraction=0.25), show_progress=False)
    assert trainer.cfg.augment and not trainer.cfg.uses_cache
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-3, 1e-4]
    before = {k: v.clone() for k, v in trainer.policy.encoder.state_dict().items()}
    trainer.run()
    after = trainer.policy.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    saved = load_policy(tmp_path / "ft")
    assert not saved.config.encoder_frozen
    for k, v in saved.encoder.state_dict().items():
        assert torch.equal(v, after[k])


def test_frozen_encoder_weights_are_saved_unchanged(dataset: Path, encoder_ckpt: Path,
                                                    tmp_path: Path) -> None:
    from policies.checkpoint import load_encoder

    train_policy(TrainConfig(dataset=str(dataset), out=str(tmp_path / "fr"),
                             policy="diffusion", encoder=str(encoder_ckpt), iters=2,
                             batch_size=4, head=TINY_DIFFUSION, cache_dir=str(tmp_path / "c")),
                 show_progress=False)
    saved = load_policy(tmp_path / "fr")
    original = load_encoder(str(encoder_ckpt))
    for k, v in original.state_dict().items():
        assert torch.equal(saved.encoder.state_dict()[k], v), k
    meta = json.loads((tmp_path / "fr" / "policy.json").read_text())
    assert meta["encoder_frozen"] and meta["normalization"]["mode"] == "min_max"
    assert meta["head"]["num_inference_steps"] == 10


def test_bad_dataset_path_is_a_clear_error(tmp_path: Path, capsys) -> None:
    rc = theia_main(["train-policy", "--dataset", str(tmp_path / "nope"), "--out",
                     str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a failed start leaves no output folder


def test_failed_start_leaves_no_output_folder(dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs" / "door"
    rc = theia_main(["train-policy", "--dataset", str(dataset), "--out", str(out), "--encoder",
                     str(tmp_path / "no_such_checkpoint"), "--quiet"])
    assert rc == 2 and "no_such_checkpoint" in capsys.readouterr().err
    assert not out.exists()


def test_resume_compares_paths_where_they_point(dataset: Path, encoder_ckpt: Path,
                                                tmp_path: Path, monkeypatch, capsys) -> None:
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(dataset.parent)
    base = ["train-policy", "--encoder", str(encoder_ckpt), "--iters", "2", "--batch-size",
            "4", "--head", json.dumps(TINY_CNN), "--cache-dir", str(tmp_path / "cache"),
            "--quiet"]
    assert theia_main([*base, "--dataset", f"data/{dataset.name}", "--out", "runs/door"]) == 0
    # the same run spelled with absolute paths (and the dataset's real location) resumes
    assert theia_main([*base, "--iters", "3", "--dataset", str(dataset), "--out",
                       str(tmp_path / "runs" / "door")]) == 0
    assert "after 3/3 steps" in capsys.readouterr().out
    # a missing dataset is reported as missing, not as "a different config"
    assert theia_main([*base, "--dataset", str(tmp_path / "gone"), "--out", "runs/door"]) == 2
    err = capsys.readouterr().err
    assert "gone" in err and "different config" not in err
    # a real change of settings is still refused
    assert theia_main([*base, "--dataset", str(dataset), "--out", "runs/door",
                       "--batch-size", "2"]) == 2
    assert "different config (['batch_size'])" in capsys.readouterr().err


def test_padding_past_an_episode_end_means_stay_put() -> None:
    """EE deltas: steps past the end are zero motion with the last gripper command (a repeat
    of the last delta would teach "keep moving"); absolute poses repeat the last pose."""
    from training.bc.data import ChunkDataset, Demos

    actions = np.array([[0.01, 0, 0, 0, 0, 0.1, 0.0], [0.02, 0, 0, 0, 0, 0.2, 1.0]],
                       np.float32)
    demos = Demos(states=np.zeros((2, 7), np.float32), actions=actions,
                  episode_end=np.array([2, 2]),
                  images={"front": np.zeros((2, 8, 8, 3), np.uint8)},
                  episodes=[0], lengths=[2], fingerprints={"front": ["x"]})
    chunk = ChunkDataset(demos, horizon=4, deltas=True).batch(np.array([1]))["action"][0]
    np.testing.assert_array_equal(chunk[0], actions[1])
    np.testing.assert_array_equal(chunk[1:, :6], 0.0)
    np.testing.assert_array_equal(chunk[1:, 6], 1.0)  # the gripper command is kept
    absolute = ChunkDataset(demos, horizon=4).batch(np.array([1]))["action"][0]
    np.testing.assert_array_equal(absolute, np.repeat(actions[1:], 4, axis=0))
