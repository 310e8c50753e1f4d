"""Launch files and task configs, checked statically (``launch``/``launch_ros`` have no PyPI
wheels): every launch file names a task whose config exists and validates; every executable
is a console script in setup.py; every parameter a launch file or config sets is declared by
the node it goes to, with a valid value; bad configs fail with the file and key named."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from theia_ros.errors import TheiaError
from theia_ros.ros import launch_description as LD
from theia_ros.ros.params import NODE_PARAMS, POLICY_NODE_PARAMS, RECORDER_NODE_PARAMS
from theia_ros.ros.task_config import (
    LAUNCH_OVERRIDES,
    RECORDER_LAUNCH_OVERRIDES,
    launch_overrides,
    load_task_config,
    parse_task_config,
    policy_node_parameters,
    recorder_node_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
# task configs; bag_map_*.yaml are import-bag topic maps (tested in test_dataset_bag.py)
CONFIGS = sorted(p for p in (ROOT / "config").glob("*.yaml") if not p.name.startswith("bag_map_"))
REQUIRED_LAUNCH = {"widowx_door", "widowx_pick_place", "widowx_microwave", "teleop_record",
                   "spot_drawer"}


def console_scripts() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    return {ast.literal_eval(e).split("=")[0].strip() for e in v.elts}
    raise AssertionError("setup.py has no console_scripts")


def task_launch_call(path: Path) -> tuple[str, str]:
    """(task, kind) of the ``task_launch(...)`` call inside ``generate_launch_description``."""
    tree = ast.parse(path.read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in funcs] == ["generate_launch_description"]
    calls = [n for n in ast.walk(funcs[0]) if isinstance(n, ast.Call)
             and getattr(n.func, "id", None) == "task_launch"]
    assert len(calls) == 1, f"{path.name}: expected one task_launch(...) call"
    call = calls[0]
    task = ast.literal_eval(call.args[0])
    kinds = [ast.literal_eval(k.value) for k in call.keywords if k.arg == "kind"]
    return task, (kinds[0] if kinds else "policy")


def test_every_required_launch_file_exists() -> None:
    assert {p.name.removesuffix(".launch.py") for p in LAUNCH_FILES} >= REQUIRED_LAUNCH


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_references_a_valid_config_and_node(path: Path) -> None:
    task, kind = task_launch_call(path)
    assert task == path.name.removesuffix(".launch.py")
    cfg = load_task_config(ROOT / "config" / f"{task}.yaml")
    assert kind in LD.NODES
    executable, specs, mapping = LD.NODES[kind]
    assert executable in console_scripts()
    assert set(mapping.values()) <= set(specs)
    params = policy_node_parameters(cfg) if kind == "policy" else recorder_node_parameters(cfg)
    assert set(params) <= set(specs)
    assert "config_file" in specs  # what the launch passes besides the overrides


def test_launch_module_executables_and_external_references() -> None:
    """Every ``Node(package=..., executable=...)`` in the launch module is ours (a console
    script) or a known driver; included launch files are named by constants."""
    tree = ast.parse(Path(LD.__file__).read_text())
    consts = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    for n in tree.body:  # tuple assignments: USB_CAM_PACKAGE, USB_CAM_EXECUTABLE = ...
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Tuple):
            for t, v in zip(n.targets[0].elts, n.value.elts):
                consts[t.id] = ast.literal_eval(v)
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, "id", None) == "Node"]
    assert len(nodes) >= 3
    ours = console_scripts()
    external = {("usb_cam", "usb_cam_node_exe"), ("spacenav", "spacenav_node")}
    for call in nodes:
        kw = {k.arg: k.value for k in call.keywords}
        pkg = consts.get(getattr(kw["package"], "id", None))
        exe = kw["executable"]
        exe = consts.get(getattr(exe, "id", None)) or getattr(exe, "id", None)
        if pkg == "theia_ros":  # the NODES table's entry (checked above) or the twin
            assert exe in ("executable", LD.TWIN_EXECUTABLE), exe
            assert exe == "executable" or exe in ours
        else:
            assert (pkg, exe) in external, (pkg, exe)
    assert LD.INTERBOTIX_PACKAGE == "interbotix_xsarm_control"
    assert LD.INTERBOTIX_LAUNCH == "xsarm_control.launch.py"
    assert {e for e, _, _ in LD.NODES.values()} <= ours


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_parameters_fit_the_nodes(path: Path) -> None:
    cfg = load_task_config(path)
    for name in policy_node_parameters(cfg):
        assert name in POLICY_NODE_PARAMS
    for name in recorder_node_parameters(cfg):
        assert name in RECORDER_NODE_PARAMS
    cfg.safety_limits(LD_base(cfg))
    if cfg.robot == "widowx":
        assert cfg.widowx_config().robot_model == "wx250s"
        assert cfg.camera_driver.get("type") in ("usb_cam", "realsense", "none")


def LD_base(cfg):
    from theia_ros.ros.task_config import base_limits

    return base_limits(cfg)


def test_widowx_door_values_reach_the_node() -> None:
    cfg = load_task_config(ROOT / "config" / "widowx_door.yaml")
    limits = cfg.safety_limits(LD_base(cfg))
    assert limits.max_speed_m_s == pytest.approx(0.15)
    params = policy_node_parameters(cfg)
    assert params["rate_hz"] == 5.0 and params["robot"] == "widowx"
    assert params["joint_states_topic"] == "/wx250s/joint_states"


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(robots="widowx"), "unknown key"),
    (lambda d: d.update(robot="ur5"), "robot must be one of"),
    (lambda d: d["safety"].update(max_stepp_m=0.1), "unknown safety limit"),
    (lambda d: d["control"].update(rate_hz=-5), "rate_hz"),
    (lambda d: d["control"]["chunking"].update(replan_every=0), "replan_every"),
    (lambda d: d["topics"].update(image_type="Jpeg"), "image_type"),
    (lambda d: d["widowx"].update(robot_model="wx200"), "wx250s"),
    (lambda d: d["camera_driver"].update(type="gstreamer"), "camera_driver.type"),
    (lambda d: d["camera_driver"].update(serial_no=831612073525), "serial_no must be quoted"),
    (lambda d: d["camera_driver"].update(width="640"), "camera_driver.width"),
])
def test_bad_config_is_rejected_naming_the_key(mutate, match: str) -> None:
    path = ROOT / "config" / "widowx_door.yaml"
    doc = yaml.safe_load(path.read_text())
    mutate(doc)
    with pytest.raises(TheiaError, match=match):
        parse_task_config(doc, path)


def test_launch_overrides_convert_and_validate() -> None:
    out = launch_overrides({"policy": "/b", "autostart": "true", "rate_hz": "10", "backend": "",
                            "config": "x"}, LAUNCH_OVERRIDES, POLICY_NODE_PARAMS)
    assert out == {"bundle": "/b", "autostart": True, "rate_hz": 10.0}
    with pytest.raises(TheiaError, match="rate_hz"):
        launch_overrides({"rate_hz": "fast"}, LAUNCH_OVERRIDES, POLICY_NODE_PARAMS)
    with pytest.raises(TheiaError, match="robot"):
        launch_overrides({"robot": "ur5"}, LAUNCH_OVERRIDES, POLICY_NODE_PARAMS)
    out = launch_overrides({"teleop_type": "Joy"}, RECORDER_LAUNCH_OVERRIDES,
                           RECORDER_NODE_PARAMS)
    assert out == {"teleop_type": "Joy"}


@pytest.mark.parametrize("node", sorted(NODE_PARAMS))
def test_parameter_tables_defaults_validate(node: str) -> None:
    from theia_ros.ros.params import validate

    for name, spec in NODE_PARAMS[node].items():
        assert spec.description
        validate(NODE_PARAMS[node], name, spec.default)
    with pytest.raises(TheiaError, match="unknown parameter"):
        validate(NODE_PARAMS[node], "no_such_parameter", 1)


# Colour modes both a UVC webcam and a RealSense D4xx colour sensor offer (224x224 is neither's).
NATIVE_MODES = {(640, 480), (1280, 720), (848, 480), (424, 240)}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_camera_driver_asks_for_a_native_mode(path: Path) -> None:
    cam = load_task_config(path).camera_driver
    if cam.get("type", "none") != "none":
        assert (cam.get("width", 640), cam.get("height", 480)) in NATIVE_MODES, cam


def test_realsense_serial_profile_and_topic() -> None:
    """realsense2_camera 4.55+: ``_``-prefixed digit serials (ROS 2 would read them as an
    integer), a width,height,fps colour profile, the node at /camera/camera."""
    path = ROOT / "config" / "widowx_door.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["camera_driver"].update(type="realsense", serial_no="031612073525")
    cfg = parse_task_config(doc, path)
    args = LD.realsense_arguments(cfg)
    assert args["serial_no"] == "_031612073525"
    assert args["rgb_camera.color_profile"] == "640,480,30"
    assert args["enable_depth"] == "false"
    assert (args["camera_namespace"], args["camera_name"]) == ("camera", "camera")
    assert LD.image_topic(cfg, "realsense") == "/camera/camera/color/image_raw"
    assert LD.image_topic(cfg, "usb_cam") == cfg.topics["image"]
    assert LD.realsense_serial("_031612073525") == "_031612073525"
    assert LD.realsense_serial("f0123") == "f0123"
