"""Synthetic demonstrations for the dataset tests: smooth scenes with a moving square, and
real rosbag2 recordings written with ``rosbags`` (sqlite3 or MCAP).

Smooth images (gradients + a flat-coloured square) stand in for camera frames; they are
what video codecs are built for, unlike white noise, so the decode-error bounds the tests
check are the ones real recordings see.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from theia_ros.dataset import DatasetWriter
from theia_ros.types import ActionKind

H, W = 64, 64
STATE_DIM = 7


def scene(t: int, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """``[h, w, 3]`` uint8 frame ``t``: colour gradients and a square that moves with t."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
    img[..., 1] = (yy * 255 // max(h - 1, 1)).astype(np.uint8)
    img[..., 2] = (40 * seed + 7 * t) % 256
    y0, x0 = (4 + 2 * t) % (h - 16), (8 + 3 * t + 5 * seed) % (w - 16)
    img[y0:y0 + 12, x0:x0 + 12] = (230, 40, 40)
    return img


def frame_values(t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(state [7], ee_pose [6], action [7]) for frame t of episode ``seed``."""
    rng = np.random.default_rng(1000 * seed + t)
    state = rng.uniform(-1, 1, STATE_DIM).astype(np.float32)
    ee_pose = rng.uniform(-0.5, 0.5, 6).astype(np.float32)
    action = rng.uniform(-0.02, 0.02, 7).astype(np.float32)
    action[6] = float(t % 2)
    return state, ee_pose, action


def write_demo_dataset(root: Path, lengths: list[int], successes: list[bool] | None = None,
                       cameras: tuple[str, ...] = ("front",), fps: int = 10) -> None:
    """A dataset with one episode per entry of ``lengths`` (episode k uses seed k)."""
    successes = successes or [True] * len(lengths)
    with DatasetWriter.create(root, fps=fps, robot_type="wx250s",
                              cameras={c: (H, W) for c in cameras}, state_dim=STATE_DIM,
                              action_kind=ActionKind.EE_DELTA) as writer:
        for k, (length, ok) in enumerate(zip(lengths, successes)):
            writer.start_episode("open the door" if k % 2 == 0 else "close the door")
            for t in range(length):
                state, ee_pose, action = frame_values(t, seed=k)
                images = {c: scene(t, seed=k + i) for i, c in enumerate(cameras)}
                writer.add_frame(images=images, state=state, ee_pose=ee_pose, action=action)
            writer.save_episode(success=ok)


# --------------------------------------------------------------------------- rosbags

TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types
CAM_HZ, JOINT_HZ, CMD_HZ = 30, 50, 20
BAG_H, BAG_W = 48, 64
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
VX, WZ = 0.1, 0.5  # twist command: m/s and rad/s
DROPOUT_S = (1.0, 1.3)  # the front camera is silent here
CMD_ON_S = [(0.0, 2.5), (4.0, 6.0)]  # teleop commands; silence between = episode gap
DURATION_S = 6.0
T0_NS = 1_700_000_000 * 10**9


def _header(t_s: float) -> object:
    ns = T0_NS + round(t_s * 1e9)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
        sec=ns // 10**9, nanosec=ns % 10**9), frame_id="base")


def rgb_of_index(i: int) -> tuple[int, int, int]:
    """Colour that identifies camera message ``i`` (R: index mod 70, G: multiples of 70)."""
    return 20 + 3 * (i % 70), 40 + 60 * (i // 70), 10


def index_of_rgb(rgb: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_of_index`` for decoded pixels ``[N, 3]`` (robust to +-1 codec error)."""
    r, g = rgb[:, 0].astype(float), rgb[:, 1].astype(float)
    return np.round((r - 20) / 3) + 70 * np.round((g - 40) / 60)


def finger_position(t_s: float) -> float:
    return 0.01 + 0.03 * (0.5 + 0.5 * np.sin(t_s))  # closed 0.01 .. open 0.04


def write_bag(path: Path, storage: StoragePlugin, action: str = "twist") -> None:
    """A 6 s teleop recording: 2 cameras (raw bgr8 + PNG), joints, twist or 7-array commands."""
    with Writer(path, version=9, storage_plugin=storage) as bag:
        front = bag.add_connection("/cam/front", "sensor_msgs/msg/Image", typestore=TS)
        wrist = bag.add_connection("/cam/wrist", "sensor_msgs/msg/CompressedImage",
                                   typestore=TS)
        joints = bag.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=TS)
        pose = bag.add_connection("/ee_pose", "geometry_msgs/msg/PoseStamped", typestore=TS)
        cmd_type = ("geometry_msgs/msg/Twist" if action == "twist"
                    else "std_msgs/msg/Float64MultiArray")
        cmd = bag.add_connection("/teleop/cmd", cmd_type, typestore=TS)
        events: list[tuple[float, object, object, str]] = []
        for i in range(int(DURATION_S * CAM_HZ)):
            t = i / CAM_HZ
            bgr = np.full((BAG_H, BAG_W, 3), rgb_of_index(i)[::-1], np.uint8)  # B, G, R
            if not DROPOUT_S[0] <= t < DROPOUT_S[1]:
                img = T["sensor_msgs/msg/Image"](
                    header=_header(t), height=BAG_H, width=BAG_W, encoding="bgr8", is_bigendian=0,
                    step=BAG_W * 3, data=bgr.reshape(-1))
                events.append((t, front, img, "sensor_msgs/msg/Image"))
            ok, png = cv2.imencode(".png", bgr)
            assert ok
            comp = T["sensor_msgs/msg/CompressedImage"](header=_header(t), format="png",
                                                        data=png.reshape(-1))
            events.append((t + 0.002, wrist, comp, "sensor_msgs/msg/CompressedImage"))
        for i in range(int(DURATION_S * JOINT_HZ)):
            t = i / JOINT_HZ
            names = ["left_finger", *JOINTS]  # not in config order on purpose
            js = T["sensor_msgs/msg/JointState"](
                header=_header(t), name=names,
                position=np.array([finger_position(t), t, 0.1, 0.2, 0.3, 0.4, 0.5]),
                velocity=np.zeros(7), effort=np.zeros(7))
            events.append((t + 0.001, joints, js, "sensor_msgs/msg/JointState"))
            q = T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=np.sin(t / 4), w=np.cos(t / 4))
            p = T["geometry_msgs/msg/Point"](x=t, y=0.0, z=0.2)
            ps = T["geometry_msgs/msg/PoseStamped"](
                header=_header(t), pose=T["geometry_msgs/msg/Pose"](position=p, orientation=q))
            events.append((t + 0.001, pose, ps, "geometry_msgs/msg/PoseStamped"))
        for a, b in CMD_ON_S:
            for i in range(int((b - a) * CMD_HZ)):
                t = a + i / CMD_HZ
                if action == "twist":
                    v3 = T["geometry_msgs/msg/Vector3"]
                    msg = T["geometry_msgs/msg/Twist"](linear=v3(x=VX, y=0.0, z=0.0),
                                                       angular=v3(x=0.0, y=0.0, z=WZ))
                else:
                    layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
                    msg = T["std_msgs/msg/Float64MultiArray"](
                        layout=layout, data=np.array([t, 0, 0.2, 0, 0, 0, 1.0]))
                events.append((t, cmd, msg, cmd_type))
        for t, conn, msg, typ in sorted(events, key=lambda e: e[0]):
            bag.write(conn, T0_NS + round((t + 0.003) * 1e9), TS.serialize_cdr(msg, typ))


def write_config(path: Path, **overrides: object) -> Path:
    cfg: dict = {
        "fps": 5, "robot_type": "wx250s", "task": "push the block", "success": True,
        "max_skew_s": 0.05,
        "cameras": {"front": {"topic": "/cam/front"}, "wrist": {"topic": "/cam/wrist"}},
        "joint_states": {"topic": "/joint_states", "joints": JOINTS,
                         "gripper": {"joint": "left_finger", "closed": 0.01, "open": 0.04}},
        "action": {"topic": "/teleop/cmd", "type": "twist", "timeout_s": 0.3},
        "episodes": {"split": "gap", "gap_s": 1.0},
    }
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path
