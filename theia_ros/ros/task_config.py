"""Task YAMLs (``config/<task>.yaml``): schema, validation and the node parameters they imply.

ROS-free, so launch files, nodes and tests share it (``launch`` itself is not importable in
tests). One file per task/robot::

    task: widowx_door              # name (free text)
    robot: widowx                  # widowx | sim | spot | dry_run
    bundle: bundles/widowx_door    # `theia export` output; launch `policy:=` overrides
    backend: auto
    control:                       # theia_ros.control LoopConfig / Freshness / ChunkingConfig
      rate_hz: 5.0
      freshness: {cameras: [front], max_image_age_s: 0.3, max_joint_age_s: 0.2}
      # per-camera image age limits (s): freshness: {cameras: [front, wrist],
      #   camera_max_age_s: {wrist: 0.5}}; cameras default to topics.cameras' names
      chunking: {replan_every: 1, temporal_ensemble: false}
    safety: {max_speed_m_s: 0.15}  # SafetyLimits fields over the robot's preset
    topics: {image: /camera/color/image_raw, image_type: Image, joint_states: /wx250s/joint_states}
    # several cameras: one topic each instead of image/camera (-> policy_node camera_topics)
    #   topics: {cameras: {front: /cam_front/image_raw, wrist: /cam_wrist/image_raw}}
    camera_driver: {type: usb_cam, device: /dev/video0, width: 640, height: 480, fps: 30}
    widowx: {...}                  # WidowXConfig fields      (robot: widowx)
    spot: {...}                    # SpotConfig fields        (robot: spot)
    sim: {seed: 0}                 # (robot: sim)
    recorder: {...}                # recorder_node parameters (teleop_record)

Every block is validated by the class that consumes it, so a typo fails at load time with the
file and key named, not on the robot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from theia_ros.errors import TheiaError
from theia_ros.ros.params import (
    POLICY_NODE_PARAMS,
    RECORDER_NODE_PARAMS,
    ROBOTS,
    ParamSpec,
    validate,
)

TOP_KEYS = ("task", "robot", "bundle", "backend", "control", "safety", "topics",
            "camera_driver", "widowx", "spot", "sim", "recorder")
CONTROL_KEYS = ("rate_hz", "freshness", "chunking", "autostart")
TOPIC_KEYS = {"image": "image_topic", "image_type": "image_type",
              "joint_states": "joint_states_topic", "camera": "camera"}
CAMERAS_KEY = "cameras"  # topics.cameras: camera name -> topic, instead of image/camera
CAMERA_DRIVERS = ("usb_cam", "realsense", "none")
CAMERA_DRIVER_KEYS = ("type", "device", "width", "height", "fps", "serial_no")


@dataclass(frozen=True)
class TaskConfig:
    """A validated task YAML. Sections stay plain mappings; ``path`` is where it came from."""

    path: Path
    task: str
    robot: str
    bundle: str = ""
    backend: str = "auto"
    control: dict[str, Any] = field(default_factory=dict)
    safety: dict[str, Any] = field(default_factory=dict)
    topics: dict[str, Any] = field(default_factory=dict)
    camera_driver: dict[str, Any] = field(default_factory=dict)
    widowx: dict[str, Any] = field(default_factory=dict)
    spot: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    recorder: dict[str, Any] = field(default_factory=dict)

    # -- objects the control core and adapters take ----------------------------------------
    def freshness(self, overrides: Mapping[str, Any] | None = None):
        from theia_ros.control import Freshness

        data = dict(self.control.get("freshness") or {})
        data.update(overrides or {})
        if "cameras" not in data and self.topics.get(CAMERAS_KEY):
            data["cameras"] = list(self.topics[CAMERAS_KEY])
        if "cameras" in data:
            data["cameras"] = tuple(data["cameras"])
        return _build(Freshness, data, f"{self.path}: control.freshness")

    def chunking(self, overrides: Mapping[str, Any] | None = None):
        from theia_ros.control import ChunkingConfig

        data = dict(self.control.get("chunking") or {})
        data.update(overrides or {})
        return _build(ChunkingConfig, data, f"{self.path}: control.chunking")

    def safety_limits(self, base):
        """``SafetyLimits`` from the ``safety:`` block over ``base`` (the robot's preset)."""
        from theia_ros.control import SafetyLimits

        return SafetyLimits.from_dict(self.safety, base=base, source=f"{self.path}: safety")

    def widowx_config(self):
        from theia_ros.robots.widowx import WidowXConfig

        return _build(WidowXConfig, self.widowx, f"{self.path}: widowx")

    def spot_config(self):
        from theia_ros.robots.spot.config import SpotConfig

        return SpotConfig.from_mapping(self.spot, source=f"{self.path}: spot")


def _build(cls: type, data: Mapping[str, Any], source: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TheiaError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    try:
        return cls(**data)
    except (TypeError, TheiaError) as exc:
        raise TheiaError(f"{source}: {exc}") from exc


def _mapping(doc: Mapping[str, Any], key: str, source: Path) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TheiaError(f"{source}: {key!r} must be a mapping, got {type(value).__name__}")
    return dict(value)


def parse_task_config(doc: Any, source: str | os.PathLike = "<task config>") -> TaskConfig:
    """Validate a parsed YAML document (see the module docstring for the schema)."""
    path = Path(source)
    if not isinstance(doc, Mapping):
        raise TheiaError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise TheiaError(f"{path}: unknown key(s) {unknown}; expected some of {list(TOP_KEYS)}")
    robot = doc.get("robot")
    if robot not in ROBOTS:
        raise TheiaError(f"{path}: robot must be one of {list(ROBOTS)}, got {robot!r}")
    sections = {k: _mapping(doc, k, path) for k in ("control", "safety", "topics",
                                                     "camera_driver", "widowx", "spot", "sim",
                                                     "recorder")}
    cfg = TaskConfig(path=path, task=str(doc.get("task") or path.stem), robot=robot,
                     bundle=str(doc.get("bundle") or ""),
                     backend=str(doc.get("backend") or "auto"), **sections)
    _validate(cfg)
    return cfg


def load_task_config(path: str | os.PathLike) -> TaskConfig:
    """Read and validate ``config/<task>.yaml``."""
    p = Path(path)
    if not p.is_file():
        raise TheiaError(f"{p}: task config not found")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TheiaError(f"{p}: not valid YAML ({exc})") from exc
    return parse_task_config(doc, p)


def _validate(cfg: TaskConfig) -> None:
    """Build every object the config describes once, so errors surface at load time."""
    from theia_ros.control import LoopConfig

    src = cfg.path
    bad = sorted(set(cfg.control) - set(CONTROL_KEYS))
    if bad:
        raise TheiaError(f"{src}: control: unknown key(s) {bad}; expected {list(CONTROL_KEYS)}")
    bad = sorted(set(cfg.topics) - {*TOPIC_KEYS, CAMERAS_KEY})
    if bad:
        raise TheiaError(f"{src}: topics: unknown key(s) {bad}; expected "
                         f"{sorted({*TOPIC_KEYS, CAMERAS_KEY})}")
    _check_camera_topics(cfg)
    bad = sorted(set(cfg.camera_driver) - set(CAMERA_DRIVER_KEYS))
    if bad:
        raise TheiaError(f"{src}: camera_driver: unknown key(s) {bad}; expected "
                         f"{list(CAMERA_DRIVER_KEYS)}")
    driver = cfg.camera_driver.get("type", "none")
    if driver not in CAMERA_DRIVERS:
        raise TheiaError(f"{src}: camera_driver.type must be one of {list(CAMERA_DRIVERS)}, "
                         f"got {driver!r}")
    serial = cfg.camera_driver.get("serial_no")
    if serial is not None and not isinstance(serial, str):
        raise TheiaError(f"{src}: camera_driver.serial_no must be quoted (\"{serial}\"): YAML "
                         "reads digits as a number, which loses leading zeros")
    for key in ("width", "height", "fps"):
        value = cfg.camera_driver.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value <= 0):
            raise TheiaError(f"{src}: camera_driver.{key} must be a positive integer, got "
                             f"{value!r}")
    LoopConfig(rate_hz=float(cfg.control.get("rate_hz", 5.0)), freshness=cfg.freshness())
    cfg.chunking()
    cfg.safety_limits(base_limits(cfg))
    if cfg.robot == "widowx" or cfg.widowx:
        cfg.widowx_config()
    if cfg.robot == "spot" or cfg.spot:
        cfg.spot_config()
    bad = sorted(set(cfg.sim) - {"seed"})
    if bad:
        raise TheiaError(f"{src}: sim: unknown key(s) {bad}; expected ['seed']")
    for name, value in policy_node_parameters(cfg).items():
        validate(POLICY_NODE_PARAMS, name, value, str(src))
    for name, value in recorder_node_parameters(cfg).items():
        validate(RECORDER_NODE_PARAMS, name, value, f"{src}: recorder")


def _check_camera_topics(cfg: TaskConfig) -> None:
    """``topics.cameras``: camera name -> topic, in place of ``image``/``camera``."""
    src = f"{cfg.path}: topics.cameras"
    cams = cfg.topics.get(CAMERAS_KEY)
    if cams is None:
        return
    if not isinstance(cams, Mapping) or not cams:
        raise TheiaError(f"{src} must be a mapping camera name -> topic, got {cams!r}")
    both = sorted(k for k in ("image", "camera") if k in cfg.topics)
    if both:
        raise TheiaError(f"{src} names every camera's topic; drop topics.{'/'.join(both)}")
    for name, topic in cams.items():
        if not isinstance(name, str) or not name.strip() or "=" in name:
            raise TheiaError(f"{src}: camera name {name!r} must be a non-empty string "
                             "without '='")
        if not isinstance(topic, str) or not topic.startswith("/"):
            raise TheiaError(f"{src}.{name} must be an absolute topic (/...), got {topic!r}")
    listed = (cfg.control.get("freshness") or {}).get("cameras")
    if listed:
        unknown = sorted(set(cams) - {str(c) for c in listed})
        if unknown:
            raise TheiaError(f"{src} names {unknown}, not in control.freshness.cameras "
                             f"{list(listed)}")


def base_limits(cfg: TaskConfig):
    """The robot's own limits, before the ``safety:`` block: Spot's from its config, the
    wx250s preset for the arm and its twin."""
    from theia_ros.control import SafetyLimits

    if cfg.robot == "spot":
        return cfg.spot_config().safety_limits()
    return SafetyLimits.wx250s()


def _common(cfg: TaskConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"robot": cfg.robot}
    control = cfg.control
    if "rate_hz" in control:
        out["rate_hz"] = float(control["rate_hz"])
    if "autostart" in control:
        out["autostart"] = bool(control["autostart"])
    fresh = control.get("freshness") or {}
    for key in ("max_image_age_s", "max_joint_age_s"):
        if key in fresh:
            out[key] = float(fresh[key])
    cams = fresh.get("cameras")
    if cams:
        out["camera"] = str(next(iter(cams)))
    for key, param in TOPIC_KEYS.items():
        if key in cfg.topics:
            out[param] = cfg.topics[key]
    cam_topics = cfg.topics.get(CAMERAS_KEY)
    if cam_topics:  # the first camera also on image_topic, which a recorder subscribes
        out.setdefault("camera", str(next(iter(cam_topics))))
        out["camera_topics"] = [f"{name}={topic}" for name, topic in cam_topics.items()]
        if out["camera"] in cam_topics:
            out["image_topic"] = cam_topics[out["camera"]]
    if "seed" in cfg.sim:
        out["sim_seed"] = int(cfg.sim["seed"])
    return out


def policy_node_parameters(cfg: TaskConfig) -> dict[str, Any]:
    """Defaults the YAML gives ``policy_node``'s parameters (launch arguments override them)."""
    out = _common(cfg)
    if cfg.bundle:
        out["bundle"] = cfg.bundle
    out["backend"] = cfg.backend
    ages = (cfg.control.get("freshness") or {}).get("camera_max_age_s") or {}
    if ages:
        out["camera_max_image_age_s"] = [f"{name}={float(s)!r}" for name, s in ages.items()]
    chunk = cfg.control.get("chunking") or {}
    for key in ("replan_every", "temporal_ensemble", "async_planning"):
        if key in chunk:
            out[key] = chunk[key]
    return out


def first_image_topic(cfg: TaskConfig) -> str:
    """The node's ``image_topic`` from the YAML: where a camera driver the launch starts
    (or the sim twin) publishes; ``topics.image``, else the first camera's of
    ``topics.cameras``."""
    return str(_common(cfg).get("image_topic", POLICY_NODE_PARAMS["image_topic"].default))


def recorder_node_parameters(cfg: TaskConfig) -> dict[str, Any]:
    """Defaults the YAML gives ``recorder_node`` (its ``recorder:`` block wins)."""
    out = {k: v for k, v in _common(cfg).items() if k in RECORDER_NODE_PARAMS}
    out.update(cfg.recorder)
    return out


def node_defaults(specs: Mapping[str, ParamSpec], yaml_values: Mapping[str, Any]
                  ) -> dict[str, Any]:
    """Parameter name -> default: the table's, replaced by what the YAML says."""
    out = {name: spec.default for name, spec in specs.items()}
    for name, value in yaml_values.items():
        if name in out:
            out[name] = validate(specs, name, value, "task config")
    return out


def resolve_path(value: str, config: TaskConfig | None) -> Path:
    """A relative bundle/dataset path is taken from the working directory, else next to the
    config's parent (the repository root when the config lives in ``config/``)."""
    p = Path(os.path.expanduser(value))
    if p.is_absolute() or p.exists() or config is None:
        return p
    beside = config.path.resolve().parent.parent / p
    return beside if beside.exists() else p


# Launch argument -> node parameter it overrides (launch files declare these; empty = YAML).
LAUNCH_OVERRIDES: dict[str, str] = {
    "policy": "bundle",
    "backend": "backend",
    "robot": "robot",
    "autostart": "autostart",
    "rate_hz": "rate_hz",
}
RECORDER_LAUNCH_OVERRIDES: dict[str, str] = {
    "dataset": "dataset",
    "task": "task",
    "robot": "robot",
    "teleop_type": "teleop_type",
    "teleop_topic": "teleop_topic",
}


def launch_overrides(values: Mapping[str, str], mapping: Mapping[str, str],
                     specs: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Launch argument strings -> typed, validated node parameters (empty strings skipped)."""
    out: dict[str, Any] = {}
    for arg, text in values.items():
        if arg not in mapping or text == "":
            continue
        name = mapping[arg]
        kind = specs[name].kind
        value: Any = text
        try:
            if kind == "bool":
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                value = text.lower() == "true"
            elif kind == "float":
                value = float(text)
            elif kind == "int":
                value = int(text)
        except ValueError:
            raise TheiaError(f"launch argument {arg}:={text!r}: expected a {kind}") from None
        out[name] = validate(specs, name, value, f"launch argument {arg!r}")
    return out
