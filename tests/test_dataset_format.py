"""Dataset round trip, LeRobot v3.0 layout, stats, discard/re-record, bad input, corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_dataset import STATE_DIM, H, W, frame_values, scene, write_demo_dataset

from theia_ros.dataset import DatasetWriter, EpisodeDataset
from theia_ros.errors import TheiaError
from theia_ros.types import ActionKind

LENGTHS = [12, 7, 9]
SUCCESS = [True, False, True]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "demo"
    write_demo_dataset(root, LENGTHS, SUCCESS, cameras=("front", "wrist"))
    return root


def test_round_trip_arrays_and_images(demo: Path) -> None:
    ds = EpisodeDataset(demo)
    assert (ds.num_episodes, ds.num_frames, ds.fps) == (3, sum(LENGTHS), 10)
    assert ds.action_kind is ActionKind.EE_DELTA
    assert ds.cameras == ["front", "wrist"]
    assert [ep.success for ep in ds.episodes] == SUCCESS
    assert ds.success_rate == pytest.approx(2 / 3)
    start = 0
    for k, length in enumerate(LENGTHS):
        ep = ds.episode(k)
        expected = [frame_values(t, seed=k) for t in range(length)]
        for j, key in enumerate(("observation.state", "observation.ee_pose", "action")):
            np.testing.assert_array_equal(ep[key], np.stack([e[j] for e in expected]))
        np.testing.assert_allclose(ep["timestamp"], np.arange(length) / 10, atol=1e-6)
        np.testing.assert_allclose(ep["capture_time_s"], ep["timestamp"], atol=1e-6)
        np.testing.assert_array_equal(ep["frame_index"], np.arange(length))
        np.testing.assert_array_equal(ep["episode_index"], np.full(length, k))
        np.testing.assert_array_equal(ep["index"], start + np.arange(length))
        np.testing.assert_array_equal(ep["task_index"], np.full(length, k % 2))
        for i, cam in enumerate(("front", "wrist")):
            frames = ep[f"observation.images.{cam}"]
            ref = np.stack([scene(t, seed=k + i) for t in range(length)])
            assert frames.shape == (length, H, W, 3) and frames.dtype == np.uint8
            err = np.abs(frames.astype(np.int16) - ref)
            assert err.mean() < 1.5, f"episode {k} {cam}: mean abs error {err.mean():.2f}"
            assert np.percentile(err, 99) <= 12
        start += length
    no_images = ds.episode(0, images=False)
    assert not any(k.startswith("observation.images") for k in no_images)


def test_info_json_is_lerobot_v3(demo: Path) -> None:
    info = json.loads((demo / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 28, 2)
    assert info["fps"] == 10 and info["robot_type"] == "wx250s"
    assert info["chunks_size"] == 1000
    assert info["data_files_size_in_mb"] > 0 and info["video_files_size_in_mb"] > 0
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == (
        "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
    assert info["splits"] == {"train": "0:3"}
    assert info["action_kind"] == "ee_delta"
    feats = info["features"]
    front = feats["observation.images.front"]
    assert front["dtype"] == "video" and front["shape"] == [H, W, 3]
    assert front["names"] == ["height", "width", "channels"]
    assert front["info"]["video.codec"] == "h264" and front["info"]["video.fps"] == 10
    assert feats["observation.state"] == {"dtype": "float32", "shape": [STATE_DIM],
                                          "names": feats["observation.state"]["names"]}
    assert feats["observation.ee_pose"]["shape"] == [6]
    assert feats["action"]["shape"] == [7] and feats["action"]["names"][0] == "dx"
    for key in ("frame_index", "episode_index", "index", "task_index"):
        assert feats[key]["dtype"] == "int64"
    assert feats["timestamp"]["dtype"] == "float32"


def test_episode_metadata_and_files(demo: Path) -> None:
    info = json.loads((demo / "meta/info.json").read_text())
    files = sorted((demo / "meta/episodes").glob("*/*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    assert [r["episode_index"] for r in rows] == [0, 1, 2]
    start = 0
    for r, length, ok in zip(rows, LENGTHS, SUCCESS):
        assert r["length"] == length and r["success"] is ok and r["recovered"] is False
        assert (r["dataset_from_index"], r["dataset_to_index"]) == (start, start + length)
        assert r["tasks"] == ["open the door" if r["episode_index"] % 2 == 0
                              else "close the door"]
        data = demo / info["data_path"].format(chunk_index=r["data/chunk_index"],
                                               file_index=r["data/file_index"])
        assert pq.read_table(data).num_rows == length
        for cam in ("front", "wrist"):
            key = f"observation.images.{cam}"
            assert r[f"videos/{key}/from_timestamp"] == 0.0
            assert r[f"videos/{key}/to_timestamp"] == pytest.approx(length / 10)
            video = demo / info["video_path"].format(
                video_key=key, chunk_index=r[f"videos/{key}/chunk_index"],
                file_index=r[f"videos/{key}/file_index"])
            assert video.stat().st_size > 0
        assert r["stats/action/count"] == [length]
        start += length
    # all episode files share one schema, so LeRobot can concatenate them
    schemas = {pq.read_schema(f).to_string() for f in files}
    assert len(schemas) == 1
    data_schema = pq.read_schema(demo / "data/chunk-000/file-000.parquet")
    action_type = data_schema.field("action").type
    assert action_type.list_size == 7 and str(action_type.value_type) == "float"


def test_tasks_parquet_has_pandas_task_index(demo: Path) -> None:
    table = pq.read_table(demo / "meta/tasks.parquet")
    assert dict(zip(table.column("task").to_pylist(), table.column("task_index").to_pylist())) \
        == {"open the door": 0, "close the door": 1}
    pandas_meta = json.loads(table.schema.metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["task"]


def test_stats_equal_numpy_over_all_frames(demo: Path) -> None:
    ds = EpisodeDataset(demo)
    episodes = [ds.episode(k, images=k == 0) for k in range(ds.num_episodes)]
    for key in ("action", "observation.state", "observation.ee_pose"):
        allv = np.concatenate([e[key] for e in episodes]).astype(np.float64)
        st = ds.stats[key]
        np.testing.assert_allclose(st["mean"], allv.mean(0), atol=1e-6)
        np.testing.assert_allclose(st["std"], allv.std(0), atol=1e-6)
        np.testing.assert_allclose(st["min"], allv.min(0), atol=1e-7)
        np.testing.assert_allclose(st["max"], allv.max(0), atol=1e-7)
        assert int(st["count"][0]) == sum(LENGTHS)
    img = ds.stats["observation.images.front"]
    assert img["mean"].shape == (3, 1, 1)
    assert np.all((img["min"] >= 0) & (img["max"] <= 1))
    frames = episodes[0]["observation.images.front"].reshape(-1, 3) / 255.0
    assert abs(img["mean"][0, 0, 0] - frames[:, 0].mean()) < 0.05


def _writer(root: Path, **kw: object) -> DatasetWriter:
    return DatasetWriter.create(root, fps=5, robot_type="wx250s", cameras={"front": (H, W)},
                                state_dim=STATE_DIM, action_kind="ee_delta", **kw)


def _add(writer: DatasetWriter, t: int, seed: int = 0) -> None:
    state, ee_pose, action = frame_values(t, seed)
    writer.add_frame(images={"front": scene(t, seed=seed)}, state=state, ee_pose=ee_pose,
                     action=action)


def test_discard_and_rerecord(tmp_path: Path) -> None:
    with _writer(tmp_path / "ds") as w:
        w.start_episode("pick")
        for t in range(4):
            _add(w, t, seed=5)
        w.discard_episode()  # re-record: discard + start
        assert not w.recording
        w.start_episode("pick")
        for t in range(3):
            _add(w, t, seed=6)
        assert w.save_episode(success=True) == 0
        with pytest.raises(TheiaError, match="no episode"):
            w.discard_episode()
    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.num_frames == 3
    np.testing.assert_array_equal(ds.episode(0)["action"][2], frame_values(2, 6)[2])


def test_bad_frames_are_rejected_and_never_written(tmp_path: Path) -> None:
    w = _writer(tmp_path / "ds")
    w.start_episode("pick")
    _add(w, 0)
    state, ee_pose, action = frame_values(1)
    img = scene(1)
    bad_action = action.copy()
    bad_action[3] = np.nan
    cases = [
        (dict(images={"front": img}, state=state, ee_pose=ee_pose, action=bad_action),
         r"action has NaN/inf at index \[3\]"),
        (dict(images={"front": img}, state=np.full(STATE_DIM, np.inf), ee_pose=ee_pose,
              action=action), "state has NaN/inf"),
        (dict(images={"front": img[:, :32]}, state=state, ee_pose=ee_pose, action=action),
         r"images\['front'\] is uint8 \[64, 32, 3\]; expected uint8 \[64, 64, 3\]"),
        (dict(images={"front": img.astype(np.float32)}, state=state, ee_pose=ee_pose,
              action=action), r"images\['front'\] is float32"),
        (dict(images={"wrist": img}, state=state, ee_pose=ee_pose, action=action),
         "cameras"),
        (dict(images={"front": img}, state=state[:3], ee_pose=ee_pose, action=action),
         r"state has shape \[3\]; expected \[7\]"),
        (dict(images={"front": img}, state=state, ee_pose=None, action=action), "ee_pose"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(TheiaError, match=pattern):
            w.add_frame(**kwargs)
        assert w.episode_frames == 1
    w.save_episode(success=True)
    w.close()
    ep = EpisodeDataset(tmp_path / "ds").episode(0)
    assert ep["action"].shape == (1, 7) and np.isfinite(ep["action"]).all()


def test_given_timestamps_are_kept_as_capture_time(tmp_path: Path) -> None:
    w = _writer(tmp_path / "ds")
    w.start_episode("pick")
    state, ee_pose, action = frame_values(0)
    for stamp in (1000.0, 1000.21, 1000.39):
        w.add_frame({"front": scene(0)}, state, ee_pose, action, timestamp=stamp)
    with pytest.raises(TheiaError, match="does not increase"):
        w.add_frame({"front": scene(0)}, state, ee_pose, action, timestamp=1000.3)
    w.save_episode(success=False)
    w.close()
    ep = EpisodeDataset(tmp_path / "ds").episode(0, images=False)
    np.testing.assert_allclose(ep["capture_time_s"], [0.0, 0.21, 0.39], atol=1e-5)
    np.testing.assert_allclose(ep["timestamp"], [0.0, 0.2, 0.4], atol=1e-6)  # control grid


def test_reopen_appends_and_merges_stats(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_demo_dataset(root, [5, 4], fps=5)
    with pytest.raises(TheiaError, match="not empty"):
        _writer(root)
    with DatasetWriter.open(root) as w:
        assert (w.num_episodes, w.num_frames) == (2, 9)
        w.start_episode("open the door")
        for t in range(6):
            _add(w, t, seed=9)
        assert w.save_episode(success=True) == 2
    ds = EpisodeDataset(root)
    assert ds.num_episodes == 3 and ds.tasks == {"open the door": 0, "close the door": 1}
    np.testing.assert_array_equal(ds.episode(2)["index"], 9 + np.arange(6))
    actions = np.concatenate([ds.episode(k, images=False)["action"] for k in range(3)])
    np.testing.assert_allclose(ds.stats["action"]["std"], actions.std(0), atol=1e-6)


def test_second_writer_is_locked_out(tmp_path: Path) -> None:
    w = _writer(tmp_path / "ds")
    with pytest.raises(TheiaError, match="another DatasetWriter"):
        DatasetWriter.open(tmp_path / "ds")
    w.close()
    DatasetWriter.open(tmp_path / "ds").close()


def test_create_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(TheiaError, match="fps"):
        DatasetWriter.create(tmp_path / "a", fps=7.5, robot_type="x", state_dim=7)
    with pytest.raises(TheiaError, match="action_kind"):
        DatasetWriter.create(tmp_path / "b", fps=5, robot_type="x", state_dim=7,
                             action_kind="joint_velocity")


def test_corrupt_files_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_demo_dataset(root, [6, 5])
    video = root / "videos/observation.images.front/chunk-000/file-001.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    ds = EpisodeDataset(root)
    ds.episode(0)  # other episodes stay readable
    with pytest.raises(TheiaError, match=r"file-001\.mp4"):
        ds.episode(1)
    data = root / "data/chunk-000/file-000.parquet"
    data.write_bytes(data.read_bytes()[:50])
    with pytest.raises(TheiaError, match=r"file-000\.parquet"):
        ds.episode(0, images=False)
    (root / "meta/episodes/chunk-000/file-001.parquet").unlink()
    with pytest.raises(TheiaError, match="episode 1 has no metadata"):
        EpisodeDataset(root)
    info = root / "meta/info.json"
    info.write_text(info.read_text()[:40])
    with pytest.raises(TheiaError, match=r"info\.json: not valid JSON"):
        EpisodeDataset(root)
    with pytest.raises(TheiaError, match=r"info\.json"):
        DatasetWriter.open(root)


def test_empty_dataset_is_loadable(tmp_path: Path) -> None:
    _writer(tmp_path / "ds").close()
    ds = EpisodeDataset(tmp_path / "ds")
    assert (ds.num_episodes, ds.num_frames, ds.success_rate) == (0, 0, None)
    assert not (tmp_path / "ds/.staging").exists()
