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


def test_view_writes_annotated_video(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "ep1.mp4"
    assert main(["dataset", "view", str(demo), "--episode", "1", "--out", str(out)]) == 0
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == LENGTHS[1]
    first = frames[0]
    assert first.shape[0] >= 256 + 40 and first.shape[1] >= 256  # upscaled + text panel
    source = EpisodeDataset(demo).episode(1)["observation.images.front"][0]
    upscaled = np.repeat(np.repeat(source, 4, axis=0), 4, axis=1).astype(int)
    changed = np.abs(first[:256, :256].astype(int) - upscaled).sum(-1) > 90
    top = first[:256, :256]
    yellow = (top[..., 0] > 200) & (top[..., 1] > 180) & (top[..., 2] < 80)
    assert (changed & yellow).sum() > 50  # the action arrow
    assert changed[240:252, 8:70].mean() > 0.1  # the gripper gauge
    panel = first[258:]
    assert (panel > 128).mean() > 0.01  # text was drawn


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
