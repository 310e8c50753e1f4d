"""Several cameras configured end to end: a per-camera image age limit (a wrist camera at
another rate than the scene camera) in ``Freshness``, the policy node's parameters and the
task YAML; one topic per camera in the task YAML, through to the node's ``camera_topics``
and the launch (one driver or the sim twin feeding the first camera)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from theia_ros.control import Freshness, HoldReason
from theia_ros.errors import TheiaError
from theia_ros.ros import launch_description as LD
from theia_ros.ros.assembly import build_control, camera_max_ages, camera_topics
from theia_ros.ros.params import POLICY_NODE_PARAMS
from theia_ros.ros.task_config import (
    node_defaults,
    parse_task_config,
    policy_node_parameters,
    recorder_node_parameters,
)
from theia_ros.types import Observation

ROOT = Path(__file__).resolve().parents[1]
DOOR = ROOT / "config" / "widowx_door.yaml"
CAMS = ("front", "wrist")
FRONT, WRIST = "/cam_front/image_raw", "/cam_wrist/image_raw"


def _obs(ages: dict[str, float], now: float = 100.0) -> Observation:
    images = {cam: np.zeros((4, 4, 3), np.uint8) for cam in ages}
    stamps = {cam: now - age for cam, age in ages.items()}
    stamps["joints"] = now
    return Observation(images=images, joint_positions=np.zeros(6), gripper=1.0,
                       ee_pose=np.zeros(6), stamp_s=now, stamps_s=stamps)


# -- Freshness ---------------------------------------------------------------------------
def test_a_camera_limit_overrides_the_shared_one_and_the_hold_names_the_camera() -> None:
    fresh = Freshness(cameras=CAMS, max_image_age_s=0.3, camera_max_age_s={"wrist": 0.6})
    assert fresh.max_age_s("front") == 0.3 and fresh.max_age_s("wrist") == 0.6
    assert fresh.assess(_obs({"front": 0.1, "wrist": 0.5}), 100.0) == (None, None)
    assert fresh.assess(_obs({"front": 0.1, "wrist": 0.7}), 100.0) == \
        (HoldReason.STALE_IMAGE, "wrist")
    assert fresh.assess(_obs({"front": 0.4, "wrist": 0.1}), 100.0) == \
        (HoldReason.STALE_IMAGE, "front")
    assert fresh.check(_obs({"front": 0.1, "wrist": 0.7}), 100.0) is HoldReason.STALE_IMAGE
    # tighter than the shared limit works too
    tight = Freshness(cameras=CAMS, max_image_age_s=0.3, camera_max_age_s={"front": 0.05})
    assert tight.assess(_obs({"front": 0.1, "wrist": 0.1}), 100.0)[1] == "front"
    assert tight.assess(_obs({"front": 0.1}), 100.0) == (HoldReason.STALE_IMAGE, "front")
    assert tight.assess(_obs({"front": 0.01}), 100.0) == (HoldReason.MISSING_IMAGE, "wrist")


def test_hold_text_names_the_camera_only_when_there_are_several() -> None:
    two = Freshness(cameras=CAMS)
    assert two.hold_text("stale_image", "wrist") == "stale_image (wrist)"
    assert two.hold_text("stale_joint_state", None) == "stale_joint_state"
    assert Freshness(cameras=("front",)).hold_text("stale_image", "front") == "stale_image"


@pytest.mark.parametrize("ages, match", [
    ({"side": 0.5}, r"names \['side'\], not among the cameras"),
    ({"wrist": -0.1}, r"camera_max_age_s\['wrist'\] must be >= 0"),
    ({"wrist": math.nan}, "must be >= 0"),
    ({"wrist": math.inf}, "must be >= 0"),
    ({"wrist": True}, "must be >= 0"),
    ({"wrist": "0.5"}, "must be >= 0"),
    ([("wrist", 0.5)], "must be a mapping"),
])
def test_bad_camera_limits_are_one_line_errors(ages, match: str) -> None:
    with pytest.raises(TheiaError, match=match) as info:
        Freshness(cameras=CAMS, camera_max_age_s=ages)
    assert "\n" not in str(info.value)


def test_the_limits_are_copied_and_the_config_stays_hashable() -> None:
    ages = {"wrist": 1}
    fresh = Freshness(cameras=CAMS, camera_max_age_s=ages)
    ages["wrist"] = 9.0
    assert fresh.camera_max_age_s == {"wrist": 1.0}
    hash(fresh)


# -- policy node parameters -> control core ------------------------------------------------
def _policy(obs: object) -> np.ndarray:
    return np.array([[0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]] * 4)


def test_node_parameter_sets_a_camera_limit_and_the_loop_reports_the_stale_camera() -> None:
    p = node_defaults(POLICY_NODE_PARAMS, {"robot": "dry_run", "rate_hz": 5.0,
                                           "min_command_gap_fraction": 0.0,
                                           "camera_max_image_age_s": ["wrist=1.5"]})
    p["cameras"] = list(CAMS)  # what a two-camera bundle sets
    control = build_control(p, None, policy=_policy, image_hw=(4, 4))
    fresh = control.loop.config.freshness
    assert fresh.camera_max_age_s == {"wrist": 1.5} and fresh.max_image_age_s == 0.3
    loop = control.loop
    loop.start()
    names = [*p["arm_joints"], p["gripper_joint"]]

    def feed(wrist_age_s: float) -> None:
        now = time.monotonic()
        control.images.put("front", np.zeros((4, 4, 3), np.uint8), now)
        control.images.put("wrist", np.zeros((4, 4, 3), np.uint8), now - wrist_age_s)
        control.joints.put(names, [0.0] * 6 + [0.03], now)

    feed(1.0)  # older than max_image_age_s, within the wrist's own limit
    assert loop.step().status == "acted"
    feed(2.0)
    held = loop.step()
    assert (held.status, held.hold_reason, held.hold_camera) == \
        ("held", "stale_image", "wrist")
    assert loop.stats.holds["stale_image"] == 1  # hold counts keep their keys
    loop.close()


@pytest.mark.parametrize("entry, match", [
    ("wrist", "expected name=seconds"), ("wrist=soon", "expected name=seconds"),
    ("wrist=-1", "expected name=seconds"), ("wrist=nan", "expected name=seconds"),
    ("=0.5", "expected name=seconds"),
])
def test_bad_camera_limit_parameter_entries(entry: str, match: str) -> None:
    with pytest.raises(TheiaError, match=match):
        camera_max_ages({"camera_max_image_age_s": [entry]})


def test_camera_limit_parameter_must_name_a_policy_camera() -> None:
    assert camera_max_ages({"camera_max_image_age_s": [" wrist = 0.5 "]}) == {"wrist": 0.5}
    p = node_defaults(POLICY_NODE_PARAMS, {"robot": "dry_run",
                                           "camera_max_image_age_s": ["side=0.5"]})
    p["cameras"] = list(CAMS)
    with pytest.raises(TheiaError, match=r"camera_max_image_age_s names \['side'\]"):
        build_control(p, None, policy=_policy, image_hw=(4, 4))


def test_a_named_first_camera_topic_wins_over_image_topic() -> None:
    p = {"camera": "front", "cameras": list(CAMS), "image_topic": "/c/img",
         "camera_topics": [f"front={FRONT}", f"wrist={WRIST}"]}
    assert camera_topics(p) == {"front": FRONT, "wrist": WRIST}
    assert camera_topics({**p, "camera_topics": []}) == {"front": "/c/img",
                                                         "wrist": "/wrist/image_raw"}


# -- task YAML -----------------------------------------------------------------------------
def _door(**sections) -> dict:
    """The door task's YAML document with whole ``sections`` replaced."""
    return {**yaml.safe_load(DOOR.read_text()), **sections}


def _two_camera_doc() -> dict:
    doc = _door(topics={"cameras": {"front": FRONT, "wrist": WRIST}, "image_type": "Image"})
    doc["control"]["freshness"] = {"max_image_age_s": 0.3,
                                   "camera_max_age_s": {"wrist": 0.5}}
    return doc


def test_yaml_camera_topics_and_limits_reach_the_node_parameters() -> None:
    cfg = parse_task_config(_two_camera_doc(), DOOR)
    params = policy_node_parameters(cfg)
    assert params["camera_topics"] == [f"front={FRONT}", f"wrist={WRIST}"]
    assert params["camera"] == "front" and params["image_topic"] == FRONT
    assert params["camera_max_image_age_s"] == ["wrist=0.5"]
    # the cameras of the freshness check default to the YAML's cameras
    assert cfg.freshness().cameras == CAMS
    assert cfg.freshness().camera_max_age_s == {"wrist": 0.5}
    # the recorder records the first camera from its topic
    rec = recorder_node_parameters(cfg)
    assert rec["image_topic"] == FRONT and "camera_max_image_age_s" not in rec
    p = node_defaults(POLICY_NODE_PARAMS, params)
    p["cameras"] = list(CAMS)
    assert camera_topics(p) == {"front": FRONT, "wrist": WRIST}


def test_yaml_order_of_freshness_cameras_picks_the_first_camera() -> None:
    doc = _two_camera_doc()
    doc["control"]["freshness"]["cameras"] = ["wrist", "front"]
    params = policy_node_parameters(parse_task_config(doc, DOOR))
    assert params["camera"] == "wrist" and params["image_topic"] == WRIST


def test_yaml_limits_reach_a_loaded_control_core() -> None:
    cfg = parse_task_config(_two_camera_doc(), DOOR)
    p = node_defaults(POLICY_NODE_PARAMS, {**policy_node_parameters(cfg), "robot": "dry_run"})
    p["cameras"] = list(CAMS)
    control = build_control(p, cfg, policy=_policy, image_hw=(4, 4))
    assert control.loop.config.freshness.camera_max_age_s == {"wrist": 0.5}
    assert control.camera_topics == {"front": FRONT, "wrist": WRIST}


def _with(doc: dict, section: str, key: str, value: object) -> dict:
    doc[section][key] = value
    return doc


@pytest.mark.parametrize("make, match", [
    (lambda: _with(_two_camera_doc(), "topics", "image", "/x"),
     r"topics.cameras names every camera's topic; drop topics.image"),
    (lambda: _with(_two_camera_doc(), "topics", "camera", "front"), "drop topics.camera"),
    (lambda: _with(_two_camera_doc(), "topics", "cameras", ["/a", "/b"]),
     "topics.cameras must be a mapping"),
    (lambda: _with(_two_camera_doc(), "topics", "cameras", {}), "must be a mapping"),
    (lambda: _with(_two_camera_doc(), "topics", "cameras", {"front": "cam"}),
     r"topics.cameras.front must be an absolute topic"),
    (lambda: _with(_two_camera_doc(), "topics", "cameras", {"a=b": "/c"}),
     "camera name 'a=b'"),
    (lambda: _with(_door(), "control", "freshness",
                   {"cameras": ["front"], "camera_max_age_s": {"wrist": 0.5}}),
     r"control.freshness: control loop: camera_max_age_s names \['wrist'\]"),
    (lambda: _with(_door(), "control", "freshness", {"camera_max_age_s": {"front": -1}}),
     r"control.freshness: .*camera_max_age_s\['front'\] must be >= 0"),
    (lambda: _with(_door(), "control", "freshness", {"camera_max_age_s": [0.5]}),
     "camera_max_age_s must be a mapping"),
])
def test_bad_camera_yaml_is_rejected_naming_the_file_and_key(make, match: str) -> None:
    with pytest.raises(TheiaError, match=match) as info:
        parse_task_config(make(), DOOR)
    assert str(DOOR) in str(info.value) and "\n" not in str(info.value)


def test_yaml_camera_topics_must_be_freshness_cameras_when_those_are_listed() -> None:
    doc = _two_camera_doc()
    doc["control"]["freshness"]["cameras"] = ["front"]
    with pytest.raises(TheiaError, match=r"names \['wrist'\], not in control.freshness"):
        parse_task_config(doc, DOOR)


def test_the_commented_examples_in_the_door_yaml_are_valid() -> None:
    text = DOOR.read_text()
    examples: dict = {}
    for line in text.splitlines():
        if line.strip().startswith(("# cameras:", "# camera_max_age_s:")):
            examples.update(yaml.safe_load(line.strip().lstrip("#")))
    assert set(examples) == {"cameras", "camera_max_age_s"}
    doc = _door()
    doc["topics"].pop("image")
    doc["topics"]["cameras"] = examples["cameras"]
    doc["control"]["freshness"].update(cameras=["front", "wrist"],
                                       camera_max_age_s=examples["camera_max_age_s"])
    params = policy_node_parameters(parse_task_config(doc, DOOR))
    assert params["camera_max_image_age_s"] == ["wrist=0.5"]
    assert len(params["camera_topics"]) == 2


# -- launch --------------------------------------------------------------------------------
def test_launch_feeds_the_first_camera_from_the_driver_or_the_twin() -> None:
    cfg = parse_task_config(_two_camera_doc(), DOOR)
    assert LD.image_topic(cfg, "usb_cam") == FRONT
    assert LD.node_camera_topics(cfg, "usb_cam") == [f"front={FRONT}", f"wrist={WRIST}"]
    # the RealSense driver publishes on its own topic: the first camera moves there
    assert LD.node_camera_topics(cfg, "realsense") == [
        f"front={LD.REALSENSE_COLOR_TOPIC}", f"wrist={WRIST}"]
    assert LD.twin_parameters(cfg, (224, 224), "3")["camera_topic"] == FRONT


def test_launch_of_a_one_camera_yaml_is_unchanged() -> None:
    cfg = parse_task_config(_door(), DOOR)
    assert LD.node_camera_topics(cfg, "usb_cam") == []
    assert LD.node_camera_topics(cfg, "realsense") == []
    assert LD.image_topic(cfg, "usb_cam") == cfg.topics["image"]
    params = LD.twin_parameters(cfg, (240, 320), "")
    assert params["camera_topic"] == cfg.topics["image"]
    assert (params["image_height"], params["image_width"], params["seed"]) == (240, 320, -1)


# -- the rclpy node ------------------------------------------------------------------------
@pytest.mark.ros
def test_policy_node_takes_camera_topics_and_limits_from_the_yaml(tmp_path: Path) -> None:
    """Real rclpy: the node declares the parameter, and the YAML's camera topic and limit
    reach its subscriptions and its freshness check."""
    pytest.importorskip("rclpy")
    from helpers_nodes import ros_context, session_domain_id
    from rclpy.parameter import Parameter

    from theia_ros.ros.policy_node import PolicyNode

    doc = {"task": "t", "robot": "dry_run",
           "control": {"freshness": {"max_image_age_s": 0.3,
                                     "camera_max_age_s": {"front": 0.8}}},
           "topics": {"cameras": {"front": FRONT}}}
    path = tmp_path / "two_rates.yaml"
    path.write_text(yaml.safe_dump(doc))
    with ros_context(session_domain_id()) as ctx:
        node = PolicyNode(policy=_policy, image_hw=(4, 4), context=ctx,
                          node_name="camera_config_node",
                          parameter_overrides=[Parameter("config_file", value=str(path))])
        try:
            assert node.params["camera_max_image_age_s"] == ["front=0.8"]
            assert node.loop.config.freshness.camera_max_age_s == {"front": 0.8}
            assert node.sensors.camera_topics == {"front": FRONT}
            assert FRONT in {sub.topic_name for sub in node.subscriptions}
        finally:
            node.shutdown()
            node.destroy_node()
