"""Data from another robot is refused with one line by every consumer: ``theia export
--dataset``, ``theia train-policy`` (action kind), ``theia run`` and the policy node's
``build_control``; bundles record the robot type, action kind and units they were made for.

Real parts throughout: datasets from ``DatasetWriter``, policies from ``save_policy``,
bundles from the production export, the CLI through ``theia_ros.cli.main``.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers_export import make_policy

from policies.checkpoint import save_theia
from policies.encoder import EncoderConfig, TheiaEncoder
from policies.policy import Policy, load_policy, save_policy
from theia_ros.cli import main as theia_main
from theia_ros.dataset import DatasetWriter
from theia_ros.errors import TheiaError
from theia_ros.robots.robot_types import check_policy_robot, family
from theia_ros.ros.assembly import build_control
from theia_ros.ros.params import POLICY_NODE_PARAMS
from theia_ros.ros.task_config import node_defaults
from theia_ros.runtime import read_bundle
from training.bc.config import TrainConfig
from training.bc.trainer import train_policy
from training.export import ExportOptions, export_bundle


def _dataset(root: Path, robot_type: str, kind: str | None, hw: tuple[int, int] = (32, 32),
             state_dim: int = 7, episodes: int = 2) -> Path:
    """A small dataset; ``kind=None`` removes ``action_kind`` as LeRobot's own datasets lack it."""
    rng = np.random.default_rng(0)
    with DatasetWriter.create(root, fps=5, robot_type=robot_type, cameras={"front": hw},
                              state_dim=state_dim, action_kind=kind or "ee_delta") as w:
        for _ in range(episodes):
            w.start_episode("open the door")
            for _ in range(5):
                w.add_frame({"front": rng.integers(0, 256, (*hw, 3), dtype=np.uint8)},
                            rng.normal(size=state_dim).astype(np.float32),
                            np.zeros(6, np.float32),
                            rng.normal(0, 0.01, 7).astype(np.float32))
            w.save_episode(True)
    if kind is None:
        info = root / "meta" / "info.json"
        doc = json.loads(info.read_text())
        del doc["action_kind"]
        info.write_text(json.dumps(doc))
    return root


def _policy(robot_type: str | None, kind: str = "ee_delta") -> Policy:
    p = make_policy("cnn_mlp")
    p.config = replace(p.config, robot_type=robot_type, action_kind=kind)
    return p


def _export(tmp: Path, name: str, robot_type: str | None, kind: str = "ee_delta",
            image_hw: tuple[int, int] = (64, 64), **opts: object) -> Path:
    src = save_policy(_policy(robot_type, kind), tmp / f"policy_{name}")
    out, _ = export_bundle(src, tmp / f"bundle_{name}",
                           ExportOptions(image_hw=image_hw, exporter="torchscript", **opts),
                           log=lambda _m: None)
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("robots")
    return {"wx250s": _export(root, "wx", "wx250s"), "so100": _export(root, "so", "so100"),
            "spot": _export(root, "spot", "spot", "ee_absolute")}


def test_families() -> None:
    assert family("wx250s_sim") == family("widowx") == "wx250s"
    assert family("spot") == "spot" and family("so100") == "so100"
    assert family(None) is None and family("unknown") is None


def test_bundle_records_robot_kind_and_units(bundles: dict[str, Path]) -> None:
    doc = yaml.safe_load((bundles["wx250s"] / "bundle.yaml").read_text())["policy"]
    assert doc["robot_type"] == "wx250s" and doc["action_kind"] == "ee_delta"
    assert doc["action_units"] == ["m", "m", "m", "rad", "rad", "rad", "open_fraction"]
    assert doc["state_units"] == ["rad"] * 6 + ["open_fraction"]
    meta = read_bundle(bundles["spot"])
    assert (meta.robot_type, meta.action_kind) == ("spot", "ee_absolute")


# --- theia export --dataset --------------------------------------------------------------

def test_export_refuses_a_dataset_from_another_robot(tmp_path: Path) -> None:
    spot_ds = _dataset(tmp_path / "spot_ds", "spot", "ee_absolute", hw=(120, 160))
    src = save_policy(_policy("wx250s"), tmp_path / "wx_policy")
    with pytest.raises(TheiaError, match=r"actions are ee_absolute, the policy outputs ee_delta"):
        export_bundle(src, tmp_path / "out", ExportOptions(dataset=str(spot_ds)))
    so_ds = _dataset(tmp_path / "so_ds", "so100", "ee_delta")
    with pytest.raises(TheiaError, match=r"dataset is from a 'so100' robot, the policy was "
                                         r"trained on 'wx250s' data"):
        export_bundle(src, tmp_path / "out", ExportOptions(dataset=str(so_ds)))
    wide = _dataset(tmp_path / "wide_ds", "wx250s", "ee_delta", state_dim=9)
    with pytest.raises(TheiaError, match=r"state has 9 numbers, the policy takes 7"):
        export_bundle(src, tmp_path / "out", ExportOptions(dataset=str(wide)))
    assert not (tmp_path / "out").exists()  # nothing written for a refused export


def test_cli_export_spot_dataset_on_widowx_policy(tmp_path: Path, capsys) -> None:
    spot_ds = _dataset(tmp_path / "spot_ds", "spot", "ee_absolute", hw=(120, 160))
    src = save_policy(_policy("wx250s"), tmp_path / "wx_policy")
    rc = theia_main(["export", "--policy", str(src), "--out", str(tmp_path / "b"),
                     "--dataset", str(spot_ds)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "ee_absolute" in err, err


def test_export_accepts_the_sim_twin_data_for_a_widowx_policy(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "sim_ds", "wx250s_sim", "ee_delta", hw=(36, 48))
    out = _export(tmp_path, "ok", "wx250s", image_hw=None, dataset=str(ds), dataset_frames=1)
    assert read_bundle(out).image_hw == (36, 48)


# --- theia train-policy --action-kind -----------------------------------------------------

def test_train_needs_action_kind_when_the_dataset_has_none(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "lerobot", "so100", None)
    enc = save_theia(TheiaEncoder(EncoderConfig(name="t", embed_dim=32, depth=1, num_heads=2)),
                     tmp_path / "enc")
    base = {"dataset": str(ds), "policy": "cnn_mlp", "encoder": str(enc), "iters": 1,
            "batch_size": 2, "horizon": 2, "head": {"neck_channels": 8, "hidden_dim": 8},
            "cache_features": False, "val_fraction": 0.0}
    with pytest.raises(TheiaError, match=r"does not say what its actions are.*--action-kind"):
        train_policy(TrainConfig(out=str(tmp_path / "a"), **base), show_progress=False)
    train_policy(TrainConfig(out=str(tmp_path / "b"), action_kind="ee_absolute", **base),
                 show_progress=False)
    policy = load_policy(tmp_path / "b")
    assert (policy.config.action_kind, policy.config.robot_type) == ("ee_absolute", "so100")


def test_train_refuses_an_action_kind_that_contradicts_the_dataset(tmp_path: Path,
                                                                   capsys) -> None:
    ds = _dataset(tmp_path / "wx", "wx250s", "ee_delta")
    rc = theia_main(["train-policy", "--dataset", str(ds), "--out", str(tmp_path / "o"),
                     "--action-kind", "ee_absolute", "--iters", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(errors) == 1, err
    assert "contradicts the dataset's action_kind ee_delta" in errors[0]


# --- theia run -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, args, pattern", [
    ("so100", [], r"trained on 'so100' data; robot 'sim' is a wx250s"),
    ("spot", [], r"policy outputs ee_absolute actions; robot 'sim' takes ee_delta"),
    ("wx250s", ["--replan-every", "11"],
     r"--replan-every 11 exceeds the bundle's chunk horizon 4"),
])
def test_run_refuses_up_front(bundles: dict[str, Path], capsys, name: str, args: list[str],
                              pattern: str) -> None:
    rc = theia_main(["run", "--bundle", str(bundles[name]), "--robot", "sim", "--fast",
                     "--max-steps", "2", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err


def test_run_exits_nonzero_when_an_episode_faults(bundles: dict[str, Path], capsys,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the runtime fails mid-episode (as a lost GPU would); the loop
    safe-stops, and the command must say so in its exit status."""
    from theia_ros.runtime.policy_runtime import PolicyRuntime

    real = PolicyRuntime.__call__
    calls = {"n": 0}

    def flaky(self, obs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self, obs)

    monkeypatch.setattr(PolicyRuntime, "__call__", flaky)
    rc = theia_main(["run", "--bundle", str(bundles["wx250s"]), "--robot", "sim", "--fast",
                     "--max-steps", "4", "--episodes", "2"])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    assert "1/2 episodes faulted" in err and "illegal memory access" in err
    assert "FAULT" in out


def test_run_ok_bundle_exits_zero(bundles: dict[str, Path], capsys) -> None:
    rc = theia_main(["run", "--bundle", str(bundles["wx250s"]), "--robot", "sim", "--fast",
                     "--max-steps", "2"])
    assert rc == 0, capsys.readouterr()


# --- policy node (build_control) ------------------------------------------------------------

def test_policy_node_refuses_a_bundle_for_another_robot(bundles: dict[str, Path]) -> None:
    p = node_defaults(POLICY_NODE_PARAMS, {"robot": "widowx", "bundle": str(bundles["so100"])})
    with pytest.raises(TheiaError, match=r"trained on 'so100' data; robot 'widowx'"):
        build_control(p, None)
    p = node_defaults(POLICY_NODE_PARAMS, {"robot": "spot", "bundle": str(bundles["wx250s"])})
    with pytest.raises(TheiaError, match=r"outputs ee_delta actions; robot 'spot' takes "
                                         r"ee_absolute"):
        build_control(p, None)
    p = node_defaults(POLICY_NODE_PARAMS, {"robot": "dry_run", "bundle": str(bundles["wx250s"]),
                                           "replan_every": 11})
    with pytest.raises(TheiaError, match=r"replan_every 11 exceeds the chunk horizon 4"):
        build_control(p, None)


def test_policy_node_accepts_a_matching_bundle(bundles: dict[str, Path]) -> None:
    p = node_defaults(POLICY_NODE_PARAMS, {"robot": "dry_run", "bundle": str(bundles["so100"]),
                                           "camera": "front", "replan_every": 4})
    control = build_control(p, None)
    assert control.runtime is not None and control.runtime.meta.robot_type == "so100"
    control.runtime.close()


def test_unrecorded_robot_type_warns_and_runs(caplog) -> None:
    with caplog.at_level("WARNING"):
        check_policy_robot("sim", None, "ee_delta", "old_bundle")
    assert "records no robot_type" in caplog.text
