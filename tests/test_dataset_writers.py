"""One writer per dataset: real processes racing to open, save and close the same dataset.

Three processes loop open / record two frames / save / close on one dataset for a few
seconds (one refuses at once when the dataset is busy, two wait a little). Whatever the
interleaving, no episode index is saved twice, every saved episode holds the frames of the
process that saved it, the dataset loads, and every refusal is one TheiaError line.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_dataset import frame_values, scene, write_demo_dataset

from theia_ros.dataset import DatasetWriter, EpisodeDataset
from theia_ros.dataset import writer as writer_module
from theia_ros.dataset.writer import LOCK_FILE
from theia_ros.errors import TheiaError

RACE_S = 2.0
WORKERS = ((11, 0.0), (12, 0.3), (13, 0.3))  # (frame seed, wait_s)


def _writer_loop(root: str, seed: int, wait_s: float, start, results) -> None:
    """Child process: open / save / close until the race time is up; report what happened."""
    saved: list[int] = []
    refused: list[str] = []
    errors: list[str] = []
    start.wait()
    end = time.monotonic() + RACE_S
    while time.monotonic() < end:
        try:
            writer = DatasetWriter.open(root, wait_s=wait_s)
        except TheiaError as exc:
            refused.append(str(exc))
            continue
        except Exception as exc:  # any other error is what the test reports
            errors.append(f"open: {exc!r}")
            continue
        try:
            writer.start_episode(f"worker {seed}")
            for t in range(2):
                state, ee_pose, action = frame_values(t, seed=seed)
                writer.add_frame({"front": scene(t, seed=seed)}, state, ee_pose, action)
            saved.append(writer.save_episode(success=True))
        except Exception as exc:
            errors.append(f"save: {exc!r}")
        finally:
            writer.close()
    results.put((seed, saved, refused, errors))


def test_racing_writers_never_share_a_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_demo_dataset(root, [3])
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer_loop, args=(str(root), seed, wait_s, start, results))
             for seed, wait_s in WORKERS]
    for p in procs:
        p.start()
    start.set()
    reports = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    saver: dict[int, int] = {}
    refusals = 0
    for seed, saved, refused, errors in reports:
        assert errors == [], errors
        for index in saved:
            assert index not in saver, f"episode {index} saved by workers {saver[index]}, {seed}"
            saver[index] = seed
        for line in refused:
            assert "\n" not in line and "another DatasetWriter has this dataset open" in line
        refusals += len(refused)
    assert len(saver) >= 3, "the race saved almost nothing; the test proves nothing"
    assert refusals >= 1, "no writer was ever refused; the test proves nothing"

    ds = EpisodeDataset(root)
    assert ds.num_episodes == 1 + len(saver) and sorted(saver) == list(range(1, ds.num_episodes))
    for index, seed in saver.items():
        ep = ds.episode(index)
        np.testing.assert_array_equal(ep["action"][1], frame_values(1, seed=seed)[2])
        assert ds.episodes[index].length == 2
    assert not (root / ".staging").exists()


def test_a_waiting_writer_gets_the_dataset_when_the_first_closes(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_demo_dataset(root, [3])
    first = DatasetWriter.open(root)
    with pytest.raises(TheiaError, match=r"another DatasetWriter .*\(waited 0.2 s\)"):
        DatasetWriter.open(root, wait_s=0.2)
    start, results = threading.Event(), queue.Queue()
    # flock locks belong to an open file, so a thread with its own open() is a second writer
    waiter = threading.Thread(target=_writer_loop, args=(str(root), 21, 30.0, start, results))
    waiter.start()
    start.set()
    time.sleep(0.5)  # the waiter is waiting for the lock
    first.close()
    _, saved, refused, errors = results.get(timeout=60)
    waiter.join(timeout=30)
    assert errors == [] and refused == [] and saved[0] == 1


def test_the_lock_file_is_never_deleted_and_is_not_data(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_demo_dataset(root, [2])
    assert (root / LOCK_FILE).is_file()  # a close deletes .staging, never the lock file
    with DatasetWriter.open(root) as w:
        w.start_episode("open the door")
        state, ee_pose, action = frame_values(0)
        w.add_frame({"front": scene(0)}, state, ee_pose, action)
        w.save_episode(success=True)
    assert (root / LOCK_FILE).is_file() and EpisodeDataset(root).num_episodes == 2
    # a directory holding only a lock file left by a failed create counts as empty
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / LOCK_FILE).touch()
    DatasetWriter.create(empty, fps=5, robot_type="wx250s").close()


def test_a_failing_disk_is_one_clear_line(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError while saving (here: the commit's rename seam raising "no space left",
    standing in for a full disk) is one TheiaError, and the episode can be saved again."""
    root = tmp_path / "ds"
    write_demo_dataset(root, [2])
    w = DatasetWriter.open(root)
    w.start_episode("open the door")
    state, ee_pose, action = frame_values(0)
    w.add_frame({"front": scene(0)}, state, ee_pose, action)

    def full_disk(src: Path, dst: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(writer_module, "_replace", full_disk)
    with pytest.raises(TheiaError, match=r"saving episode 1 failed .*still staged"):
        w.save_episode(success=True)
    monkeypatch.undo()
    assert w.save_episode(success=True) == 1  # still staged: saving again works
    w.close()
    assert EpisodeDataset(root).num_episodes == 2
