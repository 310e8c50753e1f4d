"""The launch descriptions behind ``launch/*.launch.py`` (those files are one call each).

Imports ``launch`` / ``launch_ros`` inside the functions, so the module (and its tables)
import without a ROS install. What it references outside this package:

- ``interbotix_xsarm_control``/``launch/xsarm_control.launch.py`` (``robot_model:=wx250s``),
- ``usb_cam`` (executable ``usb_cam_node_exe``) or ``realsense2_camera``/``launch/rs_launch.py``,
- ``spacenav`` (executable ``spacenav_node``) for SpaceMouse teleop.

Launch arguments (``ros2 launch theia_ros widowx_door.launch.py policy:=bundles/door``):
``config`` (a task YAML; default the installed ``config/<task>.yaml``), ``camera``
(``usb_cam|realsense|none``; default the YAML's ``camera_driver.type``), ``interbotix``
(``true|false``: start the arm driver), ``use_sim`` (``true``: with ``robot:=widowx``, our
MuJoCo xs_sdk twin ``xs_sdk_twin`` stands in for the arm driver and the camera, as
Interbotix's ``use_sim`` puts ``xs_sdk_sim`` in place of ``xs_sdk``), ``sim_seed`` (the door
scene of ``use_sim`` or ``robot:=sim``), and the node overrides in
``task_config.LAUNCH_OVERRIDES`` / ``RECORDER_LAUNCH_OVERRIDES`` (empty: keep the YAML's).
"""

from __future__ import annotations

import os
from typing import Any

from theia_ros.ros.params import POLICY_NODE_PARAMS, RECORDER_NODE_PARAMS
from theia_ros.ros.task_config import (
    LAUNCH_OVERRIDES,
    RECORDER_LAUNCH_OVERRIDES,
    TaskConfig,
    first_image_topic,
    launch_overrides,
    load_task_config,
    policy_node_parameters,
    resolve_path,
)

PACKAGE = "theia_ros"
INTERBOTIX_PACKAGE = "interbotix_xsarm_control"
INTERBOTIX_LAUNCH = "xsarm_control.launch.py"
# Camera drivers, checked against their sources: realsense-ros ``realsense2_camera/launch/
# rs_launch.py`` (arguments camera_name, camera_namespace, serial_no, enable_depth,
# rgb_camera.color_profile; the node at /<camera_namespace>/<camera_name> since 4.55) and
# ``src/realsense_node_factory.cpp`` (a leading "_" of serial_no is stripped); usb_cam
# ``src/usb_cam_node.cpp`` (parameters video_device, image_width, image_height, framerate,
# pixel_format incl. "yuyv2rgb"; publishes "image_raw") and its CMakeLists (usb_cam_node_exe).
REALSENSE_PACKAGE = "realsense2_camera"
REALSENSE_LAUNCH = "rs_launch.py"
REALSENSE_COLOR_TOPIC = "/camera/camera/color/image_raw"
USB_CAM_PACKAGE, USB_CAM_EXECUTABLE = "usb_cam", "usb_cam_node_exe"
SPACENAV_PACKAGE, SPACENAV_EXECUTABLE = "spacenav", "spacenav_node"
TWIN_EXECUTABLE = "xs_sdk_twin"
# Seconds launch waits after a Ctrl-C before it sends SIGTERM to our nodes (its default is 5):
# the policy node's hold + home + sleep park takes about twice park_moving_time_s.
SHUTDOWN_TIMEOUT_S = "20"
# node kind -> (executable in setup.py console_scripts, parameter table, launch overrides)
NODES = {
    "policy": ("policy_node", POLICY_NODE_PARAMS, LAUNCH_OVERRIDES),
    "recorder": ("recorder_node", RECORDER_NODE_PARAMS, RECORDER_LAUNCH_OVERRIDES),
}


def default_config(task: str) -> str:
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), "config", f"{task}.yaml")


def _camera_actions(cfg: TaskConfig, driver: str) -> list[Any]:
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import Node

    cam = cfg.camera_driver
    topic = first_image_topic(cfg)
    if driver == "usb_cam":
        params = {"video_device": cam.get("device", "/dev/video0"),
                  "image_width": int(cam.get("width", 640)),
                  "image_height": int(cam.get("height", 480)),
                  "framerate": float(cam.get("fps", 30)), "pixel_format": "yuyv2rgb"}
        return [Node(package=USB_CAM_PACKAGE, executable=USB_CAM_EXECUTABLE, name="camera",
                     parameters=[params], remappings=[("image_raw", topic)], output="screen")]
    if driver == "realsense":
        path = os.path.join(get_package_share_directory(REALSENSE_PACKAGE), "launch",
                            REALSENSE_LAUNCH)
        return [IncludeLaunchDescription(PythonLaunchDescriptionSource(path),
                                         launch_arguments=realsense_arguments(cfg).items())]
    return []


def realsense_serial(serial: object) -> str:
    """The ``serial_no`` launch argument for realsense2_camera: a serial of digits gets a
    leading ``_`` (the driver strips it), or ROS 2 parameter parsing turns it into an
    integer and the driver matches no device."""
    text = str(serial).strip()
    return f"_{text}" if text.isdigit() else text


def realsense_arguments(cfg: TaskConfig) -> dict[str, str]:
    """``rs_launch.py`` arguments: colour only, at the config's (native) profile."""
    cam = cfg.camera_driver
    w, h = int(cam.get("width", 640)), int(cam.get("height", 480))
    fps = int(cam.get("fps", 30))
    args = {"camera_namespace": "camera", "camera_name": "camera", "enable_depth": "false",
            "rgb_camera.color_profile": f"{w},{h},{fps}"}
    if cam.get("serial_no"):
        args["serial_no"] = realsense_serial(cam["serial_no"])
    return args


def image_topic(cfg: TaskConfig, driver: str) -> str:
    """The colour topic the node subscribes to: the RealSense driver's fixed one when the
    launch starts it, else ``topics.image`` (or the first camera's of ``topics.cameras``)."""
    if driver == "realsense":
        return REALSENSE_COLOR_TOPIC
    return first_image_topic(cfg)


def node_camera_topics(cfg: TaskConfig, driver: str) -> list[str]:
    """The node's ``camera_topics`` from ``topics.cameras`` (empty: one camera), with the
    camera the launched driver feeds moved onto the driver's topic. The launch starts one
    camera driver; the other cameras' drivers are the operator's."""
    yaml_params = policy_node_parameters(cfg)
    fed, topic = yaml_params.get("camera"), image_topic(cfg, driver)
    return [f"{fed}={topic}" if entry.partition("=")[0] == fed else entry
            for entry in yaml_params.get("camera_topics", [])]


def _interbotix(cfg: TaskConfig) -> list[Any]:
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    model = cfg.widowx.get("robot_model", "wx250s")
    path = os.path.join(get_package_share_directory(INTERBOTIX_PACKAGE), "launch",
                        INTERBOTIX_LAUNCH)
    args = {"robot_model": model, "use_rviz": "false"}
    if cfg.widowx.get("robot_name"):
        args["robot_name"] = cfg.widowx["robot_name"]
    return [IncludeLaunchDescription(PythonLaunchDescriptionSource(path),
                                     launch_arguments=args.items())]


def sim_camera_hw(cfg: TaskConfig, bundle: str | None) -> tuple[int, int]:
    """(height, width) the twin's camera renders: the bundle's camera when there is a
    readable bundle (the node takes only that size), else ``camera_driver``'s."""
    if bundle:
        from theia_ros.errors import TheiaError
        from theia_ros.runtime.bundle import read_bundle

        try:
            return tuple(read_bundle(resolve_path(bundle, cfg), verify=False).image_hw)
        except TheiaError:
            pass  # the node reports the bad bundle itself, with its path
    cam = cfg.camera_driver
    return int(cam.get("height", 480)), int(cam.get("width", 640))


def twin_parameters(cfg: TaskConfig, image_hw: tuple[int, int], seed: str) -> dict[str, Any]:
    """``xs_sdk_twin``'s parameters: it renders one camera, on the node's ``image_topic``
    (with ``topics.cameras``, the first camera's topic; other cameras stay unfed)."""
    return {"camera_topic": first_image_topic(cfg),
            "image_height": int(image_hw[0]), "image_width": int(image_hw[1]),
            "seed": int(seed) if seed else -1,
            # where the door demonstrations start; a real arm must be brought there first
            "start_pose": "scene"}


def _xs_sdk_twin(cfg: TaskConfig, image_hw: tuple[int, int], seed: str) -> list[Any]:
    from launch_ros.actions import Node

    params = twin_parameters(cfg, image_hw, seed)
    ns = cfg.widowx.get("robot_name") or cfg.widowx.get("robot_model", "wx250s")
    return [Node(package=PACKAGE, executable=TWIN_EXECUTABLE, name="xs_sdk", namespace=ns,
                 parameters=[params], output="screen", sigterm_timeout=SHUTDOWN_TIMEOUT_S)]


def _setup(context: Any, task: str, kind: str) -> list[Any]:
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    executable, specs, mapping = NODES[kind]
    config_path = arg("config") or default_config(task)
    cfg = load_task_config(config_path)
    overrides = launch_overrides({a: arg(a) for a in mapping}, mapping, specs)
    robot = overrides.get("robot", cfg.robot)
    use_sim = arg("use_sim").lower() == "true"
    actions: list[Any] = []
    if robot == "widowx" and use_sim:
        bundle = overrides.get("bundle", cfg.bundle) if kind == "policy" else None
        actions += _xs_sdk_twin(cfg, sim_camera_hw(cfg, bundle), arg("sim_seed"))
    elif robot == "widowx" and arg("interbotix").lower() == "true":
        actions += _interbotix(cfg)
    params: dict[str, Any] = {"config_file": os.path.abspath(config_path)}
    if robot in ("widowx", "dry_run") and not use_sim:
        driver = arg("camera") or cfg.camera_driver.get("type", "none")
        actions += _camera_actions(cfg, driver)
        params["image_topic"] = image_topic(cfg, driver)
        if node_camera_topics(cfg, driver):
            params["camera_topics"] = node_camera_topics(cfg, driver)
    if robot == "sim" and arg("sim_seed") and "sim_seed" in NODES[kind][1]:
        overrides["sim_seed"] = int(arg("sim_seed"))
    if kind == "recorder" and overrides.get("teleop_type", "Twist") == "Twist" \
            and arg("spacenav").lower() == "true":
        actions.append(Node(package=SPACENAV_PACKAGE, executable=SPACENAV_EXECUTABLE,
                            output="screen"))
    params.update(overrides)
    actions.append(Node(package=PACKAGE, executable=executable, name=executable,
                        parameters=[params], output="screen", emulate_tty=True,
                        sigterm_timeout=SHUTDOWN_TIMEOUT_S))
    return actions


def task_launch(task: str, kind: str = "policy") -> Any:
    """``LaunchDescription`` for ``config/<task>.yaml`` with the policy or recorder node."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    _, _, mapping = NODES[kind]
    args = [DeclareLaunchArgument("config", default_value="",
                                  description=f"task YAML (default: config/{task}.yaml)"),
            DeclareLaunchArgument("camera", default_value="",
                                  description="usb_cam | realsense | none (default: YAML)"),
            DeclareLaunchArgument("interbotix", default_value="true",
                                  description="start xsarm_control for the WidowX"),
            DeclareLaunchArgument("spacenav", default_value="true",
                                  description="start the SpaceMouse driver (recorder)"),
            DeclareLaunchArgument("use_sim", default_value="false",
                                  description="robot widowx: the MuJoCo xs_sdk twin instead of "
                                  "the arm driver and the camera"),
            DeclareLaunchArgument("sim_seed", default_value="",
                                  description="door scene seed (use_sim, robot:=sim)")]
    args += [DeclareLaunchArgument(a, default_value="", description=f"overrides {p} "
                                   "(empty: the YAML's)") for a, p in mapping.items()]
    return LaunchDescription([*args, OpaqueFunction(function=_setup, args=[task, kind])])
