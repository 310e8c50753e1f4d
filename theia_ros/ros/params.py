"""The nodes' ROS parameters as plain data: name, type, default, description, range, read-only.

The rclpy nodes declare exactly these (``common.declare_all``) and validate changes with
:func:`validate`; the launch/config tests import the same tables without rclpy to check that
every parameter a launch file or config sets exists and has a valid value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from theia_ros.errors import TheiaError

ROBOTS = ("widowx", "sim", "spot", "dry_run")
RECORDER_ROBOTS = ("widowx", "sim", "spot", "dry_run")
BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
IMAGE_TYPES = ("Image", "CompressedImage")
TELEOP_TYPES = ("Twist", "Joy")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. ``kind``: bool | int | float | str | float_list | int_list | str_list.

    ``low``/``high`` bound numbers (inclusive; list kinds: every element); ``choices`` limits
    strings; ``read_only`` parameters can only be set at start-up (launch / command line).
    """

    name: str
    kind: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False


_KINDS = {"bool", "int", "float", "str", "float_list", "int_list", "str_list"}


def _check_scalar(spec: ParamSpec, value: Any, where: str) -> Any:
    kind = spec.kind.replace("_list", "")
    if kind == "bool":
        if not isinstance(value, bool):
            raise TheiaError(f"{where}: expected true/false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise TheiaError(f"{where}: expected a string, got {value!r}")
        if spec.choices is not None and value not in spec.choices:
            raise TheiaError(f"{where}: expected one of {list(spec.choices)}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TheiaError(f"{where}: expected a number, got {value!r}")
    if kind == "int":
        if float(value) != int(value):
            raise TheiaError(f"{where}: expected an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise TheiaError(f"{where}: expected a finite number, got {value!r}")
    if spec.low is not None and value < spec.low:
        raise TheiaError(f"{where}: must be >= {spec.low}, got {value!r}")
    if spec.high is not None and value > spec.high:
        raise TheiaError(f"{where}: must be <= {spec.high}, got {value!r}")
    return value


def validate(specs: Mapping[str, ParamSpec], name: str, value: Any,
             source: str = "parameter") -> Any:
    """``value`` checked (and normalised: int -> float for float kinds) against ``specs[name]``."""
    spec = specs.get(name)
    if spec is None:
        raise TheiaError(f"{source}: unknown parameter {name!r}; expected one of {sorted(specs)}")
    where = f"{source} {name!r}"
    if spec.kind.endswith("_list"):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TheiaError(f"{where}: expected a list, got {value!r}")
        return [_check_scalar(spec, v, where) for v in value]
    return _check_scalar(spec, value, where)


def table(*specs: ParamSpec) -> dict[str, ParamSpec]:
    out: dict[str, ParamSpec] = {}
    for s in specs:
        if s.kind not in _KINDS:
            raise ValueError(f"parameter {s.name}: unknown kind {s.kind}")
        if s.name in out:
            raise ValueError(f"parameter {s.name} declared twice")
        validate({s.name: s}, s.name, s.default, "default of")
        out[s.name] = s
    return out


# Topic and sensor parameters shared by the policy and recorder nodes.
_SENSORS = (
    ParamSpec("image_topic", "str", "/camera/image_raw",
              "camera topic (the WidowX's camera driver; unused for sim/spot, which see "
              "through the adapter)", read_only=True),
    ParamSpec("image_type", "str", "Image", "message type of image_topic",
              choices=IMAGE_TYPES, read_only=True),
    ParamSpec("camera", "str", "front", "camera name the frames are filed under (the "
              "bundle's / dataset's camera)", read_only=True),
    ParamSpec("camera_topics", "str_list", [],
              "name=topic per camera of the bundle; a camera not named: the first on "
              "image_topic, the others on /<name>/image_raw", read_only=True),
    ParamSpec("joint_states_topic", "str", "/joint_states",
              "sensor_msgs/JointState topic (dry_run robot and recording); the WidowX adapter "
              "reads Interbotix's own joint states", read_only=True),
    ParamSpec("arm_joints", "str_list",
              ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"],
              "arm joint names in policy-state order (wx250s)", read_only=True),
    ParamSpec("gripper_joint", "str", "left_finger",
              "finger joint whose position gives the gripper open fraction", read_only=True),
    ParamSpec("max_image_age_s", "float", 0.3,
              "hold when the newest image is older than this (s)", low=0.0, high=10.0),
    ParamSpec("max_joint_age_s", "float", 0.2,
              "hold when the newest joint state is older than this (s)", low=0.0, high=10.0),
)

_LOOP = (
    ParamSpec("config_file", "str", "", "task YAML (config/<task>.yaml): robot section, safety "
              "block and defaults for these parameters", read_only=True),
    ParamSpec("robot", "str", "dry_run", "robot adapter; dry_run moves nothing (observations "
              "from topics, actions only published)", choices=ROBOTS, read_only=True),
    ParamSpec("rate_hz", "float", 5.0, "control rate (Hz); a policy bundle runs at its "
              "trained rate instead unless allow_rate_override", low=0.1, high=100.0,
              read_only=True),
    ParamSpec("autostart", "bool", False, "start acting without a ~/start call",
              read_only=True),
    ParamSpec("sim_seed", "int", 0, "scene seed of the sim robot", low=0, high=2**31 - 1,
              read_only=True),
    ParamSpec("min_command_gap_fraction", "float", 0.3, "a tick starting sooner than this "
              "fraction of a period after the previous command finished is skipped (no "
              "back-to-back commands after a late timer)", low=0.0, high=1.0, read_only=True),
    ParamSpec("diagnostics_period_s", "float", 1.0, "seconds between /diagnostics messages",
              low=0.05, high=60.0, read_only=True),
)

POLICY_NODE_PARAMS: dict[str, ParamSpec] = table(
    ParamSpec("bundle", "str", "", "policy bundle directory (theia export output)",
              read_only=True),
    ParamSpec("backend", "str", "auto", "inference backend", choices=BACKENDS, read_only=True),
    ParamSpec("threads", "int", 0, "CPU inference threads (0: the runtime's default)",
              low=0, high=256, read_only=True),
    *_LOOP,
    *_SENSORS,
    ParamSpec("camera_max_image_age_s", "str_list", [],
              "name=seconds: a camera's own image age limit (a wrist camera at another "
              "rate); cameras not named use max_image_age_s", read_only=True),
    ParamSpec("replan_every", "int", 1, "ticks between policy calls (chunk execution)",
              low=1, high=1000, read_only=True),
    ParamSpec("temporal_ensemble", "bool", False, "average overlapping chunks",
              read_only=True),
    ParamSpec("async_planning", "bool", False, "run inference in a worker thread ahead of "
              "the ticks (diffusion)", read_only=True),
    ParamSpec("allow_rate_override", "bool", False, "run at rate_hz even when it differs "
              "from the bundle's trained rate (false: the bundle's rate wins, with a warning)",
              read_only=True),
    ParamSpec("safety.max_speed_m_s", "float", -1.0, "EE translation speed limit (m/s; one "
              "tick moves at most this times the period); negative: the robot's config",
              high=2.5, read_only=True),
    ParamSpec("safety.max_angular_speed_rad_s", "float", -1.0, "EE rotation speed limit "
              "(rad/s); negative: the robot's config", high=7.5, read_only=True),
    ParamSpec("safety.workspace_min_m", "float_list", [], "workspace box lower corner [3] "
              "(m, base frame); empty: the robot's config", read_only=True),
    ParamSpec("safety.workspace_max_m", "float_list", [], "workspace box upper corner [3]; "
              "empty: the robot's config", read_only=True),
    ParamSpec("action_topic", "str", "~/action", "applied action, std_msgs/Float32MultiArray "
              "[7] (see policy_node docs)", read_only=True),
)

RECORDER_NODE_PARAMS: dict[str, ParamSpec] = table(
    *_LOOP[:1],
    ParamSpec("robot", "str", "dry_run", "robot the teleop commands drive (dry_run: another "
              "node moves it; deltas are only recorded)", choices=RECORDER_ROBOTS,
              read_only=True),
    *_LOOP[2:],
    *_SENSORS,
    ParamSpec("dataset", "str", "", "dataset root (created on the first episode, appended "
              "to afterwards)", read_only=True),
    ParamSpec("task", "str", "", "task text stored with each episode"),
    ParamSpec("success", "bool", True, "success flag used by ~/save"),
    ParamSpec("teleop_type", "str", "Twist", "teleop command type", choices=TELEOP_TYPES,
              read_only=True),
    ParamSpec("teleop_topic", "str", "/spacenav/twist", "teleop command topic",
              read_only=True),
    ParamSpec("buttons_topic", "str", "/spacenav/joy", "sensor_msgs/Joy whose buttons open "
              "and close the gripper (for Twist teleop; Joy teleop uses its own buttons)",
              read_only=True),
    ParamSpec("scale_linear_m", "float", 0.02, "EE translation per step at full deflection "
              "(m)", low=0.0, high=0.1),
    ParamSpec("scale_angular_rad", "float", 0.1, "EE rotation per step at full deflection "
              "(rad)", low=0.0, high=0.5),
    ParamSpec("deadzone", "float", 0.05, "inputs below this fraction count as zero",
              low=0.0, high=0.9),
    ParamSpec("teleop_timeout_s", "float", 0.5, "older teleop commands count as zero",
              low=0.01, high=10.0),
    ParamSpec("joy_axes", "int_list", [1, 0, 4, -1, -1, 3], "Joy axis index for dx, dy, dz, "
              "droll, dpitch, dyaw (-1: unused)", low=-1, high=63),
    ParamSpec("joy_axis_signs", "float_list", [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
              "sign / gain per Joy axis", low=-10.0, high=10.0),
    ParamSpec("gripper_open_button", "int", 0, "Joy button that opens the gripper",
              low=0, high=63),
    ParamSpec("gripper_close_button", "int", 1, "Joy button that closes the gripper",
              low=0, high=63),
)

ENCODER_NODE_PARAMS: dict[str, ParamSpec] = table(
    ParamSpec("bundle", "str", "", "policy bundle whose encoder graph is used",
              read_only=True),
    ParamSpec("backend", "str", "auto", "inference backend", choices=BACKENDS, read_only=True),
    ParamSpec("threads", "int", 0, "CPU inference threads (0: default)", low=0, high=256,
              read_only=True),
    ParamSpec("image_topic", "str", "/camera/image_raw", "camera topic", read_only=True),
    ParamSpec("image_type", "str", "Image", "message type of image_topic",
              choices=IMAGE_TYPES, read_only=True),
    ParamSpec("features_topic", "str", "~/features", "std_msgs/Float32MultiArray [196, C]",
              read_only=True),
    ParamSpec("max_rate_hz", "float", 5.0, "encode at most this often (newest frame wins)",
              low=0.1, high=100.0),
)

NODE_PARAMS: dict[str, dict[str, ParamSpec]] = {
    "policy_node": POLICY_NODE_PARAMS,
    "recorder_node": RECORDER_NODE_PARAMS,
    "encoder_node": ENCODER_NODE_PARAMS,
}
