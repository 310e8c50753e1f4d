"""Crash safety: a recorder killed (SIGKILL) mid-episode or mid-save never hurts saved episodes.

The mid-episode kills are real: a writer runs in a subprocess and is SIGKILLed after it
reports frames. Kills inside ``save_episode`` are simulated in-process by making the
commit step raise at a chosen file (``writer._replace``, the one seam), then releasing
the writer's lock as the kernel would for a dead process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers_dataset import frame_values, scene, write_demo_dataset

from theia_ros.dataset import DatasetWriter, EpisodeDataset
from theia_ros.dataset import writer as writer_module
from theia_ros.errors import TheiaError

REPO = Path(__file__).resolve().parents[1]
SAVED = [6, 5]  # episodes saved before the kill

RECORDER = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    from helpers_dataset import frame_values, scene
    from theia_ros.dataset import DatasetWriter
    w = DatasetWriter.open({root!r})
    w.start_episode("open the door")
    t = 0
    while True:
        state, ee_pose, action = frame_values(t, seed=7)
        w.add_frame({{"front": scene(t, seed=7)}}, state, ee_pose, action)
        t += 1
        if t == {report_after}:
            print("READY", flush=True)
        time.sleep(0.002)
""")


def _kill_recorder_mid_episode(root: Path, report_after: int = 8) -> None:
    """Run a recorder in a subprocess, SIGKILL it while it is appending frames."""
    code = RECORDER.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(root),
                           report_after=report_after)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "READY", proc.stderr.read() if proc.stderr else ""
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _assert_saved_episodes_intact(root: Path) -> EpisodeDataset:
    ds = EpisodeDataset(root)
    for k, length in enumerate(SAVED):
        ep = ds.episode(k)
        assert ep["action"].shape == (length, 7)
        np.testing.assert_array_equal(ep["action"][-1], frame_values(length - 1, seed=k)[2])
        ref = np.stack([scene(t, seed=k) for t in range(length)])
        assert np.abs(ep["observation.images.front"].astype(np.int16) - ref).mean() < 1.5
    return ds


@pytest.mark.parametrize("unfinished", ["drop", "recover"])
def test_sigkill_mid_episode(tmp_path: Path, unfinished: str) -> None:
    root = tmp_path / "ds"
    write_demo_dataset(root, SAVED)
    _kill_recorder_mid_episode(root)
    # Straight after the kill (before any cleanup) the dataset is loadable and unchanged.
    ds = _assert_saved_episodes_intact(root)
    assert ds.num_episodes == len(SAVED)
    assert (root / ".staging/episode").exists()

    with DatasetWriter.open(root, unfinished=unfinished) as w:
        if unfinished == "drop":
            assert w.recovered_episode is None and w.num_episodes == len(SAVED)
        else:
            assert w.recovered_episode == len(SAVED)
        w.start_episode("close the door")
        for t in range(3):
            state, ee_pose, action = frame_values(t, seed=8)
            w.add_frame({"front": scene(t, seed=8)}, state, ee_pose, action)
        new_index = w.save_episode(success=True)
    assert not (root / ".staging").exists()

    ds = _assert_saved_episodes_intact(root)
    assert ds.num_episodes == len(SAVED) + 1 + (unfinished == "recover")
    assert new_index == ds.num_episodes - 1
    assert ds.episode(new_index)["action"].shape == (3, 7)
    if unfinished == "recover":
        info = ds.episodes[len(SAVED)]
        assert info.recovered and info.success is False and info.length >= 8
        ep = ds.episode(len(SAVED))
        expected = np.stack([frame_values(t, seed=7)[2] for t in range(info.length)])
        np.testing.assert_array_equal(ep["action"], expected)
        ref = np.stack([scene(t, seed=7) for t in range(info.length)])
        assert np.abs(ep["observation.images.front"].astype(np.int16) - ref).mean() < 1.5


def _record_one(w: DatasetWriter, length: int = 4, seed: int = 3) -> None:
    w.start_episode("open the door")
    for t in range(length):
        state, ee_pose, action = frame_values(t, seed=seed)
        w.add_frame({"front": scene(t, seed=seed)}, state, ee_pose, action)


@pytest.mark.parametrize("unfinished", ["drop", "recover"])
@pytest.mark.parametrize("fail_at", [0, 2, 4])  # moves: video, data, episode row, stats, info
def test_kill_during_commit_rolls_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          fail_at: int, unfinished: str) -> None:
    root = tmp_path / "ds"
    write_demo_dataset(root, SAVED)
    w = DatasetWriter.open(root)
    _record_one(w)
    calls = {"n": 0}
    real_replace = writer_module._replace

    def dying_replace(src: Path, dst: Path) -> None:
        if calls["n"] == fail_at:
            raise KeyboardInterrupt("killed mid-commit")
        calls["n"] += 1
        real_replace(src, dst)

    monkeypatch.setattr(writer_module, "_replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        w.save_episode(success=True)
    w._release()  # the kernel drops the lock of a dead process
    monkeypatch.setattr(writer_module, "_replace", real_replace)

    ds = _assert_saved_episodes_intact(root)  # info.json not replaced yet: old view
    assert ds.num_episodes == len(SAVED)
    # manifest present: the save completes, and its staged frames are not saved twice
    with DatasetWriter.open(root, unfinished=unfinished) as w2:
        assert w2.num_episodes == len(SAVED) + 1
    ds = _assert_saved_episodes_intact(root)
    assert ds.num_episodes == len(SAVED) + 1
    np.testing.assert_array_equal(ds.episode(len(SAVED))["action"][3], frame_values(3, 3)[2])
    assert ds.episodes[len(SAVED)].success is True


def test_kill_before_manifest_drops_partial_commit(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    write_demo_dataset(root, SAVED)
    w = DatasetWriter.open(root)
    _record_one(w)

    def dying_encode(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt("killed while encoding")

    monkeypatch.setattr(writer_module, "encode_video", dying_encode)
    with pytest.raises(KeyboardInterrupt):
        w.save_episode(success=True)
    w._release()
    monkeypatch.undo()
    with DatasetWriter.open(root, unfinished="recover") as w2:
        assert not (root / ".staging/commit").exists()
        assert w2.recovered_episode == len(SAVED)  # the staged frames were still there
    ds = _assert_saved_episodes_intact(root)
    assert ds.episodes[len(SAVED)].length == 4 and ds.episodes[len(SAVED)].recovered


def test_exception_inside_with_keeps_episode_staged(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_demo_dataset(root, SAVED)
    with pytest.raises(RuntimeError), DatasetWriter.open(root) as w:
        _record_one(w, length=3)
        raise RuntimeError("teleop crashed")
    with DatasetWriter.open(root, unfinished="recover") as w2:
        assert w2.recovered_episode == len(SAVED)
    with pytest.raises(TheiaError, match="unfinished"):
        DatasetWriter.open(root, unfinished="keep")  # type: ignore[arg-type]
