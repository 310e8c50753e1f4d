"""``theia dataset import-bag | info | view`` through the real CLI dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from helpers_dataset import write_demo_dataset
from rosbags.rosbag2 import StoragePlugin
from test_dataset_bag import write_bag, write_config

from theia_ros.cli import main
from theia_ros.dataset import EpisodeDataset

LENGTHS = [6, 9, 5]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "demo"
    write_demo_dataset(root, LENGTHS, [True, False, True])
    return root


def test_info_text_and_json(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "info", str(demo)]) == 0
    text = capsys.readouterr().out
    assert "episodes  3   frames 20   fps 10" in text
    assert "success   2/3 (66.7%)" in text
    assert "action    ee_delta" in text and "front [64x64]" in text
    assert main(["dataset", "info", str(demo), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ds = EpisodeDataset(demo)
    assert summary["frames"] == sum(LENGTHS) and summary["episode_length"]["max"] == 9
    assert summary["tasks"] == {"open the door": 2, "close the door": 1}
    np.testing.assert_allclose(summary["stats"]["action"]["mean"], ds.stats["action"]["mean"])
    assert summary["stats"]["action"]["names"][0] == "dx"
    action_line = next(line for line in text.splitlines() if line.strip().startswith("action")
                       and " dx " in line)
    assert f"{ds.stats['action']['mean'][0]:+10.4f}" in action_line


def test_view_writes_frames_with_an_action_panel(demo: Path, tmp_path: Path) -> None:
    from training.dataset_view import PANEL_W

    out = tmp_path / "ep1.mp4"
    assert main(["dataset", "view", str(demo), "--episode", "1", "--out", str(out)]) == 0
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == LENGTHS[1]
    first = frames[0]
    assert first.shape[0] >= 256 + 40 and first.shape[1] >= 256 + PANEL_W
    source = EpisodeDataset(demo).episode(1)["observation.images.front"][0]
    upscaled = np.repeat(np.repeat(source, 4, axis=0), 4, axis=1).astype(int)
    # the camera image is left as it is (nothing drawn over it; codec noise only)
    assert np.abs(first[:256, :256].astype(int) - upscaled).mean() < 6
    panel = first[:256, 256:256 + PANEL_W]
    assert (panel > 128).mean() > 0.01 and (first[258:] > 128).mean() > 0.01  # drawn, text


def _coloured(panel: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.abs(panel.astype(int) - rgb) < 40, axis=-1)


def test_action_panel_directions_and_fixed_scale() -> None:
    from training.dataset_view import (
        BAR_HALF,
        BAR_X0,
        CYAN,
        RED,
        ROW_Y,
        XY_CENTRE,
        XY_HALF,
        XYZ_FULL_M,
        YELLOW,
        draw_action_panel,
    )

    cx, cy = XY_CENTRE

    def arrow(motion: list[float]) -> tuple[np.ndarray, np.ndarray]:
        panel = draw_action_panel(np.array(motion, float), 1.0, 256)
        box = panel[cy - XY_HALF:cy + XY_HALF, cx - XY_HALF:cx + XY_HALF]
        ys, xs = np.nonzero(_coloured(box, YELLOW) | _coloured(box, RED))
        return ys - XY_HALF, xs - XY_HALF

    ys, xs = arrow([0.02, 0, 0, 0, 0, 0])  # +x: forward = up
    assert ys.min() < -0.3 * XY_HALF and abs(xs).max() < 6
    ys, xs = arrow([0, 0.02, 0, 0, 0, 0])  # +y: left
    assert xs.min() < -0.3 * XY_HALF and abs(ys).max() < 6
    # one scale for every step: half of full scale reaches half way, always
    ys, _ = arrow([XYZ_FULL_M / 2, 0, 0, 0, 0, 0])
    assert abs(-ys.min() - XY_HALF / 2) <= 4
    big = draw_action_panel(np.array([3 * XYZ_FULL_M, 0, 0, 0, 0, 0]), 1.0, 256)
    assert _coloured(big[cy - XY_HALF:cy, cx - 4:cx + 5], RED).sum() > 20  # beyond: red
    # yaw is drawn (the largest action of the door task), right of the middle when positive
    yaw = draw_action_panel(np.array([0, 0, 0, 0, 0, 0.1]), 0.0, 256)
    row = yaw[ROW_Y["yaw"] - 3:ROW_Y["yaw"] + 4]
    mid = BAR_X0 + BAR_HALF
    assert _coloured(row[:, mid + 2:mid + 20], CYAN).mean() > 0.8
    assert _coloured(row[:, mid - 20:mid - 2], CYAN).mean() == 0


def test_absolute_actions_show_target_minus_pose() -> None:
    from theia_ros.types import ActionKind
    from training.dataset_view import commanded_motion

    ep = {"action": np.array([[0.5, 0.1, 0.3, 3.1, 0, 0, 1]]),
          "observation.ee_pose": np.array([[0.45, 0.1, 0.3, -3.1, 0, 0]])}
    motion = commanded_motion(ep, ActionKind.EE_ABSOLUTE)
    np.testing.assert_allclose(motion[0], [0.05, 0, 0, 6.2 - 2 * np.pi, 0, 0], atol=1e-9)
    np.testing.assert_allclose(commanded_motion(ep, ActionKind.EE_DELTA)[0],
                               ep["action"][0, :6])


def test_import_bag_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.MCAP)
    config = write_config(tmp_path / "map.yaml")
    out = tmp_path / "ds"
    rc = main(["dataset", "import-bag", str(bag), str(bag), "--out", str(out), "--config",
               str(config), "--no-progress"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "2 episodes" in lines[0]
    assert EpisodeDataset(out).num_episodes == 4  # the second bag was appended


def test_cli_errors_are_one_line(demo: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "meta/info.json: missing" in err
    assert main(["dataset", "view", str(demo), "--episode", "7", "--out",
                 str(tmp_path / "x.mp4")]) == 2
    assert "episode 7: out of range" in capsys.readouterr().err


@pytest.fixture()
def offline_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No network here: the hub in offline mode, and an empty Hugging Face cache."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_info_of_a_hub_id_offline_is_a_clear_error(offline_hub_cache: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no local folder called lerobot/pusht
    assert main(["dataset", "info", "lerobot/pusht"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "lerobot/pusht" in err and "unreachable (offline)" in err and "cache" in err


def test_info_of_a_hub_id_uses_the_local_cache(offline_hub_cache: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A dataset the hub client fetched before (the cache layout huggingface_hub writes:
    refs/main names the snapshot folder) is found offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub_cache / "datasets--someone--door_demos"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    write_demo_dataset(repo / "snapshots" / commit, [4, 3])
    monkeypatch.chdir(tmp_path)
    assert main(["dataset", "info", "someone/door_demos"]) == 0
    out = capsys.readouterr().out
    assert "episodes  2   frames 7" in out and commit in out


def test_a_lerobot_v21_dataset_gets_the_converter_hint(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "old"
    write_demo_dataset(root, [3])
    info = json.loads((root / "meta" / "info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    assert main(["dataset", "info", str(root)]) == 2
    err = capsys.readouterr().err
    assert "'v2.1'" in err and "convert_dataset_v21_to_v30" in err
