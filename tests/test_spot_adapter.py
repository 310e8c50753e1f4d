"""Spot adapter over real gRPC: start-up, observations, commands, shut-down, credentials.

THE SERVER IN THESE TESTS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE
(``tests/spot_standin``): a loopback TLS gRPC server built from the ``bosdyn-api`` servicers, so
the real ``bosdyn-client`` code (secure channels, directory, auth token, time sync, lease wallet
and keep-alive, command builders, frame helpers) runs end to end.
"""
# ruff: noqa: F401, F811 - pytest fixtures imported from spot_standin.fixtures

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest
from bosdyn.api import image_pb2
from bosdyn.client.math_helpers import SE3Pose
from spot_standin import SpotStandIn
from spot_standin.fixtures import (
    PASSWORD,
    QUICK,
    USERNAME,
    config_for,
    pose_action,
    robot_env,
    standin,
)
from spot_standin.kinematics import READY_Q

from theia_ros.control.observation import JOINTS_KEY
from theia_ros.control.rotations import matrix_to_rpy, rpy_to_matrix
from theia_ros.errors import TheiaError
from theia_ros.robots.spot.adapter import SpotAdapter, SpotConfig
from theia_ros.robots.spot.io import (
    decode_image,
    load_credentials,
    quat_to_rpy,
    rpy_to_quat,
    upright,
)

START_UP = ["auth", "time_sync", "estop_status", "lease_acquire", "power_on", "powered_on",
            "stand", "ready"]
# what the robot was told to do (not what it did by itself: powered_on, powered_off, ...)
COMMANDED = {"arm_cartesian", "stow", "ready", "gripper", "safe_power_off", "lease_return",
             "arm_stop", "stand", "sit"}


def _arm_commands(server: SpotStandIn) -> list:
    return [c for c in server.commands()
            if c.request.command.synchronized_command.arm_command.HasField(
                "arm_cartesian_command")]


def test_full_sequence_startup_commands_shutdown(standin, robot_env):
    cfg = config_for(standin)
    targets = [pose_action(0.78 - 0.02 * i, -0.02 * i, 0.34, gripper=0.1 * i) for i in range(5)]
    with SpotAdapter(cfg) as spot:
        assert standin.events() == START_UP
        assert standin.state.motors_on and standin.state.standing
        assert standin.state.lease_owner.startswith("theia-ros")
        for target in targets:
            spot.observe()
            sent = spot.apply(target)
            np.testing.assert_allclose(sent.to_vector(), target.to_vector())
            time.sleep(cfg.period_s)
        time.sleep(cfg.trajectory_time() + 0.3)  # the hand moves at finite speed
        obs = spot.observe()
        assert spot.commands_sent == len(targets) and spot.fault is None
        assert spot.arm_status in ("IN_PROGRESS", "TRAJECTORY_COMPLETE")
    events = [e for e in standin.events()[len(START_UP):] if e in COMMANDED]
    # safe stop: open the claw, back off, stow, sit + power off
    assert events == ["arm_cartesian"] * 5 + ["gripper", "arm_cartesian", "stow",
                                              "safe_power_off", "lease_return"]
    assert not standin.state.motors_on and standin.state.lease_owner is None
    assert "sat_with_arm_out" not in standin.events()
    # the last command reached the hand, and came back through robot state
    np.testing.assert_allclose(obs.ee_pose, targets[-1].to_vector()[:6], atol=2e-3)
    assert obs.gripper == pytest.approx(targets[-1].gripper, abs=1e-3)
    commands = _arm_commands(standin)[:5]
    references = set()
    for n, (received, target) in enumerate(zip(commands, targets)):
        cart = received.request.command.synchronized_command.arm_command.arm_cartesian_command
        trajectory = cart.pose_trajectory_in_task
        assert cart.root_frame_name == "flat_body"
        assert trajectory.HasField("reference_time")  # one timeline for the whole stream
        references.add(trajectory.reference_time.ToNanoseconds())
        points = trajectory.points
        assert len(points) == min(n + 1, 4)  # the new target plus up to 3 earlier ones
        times = [p.time_since_reference.ToNanoseconds() * 1e-9 for p in points]
        assert times == sorted(times)
        newest = points[-1]
        rot = newest.pose.rotation
        np.testing.assert_allclose(quat_to_rpy(rot.w, rot.x, rot.y, rot.z), target.rpy_rad,
                                   atol=1e-9)
        assert newest.velocity.linear.x == 0.0  # comes to rest on the newest target
        if n:
            assert points[-2].velocity.linear.x < 0.0  # moving (-x) through the earlier ones
        assert cart.max_pos_tracking_error.value == pytest.approx(0.15)
        assert received.accepted
        assert received.request.lease.sequence[0] == standin.state.lease_seq
    assert len(references) == 1


def test_stay_powered_on_exit_still_stows_and_returns_lease(standin, robot_env):
    with SpotAdapter(config_for(standin, power_off_on_exit=False)) as spot:
        spot.observe()
        spot.apply(pose_action(0.7, 0.0, 0.3))
    events = [e for e in standin.events() if e in COMMANDED]
    assert events[-2:] == ["stow", "lease_return"]
    assert "safe_power_off" not in events and standin.state.motors_on


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_observation_images_rgb_and_stamps_in_local_time(standin, robot_env, image_format):
    cfg = config_for(standin, image_format=image_format,
                     cameras={"front": "hand_color_image", "grey": "frontleft_fisheye_image"})
    with SpotAdapter(cfg) as spot:
        before = time.monotonic()
        obs = spot.observe()
        after = time.monotonic()
    front, grey = obs.images["front"], obs.images["grey"]
    assert front.shape == (240, 320, 3) and front.dtype == np.uint8
    # the front-left fisheye is mounted turned: the adapter stands it upright (a larger canvas)
    assert grey.shape == upright(np.zeros_like(front), "frontleft_fisheye_image").shape
    # the stand-in draws a pure red square that moves with the hand (at the ready pose here)
    expected = standin.state.render("hand_color_image", hand_xyz=tuple(obs.ee_pose[:3]))
    assert np.abs(front.astype(int) - expected).mean() < 6.0
    red = (front[..., 0] > 200) & (front[..., 1] < 60)
    assert red.sum() > 500
    assert np.all(grey[..., 0] == grey[..., 2])
    assert len(obs.joint_positions) == 6 and np.all(np.isfinite(obs.joint_positions))
    np.testing.assert_allclose(obs.joint_positions, READY_Q, atol=1e-6)
    np.testing.assert_allclose(obs.ee_pose[:3], [0.8, 0.0, 0.35], atol=2e-3)
    # robot clock is 7.25 s ahead; converted stamps must land inside the observe() call
    for key in ("front", "grey", JOINTS_KEY):
        assert before - 0.05 <= obs.stamps_s[key] <= after + 0.05, (key, obs.stamps_s)
    assert obs.stamp_s == min(obs.stamps_s.values())


def test_odom_frame_commands_and_observations(standin, robot_env):
    cfg = config_for(standin, frame="odom", workspace_min_m=(-5.0, -5.0, -1.0),
                     workspace_max_m=(5.0, 5.0, 2.0))
    target = pose_action(1.6, 0.9, 0.3, rpy=(0.0, 0.1, 0.5))
    with SpotAdapter(cfg) as spot:
        spot.observe()
        spot.apply(target)
        time.sleep(cfg.trajectory_time() + 0.5)
        obs = spot.observe()
        body_hand = standin.state.body_tform_hand  # where that is relative to the body
    cart = _arm_commands(standin)[0].request.command.synchronized_command.arm_command
    assert cart.arm_cartesian_command.root_frame_name == "odom"
    np.testing.assert_allclose(obs.ee_pose, target.to_vector()[:6], atol=2e-3)
    expected = standin.state.odom_tform_body.inverse() * SE3Pose(1.6, 0.9, 0.3, body_hand.rot)
    assert body_hand.x == pytest.approx(expected.x, abs=2e-3)
    assert body_hand.y == pytest.approx(expected.y, abs=2e-3)
    assert abs(body_hand.x - 1.6) > 0.1  # the frames really differ


def test_workspace_clip_is_reported_in_the_returned_action(standin, robot_env):
    with SpotAdapter(config_for(standin)) as spot:
        spot.observe()
        sent = spot.apply(pose_action(0.9, 0.0, 0.3, gripper=1.7))
        far = spot.apply(pose_action(3.0, 3.0, 3.0))
    _, high = SpotConfig().workspace_box()
    assert sent.xyz_m[0] == pytest.approx(0.9) and sent.gripper == 1.0
    cart = _arm_commands(standin)[0].request.command.synchronized_command.arm_command
    assert cart.arm_cartesian_command.pose_trajectory_in_task.points[-1].pose.position.x == \
        pytest.approx(0.9)
    # the box corner is beyond the arm's reach: the target is pulled back within reach_m
    shoulder = np.array([0.292, 0.0, 0.188])
    assert np.linalg.norm(high - shoulder) > 0.98
    assert np.linalg.norm(far.xyz_m - shoulder) == pytest.approx(0.9)
    assert np.all(far.xyz_m <= high + 1e-9)


def test_refuses_to_start_without_an_estop_endpoint(robot_env, caplog):
    with SpotStandIn(username=USERNAME, password=PASSWORD, **QUICK,
                     estop_registered=False) as server:
        with pytest.raises(TheiaError, match="no e-stop endpoint"):
            SpotAdapter(config_for(server)).connect()
        assert "lease_acquire" not in server.events() and not server.state.motors_on
        caplog.set_level(logging.WARNING)
        with SpotAdapter(config_for(server, allow_no_estop=True)) as spot:
            spot.observe()
        assert any("WITHOUT an e-stop" in r.getMessage() for r in caplog.records)
        assert server.events()[-1] == "lease_return"


def test_refuses_to_start_while_estopped(standin, robot_env):
    standin.engage_estop()
    with pytest.raises(TheiaError, match="e-stopped"):
        SpotAdapter(config_for(standin)).connect()
    assert "lease_acquire" not in standin.events()


def test_lease_held_elsewhere_is_refused_unless_take_lease(standin, robot_env):
    with standin.state.lock:
        standin.state.grant_lease("tablet")
    with pytest.raises(TheiaError, match="held by 'tablet'"):
        SpotAdapter(config_for(standin)).connect()
    assert standin.state.lease_owner == "tablet"
    with SpotAdapter(config_for(standin, take_lease=True)) as spot:
        assert standin.state.lease_owner.startswith("theia-ros")
        spot.observe()
    assert "lease_take" in standin.events()


def test_wrong_password_is_a_clean_error_without_secrets(standin, monkeypatch):
    monkeypatch.setenv("BOSDYN_CLIENT_USERNAME", USERNAME)
    monkeypatch.setenv("BOSDYN_CLIENT_PASSWORD", "wrong-" + PASSWORD)
    with pytest.raises(TheiaError, match="login refused") as info:
        SpotAdapter(config_for(standin)).connect()
    assert PASSWORD not in str(info.value) and info.value.__cause__ is None
    assert standin.events() == []


def test_credentials_never_appear_in_logs(standin, robot_env, caplog):
    caplog.set_level(logging.DEBUG)  # the SDK debug-logs every request body at this level
    with SpotAdapter(config_for(standin)) as spot:
        spot.observe()
        spot.apply(pose_action(0.7, 0.0, 0.3))
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records) + caplog.text
    # the capture really saw the SDK's request bodies (so the check below can fail)
    assert "blocking request" in text and "RobotCommand" in text
    assert PASSWORD not in text
    assert standin.state.token not in text  # the user token is a credential too


def test_credentials_file_must_be_private(standin, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("BOSDYN_CLIENT_USERNAME", raising=False)
    monkeypatch.delenv("BOSDYN_CLIENT_PASSWORD", raising=False)
    file = tmp_path / "spot.env"
    file.write_text(f"# spot\nBOSDYN_CLIENT_USERNAME={USERNAME}\n"
                    f"BOSDYN_CLIENT_PASSWORD={PASSWORD}\n")
    file.chmod(0o644)
    with pytest.raises(TheiaError, match="chmod 600") as info:
        SpotAdapter(config_for(standin, credentials_file=str(file))).connect()
    assert PASSWORD not in str(info.value)
    file.chmod(0o600)
    with SpotAdapter(config_for(standin, credentials_file=str(file))) as spot:
        spot.observe()
    assert standin.events()[0] == "auth"


def test_credentials_from_env_and_bad_files(tmp_path: Path):
    with pytest.raises(TheiaError, match="BOSDYN_CLIENT_USERNAME"):
        load_credentials(None, environ={})
    creds = load_credentials(None, environ={"BOSDYN_CLIENT_USERNAME": "u",
                                            "BOSDYN_CLIENT_PASSWORD": "p"})
    assert creds.username == "u" and "p" not in repr(creds).replace("username", "")
    bad = tmp_path / "bad.env"
    bad.write_text("PASSWORD=hunter2\n")
    bad.chmod(0o600)
    with pytest.raises(TheiaError, match=r"bad.env:1") as info:
        load_credentials(bad)
    assert "hunter2" not in str(info.value)
    with pytest.raises(TheiaError, match="not found"):
        load_credentials(tmp_path / "missing.env")


def test_config_validation_names_the_field():
    with pytest.raises(TheiaError, match="'frame'"):
        SpotConfig(frame="world")
    with pytest.raises(TheiaError, match="workspace_min_m"):
        SpotConfig(frame="odom")  # odom needs an explicit box
    with pytest.raises(TheiaError, match=r"unknown key\(s\) \['password'\]"):
        SpotConfig.from_mapping({"hostname": "spot", "password": "x"})
    cfg = SpotConfig.from_mapping({"hostname": "spot", "rate_hz": 10,
                                   "workspace_min_m": [0.3, -0.5, -0.2],
                                   "workspace_max_m": [0.9, 0.5, 0.7]})
    assert cfg.trajectory_time() == pytest.approx(0.25)
    assert cfg.tick_timeout_s == pytest.approx(0.1)
    assert SpotConfig(stream=False, rate_hz=10).trajectory_time() == pytest.approx(0.1)
    default = SpotConfig()  # defaults that fit the drawer task
    assert default.frame == "flat_body" and default.cameras == {"front": "hand_color_image"}
    with pytest.raises(TheiaError, match="reach_m"):
        SpotConfig(reach_m=1.5)
    limits = cfg.safety_limits()
    assert limits.workspace_max_m == (0.9, 0.5, 0.7) and limits.max_speed_m_s > 0


def test_spot_drawer_config_file_loads_with_the_real_schemas():
    import yaml

    from theia_ros.control import ChunkingConfig, Freshness, LoopConfig, SafetyLimits

    path = Path(__file__).resolve().parents[1] / "config" / "spot_drawer.yaml"
    data = yaml.safe_load(path.read_text())
    cfg = SpotConfig.from_mapping(data["spot"], source=f"{path}:spot")
    control = data["control"]
    loop = LoopConfig(rate_hz=control["rate_hz"], freshness=Freshness(
        **{**control["freshness"], "cameras": tuple(control["freshness"]["cameras"])}))
    ChunkingConfig(**control["chunking"])
    limits = SafetyLimits.from_dict(data["safety"], base=cfg.safety_limits(), source="safety")
    assert cfg.rate_hz == loop.rate_hz and cfg.trajectory_time() == pytest.approx(0.35)
    assert set(loop.freshness.cameras) == set(cfg.cameras)
    low, high = cfg.workspace_box()
    assert np.all(np.asarray(limits.workspace_min_m) >= low)
    assert np.all(np.asarray(limits.workspace_max_m) <= high)
    assert "password" not in path.read_text().lower().replace("bosdyn_client_password", "")


def test_rpy_quaternion_conventions_match_the_control_core():
    rng = np.random.default_rng(0)
    for rpy in rng.uniform([-3.0, -1.4, -3.0], [3.0, 1.4, 3.0], size=(50, 3)):
        w, x, y, z = rpy_to_quat(rpy)
        assert math.isclose(w * w + x * x + y * y + z * z, 1.0, rel_tol=1e-12)
        np.testing.assert_allclose(quat_to_rpy(w, x, y, z), rpy, atol=1e-9)
        # same rotation as the control core's extrinsic-XYZ matrices
        rot = SE3Pose(0, 0, 0, SE3Pose.from_proto(_pose_proto(w, x, y, z)).rot).to_matrix()[:3, :3]
        np.testing.assert_allclose(rot, rpy_to_matrix(rpy), atol=1e-9)
        np.testing.assert_allclose(matrix_to_rpy(rot), rpy, atol=1e-9)


def test_decode_image_rejects_unsupported_formats():
    image = image_pb2.Image(rows=2, cols=2, format=image_pb2.Image.FORMAT_RAW,
                            pixel_format=image_pb2.Image.PIXEL_FORMAT_DEPTH_U16, data=b"\0" * 8)
    with pytest.raises(TheiaError, match="'depth'"):
        decode_image(image, "depth")
    image = image_pb2.Image(rows=2, cols=2, format=image_pb2.Image.FORMAT_RAW,
                            pixel_format=image_pb2.Image.PIXEL_FORMAT_RGBA_U8,
                            data=bytes(range(16)))
    out = decode_image(image, "rgba")
    assert out.shape == (2, 2, 3) and out[0, 1].tolist() == [4, 5, 6]


# -- helpers ---------------------------------------------------------------------------------
def _pose_proto(w: float, x: float, y: float, z: float):
    from bosdyn.api import geometry_pb2

    return geometry_pb2.SE3Pose(rotation=geometry_pb2.Quaternion(w=w, x=x, y=y, z=z))



def test_body_fisheye_frames_are_turned_upright() -> None:
    """The body fisheyes are mounted rotated (SDK get_image example: right 180, front-left
    -78, front-right -102 degrees); the hand camera passes unchanged."""
    from theia_ros.robots.spot.io import upright

    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :10] = 255  # a white square in the top-left corner
    np.testing.assert_array_equal(upright(img, "hand_color_image"), img)
    turned = upright(img, "right_fisheye_image")
    assert turned.shape == img.shape and turned[-5:, -5:].min() == 255  # now bottom-right
    assert turned[:10, :10].max() == 0
    left = upright(img, "frontleft_fisheye_image")  # -78: nearly a quarter turn clockwise
    assert left.shape[0] > left.shape[1]  # the landscape frame stands up
    ys, xs = np.nonzero(left[..., 0] > 128)
    assert xs.mean() > left.shape[1] / 2 and ys.mean() < left.shape[0] / 2  # top-right now
