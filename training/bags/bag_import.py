"""rosbag2 (MCAP or sqlite3) -> demonstration episodes, read with ``rosbags`` (no ROS install).

Two passes over the bag. Pass 1 deserialises everything except pixels it keeps: stamps of
every camera message, joint states, poses and commands; ``sync.py`` then picks, per
control tick, the nearest message of each sensor and skips ticks whose sensors are too
far apart. Pass 2 decodes only the chosen images and hands finished frames to the
``DatasetWriter`` in time order, so memory stays bounded by the skew, not the bag length.

Actions: a Twist velocity command is integrated over each control step into
``[dx, dy, dz, droll, dpitch, dyaw]`` (``twist_units: delta`` takes it as a per-step delta);
a Float32/64MultiArray command is taken as the 7 action numbers. The gripper number comes
from ``action.gripper_topic`` if given, else from the measured gripper opening one step
later (what the operator's command achieved), else ``gripper_default``.

Frames keep the LeRobot ``timestamp`` grid (``frame_index / fps``); the real tick time
(showing where skipped ticks were) is in ``capture_time_s``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from theia_ros.dataset import DatasetWriter
from theia_ros.errors import TheiaError
from theia_ros.types import ActionKind
from training.bags import ros_msgs
from training.bags.bag_config import BagImportConfig
from training.bags.sync import (
    SyncPlan,
    coverage,
    held_index,
    integrate_held,
    nearest_index,
    plan_frames,
    split_on_gaps,
)

log = logging.getLogger(__name__)

POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/Pose",
              "geometry_msgs/msg/TransformStamped")
TWIST_TYPES = ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped")
ARRAY_TYPES = ("std_msgs/msg/Float32MultiArray", "std_msgs/msg/Float64MultiArray")
SCALAR_TYPES = ("std_msgs/msg/Float32", "std_msgs/msg/Float64")


@dataclass
class ImportReport:
    """What an import produced and what it had to leave out."""

    episodes: list[int] = field(default_factory=list)  # dataset episode indices written
    frames: int = 0
    skipped_skew: int = 0  # ticks whose sensors were further apart than max_skew_s
    skipped_gap: int = 0  # ticks where a sensor stream had a dropout
    skipped_no_command: int = 0  # ticks without a fresh array command
    dropped_short: int = 0  # episodes shorter than episodes.min_frames

    def summary(self) -> str:
        return (f"{len(self.episodes)} episodes, {self.frames} frames; skipped "
                f"{self.skipped_skew} (skew), {self.skipped_gap} (sensor gap), "
                f"{self.skipped_no_command} (no command); "
                f"{self.dropped_short} short episodes dropped")


@dataclass
class _Stream:
    """Pass-1 record of one topic: stamps (s from bag start) and small payloads."""

    stamps_s: list[float] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(np.asarray(self.stamps_s), kind="stable")
        stamps = np.asarray(self.stamps_s, np.float64)[order]
        values = np.stack(self.values)[order] if self.values else np.zeros((len(order), 0))
        return stamps, values


@dataclass
class _Episode:
    """One planned episode: grid times, per-camera message picks, and its numeric frames."""

    times_s: np.ndarray
    camera_picks: dict[str, np.ndarray]  # camera -> [N] message index (in topic order)
    state: np.ndarray  # [N, S]
    ee_pose: np.ndarray | None  # [N, 6]
    action: np.ndarray  # [N, 7]


def _open_reader(bag: Path) -> Any:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if not bag.exists():
        raise TheiaError(f"{bag}: bag not found")
    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as exc:  # rosbags raises several error types for unreadable bags
        raise TheiaError(f"{bag}: cannot open as a rosbag2 directory/file ({exc})") from exc
    return reader


def _connections(reader: Any, topic: str, allowed: tuple[str, ...], bag: Path) -> list[Any]:
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        topics = sorted({c.topic for c in reader.connections})
        raise TheiaError(f"{bag}: topic {topic!r} not in the bag; it has {topics}")
    for c in conns:
        if c.msgtype not in allowed:
            raise TheiaError(f"{bag}: topic {topic!r} has type {c.msgtype}; "
                             f"expected one of {list(allowed)}")
    return conns


def import_bag(bag: str | Path, out: str | Path, config: BagImportConfig,
               append: bool = False, progress: bool = True) -> ImportReport:
    """Convert one bag into episodes of the dataset at ``out`` (created, or appended to)."""
    bag = Path(bag)
    reader = _open_reader(bag)
    try:
        return _import(reader, bag, Path(out), config, append, progress)
    finally:
        reader.close()


def _import(reader: Any, bag: Path, out: Path, cfg: BagImportConfig, append: bool,
            progress: bool) -> ImportReport:
    cam_conns = {cam: _connections(reader, m.topic, ros_msgs.IMAGE_TYPES, bag)
                 for cam, m in cfg.cameras.items()}
    topic_to_cam = {m.topic: cam for cam, m in cfg.cameras.items()}
    joint_conns = _connections(reader, cfg.joint_states.topic,
                               ("sensor_msgs/msg/JointState",), bag)
    pose_conns = (_connections(reader, cfg.ee_pose.topic, POSE_TYPES, bag)
                  if cfg.ee_pose else [])
    cmd_types = TWIST_TYPES if cfg.action.type == "twist" else ARRAY_TYPES
    cmd_conns = _connections(reader, cfg.action.topic, cmd_types, bag)
    grip_conns = (_connections(reader, cfg.action.gripper_topic, SCALAR_TYPES, bag)
                  if cfg.action.gripper_topic else [])
    t0_ns = int(reader.start_time)

    # ---------------------------------------------------------------- pass 1
    streams: dict[str, _Stream] = {f"cam:{c}": _Stream() for c in cfg.cameras}
    streams.update(joints=_Stream(), pose=_Stream(), cmd=_Stream(), grip=_Stream())
    sizes: dict[str, tuple[int, int]] = {}
    all_conns = [c for cs in cam_conns.values() for c in cs] + joint_conns + pose_conns \
        + cmd_conns + grip_conns
    for conn, recv_ns, raw in reader.messages(connections=all_conns):
        msg = reader.deserialize(raw, conn.msgtype)
        stamp_ns = ros_msgs.header_stamp_ns(msg) if cfg.stamp == "header" else None
        t_s = ((stamp_ns if stamp_ns is not None else recv_ns) - t0_ns) * 1e-9
        topic = conn.topic
        if topic in topic_to_cam:
            cam = topic_to_cam[topic]
            if cam not in sizes:
                sizes[cam] = ros_msgs.image_size(msg, conn.msgtype, topic)
            streams[f"cam:{cam}"].stamps_s.append(t_s)
        elif topic == cfg.joint_states.topic:
            streams["joints"].stamps_s.append(t_s)
            streams["joints"].values.append(_joint_vector(msg, cfg, topic))
        elif cfg.ee_pose and topic == cfg.ee_pose.topic:
            streams["pose"].stamps_s.append(t_s)
            streams["pose"].values.append(ros_msgs.pose_to_vector(msg, conn.msgtype))
        elif topic == cfg.action.topic:
            streams["cmd"].stamps_s.append(t_s)
            streams["cmd"].values.append(_command_vector(msg, conn.msgtype, topic))
        elif topic == cfg.action.gripper_topic:
            streams["grip"].stamps_s.append(t_s)
            streams["grip"].values.append(np.array([float(msg.data)]))
    for name in [f"cam:{c}" for c in cfg.cameras] + ["joints", "cmd"] \
            + (["pose"] if cfg.ee_pose else []):
        if not streams[name].stamps_s:
            raise TheiaError(f"{bag}: no messages for {name.replace('cam:', 'camera ')}")

    report = ImportReport()
    episodes = _plan_episodes(streams, cfg, report)
    if not episodes:
        raise TheiaError(f"{bag}: no episode with at least {cfg.episodes.min_frames} frames "
                         f"({report.summary()})")

    # ---------------------------------------------------------------- pass 2
    cameras = {cam: (tuple(m.resize) if m.resize else sizes[cam])
               for cam, m in cfg.cameras.items()}
    writer = _open_writer(out, cfg, cameras, append)
    try:
        _write_episodes(reader, writer, cam_conns, topic_to_cam, cameras, episodes, cfg,
                        t0_ns, progress, report)
    finally:
        writer.close()
    log.info("%s -> %s: %s", bag, out, report.summary())
    return report


def _joint_vector(msg: Any, cfg: BagImportConfig, topic: str) -> np.ndarray:
    """JointState -> ``[J (+1)]``: configured joints (rad), then the gripper open fraction."""
    names = list(msg.name)
    pos = np.asarray(msg.position, np.float64)
    wanted = list(cfg.joint_states.joints)
    grip = cfg.joint_states.gripper
    if grip is not None:
        wanted.append(grip.joint)
    missing = [j for j in wanted if j not in names]
    if missing:
        raise TheiaError(f"{topic}: JointState lacks joints {missing}; it has {names}")
    values = np.array([pos[names.index(j)] for j in wanted])
    if grip is not None:
        values[-1] = np.clip((values[-1] - grip.closed) / (grip.open - grip.closed), 0.0, 1.0)
    return values


def _command_vector(msg: Any, msgtype: str, topic: str) -> np.ndarray:
    if msgtype in TWIST_TYPES:
        return ros_msgs.twist_to_vector(msg, msgtype)
    data = np.asarray(msg.data, np.float64).reshape(-1)
    if data.shape[0] != 7:
        raise TheiaError(f"{topic}: command array has {data.shape[0]} numbers; expected 7 "
                         "(xyz, rpy, gripper)")
    return data


def _plan_episodes(streams: dict[str, _Stream], cfg: BagImportConfig,
                   report: ImportReport) -> list[_Episode]:
    """Sync every episode span onto the control grid and build its numeric frames."""
    sensors: dict[str, np.ndarray] = {}
    values: dict[str, np.ndarray] = {}
    for name in [f"cam:{c}" for c in cfg.cameras] + ["joints"] + (["pose"] if cfg.ee_pose
                                                                  else []):
        sensors[name], values[name] = streams[name].arrays()
    cmd_t, cmd_v = streams["cmd"].arrays()
    grip_t, grip_v = streams["grip"].arrays()
    # picks index the stamp-sorted order; pass 2 counts images in bag order: map back
    cam_order = {c: np.argsort(np.asarray(streams[f"cam:{c}"].stamps_s), kind="stable")
                 for c in cfg.cameras}
    lo, hi = coverage(sensors)
    if cfg.episodes.split == "bag":
        spans = [(lo, hi)]
    else:
        spans = [(max(a, lo), min(b, hi)) for a, b in split_on_gaps(cmd_t, cfg.episodes.gap_s)]
    step_s = 1.0 / cfg.fps
    episodes: list[_Episode] = []
    for start, end in spans:
        plan: SyncPlan = plan_frames(sensors, start, end, cfg.fps, cfg.max_skew_s)
        report.skipped_skew += plan.skipped_skew
        report.skipped_gap += plan.skipped_gap
        times = plan.times_s
        keep = np.ones(len(times), bool)
        if cfg.action.type == "array":
            idx = held_index(cmd_t, times, cfg.action.timeout_s)
            keep = idx >= 0
            report.skipped_no_command += int(np.sum(~keep))
            action = cmd_v[np.clip(idx, 0, None)] if len(cmd_t) else np.zeros((len(times), 7))
        else:
            if cfg.action.twist_units == "velocity":
                motion = integrate_held(cmd_t, cmd_v, times, step_s, cfg.action.timeout_s)
            else:
                idx = held_index(cmd_t, times, cfg.action.timeout_s)
                motion = np.where(idx[:, None] >= 0, cmd_v[np.clip(idx, 0, None)], 0.0)
            action = np.concatenate([motion, _gripper_actions(
                times, step_s, grip_t, grip_v, sensors["joints"], values["joints"], cfg)],
                axis=1)
        if int(keep.sum()) < cfg.episodes.min_frames:
            report.dropped_short += 1
            continue
        joints = values["joints"][plan.picks["joints"]]
        episodes.append(_Episode(
            times_s=times[keep],
            camera_picks={c: cam_order[c][plan.picks[f"cam:{c}"][keep]] for c in cfg.cameras},
            state=joints[keep],
            ee_pose=values["pose"][plan.picks["pose"]][keep] if cfg.ee_pose else None,
            action=action[keep],
        ))
    return episodes


def _gripper_actions(times: np.ndarray, step_s: float, grip_t: np.ndarray,
                     grip_v: np.ndarray, joint_t: np.ndarray, joint_v: np.ndarray,
                     cfg: BagImportConfig) -> np.ndarray:
    """``[N, 1]`` gripper command per tick (see module docstring for the order of sources)."""
    default = cfg.action.gripper_default
    if cfg.action.gripper_topic:
        idx = held_index(grip_t, times, np.inf)  # gripper commands are sparse toggles
        return np.where(idx[:, None] >= 0, grip_v[np.clip(idx, 0, None)], default)
    if cfg.joint_states.gripper is not None:
        return joint_v[nearest_index(joint_t, times + step_s), -1:]
    return np.full((len(times), 1), default)


def _open_writer(out: Path, cfg: BagImportConfig, cameras: dict[str, tuple[int, int]],
                 append: bool) -> DatasetWriter:
    kind = ActionKind(cfg.action.kind)
    if append and (out / "meta/info.json").exists():
        writer = DatasetWriter.open(out)
        if (writer.fps, writer.cameras, writer.state_dim, writer.action_kind,
                writer.has_ee_pose) != (cfg.fps, cameras, cfg.state_dim, kind,
                                        cfg.ee_pose is not None):
            writer.close()
            raise TheiaError(f"{out}: existing dataset (fps {writer.fps}, cameras "
                             f"{writer.cameras}, state_dim {writer.state_dim}, "
                             f"{writer.action_kind.value}) does not match the bag config")
        return writer
    if out.exists() and any(out.iterdir()):
        raise TheiaError(f"{out}: already exists; pass --append (append=True) to add episodes")
    return DatasetWriter.create(out, fps=cfg.fps, robot_type=cfg.robot_type, cameras=cameras,
                                state_dim=cfg.state_dim, action_kind=kind,
                                state_names=cfg.state_names, has_ee_pose=cfg.ee_pose is not None)


def _write_episodes(reader: Any, writer: DatasetWriter, cam_conns: dict[str, list[Any]],
                    topic_to_cam: dict[str, str], cameras: dict[str, tuple[int, int]],
                    episodes: list[_Episode], cfg: BagImportConfig, t0_ns: int,
                    progress: bool, report: ImportReport) -> None:
    """Pass 2: decode the chosen images and emit frames in order as soon as they are complete."""
    frames = [(e, j) for e, ep in enumerate(episodes) for j in range(len(ep.times_s))]
    refcount: dict[tuple[str, int], int] = {}
    for ep in episodes:
        for cam, picks in ep.camera_picks.items():
            for i in picks.tolist():
                refcount[(cam, i)] = refcount.get((cam, i), 0) + 1
    cache: dict[tuple[str, int], np.ndarray] = {}
    counters = dict.fromkeys(cfg.cameras, 0)
    next_frame = 0
    conns = [c for cs in cam_conns.values() for c in cs]
    total = sum(int(getattr(c, "msgcount", 0)) for c in conns) or None
    for conn, _, raw in tqdm(reader.messages(connections=conns), total=total,
                             desc="import-bag", unit="img", disable=not progress):
        cam = topic_to_cam[conn.topic]
        i = counters[cam]
        counters[cam] += 1
        if (cam, i) not in refcount:
            continue
        msg = reader.deserialize(raw, conn.msgtype)
        img = ros_msgs.image_to_rgb(msg, conn.msgtype, conn.topic)
        h, w = cameras[cam]
        if img.shape[:2] != (h, w):
            if cfg.cameras[cam].resize is None:
                raise TheiaError(f"{conn.topic}: image size {img.shape[:2]} changed from "
                                 f"{(h, w)}; set cameras.{cam}.resize in the config")
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        cache[(cam, i)] = img
        while next_frame < len(frames):
            e, j = frames[next_frame]
            ep = episodes[e]
            keys = [(c, int(ep.camera_picks[c][j])) for c in cfg.cameras]
            if any(k not in cache for k in keys):
                break
            if j == 0:
                writer.start_episode(cfg.task)
            writer.add_frame(images={c: cache[k] for c, k in zip(cfg.cameras, keys)},
                             state=ep.state[j], ee_pose=None if ep.ee_pose is None
                             else ep.ee_pose[j], action=ep.action[j],
                             timestamp=float(ep.times_s[j]))
            for k in keys:
                refcount[k] -= 1
                if refcount[k] == 0:
                    del cache[k]
            if j == len(ep.times_s) - 1:
                report.episodes.append(writer.save_episode(success=cfg.success))
                report.frames += len(ep.times_s)
            next_frame += 1
    if next_frame < len(frames):
        raise TheiaError(f"internal: {len(frames) - next_frame} frames never completed "
                         "(camera messages missing in the second pass)")
