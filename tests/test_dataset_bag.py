"""rosbag2 import: real bags written with ``rosbags`` (sqlite3 and MCAP), then imported.

The synthetic recording encodes each message's own stamp in its payload (camera frames
carry their message index as a flat colour, joint 0 carries its stamp), so the test
can check which messages were fused into each frame, not just how many frames came out.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_dataset import (
    BAG_H,
    BAG_W,
    CAM_HZ,
    TS,
    VX,
    WZ,
    finger_position,
    index_of_rgb,
    write_bag,
    write_config,
)
from rosbags.rosbag2 import StoragePlugin

from theia_ros.dataset import EpisodeDataset
from theia_ros.errors import TheiaError
from training.bags.bag_config import load_bag_config
from training.bags.bag_import import import_bag
from training.bags.ros_msgs import image_to_rgb
from training.bags.sync import integrate_held, nearest_index, plan_frames


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP],
                         ids=["sqlite3", "mcap"])
def test_import_twist_bag_split_on_gaps(tmp_path: Path, storage: StoragePlugin) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, storage)
    cfg = load_bag_config(write_config(tmp_path / "map.yaml"))
    report = import_bag(bag, tmp_path / "ds", cfg, progress=False)

    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.num_episodes == 2 == len(report.episodes)
    assert ds.fps == 5 and ds.cameras == ["front", "wrist"] and ds.state_dim == 7
    assert ds.tasks == {"push the block": 0} and ds.success_rate == 1.0
    # episode 1: commands [0, 2.45] s; the front-camera dropout removes the ticks near 1.1 s
    assert report.skipped_skew + report.skipped_gap >= 1
    assert ds.num_frames == report.frames
    # 5 Hz ticks over the command spans: 0.0..2.4 s (13) and 4.0..5.8 s (10, the sensors
    # end at 5.97 s); every tick is either a frame or a counted skip
    assert ds.num_frames + report.skipped_skew + report.skipped_gap == 13 + 10
    for k in range(2):
        ep = ds.episode(k)
        n = len(ep["timestamp"])
        joint_stamp = ep["observation.state"][:, 0]  # "waist" carries its stamp
        for cam in ("front", "wrist"):
            img = ep[f"observation.images.{cam}"]
            assert img.shape == (n, BAG_H, BAG_W, 3)
            idx = index_of_rgb(img[:, BAG_H // 2, BAG_W // 2])
            # the chosen camera message (index -> stamp) is within the skew bound of the joints
            assert np.all(np.abs(idx / CAM_HZ - joint_stamp) <= 0.05 + 1e-6), cam
        # bgr8 -> RGB: blue is the constant 10 (a missed swap would put R there)
        assert np.all(ep["observation.images.front"][:, 5, 5, 2] < 16)
        # twist velocity integrated over one 0.2 s step
        np.testing.assert_allclose(ep["action"][:-1, 0], VX / 5, atol=1e-6)
        np.testing.assert_allclose(ep["action"][:-1, 5], WZ / 5, atol=1e-6)
        np.testing.assert_allclose(ep["action"][:, 1:5], 0.0, atol=1e-9)
        # gripper: open fraction measured one step later
        expected = np.clip((finger_position(joint_stamp + 0.2) - 0.01) / 0.03, 0, 1)
        np.testing.assert_allclose(ep["action"][:, 6], expected, atol=0.02)
        np.testing.assert_allclose(ep["observation.state"][:, 6],
                                   np.clip((finger_position(joint_stamp) - 0.01) / 0.03, 0, 1),
                                   atol=1e-5)
        np.testing.assert_allclose(ep["timestamp"], np.arange(n) / 5, atol=1e-6)
        assert np.all(np.diff(ep["capture_time_s"]) >= 0.2 - 1e-4)
    assert "observation.ee_pose" not in ds.meta["features"]


def test_import_array_commands_with_pose_one_episode(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.MCAP, action="array")
    cfg = load_bag_config(write_config(
        tmp_path / "map.yaml", ee_pose={"topic": "/ee_pose"}, episodes={"split": "bag"},
        action={"topic": "/teleop/cmd", "type": "array", "kind": "ee_absolute",
                "timeout_s": 0.3},
        cameras={"front": {"topic": "/cam/front", "resize": [24, 32]}}))
    report = import_bag(bag, tmp_path / "ds", cfg, progress=False)
    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.action_kind.value == "ee_absolute"
    assert report.skipped_no_command >= 5  # the 1.5 s without commands
    ep = ds.episode(0)
    assert ep["observation.images.front"].shape[1:] == (24, 32, 3)
    t = ep["observation.state"][:, 0]
    np.testing.assert_allclose(ep["observation.ee_pose"][:, 0], t, atol=1e-5)
    np.testing.assert_allclose(ep["observation.ee_pose"][:, 5], t / 2, atol=1e-5)  # yaw
    assert np.all((t - ep["action"][:, 0] >= -1e-6) & (t - ep["action"][:, 0] <= 0.3))

    # appending a second bag to the same dataset continues the episode numbering
    report2 = import_bag(bag, tmp_path / "ds", cfg, append=True, progress=False)
    assert report2.episodes == [1]
    assert EpisodeDataset(tmp_path / "ds").num_frames == 2 * report.frames


def test_bag_errors_name_topic_and_field(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.SQLITE3)
    cfg = load_bag_config(write_config(tmp_path / "map.yaml",
                                       cameras={"front": {"topic": "/cam/missing"}}))
    with pytest.raises(TheiaError, match="topic '/cam/missing' not in the bag"):
        import_bag(bag, tmp_path / "ds", cfg, progress=False)
    with pytest.raises(TheiaError, match=r"map2.yaml: action.type"):
        load_bag_config(write_config(tmp_path / "map2.yaml",
                                     action={"topic": "/x", "type": "joy"}))
    with pytest.raises(TheiaError, match="bag not found"):
        import_bag(tmp_path / "nope", tmp_path / "ds", cfg, progress=False)


def test_sync_primitives() -> None:
    stamps = np.array([0.0, 0.1, 0.2, 0.5])
    np.testing.assert_array_equal(nearest_index(stamps, np.array([0.04, 0.06, 0.34, 9.0])),
                                  [0, 1, 2, 3])
    plan = plan_frames({"a": np.arange(0, 2, 0.02), "b": np.array([0.0, 0.5, 0.58, 1.0])},
                       0.0, 1.0, fps=10, max_skew_s=0.03)
    # b is near ticks 0.0, 0.5, 0.6 (0.02 off) and 1.0 only; others are gaps or skewed
    np.testing.assert_allclose(plan.times_s, [0.0, 0.5, 0.6, 1.0])
    assert plan.skipped_skew + plan.skipped_gap == 7
    disp = integrate_held(np.array([0.0, 0.1]), np.array([[1.0], [3.0]]), np.array([0.0]),
                          step_s=0.2, timeout_s=1.0)
    np.testing.assert_allclose(disp, [[0.1 * 1.0 + 0.1 * 3.0]])


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "png", "jpeg"])
def test_every_image_encoding_decodes_to_rgb(encoding: str) -> None:
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 120, 30
    rgb[2, 3] = (10, 250, 90)
    channels = {"rgb8": rgb, "bgr8": rgb[..., ::-1],
                "rgba8": np.dstack([rgb, np.full((6, 5), 7, np.uint8)]),
                "bgra8": np.dstack([rgb[..., ::-1], np.full((6, 5), 7, np.uint8)]),
                "mono8": rgb[..., :1]}
    if encoding in channels:
        px = channels[encoding]
        step = px.shape[1] * px.shape[2] + 3  # padded rows, as some drivers send
        data = np.zeros((6, step), np.uint8)
        data[:, : px.shape[1] * px.shape[2]] = px.reshape(6, -1)
        msg = TS.types["sensor_msgs/msg/Image"](
            header=TS.types["std_msgs/msg/Header"](
                stamp=TS.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""),
            height=6, width=5, encoding=encoding, is_bigendian=0, step=step,
            data=data.reshape(-1))
        out = image_to_rgb(msg, "sensor_msgs/msg/Image", "/cam")
        expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
        np.testing.assert_array_equal(out, expected)
    else:
        ok, buf = cv2.imencode(f".{encoding}", rgb[..., ::-1])
        assert ok
        msg = TS.types["sensor_msgs/msg/CompressedImage"](
            header=TS.types["std_msgs/msg/Header"](
                stamp=TS.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""),
            format=encoding, data=buf.reshape(-1))
        out = image_to_rgb(msg, "sensor_msgs/msg/CompressedImage", "/cam")
        err = np.abs(out.astype(int) - rgb)
        assert err.max() == 0 if encoding == "png" else np.median(err) <= 8  # jpeg is lossy
        assert out[0, 0, 0] > out[0, 0, 2]  # red stays red (BGR -> RGB)


def write_widowx_sample_bag(path: Path, duration_s: float = 3.0) -> None:
    """A small WidowX recording on the topics ``config/bag_map_widowx.yaml`` names: camera at
    15 Hz (raw rgb8), joint states at 50 Hz, the recorder's sent action at 5 Hz."""
    from helpers_dataset import T0_NS, TS, T, _header
    from rosbags.rosbag2 import Writer

    joints = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
              "gripper", "left_finger", "right_finger"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as bag:
        cam = bag.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TS)
        js = bag.add_connection("/wx250s/joint_states", "sensor_msgs/msg/JointState",
                                typestore=TS)
        act = bag.add_connection("/recorder_node/action", "std_msgs/msg/Float32MultiArray",
                                 typestore=TS)
        events = []
        for i in range(int(duration_s * 15)):
            t = i / 15
            rgb = np.full((48, 64, 3), (i * 5 % 256, 100, 30), np.uint8)
            events.append((t, cam, "sensor_msgs/msg/Image", T["sensor_msgs/msg/Image"](
                header=_header(t), height=48, width=64, encoding="rgb8", is_bigendian=0,
                step=64 * 3, data=rgb.reshape(-1))))
        for i in range(int(duration_s * 50)):
            t = i / 50
            finger = 0.015 + 0.022 * (1 - t / duration_s)  # closes over the episode
            pos = np.array([t, -0.5, 0.6, 0.0, 0.5, 0.0, 0.0, finger, -finger])
            events.append((t + 0.001, js, "sensor_msgs/msg/JointState",
                           T["sensor_msgs/msg/JointState"](
                               header=_header(t), name=joints, position=pos,
                               velocity=np.zeros(9), effort=np.zeros(9))))
        for i in range(int(duration_s * 5)):
            t = i / 5
            data = np.array([0.01, 0.0, -0.005, 0.0, 0.0, 0.05, 1.0 - t / duration_s],
                            np.float32)
            events.append((t + 0.002, act, "std_msgs/msg/Float32MultiArray",
                           T["std_msgs/msg/Float32MultiArray"](
                               layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                               data=data)))
        for t, conn, typ, msg in sorted(events, key=lambda e: e[0]):
            bag.write(conn, T0_NS + round((t + 0.003) * 1e9), TS.serialize_cdr(msg, typ))


def test_shipped_widowx_map_imports_a_sample_bag(tmp_path: Path) -> None:
    from theia_ros.cli import main

    config = Path(__file__).resolve().parents[1] / "config" / "bag_map_widowx.yaml"
    bag = tmp_path / "door_01"
    write_widowx_sample_bag(bag)
    out = tmp_path / "demos"
    assert main(["dataset", "import-bag", str(bag), "--out", str(out), "--config",
                 str(config), "--no-progress"]) == 0
    ds = EpisodeDataset(out)
    assert ds.num_episodes == 1 and ds.fps == 5 and ds.robot_type == "wx250s"
    assert ds.cameras == ["front"] and ds.state_dim == 7
    assert ds.action_kind.value == "ee_delta"
    ep = ds.episode(0)
    n = len(ep["timestamp"])
    assert n >= 12
    assert ep["observation.images.front"].shape == (n, 224, 224, 3)
    np.testing.assert_allclose(ep["action"][:, [0, 2, 5]], [[0.01, -0.005, 0.05]] * n,
                               atol=1e-6)
    # waist carries the time; the gripper joint became an open fraction that falls
    assert np.all(np.diff(ep["observation.state"][:, 0]) > 0)
    grip = ep["observation.state"][:, 6]
    assert 0.0 <= grip.min() < grip.max() <= 1.0 and grip[0] > grip[-1]
