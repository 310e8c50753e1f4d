"""``theia record``: key parsing, and a scripted key stream recorded into a loadable dataset.

The only stand-in is the keyboard: ``ScriptedKeys`` feeds the session what a terminal would
(one string per tick); the sim, the safety filter and the dataset writer are the real ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from theia_ros.control import ManualClock, SafetyFilter, SafetyLimits
from theia_ros.errors import TheiaError
from theia_ros.record.keys import (
    DISCARD,
    GRIPPER,
    MAX_PRESSES,
    QUIT,
    SAVE,
    STEP_M,
    STEP_RAD,
    ScriptedKeys,
    keys_to_command,
    parse_keys,
)
from theia_ros.record.session import open_writer, run_session


def test_parse_keys_handles_controls_arrows_and_case() -> None:
    assert parse_keys("wW d") == ["w", "w", GRIPPER, "d"]
    assert parse_keys("\x1b[A") == []  # an arrow key is not Esc
    assert parse_keys("a\x1b[1;5Cs") == ["a", "s"]
    assert parse_keys("\r\x7f\x1b") == [SAVE, DISCARD, QUIT]
    assert parse_keys("x?9") == []


def test_keys_to_command_sums_and_caps_presses() -> None:
    cmd = keys_to_command(["w", "w", "a", "q", "f"])
    np.testing.assert_allclose(cmd.delta, [2 * STEP_M, STEP_M, -STEP_M, 0, 0, STEP_RAD])
    capped = keys_to_command(["d"] * (MAX_PRESSES + 4))
    assert capped.delta[1] == pytest.approx(-MAX_PRESSES * STEP_M)
    assert keys_to_command([GRIPPER, GRIPPER]).toggle_gripper is False
    both = keys_to_command([SAVE, QUIT, "w"])
    assert both.control == SAVE and both.delta[0] == pytest.approx(STEP_M)
    assert not keys_to_command([]).moves


@pytest.fixture()
def sim_robot():
    from theia_ros.robots.sim import SimWidowX

    clock = ManualClock()
    robot = SimWidowX(seed=3, image_size=64, clock=clock.now)
    robot.connect()
    yield robot, clock
    robot.disconnect()


def test_scripted_session_writes_loadable_episodes(tmp_path, sim_robot) -> None:
    from theia_ros.dataset import EpisodeDataset

    robot, clock = sim_robot
    ticks = ["", "w", "ww", "r", " ", "d", "\r",  # episode 0: 5 frames, then save
             "", "a", "\x7f",  # next: 1 frame, discarded
             "s", "\r",  # episode 1: 1 frame, saved
             "\x1b"]
    writer = open_writer(tmp_path / "ds", fps=5, image_size=64)
    start_pose = robot.observe().ee_pose
    result = run_session(robot, writer, ScriptedKeys(ticks), SafetyFilter(SafetyLimits.wx250s()),
                         first_seed=3, clock=clock)
    writer.close()
    assert result.saved == [0, 1]
    assert result.discarded == 1
    assert clock.now() == pytest.approx(0.2 * (len(ticks) - 1))  # paced at 5 Hz

    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.num_episodes == 2 and ds.fps == 5
    assert [e.length for e in ds.episodes] == [5, 1]
    assert [e.success for e in ds.episodes] == [False, False]  # the door stayed shut
    ep = ds.episode(0)
    assert ep["observation.images.front"].shape == (5, 64, 64, 3)
    assert ep["observation.state"].shape == (5, 7)
    actions = ep["action"]
    np.testing.assert_allclose(actions[:, 0], [STEP_M, 2 * STEP_M, 0, 0, 0], atol=1e-6)
    assert actions[2, 2] == pytest.approx(STEP_M, abs=1e-6)
    assert actions[4, 1] == pytest.approx(-STEP_M, abs=1e-6)
    np.testing.assert_allclose(actions[:, 6], [1, 1, 1, 0, 0])  # space closed the gripper
    # the recorded state is the observation the command was chosen from: frame 0 = start
    assert ep["observation.ee_pose"][0] == pytest.approx(start_pose, abs=1e-6)
    assert ep["observation.ee_pose"][3, 0] - ep["observation.ee_pose"][0, 0] > 0.02
    assert ds.episode(1)["action"][0, 0] == pytest.approx(-STEP_M, abs=1e-6)


def test_open_writer_appends_and_rejects_other_camera(tmp_path) -> None:
    w = open_writer(tmp_path / "ds", fps=5, image_size=64)
    w.close()
    again = open_writer(tmp_path / "ds", fps=5, image_size=64)  # append mode
    assert again.num_episodes == 0
    again.close()
    with pytest.raises(TheiaError, match="cameras"):
        open_writer(tmp_path / "ds", fps=5, image_size=96)
    with pytest.raises(TheiaError, match="fps 10"):  # 10 Hz frames under fps=5: refused
        open_writer(tmp_path / "ds", fps=10, image_size=64)


def test_keyboard_teleop_motion_keys_mean_what_theia_record_means() -> None:
    """One key map: the ROS teleop's Twist for a key points where ``theia record`` moves."""
    from theia_ros.ros.keyboard_teleop import QUIT_KEYS, SERVICE_KEYS, twist_for

    axes = [("linear", "x"), ("linear", "y"), ("linear", "z"),
            ("angular", "x"), ("angular", "y"), ("angular", "z")]
    for key in "wsadrfjlikqe":
        delta = keys_to_command([key]).delta
        twist = twist_for(key, 1.0)
        got = [twist[part][axis] for part, axis in axes]
        np.testing.assert_array_equal(np.sign(got), np.sign(delta), err_msg=key)
    assert SERVICE_KEYS["\r"] == "save_success" and SERVICE_KEYS["\x7f"] == "discard"
    assert "\x1b" in QUIT_KEYS and "q" not in QUIT_KEYS and "s" not in SERVICE_KEYS


# -- theia record from the command line: scripted keys, pipes, the viewer guard -----------
def test_key_scripts_parse_one_tick_per_character() -> None:
    from theia_ros.record.keys import script_ticks

    assert script_ticks("ww.r") == ["w", "w", "", "r"]
    assert script_ticks("w\\nd\\b\\e") == ["w", "\r", "d", "\x7f", "\x1b"]
    assert script_ticks("a\r\ns\n") == ["a", "\r", "s", "\r"]  # file lines end in a save
    assert parse_keys(script_ticks(" ")[0]) == [GRIPPER]
    with pytest.raises(TheiaError, match="'x' at position 2 is not a key"):
        script_ticks("wwx")


def test_cli_records_a_key_script_without_a_terminal(tmp_path, monkeypatch, capsys) -> None:
    from theia_ros.cli import main as theia_main
    from theia_ros.dataset import EpisodeDataset

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "ds"
    rc = theia_main(["record", "--robot", "sim", "--out", str(out), "--image-size", "64",
                     "--seed", "3", "--keys", "..wwr\\nsd\\bdd\\n"])
    assert rc == 0, capsys.readouterr().err
    ds = EpisodeDataset(out)
    assert [e.length for e in ds.episodes] == [3, 2]  # idle ticks before a command are skipped
    np.testing.assert_allclose(ds.episode(0)["action"][:, 0], [STEP_M, STEP_M, 0], atol=1e-6)
    np.testing.assert_allclose(ds.episode(1)["action"][:, 1], [-STEP_M, -STEP_M], atol=1e-6)
    assert "saved 2 episode(s)" in capsys.readouterr().err


def test_cli_reads_a_key_script_from_a_pipe(tmp_path, monkeypatch) -> None:
    import io

    from theia_ros.cli import main as theia_main
    from theia_ros.dataset import EpisodeDataset

    monkeypatch.setattr("sys.stdin", io.StringIO("rrr\nfa\n"))
    out = tmp_path / "piped"
    assert theia_main(["record", "--robot", "sim", "--out", str(out), "--image-size", "64",
                       "--keys-file", "-", "--viewer", "off"]) == 0
    assert [e.length for e in EpisodeDataset(out).episodes] == [3, 2]


def test_cli_piped_stdin_without_a_script_fails_before_creating_anything(
        tmp_path, monkeypatch, capsys) -> None:
    import io

    from theia_ros.cli import main as theia_main

    monkeypatch.setattr("sys.stdin", io.StringIO("wwww\n"))
    out = tmp_path / "never"
    assert theia_main(["record", "--robot", "sim", "--out", str(out), "--viewer", "off"]) == 2
    err = capsys.readouterr().err
    assert "stdin is not a terminal" in err and "--keys" in err
    assert not out.exists()
    assert theia_main(["record", "--robot", "sim", "--out", str(out), "--keys", "w?"]) == 2
    assert "not a key" in capsys.readouterr().err and not out.exists()


def test_viewer_only_where_a_display_exists() -> None:
    from theia_ros.record.viewer import display_available, want_viewer

    desktop, headless = {"DISPLAY": ":0"}, {"TERM": "xterm"}
    assert display_available({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert not display_available(headless, "linux")
    assert not display_available(desktop, "darwin")  # needs mjpython there
    assert want_viewer("auto", desktop, "linux") and not want_viewer("auto", headless, "linux")
    assert not want_viewer("off", desktop, "linux")
    with pytest.raises(TheiaError, match="no display"):
        want_viewer("on", headless, "linux")
