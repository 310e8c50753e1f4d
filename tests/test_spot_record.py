"""Demo recording on Spot: the scripted drawer policy and the recorder node, over real gRPC.

THE SERVER IN THESE TESTS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE
(``tests/spot_standin``): a loopback TLS gRPC server built from the ``bosdyn-api`` servicers,
so the real ``bosdyn-client`` code path (auth, time sync, lease, power, robot command, robot
state, image service) runs end to end. Recorded datasets are read back with the real
``EpisodeDataset`` and compared with the RobotCommands the stand-in received.
"""
# ruff: noqa: F811 - pytest fixtures imported from spot_standin.fixtures

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from bosdyn.client.math_helpers import SE3Pose
from spot_standin import SpotStandIn
from spot_standin.fixtures import (  # noqa: F401
    PASSWORD,
    QUICK,
    USERNAME,
    config_for,
    robot_env,
)
from spot_standin.robot import CLAW_CLOSED_RAD, CLAW_OPEN_RAD, StandInRobot

from theia_ros.control.rotations import rotation_angle, rpy_to_matrix
from theia_ros.dataset import EpisodeDataset
from theia_ros.errors import TheiaError
from theia_ros.record.spot import record_spot
from theia_ros.record.spot_script import (
    DEMO_PHASES,
    DrawerScript,
    ScriptedDrawerPolicy,
    plan_demo,
    plan_reset,
)
from theia_ros.robots.spot.io import quat_to_rpy
from theia_ros.types import ActionKind, Observation

IMAGE_HW = (96, 128)
# quick script for tests: 2 cm per tick at 20 Hz (the safety filter allows 5 cm), 10 cm pull
FAST = DrawerScript(handle_xyz_m=(0.85, 0.0, 0.1), handle_rpy_rad=(0.0, 0.3, 0.1), speed_m_s=0.25,
                    pull_distance_m=0.1, start_offset_m=(-0.15, 0.0, 0.15),
                    start_jitter_m=0.02)


@pytest.fixture
def small_standin() -> Iterator[SpotStandIn]:
    """The stand-in with small camera frames (quicker JPEG + video encoding) and a claw that
    snaps to each command, so the recorded claw state is exactly one tick behind."""
    with SpotStandIn(username=USERNAME, password=PASSWORD, **QUICK, image_hw=IMAGE_HW,
                     claw_speed_per_s=math.inf) as server:
        yield server


def received_arm_poses(server: SpotStandIn) -> np.ndarray:
    """``[N, 7]`` hand pose (xyz, rpy) + claw open fraction of every accepted arm command."""
    rows = []
    for cmd in server.commands():
        sync = cmd.request.command.synchronized_command
        if (not cmd.accepted or not sync.arm_command.HasField("arm_cartesian_command")
                or not sync.gripper_command.HasField("claw_gripper_command")):
            continue  # not a tick's command (the safe stop's back-off move)
        points = sync.arm_command.arm_cartesian_command.pose_trajectory_in_task.points
        pose = SE3Pose.from_proto(points[-1].pose)
        angle = sync.gripper_command.claw_gripper_command.trajectory.points[-1].point
        fraction = (angle - CLAW_CLOSED_RAD) / (CLAW_OPEN_RAD - CLAW_CLOSED_RAD)
        rot = pose.rot
        rows.append([pose.x, pose.y, pose.z, *quat_to_rpy(rot.w, rot.x, rot.y, rot.z),
                     fraction])
    return np.asarray(rows, dtype=np.float64)


def find_block(haystack: np.ndarray, block: np.ndarray, atol: float = 1e-5) -> int:
    """Index where ``block`` ``[T, 7]`` appears as consecutive rows of ``haystack``, or -1."""
    for start in range(len(haystack) - len(block) + 1):
        if np.allclose(haystack[start:start + len(block)], block, atol=atol):
            return start
    return -1


# -- the script on its own ------------------------------------------------------------------
def test_plan_phases_steps_and_grip() -> None:
    period_s = 0.2
    start = FAST.start_pose(np.random.default_rng(3))
    plan = plan_demo(FAST, start, period_s)
    # phases in order, each present
    order = [p for i, p in enumerate(plan.phases) if i == 0 or plan.phases[i - 1] != p]
    assert order == list(DEMO_PHASES)
    # every step within the script's speed (position and rotation)
    poses = np.vstack([np.r_[start, 1.0], plan.waypoints])
    steps_m = np.linalg.norm(np.diff(poses[:, :3], axis=0), axis=1)
    assert steps_m.max() <= FAST.speed_m_s * period_s + 1e-9
    angles = [rotation_angle(rpy_to_matrix(b[3:6]) @ rpy_to_matrix(a[3:6]).T)
              for a, b in itertools.pairwise(poses)]
    assert max(angles) <= FAST.angular_speed_rad_s * period_s + 1e-9
    phases = np.array(plan.phases)
    grip = plan.waypoints[:, 6]
    assert np.all(grip[np.isin(phases, ["close", "pull"])] == 0.0)
    assert np.all(grip[np.isin(phases, ["approach", "insert", "release", "retreat"])] == 1.0)
    # the pull goes straight back along -x from the handle by pull_distance_m
    pull = plan.waypoints[phases == "pull"]
    np.testing.assert_allclose(pull[:, 1:6], np.tile(FAST.handle_pose[1:], (len(pull), 1)),
                               atol=1e-9)
    np.testing.assert_allclose(pull[-1, 0], FAST.handle_xyz_m[0] - FAST.pull_distance_m)
    moving = pull[: len(pull) - FAST.settle_ticks]
    assert np.all(np.diff(moving[:, 0]) < 0) and np.all(pull[len(moving) - 1:] == pull[-1])
    reset = plan_reset(FAST, np.array([0.55, 0, 0.26, 0, 0, 0]), start, period_s)
    np.testing.assert_allclose(reset.waypoints[-1, :6], start, atol=1e-9)


@pytest.mark.parametrize("script", [DrawerScript(), DrawerScript(speed_m_s=0.4,
                                                                 pull_distance_m=0.08)])
def test_default_plans_stay_inside_the_arm_reach(script: DrawerScript) -> None:
    """Every pose the default script passes through, from the ready pose over any jittered
    start to the pull's end, is reachable with a margin to the wrist-pitch limit: the old
    default (handle at z 0) skirted that limit, so the stand-in arm stalled on the approach
    in about one recording in two, and the pull's end was out of reach."""
    from theia_ros.record.spot_script import plan_reset
    from theia_ros.sim.spot import kinematics as kin

    ready = np.r_[kin.forward(kin.READY_Q)[0], 0.0, 0.0, 0.0]
    margin_rad = 0.15
    rng = np.random.default_rng(0)
    for _ in range(20):
        start = script.start_pose(rng)
        poses = np.vstack([ready, plan_reset(script, ready, start, 0.05).waypoints[:, :6],
                           plan_demo(script, start, 0.05).waypoints[:, :6]])
        q = kin.READY_Q
        for a, b in itertools.pairwise(poses):
            for f in np.linspace(0.0, 1.0, 5):
                pose = a + (b - a) * f
                q = kin.inverse(pose[:3], rpy_to_matrix(pose[3:6]), q)
                assert q is not None, f"{pose[:3]} out of reach"
                assert abs(q[4]) < kin.LIMITS_RAD[4, 1] - margin_rad, (pose[:3], q)


def _obs(pose: np.ndarray, gripper: float) -> Observation:
    return Observation(images={}, joint_positions=np.zeros(6), ee_pose=pose, gripper=gripper,
                       stamp_s=0.0)


@pytest.mark.parametrize(("reached", "grip_measured", "grasp_min_open", "expected"), [
    (True, 0.0, None, True), (False, 0.0, None, False),
    (True, 0.0, 0.1, False), (True, 0.3, 0.1, True)])
def test_success_check(reached, grip_measured, grasp_min_open, expected) -> None:
    script = DrawerScript(speed_m_s=0.4, grasp_min_open=grasp_min_open)
    policy = ScriptedDrawerPolicy(script)
    policy.run(plan_demo(script, script.start_pose(), 0.2))
    end = script.pull_end()
    while not policy.done:
        measured = end if reached else end + np.array([0.1, 0, 0, 0, 0, 0])
        action = policy(_obs(measured, grip_measured))
        assert action.shape == (1, 7)
        policy.advance()
    assert policy.success is expected


def test_script_outside_workspace_is_refused_before_connecting(small_standin,
                                                               robot_env, tmp_path) -> None:
    script = DrawerScript(handle_xyz_m=(0.9, 0.0, 0.0), pull_distance_m=0.7)  # pulls to x 0.2
    with pytest.raises(TheiaError, match=r"pull phase .* outside the workspace"):
        record_spot(config_for(small_standin), tmp_path / "ds", 1, script=script,
                    progress=False)
    assert small_standin.events() == [] and not (tmp_path / "ds").exists()
    with pytest.raises(TheiaError, match="'pull_distance_m'"):
        DrawerScript.from_mapping({"pull_distance_m": -1.0})
    with pytest.raises(TheiaError, match="unknown key"):
        DrawerScript.from_mapping({"handle_xyz": [1, 2, 3]}, source="script.yaml")


# -- end to end over gRPC -------------------------------------------------------------------
def test_record_scripted_episodes_through_bosdyn(small_standin, robot_env, tmp_path) -> None:
    root = tmp_path / "spot_drawer"
    cfg = config_for(small_standin)
    result = record_spot(cfg, root, 2, script=FAST, seed=7, progress=False)
    assert result.successes == [True, True] and result.frame_errors == 0

    ds = EpisodeDataset(root)
    assert ds.action_kind is ActionKind.EE_ABSOLUTE
    assert ds.meta["action_kind"] == "ee_absolute" and ds.robot_type == "spot"
    assert ds.num_episodes == 2 and ds.fps == 20 and ds.state_dim == 7
    assert [e.success for e in ds.episodes] == [True, True]
    assert [e.task for e in ds.episodes] == ["open the drawer"] * 2

    received = received_arm_poses(small_standin)
    offsets = []
    for i in range(2):
        ep = ds.episode(i)
        actions = ep["action"].astype(np.float64)
        assert actions.shape == (result.frames[i], 7) and len(actions) >= 10
        # every recorded action is exactly what a RobotCommand carried, in order
        offset = find_block(received, actions)
        assert offset >= 0, f"episode {i}: recorded actions not found among the commands"
        offsets.append(offset)
        # the demo really ends with closed-claw pulling then an open claw
        grip = actions[:, 6]
        assert grip.min() == 0.0 and grip[0] == 1.0 and grip[-1] == 1.0
        np.testing.assert_allclose(actions[:, 3:6], np.tile(FAST.handle_rpy_rad,
                                                            (len(actions), 1)), atol=1e-5)
        # images come from the stand-in's image service: re-render the frame the robot would
        # show for the recorded hand pose and compare (JPEG + H.264 are lossy)
        frames = ep["observation.images.front"]
        assert frames.shape == (len(actions), *IMAGE_HW, 3) and frames.dtype == np.uint8
        twin = StandInRobot(username="x", password="y", image_hw=IMAGE_HW)
        for t in (0, len(frames) // 2, len(frames) - 1):
            x, y, z = ep["observation.ee_pose"][t, :3]
            expected = twin.render("hand_color_image",
                                   hand_xyz=(float(x), float(y), float(z))).astype(np.int16)
            assert np.abs(frames[t].astype(np.int16) - expected).mean() < 6.0
        assert np.abs(frames[0].astype(np.int16) - frames[-1]).mean() > 1.0  # arm moved
        # observation state: 6 arm joints + the measured claw, which follows the commands
        # one tick later (the frame is the observation the command was chosen from)
        state = ep["observation.state"]
        np.testing.assert_allclose(state[1:, 6], grip[:-1], atol=1e-5)
    # episode 1 follows episode 0 after an unrecorded reset move, never overlapping it
    assert offsets[1] > offsets[0] + result.frames[0]
    # and the adapter shut down as configured: stowed, powered off, lease returned
    commanded = [e for e in small_standin.events()
                 if e in ("stow", "safe_power_off", "lease_return")]
    assert commanded[-3:] == ["stow", "safe_power_off", "lease_return"]


def test_append_with_failed_grasp_check(small_standin, robot_env, tmp_path) -> None:
    """Appending to a Spot dataset; the stand-in's claw closes fully (nothing to grasp), so a
    script that requires the handle to hold the claw open saves success = False."""
    root = tmp_path / "ds"
    cfg = config_for(small_standin)
    record_spot(cfg, root, 1, script=FAST, progress=False)
    strict = DrawerScript(**{**FAST.__dict__, "grasp_min_open": 0.1})
    result = record_spot(cfg, root, 1, script=strict, seed=1, progress=False)
    assert result.successes == [False] and result.episodes == [1]
    ds = EpisodeDataset(root)
    assert [e.success for e in ds.episodes] == [True, False]


def test_lease_revoked_mid_episode_drops_it_and_stops(small_standin, robot_env,
                                                      tmp_path) -> None:
    root = tmp_path / "ds"
    cfg = config_for(small_standin)
    state = small_standin.state
    revoked = threading.Event()

    def revoke_during_pull() -> None:
        was_open = False
        while not revoked.is_set():
            with state.lock:
                was_open = was_open or state.gripper_open > 0.5
                if was_open and state.gripper_open == 0.0:  # the claw closed on the handle
                    state.revoke_lease()  # someone took the lease while pulling
                    revoked.set()
            time.sleep(0.005)

    watcher = threading.Thread(target=revoke_during_pull, daemon=True)
    watcher.start()
    with pytest.raises(TheiaError, match="fault"):
        record_spot(cfg, root, 2, script=FAST, progress=False)
    revoked.set()
    watcher.join(2.0)
    ds = EpisodeDataset(root)
    assert ds.num_episodes == 0  # the interrupted episode was never saved
    refused = [c for c in small_standin.commands() if c.verdict.startswith("lease:")]
    assert len(refused) <= 1  # at most the one command in flight when the lease went
    assert "lease_revoked" in small_standin.events()


# -- recorder_node (real rclpy) with the Spot adapter: gamepad teleop -> absolute poses ------
def test_recorder_node_spot_gamepad(small_standin, robot_env, tmp_path) -> None:
    """A gamepad ``Joy`` (stick forward half-way, then the close button) drives the Spot
    adapter through ``recorder_node``; the deltas are integrated into absolute hand poses
    and the dataset records exactly the poses the stand-in received."""
    pytest.importorskip("rclpy")
    import rclpy
    from helpers_nodes import Spinner, call_trigger, ros_context, session_domain_id, wait_for
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Joy

    from theia_ros.robots.registry import RobotSetup
    from theia_ros.robots.spot.adapter import SpotAdapter
    from theia_ros.robots.spot.io import ARM_JOINTS
    from theia_ros.ros.recorder_node import RecorderNode

    cfg = config_for(small_standin)
    setup = RobotSetup(SpotAdapter(cfg), cfg.safety_limits(), None, images_from_topic=False,
                       joints_from_topic=False, joint_names=ARM_JOINTS)
    root = tmp_path / "spot_teleop"
    params = {"dataset": str(root), "task": "open the drawer", "rate_hz": 20.0,
              "teleop_type": "Joy", "teleop_topic": "/joy", "scale_linear_m": 0.01,
              "teleop_timeout_s": 1.0}
    with ros_context(session_domain_id() + 7) as ctx:
        node = RecorderNode(setup=setup, context=ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        peer = rclpy.create_node("spot_recorder_peer", context=ctx)
        joy_pub = peer.create_publisher(Joy, "/joy", 10)
        stop = threading.Event()
        close_claw = threading.Event()

        def push_stick() -> None:  # left stick forward half-way: +x at 0.5 cm per tick
            while not stop.is_set():
                buttons = [0, 1] if close_claw.is_set() else [0, 0]
                joy_pub.publish(Joy(axes=[0.0, 0.5, 0.0, 0.0, 0.0, 0.0], buttons=buttons))
                time.sleep(0.02)

        pusher = threading.Thread(target=push_stick, daemon=True)
        pusher.start()
        spinner = Spinner(ctx, node, peer)
        try:
            assert wait_for(lambda: node.loop.stats.commands >= 2, 10.0)
            res = call_trigger(peer, "/recorder_node/start")
            assert res.success, res.message
            assert wait_for(lambda: node.frames >= 6, 5.0)
            close_claw.set()
            assert wait_for(lambda: node.frames >= 12, 5.0)
            res = call_trigger(peer, "/recorder_node/save_success")
            assert res.success, res.message
        finally:
            stop.set()
            node.shutdown()
            spinner.close()
            node.destroy_node()
            peer.destroy_node()

    ds = EpisodeDataset(root)
    assert ds.action_kind is ActionKind.EE_ABSOLUTE and ds.robot_type == "spot"
    assert ds.num_episodes == 1 and ds.episodes[0].success is True and ds.fps == 20
    ep = ds.episode(0)
    actions = ep["action"].astype(np.float64)
    assert ep["observation.images.front"].shape[1:] == (*IMAGE_HW, 3)
    # absolute poses: x grows by 5 mm per commanded tick, y/z/orientation stay put
    np.testing.assert_allclose(np.diff(actions[:, 0]), 0.005, atol=1e-6)
    np.testing.assert_allclose(actions[:, 1:3], np.tile(actions[0, 1:3], (len(actions), 1)),
                               atol=1e-6)
    assert actions[0, 6] == 1.0 and actions[-1, 6] == 0.0  # the close button closed the claw
    # each recorded pose is the one a RobotCommand carried
    assert find_block(received_arm_poses(small_standin), actions) >= 0
    # the hand follows the streamed targets at finite speed: it trails each target by about
    # the streaming lead (a period + margin, 0.2 s at 0.1 m/s here) plus a step
    trail = actions[:, 0] - ep["observation.ee_pose"][:, 0]
    assert np.all(trail > 0.0) and np.all(trail < 0.005 + 0.2 * 0.1 + 0.006), trail
    commanded = [e for e in small_standin.events()
                 if e in ("stow", "safe_power_off", "lease_return")]
    assert commanded[-3:] == ["stow", "safe_power_off", "lease_return"]


def test_cli_entry_from_task_yaml(small_standin, robot_env, tmp_path, capsys) -> None:
    """``theia record --robot spot --scripted``: task YAML with a ``spot:`` block + a
    drawer-script YAML -> a dataset; without ``--scripted`` a clear refusal."""
    import yaml

    from theia_ros import cli

    task = {"task": "spot_drawer", "robot": "spot", "control": {"rate_hz": 20.0},
            "spot": {"hostname": "127.0.0.1", "port": small_standin.port,
                     "robot_cert": small_standin.cert_path, "rate_hz": 20.0,
                     "cameras": {"front": "hand_color_image"}, "power_timeout_s": 5.0},
            "safety": {"max_speed_m_s": 1.0}}  # 5 cm per tick at 20 Hz
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    script = {"speed_m_s": 0.4, "pull_distance_m": 0.08, "retreat_m": 0.0}
    (tmp_path / "script.yaml").write_text(yaml.safe_dump(script))
    argv = ["record", "--robot", "spot", "--config", str(tmp_path / "task.yaml"),
            "--script", str(tmp_path / "script.yaml"), "--out", str(tmp_path / "ds"),
            "--episodes", "1", "--seed", "0"]
    assert cli.main([*argv, "--scripted"]) == 0
    assert "saved 1 Spot episode(s) (1 successful)" in capsys.readouterr().out
    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.action_kind is ActionKind.EE_ABSOLUTE and ds.num_episodes == 1
    assert ds.episode(0, images=False)["action"][-1, 6] == 1.0  # no retreat: ends released
    assert cli.main(argv) == 2
    assert "--scripted" in capsys.readouterr().err


def test_script_faster_than_the_safety_limits_is_refused_before_connecting(
        small_standin, robot_env, tmp_path) -> None:
    """Limits are per second: a script the filter would slow down would never finish its
    plan, so it is refused up front."""
    script = DrawerScript(speed_m_s=0.4)
    with pytest.raises(TheiaError, match=r"0.4 m/s.*allow 0.25 m/s"):
        record_spot(config_for(small_standin), tmp_path / "ds", 1, script=script,
                    progress=False)
    assert small_standin.events() == [] and not (tmp_path / "ds").exists()
