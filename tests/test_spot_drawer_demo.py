"""``theia demo --task spot_drawer`` end to end, shrunk: record -> train -> export -> closed loop.

Runs the real ``SpotAdapter`` / ``bosdyn-client`` against the simulated Spot
(``theia_ros.sim.spot``, a stand-in, not Boston Dynamics' software). Slow (~3 min on 2 cores).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("bosdyn.client")
pytest.importorskip("torch")


@pytest.mark.slow
def test_quick_spot_drawer_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    from training.demo.spot_pipeline import SpotDemoConfig, run_spot_demo

    config = SpotDemoConfig.quick(demos=2, iters=20, eval_episodes=1, max_steps=25)
    report = run_spot_demo(config, tmp_path, show_progress=False)
    assert report["recorded"]["episodes"] == 2  # only successful demos are kept
    info = json.loads((tmp_path / "dataset" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2
    assert (tmp_path / "bundle" / "bundle.yaml").exists()
    (episode,) = report["per_episode"]
    assert episode["steps"] >= 20  # the loop acted at 5 Hz through the adapter
    assert 0.0 <= episode["opening_m"] <= 0.3
    assert report["timing"]["tick_ms"]["p50"] is not None
    assert (tmp_path / "rollout.mp4").exists()
    assert json.loads((tmp_path / "report.json").read_text())["success"]["n"] == 1
    assert (tmp_path / "report.png").exists() and (tmp_path / "rollout.png").exists()
    # the same bundle through `theia eval --task spot_drawer`
    from theia_ros.cli import main as theia_main

    rc = theia_main(["eval", str(tmp_path / "bundle"), "--task", "spot_drawer",
                     "--episodes", "1", "--max-steps", "8", "--video-episodes", "0",
                     "--out", str(tmp_path / "eval")])
    assert rc == 0
    again = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert again["success"]["n"] == 1 and again["per_episode"][0]["steps"] >= 5


def test_report_figures(tmp_path):
    """The drawer report picture and the rollout strip come from the run's own numbers and
    frames: the strip's tiles are the video's evenly spaced frames, in order."""
    import cv2
    import numpy as np

    from theia_ros.evaluate.video import VideoWriter
    from training.demo.report import rate_entry
    from training.demo.spot_report import write_frame_strip, write_spot_plot

    trials = [{"seed": 10_000 + i, "success": i != 1, "opening_m": 0.15 * (i != 1),
               "max_opening_m": 0.16, "fault": "robot_fault" if i == 1 else None}
              for i in range(3)]
    report = {"per_episode": trials, "success": rate_entry(2, 3)}
    png = write_spot_plot(tmp_path / "report.png", report, [30.0, 31.0, 45.0])
    height, width = cv2.imread(str(png)).shape[:2]
    assert width > 2 * height > 400  # two panels side by side

    writer = VideoWriter(tmp_path / "v.mp4", 5.0)
    levels = np.linspace(20, 235, 10).astype(np.uint8)
    for level in levels:
        writer.write(np.full((64, 64, 3), level, np.uint8))
    writer.close()
    strip = cv2.imread(str(write_frame_strip(tmp_path / "v.mp4", tmp_path / "s.png",
                                             frames=4, width=32)))
    assert strip.shape == (32, 128, 3)
    tiles = [float(strip[:, 32 * i:32 * (i + 1)].mean()) for i in range(4)]
    np.testing.assert_allclose(tiles, levels[[0, 3, 6, 9]], atol=4)
    first = cv2.imread(str(write_frame_strip(tmp_path / "v.mp4", tmp_path / "f.png", frames=2,
                                             width=32, episode_frames=4)))
    np.testing.assert_allclose([first[:, :32].mean(), first[:, 32:].mean()],
                               levels[[0, 3]], atol=4)  # only the first trial's frames
    assert write_frame_strip(tmp_path / "missing.mp4", tmp_path / "none.png") is None


def test_stage_keys_survive_the_stage_book_and_refuse_other_settings(tmp_path):
    """A re-run with the same settings skips a finished stage (the key read back from
    stages.json equals the new one: tuples are stored as lists); other settings are refused."""
    from theia_ros.errors import TheiaError
    from training.demo.spot_pipeline import SpotDemoConfig, spot_stage_keys
    from training.demo.stages import StageBook

    keys = spot_stage_keys(SpotDemoConfig())
    (tmp_path / "policy").mkdir()
    StageBook.load(tmp_path).finish("policy", keys["policy"], 1.0)
    book = StageBook.load(tmp_path)
    assert book.is_done("policy", spot_stage_keys(SpotDemoConfig())["policy"],
                        tmp_path / "policy")
    other = spot_stage_keys(SpotDemoConfig(down_dims=(64, 128)))["policy"]
    with pytest.raises(TheiaError, match="down_dims"):
        book.is_done("policy", other, tmp_path / "policy")
    assert spot_stage_keys(SpotDemoConfig(eval_episodes=5)) == keys  # evaluation only


def test_recording_resumes_after_an_interruption(tmp_path, monkeypatch):
    """Re-running the record stage finishes the dataset instead of adding another full set:
    the seeds file says which scenes were used, and a save the seeds file missed (killed in
    between) is recovered."""
    monkeypatch.setenv("MUJOCO_GL", "egl")
    from theia_ros.dataset import EpisodeDataset
    from theia_ros.errors import TheiaError
    from theia_ros.sim.spot.drawer_task import SEEDS_FILE, record_drawer_demos

    out = tmp_path / "ds"
    record_drawer_demos(out, 1, first_seed=5, image_hw=(64, 64), progress=False)
    seeds_path = out / SEEDS_FILE
    assert json.loads(seeds_path.read_text()) == {"seeds": [5], "attempts": 1}
    seeds_path.write_text(json.dumps({"seeds": [], "attempts": 0}))  # killed before the note
    res = record_drawer_demos(out, 2, first_seed=5, image_hw=(64, 64), progress=False)
    assert len(res.episodes) == 1 and res.seeds == [6]  # the next scene, not seed 5 again
    assert EpisodeDataset(out).num_episodes == 2
    assert json.loads(seeds_path.read_text()) == {"seeds": [5, 6], "attempts": 2}
    assert record_drawer_demos(out, 2, first_seed=5, progress=False) is None  # done
    seeds_path.write_text(json.dumps({"seeds": [], "attempts": 0}))
    with pytest.raises(TheiaError, match="not a drawer demo dataset"):
        record_drawer_demos(out, 3, first_seed=5, progress=False)


@pytest.mark.parametrize("flag", [["--fast"], ["--finetune"], ["--camera", "wrist"],
                                  ["--epochs", "3"]])
def test_door_only_flags_are_refused_for_the_spot_demo(flag, tmp_path, capsys):
    from theia_ros.cli import main as theia_main

    out = tmp_path / "spot"
    assert theia_main(["demo", "--task", "spot_drawer", "--out", str(out), *flag]) == 2
    assert flag[0] in capsys.readouterr().err and not out.exists()


def test_record_cli_on_the_simulated_spot_fills_the_dataset_up_to_episodes(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    from theia_ros.cli import main as theia_main

    argv = ["record", "--robot", "spot", "--scripted", "--sim", "--out", str(tmp_path / "d"),
            "--episodes", "1"]
    assert theia_main(argv) == 0
    assert "saved 1 successful simulated Spot episode(s)" in capsys.readouterr().out
    assert theia_main(argv) == 0  # already there: nothing recorded twice
    assert "already holds 1" in capsys.readouterr().out


def test_a_faulted_trial_does_not_spoil_the_next(monkeypatch):
    """A policy that fails faults its trial (the loop safe-stops: stow, sit, power off); the
    next trial gets a fresh connection (power on, stand) and runs its ticks."""
    monkeypatch.setenv("MUJOCO_GL", "egl")
    import numpy as np

    from theia_ros.control import ChunkingConfig
    from theia_ros.evaluate.spot_drawer import run_drawer_episodes

    calls = {"n": 0}

    def policy(obs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("first trial's policy breaks")
        return np.tile(np.r_[obs.ee_pose, obs.gripper], (4, 1))  # hold the hand where it is

    run = run_drawer_episodes(policy, [10_000, 10_001], max_steps=4,
                              chunking=ChunkingConfig(replan_every=1))
    first, second = run.episodes
    assert first.fault is not None and "breaks" in first.fault
    assert second.fault is None and second.steps >= 3 and not second.success
