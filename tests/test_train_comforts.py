"""train-policy with two cameras and a 2-step history, TensorBoard, best and periodic
checkpoints, typed configs that round-trip, ``--device``; ``theia eval`` on its output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.policy import load_policy
from theia_ros.cli import main as theia_main
from theia_ros.dataset import DatasetWriter
from theia_ros.errors import TheiaError
from training.bc.config import TrainConfig, apply_overrides
from training.bc.trainer import resolve_device, train_policy

TINY_CNN = {"neck_channels": 16, "hidden_dim": 32}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 episodes x 6 frames, two cameras; the action follows the wrist image brightness."""
    root = tmp_path_factory.mktemp("ds") / "demo"
    rng = np.random.default_rng(0)
    writer = DatasetWriter.create(root, fps=5, robot_type="wx250s_sim",
                                  cameras={"front": (32, 32), "wrist": (32, 32)},
                                  state_dim=7, action_kind="ee_delta")
    for _ in range(3):
        writer.start_episode("open the door")
        for _ in range(6):
            level = rng.uniform(0.1, 0.9)
            images = {"front": np.full((32, 32, 3), 128, np.uint8),
                      "wrist": np.full((32, 32, 3), int(level * 255), np.uint8)}
            action = np.r_[level * np.ones(3), np.zeros(3), 1.0].astype(np.float32)
            writer.add_frame(images, rng.normal(size=7).astype(np.float32),
                             np.zeros(6, np.float32), action)
        writer.save_episode(True)
    writer.close()
    return root


def test_yaml_strings_are_typed_and_the_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({"dataset": "ds", "out": "o", "lr": "3e-4", "epochs": "2",
                                 "camera": "wrist", "mask_padding": False})
    assert cfg.lr == 3e-4 and isinstance(cfg.lr, float) and cfg.epochs == 2
    assert cfg.cameras == ("wrist",)
    resolved = cfg.resolved()
    again = TrainConfig.from_dict(json.loads(json.dumps(resolved.to_dict())))
    assert again == resolved
    with pytest.raises(TheiaError, match="lr"):
        TrainConfig.from_dict({"dataset": "ds", "out": "o", "lr": "fast"})
    values = apply_overrides({"dataset": "ds", "out": "o"},
                             ["lr=1e-3", "head.hidden_dim=64", "cameras=[front, wrist]"])
    cfg = TrainConfig.from_dict(values)
    assert (cfg.lr, cfg.head, cfg.cameras) == (1e-3, {"hidden_dim": 64}, ("front", "wrist"))
    with pytest.raises(TheiaError, match="override"):
        apply_overrides({}, ["learning_rate=1"])
    assert TrainConfig(dataset="d", out="o").device == "auto"
    assert TrainConfig(dataset="d", out="o", policy="diffusion").resolved().n_obs_steps == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_asked_for_without_cuda_is_one_clear_line() -> None:
    with pytest.raises(TheiaError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_two_cameras_with_history_train_log_and_keep_checkpoints(dataset: Path,
                                                                 encoder_ckpt: Path,
                                                                 tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("lr: 3e-4\nbatch_size: 4\n")  # PyYAML: lr is the string "3e-4"
    out = tmp_path / "run"
    rc = theia_main(["train-policy", "--dataset", str(dataset), "--encoder", str(encoder_ckpt),
                     "--camera", "front", "--camera", "wrist", "--n-obs-steps", "2",
                     "--iters", "6", "--val-every", "2", "--checkpoint-every", "2",
                     "--keep-checkpoints", "2", "--config", str(config), "--quiet",
                     "--val-fraction", "0.34", "--out", str(out),
                     f"head.neck_channels={TINY_CNN['neck_channels']}",
                     f"head.hidden_dim={TINY_CNN['hidden_dim']}", "seed=1"])
    assert rc == 0
    policy = load_policy(out)
    assert policy.config.cameras == ("front", "wrist") and policy.config.n_obs_steps == 2
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["lr"] == 3e-4 and saved["seed"] == 1 and saved["device"] == "auto"
    best = json.loads((out / "best" / "best.json").read_text())
    vals = [json.loads(x)["val_loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert best["val_loss"] == min(vals)
    assert load_policy(out / "best").config.cameras == ("front", "wrist")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        ["step_0000004", "step_0000006"]
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"train/train_loss", "train/lr", "val/val_loss"} <= set(acc.Tags()["scalars"])
    assert "val/action_chunks" in acc.Tags()["images"]
    # the saved config fed back reproduces the run's settings (resume: nothing to do)
    rc = theia_main(["train-policy", "--dataset", str(dataset), "--config",
                     str(out / "train_config.json"), "--quiet"])
    assert rc == 0


@pytest.mark.slow
def test_eval_runs_a_policy_folder_on_the_sim(dataset: Path, encoder_ckpt: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "p"
    train_policy(TrainConfig(dataset=str(dataset), out=str(out), encoder=str(encoder_ckpt),
                             cameras=("front", "wrist"), n_obs_steps=2, iters=2,
                             batch_size=4, head=TINY_CNN, tensorboard=False,
                             checkpoint_every=0), show_progress=False)
    report_dir = tmp_path / "eval"
    rc = theia_main(["eval", str(out), "--episodes", "1", "--max-steps", "3", "--fast",
                     "--video-episodes", "0", "--out", str(report_dir)])
    assert rc == 0
    report = json.loads((report_dir / "report.json").read_text())
    ev = report["evaluation"]
    assert ev["episodes"] == 1 and ev["faulted"] == 0 and ev["cameras"] == ["front", "wrist"]
    assert ev["per_episode"][0]["steps"] + ev["per_episode"][0]["holds"] >= 1
    assert theia_main(["eval", str(tmp_path / "nothing")]) == 2


def test_eval_on_the_spot_drawer_refuses_a_widowx_policy(dataset: Path, encoder_ckpt: Path,
                                                        tmp_path: Path, capsys) -> None:
    """A WidowX policy (EE deltas) is refused by the Spot drawer before any robot is started,
    and the drawer has no --fast mode (its simulated robot keeps wall-clock time)."""
    out = tmp_path / "p"
    train_policy(TrainConfig(dataset=str(dataset), out=str(out), encoder=str(encoder_ckpt),
                             iters=1, batch_size=4, head=TINY_CNN, tensorboard=False,
                             checkpoint_every=0), show_progress=False)
    argv = ["eval", str(out), "--task", "spot_drawer", "--out", str(tmp_path / "e")]
    assert theia_main(argv) == 2
    assert "absolute hand poses" in capsys.readouterr().err
    assert theia_main([*argv, "--fast"]) == 2
    assert "real time only" in capsys.readouterr().err
    assert not (tmp_path / "e" / "report.json").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({}, None), ({"action_kind": "ee_delta"}, "absolute hand poses"),
    ({"cameras": ("front", "wrist")}, "serves only 'front'"), ({"state_dim": 8}, "7"),
    ({"control_rate_hz": 10.0}, "5 Hz"), ({"horizon": 2}, "exceeds its chunk horizon")])
def test_drawer_mismatch_names_what_the_simulated_spot_cannot_serve(change, message) -> None:
    from types import SimpleNamespace

    from training.cli.eval import drawer_mismatch

    fields = {"action_kind": "ee_absolute", "cameras": ("front",), "state_dim": 7,
              "control_rate_hz": 5.0, "horizon": 4}
    problem = drawer_mismatch(SimpleNamespace(**{**fields, **change}), replan_every=3)
    assert (problem is None) if message is None else (message in problem)
