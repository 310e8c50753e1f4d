"""The ``map.yaml`` of ``theia dataset import-bag``: which topics become which dataset fields.

Example (WidowX teleop recorded with ``ros2 bag record``)::

    fps: 5                      # control rate of the dataset (Hz)
    robot_type: wx250s
    task: open the door
    success: true
    max_skew_s: 0.05            # sensors of one frame may be at most this far apart
    stamp: header               # header (message header stamp) | receive (bag time)
    cameras:
      front: {topic: /camera/color/image_raw, resize: [224, 224]}   # Image or CompressedImage
    joint_states:
      topic: /joint_states
      joints: [waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate]
      gripper: {joint: left_finger, closed: 0.015, open: 0.037}    # position -> open fraction
    ee_pose: {topic: /ee_pose}  # optional geometry_msgs/PoseStamped; omit to store none
    action:
      topic: /teleop/cmd_vel
      type: twist               # twist: Twist[Stamped] | array: Float32/64MultiArray [7]
      twist_units: velocity     # velocity: m/s, rad/s integrated over each step | delta
      gripper_topic: /teleop/gripper   # optional std_msgs/Float32|Float64 open fraction
      timeout_s: 0.5            # older commands: zero motion (twist) / frame skipped (array)
    episodes: {split: gap, gap_s: 2.0}   # bag: one bag = one episode | gap: split on command gaps
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from theia_ros.errors import TheiaError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraMap(_Strict):
    topic: str
    resize: tuple[int, int] | None = None  # (H, W); default: the first image's size


class GripperMap(_Strict):
    joint: str
    closed: float  # joint position when closed
    open: float  # joint position when fully open

    @model_validator(mode="after")
    def _distinct(self) -> GripperMap:
        if self.open == self.closed:
            raise ValueError("gripper.open and gripper.closed must differ")
        return self


class JointStateMap(_Strict):
    topic: str
    joints: list[str] = Field(min_length=1)
    gripper: GripperMap | None = None


class PoseMap(_Strict):
    topic: str


class ActionMap(_Strict):
    topic: str
    type: Literal["twist", "array"] = "twist"
    kind: Literal["ee_delta", "ee_absolute"] = "ee_delta"  # for type=array
    twist_units: Literal["velocity", "delta"] = "velocity"
    gripper_topic: str | None = None
    gripper_default: float = Field(1.0, ge=0.0, le=1.0)
    timeout_s: float = Field(0.5, gt=0)

    @model_validator(mode="after")
    def _twist_is_delta(self) -> ActionMap:
        if self.type == "twist" and self.kind != "ee_delta":
            raise ValueError("a twist command maps to ee_delta actions only")
        return self


class EpisodeSplit(_Strict):
    split: Literal["bag", "gap"] = "bag"
    gap_s: float = Field(2.0, gt=0)  # split=gap: a command gap longer than this ends an episode
    min_frames: int = Field(2, ge=1)  # shorter episodes are dropped (counted)


class BagImportConfig(_Strict):
    """Validated ``map.yaml``; see the module docstring for an example."""

    fps: int = Field(gt=0)
    robot_type: str = "unknown"
    task: str = Field(min_length=1)
    success: bool = True
    max_skew_s: float = Field(0.05, gt=0)
    stamp: Literal["header", "receive"] = "header"
    cameras: dict[str, CameraMap] = Field(min_length=1)
    joint_states: JointStateMap
    ee_pose: PoseMap | None = None
    action: ActionMap
    episodes: EpisodeSplit = EpisodeSplit()

    @property
    def state_dim(self) -> int:
        return len(self.joint_states.joints) + (1 if self.joint_states.gripper else 0)

    @property
    def state_names(self) -> list[str]:
        return list(self.joint_states.joints) + (["gripper"] if self.joint_states.gripper else [])


def load_bag_config(path: str | Path) -> BagImportConfig:
    """Read and validate ``map.yaml``; errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TheiaError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise TheiaError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise TheiaError(f"{path}: expected a mapping at the top level")
    try:
        return BagImportConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise TheiaError(f"{path}: {where}: {err['msg']}") from exc
