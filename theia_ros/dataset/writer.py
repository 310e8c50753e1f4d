"""``DatasetWriter``: what every recorder uses to append demonstrations at the control rate.

Usage::

    w = DatasetWriter.create("demos/door", fps=5, robot_type="wx250s",
                             cameras={"front": (224, 224)}, state_dim=7,
                             action_kind=ActionKind.EE_DELTA)
    w.start_episode("open the door")
    for ...:                                   # one call per control step
        w.add_frame(images={"front": rgb}, state=q, ee_pose=pose, action=a)
    w.save_episode(success=True)               # or w.discard_episode(); re-record =
    w.close()                                  #    discard_episode() + start_episode()

Crash safety. Frames of the running episode go to ``.staging/episode/`` as raw bytes (see
``staging.py``); nothing under ``data/``, ``videos/`` or ``meta/`` changes until
``save_episode``. Saving builds every new file (videos, data, episode row, tasks, stats,
info) in ``.staging/commit/``, fsyncs them, writes a manifest atomically, then moves the
files into place with ``os.replace`` (``meta/info.json`` last: it is the commit point).
``DatasetWriter.open`` finishes a commit whose manifest exists, drops one without, and then
drops (default) or recovers (``unfinished="recover"``: saved with ``success=False``,
``recovered=True``) a staged episode. So a kill at any point leaves every earlier episode
intact and the dataset loadable.

One writer per dataset: ``create``/``open`` take an ``flock`` (released by the kernel when
the process dies) on ``.writer.lock`` in the dataset root. That file is never deleted, so
every writer locks the same file; a lock file inside ``.staging`` (which ``close`` removes)
let a writer that had opened the old file lock a deleted one while a third made a new one,
and two writers then wrote the same episode index. A refused writer gets one
:class:`TheiaError` line; ``wait_s`` waits for the current writer to close instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from theia_ros.dataset import layout
from theia_ros.dataset.layout import (
    ACTION_KEY,
    CAPTURE_TIME_KEY,
    EE_POSE_KEY,
    STATE_KEY,
    image_key,
)
from theia_ros.dataset.staging import EpisodeStage
from theia_ros.dataset.stats import Stats, episode_stats, merge_stats, stats_from_json
from theia_ros.dataset.tables import (
    episode_row,
    frame_table,
    read_tasks,
    stats_to_json,
    tasks_table,
    write_parquet,
)
from theia_ros.dataset.video import VideoSettings, encode_video
from theia_ros.errors import TheiaError
from theia_ros.types import ACTION_DIM, ActionKind

log = logging.getLogger(__name__)

COMMIT_DIR = "commit"
MANIFEST = "commit.json"
EPISODE_DIR = "episode"
LOCK_FILE = ".writer.lock"  # in the dataset root, never deleted (see the module docstring)
LOCK_POLL_S = 0.05


def _replace(src: Path, dst: Path) -> None:
    """``os.replace`` (a seam the crash tests use to stop a commit half-way)."""
    os.replace(src, dst)


def apply_pending_commit(root: Path) -> bool:
    """Finish (manifest present) or drop (no manifest) an interrupted save. True if finished."""
    staging = root / layout.STAGING_DIR
    manifest = staging / MANIFEST
    commit_dir = staging / COMMIT_DIR
    if manifest.exists():
        try:
            files = layout.read_json(manifest)["files"]
        except (TheiaError, KeyError, TypeError):
            files = None  # a torn manifest cannot happen (atomic write); be safe anyway
        if files is not None:
            for rel in files:
                src, dst = commit_dir / rel, root / rel
                if src.exists():  # already moved when a previous apply was interrupted
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    _replace(src, dst)
                    layout.fsync_dir(dst.parent)
        manifest.unlink()
        shutil.rmtree(commit_dir, ignore_errors=True)
        return files is not None
    if commit_dir.exists():
        shutil.rmtree(commit_dir)
    return False


class DatasetWriter:
    """Appends episodes to a LeRobot-v3 dataset directory. Build with ``create``/``open``."""

    def __init__(self, root: Path, info: dict[str, Any], video: VideoSettings) -> None:
        self.root = root
        self.info = info
        self.video = video
        self.fps = int(info["fps"])
        self.action_kind = ActionKind(info["action_kind"])
        self.cameras: dict[str, tuple[int, int]] = {
            cam: tuple(info["features"][image_key(cam)]["shape"][:2])  # type: ignore[misc]
            for cam in layout.camera_names(info)}
        self.state_dim = int(info["features"][STATE_KEY]["shape"][0])
        self.has_ee_pose = EE_POSE_KEY in info["features"]
        self.stats: Stats | None = None
        self.tasks: dict[str, int] = {}
        self.recovered_episode: int | None = None  # set by open(unfinished="recover")
        self._stage: EpisodeStage | None = None
        self._first_stamp_s: float | None = None
        self._last_stamp_s: float | None = None
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        root: str | Path,
        fps: int,
        robot_type: str,
        cameras: dict[str, tuple[int, int]] | None = None,
        state_dim: int = 7,
        action_kind: ActionKind | str = ActionKind.EE_DELTA,
        *,
        state_names: list[str] | None = None,
        has_ee_pose: bool = True,
        video: VideoSettings | None = None,
        wait_s: float = 0.0,
    ) -> DatasetWriter:
        """New empty dataset at ``root`` (must not exist or be empty).

        Args:
            fps: control rate in Hz (an integer, as LeRobot requires).
            cameras: camera name -> ``(H, W)``; default ``{"front": (224, 224)}``.
            state_dim: ``J + 1`` (arm joints in rad, then gripper open fraction).
            action_kind: what the 7 action numbers mean (``ee_delta`` | ``ee_absolute``).
            has_ee_pose: store ``observation.ee_pose`` ``[6]`` (xyz m + rpy rad).
            video: encoder settings (default H.264 yuv444p CRF 10).
            wait_s: how long to wait for another writer of ``root`` to close.
        """
        root = Path(root)
        if root.exists() and (not root.is_dir()
                              or any(p.name != LOCK_FILE for p in root.iterdir())):
            raise TheiaError(f"{root}: already exists and is not empty; "
                             "use DatasetWriter.open to append to a dataset")
        if isinstance(fps, float) and fps.is_integer():
            fps = int(fps)
        if not isinstance(fps, int) or isinstance(fps, bool) or fps <= 0:
            raise TheiaError(f"fps: expected a positive integer (Hz), got {fps!r}")
        cameras = dict(cameras) if cameras is not None else {"front": (224, 224)}
        for cam, hw in cameras.items():
            if not cam or "/" in cam or len(hw) != 2 or min(int(v) for v in hw) <= 0:
                raise TheiaError(f"cameras[{cam!r}]: expected a name without '/' and "
                                 f"(height, width) > 0, got {hw!r}")
        if int(state_dim) <= 0:
            raise TheiaError(f"state_dim: expected > 0, got {state_dim}")
        try:
            kind = ActionKind(action_kind)
        except ValueError as exc:
            raise TheiaError(f"action_kind: expected one of "
                             f"{[k.value for k in ActionKind]}, got {action_kind!r}") from exc
        video = video or VideoSettings()
        features = layout.build_features(cameras, int(state_dim), kind, state_names,
                                         has_ee_pose, video.info(), fps)
        info = layout.new_info(fps, robot_type, features, kind)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TheiaError(f"{root}: cannot create the dataset directory ({exc})") from exc
        writer = cls(root, info, video)
        writer._lock_fd = cls._acquire_lock(root, wait_s)
        try:
            if (root / layout.INFO_PATH).exists():
                raise TheiaError(f"{root}: another writer created a dataset here first; "
                                 "use DatasetWriter.open to append to it")
            write_parquet(tasks_table({}), root / layout.TASKS_PATH)
            layout.write_json_atomic(root / layout.INFO_PATH, info)
        except OSError as exc:
            writer._release()
            raise TheiaError(f"{root}: cannot write the new dataset ({exc})") from exc
        except BaseException:
            writer._release()
            raise
        return writer

    @classmethod
    def open(
        cls, root: str | Path, unfinished: Literal["drop", "recover"] = "drop",
        wait_s: float = 0.0,
    ) -> DatasetWriter:
        """Append to an existing dataset, first cleaning up after a killed writer.

        ``unfinished="drop"`` deletes a half-recorded episode (it was never saved, so it
        is usually an aborted demonstration); ``"recover"`` saves its complete frames as a
        new episode with ``success=False`` and ``recovered=True`` (see
        ``recovered_episode``). ``wait_s``: how long to wait for another writer to close
        (0: refuse at once). Every failure is a one-line :class:`TheiaError`.
        """
        if unfinished not in ("drop", "recover"):
            raise TheiaError(f"unfinished: expected 'drop' or 'recover', got {unfinished!r}")
        root = Path(root)
        info_path = root / layout.INFO_PATH
        layout.validate_info(layout.read_json(info_path), info_path)  # a dataset at all?
        lock_fd = cls._acquire_lock(root, wait_s)
        writer: DatasetWriter | None = None
        try:
            apply_pending_commit(root)
            info = layout.validate_info(layout.read_json(info_path), info_path)
            for key in ("action_kind",):
                if key not in info:
                    raise TheiaError(f"{info_path}: field {key!r} missing; "
                                     "not a theia-ros dataset, cannot append")
            if STATE_KEY not in info["features"]:
                raise TheiaError(f"{info_path}: feature {STATE_KEY!r} missing; cannot append")
            first_video = next((ft for ft in info["features"].values()
                                if ft.get("dtype") == "video"), None)
            video = VideoSettings()
            if first_video is not None:
                vinfo = first_video.get("info", {})
                codec = vinfo.get("video.codec", "h264")
                video = VideoSettings(codec="libx264" if codec == "h264" else codec,
                                      pix_fmt=vinfo.get("video.pix_fmt", "yuv444p"))
            writer = cls(root, info, video)
            writer._lock_fd = lock_fd
            stats_path = root / layout.STATS_PATH
            if stats_path.exists():
                writer.stats = stats_from_json(layout.read_json(stats_path))
            tasks_path = root / layout.TASKS_PATH
            if tasks_path.exists():
                writer.tasks = read_tasks(tasks_path)
            writer._handle_unfinished(unfinished)
        except BaseException as exc:
            if writer is not None:
                writer._release()
            else:
                os.close(lock_fd)
            if isinstance(exc, OSError):
                raise TheiaError(f"{root}: cannot open the dataset for writing ({exc})") \
                    from exc
            raise
        return writer

    @staticmethod
    def _acquire_lock(root: Path, wait_s: float = 0.0) -> int:
        """An fd holding the dataset's writer lock, waiting up to ``wait_s`` for it.

        The lock counts only while ``.writer.lock`` is still the file we locked: should
        someone delete it, a new file would have no lock on it, so we lock again.
        """
        path = root / LOCK_FILE
        deadline = time.monotonic() + max(0.0, float(wait_s))
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise TheiaError(f"{root}: cannot open the writer lock {LOCK_FILE} "
                                 f"({exc.strerror or exc})") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held, now = os.fstat(fd), os.stat(path)
                if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                    return fd
            except (BlockingIOError, FileNotFoundError):
                pass  # another writer has it / the file was deleted under us: try again
            except OSError as exc:
                os.close(fd)
                raise TheiaError(f"{root}: cannot lock {LOCK_FILE} ({exc.strerror or exc})") \
                    from exc
            os.close(fd)
            if time.monotonic() >= deadline:
                waited = f" (waited {wait_s:g} s)" if wait_s > 0 else ""
                raise TheiaError(f"{root}: another DatasetWriter has this dataset open"
                                 f"{waited}; only one writer at a time")
            time.sleep(LOCK_POLL_S)

    def _handle_unfinished(self, unfinished: str) -> None:
        stage_dir = self.root / layout.STAGING_DIR / EPISODE_DIR
        if not stage_dir.exists():
            return
        stage = EpisodeStage.load(stage_dir)
        if stage is not None and int(stage.meta.get("episode_index", -1)) < self.num_episodes:
            # killed after its save committed (rolled forward above): already an episode
            shutil.rmtree(stage_dir, ignore_errors=True)
            return
        usable = (stage is not None and stage.num_frames > 0
                  and stage.cameras == self.cameras
                  and stage.row_dim == self._row_dim())
        if unfinished == "recover" and usable:
            assert stage is not None
            log.warning("%s: recovering %d staged frames as a new episode (success=False)",
                        self.root, stage.num_frames)
            self._stage = stage
            self.recovered_episode = self._save(success=False, recovered=True)
            return
        if stage is not None and stage.num_frames > 0:
            log.warning("%s: dropping an unfinished episode of %d frames",
                        self.root, stage.num_frames)
        shutil.rmtree(stage_dir, ignore_errors=True)

    # ------------------------------------------------------------------ properties
    @property
    def num_episodes(self) -> int:
        return int(self.info["total_episodes"])

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    @property
    def recording(self) -> bool:
        return self._stage is not None

    @property
    def episode_frames(self) -> int:
        """Frames added to the episode being recorded (0 when not recording)."""
        return self._stage.num_frames if self._stage is not None else 0

    def _row_dim(self) -> int:
        return 1 + self.state_dim + (6 if self.has_ee_pose else 0) + ACTION_DIM

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise TheiaError(f"{self.root}: writer is closed")

    # ------------------------------------------------------------------ recording
    def start_episode(self, task: str) -> None:
        """Begin a new episode with its task text (e.g. ``"open the door"``)."""
        self._check_open()
        if self._stage is not None:
            raise TheiaError("start_episode: an episode is already being recorded; "
                             "call save_episode() or discard_episode() first")
        if not isinstance(task, str) or not task.strip():
            raise TheiaError(f"start_episode: task must be a non-empty string, got {task!r}")
        stage_dir = self.root / layout.STAGING_DIR / EPISODE_DIR
        self._stage = EpisodeStage.create(stage_dir, task, self.cameras, self._row_dim(),
                                          self.num_episodes)
        self._first_stamp_s = None
        self._last_stamp_s = None

    def add_frame(
        self,
        images: dict[str, np.ndarray],
        state: np.ndarray,
        ee_pose: np.ndarray | None,
        action: np.ndarray,
        timestamp: float | None = None,
    ) -> None:
        """Append one control step. Checks everything first: a bad frame is never written.

        Args:
            images: camera -> uint8 RGB ``[H, W, 3]`` (all cameras of the dataset).
            state: ``[state_dim]`` joint positions (rad) then gripper open fraction.
            ee_pose: ``[6]`` xyz (m) + rpy (rad) in the base frame (None if not stored).
            action: ``[7]`` commanded action (see the dataset's ``action_kind``).
            timestamp: measured capture time in seconds (any origin), stored relative to
                the episode's first frame as ``capture_time_s``; default
                ``frame_index / fps``. The LeRobot ``timestamp`` column is always
                ``frame_index / fps`` (the control grid): LeRobot looks video frames up by
                it and rejects jittery values.
        """
        if self._stage is None:
            raise TheiaError("add_frame: no episode started; call start_episode(task) first")
        if set(images) != set(self.cameras):
            raise TheiaError(f"add_frame: images has cameras {sorted(images)}; "
                             f"expected {sorted(self.cameras)}")
        for cam, (h, w) in self.cameras.items():
            img = images[cam]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != (h, w, 3):
                desc = (f"{getattr(img, 'dtype', type(img).__name__)} "
                        f"{list(getattr(img, 'shape', []))}")
                raise TheiaError(f"add_frame: images[{cam!r}] is {desc}; "
                                 f"expected uint8 [{h}, {w}, 3] RGB")
        parts = [_finite_vector("state", state, self.state_dim)]
        if self.has_ee_pose:
            parts.append(_finite_vector("ee_pose", ee_pose, 6))
        elif ee_pose is not None:
            raise TheiaError("add_frame: ee_pose given but this dataset stores none "
                             "(created with has_ee_pose=False)")
        parts.append(_finite_vector("action", action, ACTION_DIM))
        index = self._stage.num_frames
        if timestamp is None:
            stamp_s = index / self.fps
        else:
            stamp = float(timestamp)
            if not np.isfinite(stamp):
                raise TheiaError(f"add_frame: timestamp must be finite, got {timestamp!r}")
            if self._first_stamp_s is None:
                self._first_stamp_s = stamp
            stamp_s = stamp - self._first_stamp_s
            if self._last_stamp_s is not None and stamp_s <= self._last_stamp_s:
                raise TheiaError(f"add_frame: timestamp {stamp} does not increase "
                                 "(frames must be appended in time order)")
        self._last_stamp_s = stamp_s
        row = np.concatenate([[stamp_s], *parts])
        self._stage.append(images, row)

    def discard_episode(self) -> None:
        """Throw away the episode being recorded (re-record = discard + start_episode)."""
        if self._stage is None:
            raise TheiaError("discard_episode: no episode is being recorded")
        self._stage.remove()
        self._stage = None

    def save_episode(self, success: bool) -> int:
        """Encode and commit the episode being recorded; returns its episode index."""
        self._check_open()
        if self._stage is None:
            raise TheiaError("save_episode: no episode is being recorded")
        if self._stage.num_frames == 0:
            raise TheiaError("save_episode: the episode has no frames; "
                             "add frames or call discard_episode()")
        return self._save(bool(success), recovered=False)

    def _save(self, success: bool, recovered: bool) -> int:
        """``_commit``, with an I/O failure (disk full, permissions) as one TheiaError line;
        the episode stays staged, so saving again (or ``discard_episode``) is possible."""
        try:
            return self._commit(success, recovered)
        except OSError as exc:
            raise TheiaError(f"{self.root}: saving episode {self.num_episodes} failed "
                             f"({exc}); the episode is still staged") from exc

    def _commit(self, success: bool, recovered: bool) -> int:
        stage = self._stage
        assert stage is not None
        root, staging = self.root, self.root / layout.STAGING_DIR
        commit_dir = staging / COMMIT_DIR
        if commit_dir.exists():
            shutil.rmtree(commit_dir)
        ep = self.num_episodes
        chunks_size = int(self.info.get("chunks_size", layout.CHUNKS_SIZE))
        chunk, file = layout.chunk_file(ep, chunks_size)
        rows = stage.rows()
        length = rows.shape[0]
        from_index = self.num_frames

        tasks = dict(self.tasks)
        task_index = tasks.setdefault(stage.task, len(tasks))
        arrays = self._frame_arrays(rows, ep, from_index, task_index)
        video_keys = [image_key(cam) for cam in self.cameras]
        images = {image_key(cam): stage.frames(cam) for cam in self.cameras}
        ep_stats = episode_stats({**images, **arrays}, video_keys)

        files: list[str] = []
        for cam in self.cameras:
            rel = layout.VIDEO_PATH.format(video_key=image_key(cam), chunk_index=chunk,
                                           file_index=file)
            written = encode_video(stage.frames(cam), commit_dir / rel, self.fps, self.video)
            if written != length:
                raise TheiaError(f"{rel}: encoded {written} frames, expected {length}")
            with open(commit_dir / rel, "rb") as f:
                os.fsync(f.fileno())
            files.append(rel)
        vector_keys = [k for k in (STATE_KEY, EE_POSE_KEY, ACTION_KEY) if k in arrays]
        rel = layout.DATA_PATH.format(chunk_index=chunk, file_index=file)
        write_parquet(frame_table(arrays, vector_keys), commit_dir / rel)
        files.append(rel)
        rel = layout.EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        row = episode_row(episode_index=ep, task=stage.task, length=length, chunk_index=chunk,
                          file_index=file, from_index=from_index, video_keys=video_keys,
                          fps=self.fps, success=success, recovered=recovered, stats=ep_stats)
        write_parquet(row, commit_dir / rel)
        files.append(rel)
        if tasks != self.tasks:
            write_parquet(tasks_table(tasks), commit_dir / layout.TASKS_PATH)
            files.append(layout.TASKS_PATH)
        stats = merge_stats(self.stats, ep_stats)
        layout.write_json_atomic(commit_dir / layout.STATS_PATH, stats_to_json(stats))
        files.append(layout.STATS_PATH)
        info = dict(self.info)
        info.update(total_episodes=ep + 1, total_frames=from_index + length,
                    total_tasks=len(tasks), splits={"train": f"0:{ep + 1}"})
        layout.write_json_atomic(commit_dir / layout.INFO_PATH, info)
        files.append(layout.INFO_PATH)  # last: the commit point
        layout.fsync_dir(commit_dir)

        layout.write_json_atomic(staging / MANIFEST, {"files": files, "episode_index": ep})
        apply_pending_commit(root)

        self.info, self.stats, self.tasks = info, stats, tasks
        stage.remove()
        self._stage = None
        return ep

    def _frame_arrays(self, rows: np.ndarray, ep: int, from_index: int,
                      task_index: int) -> dict[str, np.ndarray]:
        """Staged rows ``[T, row_dim]`` -> per-feature arrays in info.json order."""
        length = rows.shape[0]
        s = self.state_dim
        arrays: dict[str, np.ndarray] = {STATE_KEY: rows[:, 1:1 + s].astype(np.float32)}
        col = 1 + s
        if self.has_ee_pose:
            arrays[EE_POSE_KEY] = rows[:, col:col + 6].astype(np.float32)
            col += 6
        arrays[ACTION_KEY] = rows[:, col:col + ACTION_DIM].astype(np.float32)
        arrays["timestamp"] = (np.arange(length) / self.fps).astype(np.float32)
        arrays[CAPTURE_TIME_KEY] = rows[:, 0].astype(np.float32)
        arrays["frame_index"] = np.arange(length, dtype=np.int64)
        arrays["episode_index"] = np.full(length, ep, np.int64)
        arrays["index"] = from_index + np.arange(length, dtype=np.int64)
        arrays["task_index"] = np.full(length, task_index, np.int64)
        return arrays

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Release the dataset. An episode still being recorded is discarded (logged)."""
        if self._stage is not None:
            log.warning("%s: close() discards the unsaved episode (%d frames)",
                        self.root, self._stage.num_frames)
            self.discard_episode()
        self._release()

    def _release(self) -> None:
        if self._stage is not None:
            self._stage.close()  # leave it staged: the next open() drops or recovers it
        if self._lock_fd is not None:
            staging = self.root / layout.STAGING_DIR
            if staging.exists() and not (staging / EPISODE_DIR).exists():
                shutil.rmtree(staging, ignore_errors=True)  # while still holding the lock
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:  # keep a half-recorded episode staged, as after a crash
            self._release()


def _finite_vector(name: str, value: Any, dim: int) -> np.ndarray:
    """``value`` as float64 ``[dim]``; TheiaError naming the field if shape or values are bad."""
    if value is None:
        raise TheiaError(f"add_frame: {name} is None; expected {dim} finite numbers")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TheiaError(f"add_frame: {name} is not numeric ({exc}); expected [{dim}]") \
            from exc
    if arr.ndim > 1 or arr.size != dim:
        raise TheiaError(f"add_frame: {name} has shape {list(np.shape(value))}; "
                         f"expected [{dim}]")
    arr = arr.reshape(-1)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise TheiaError(f"add_frame: {name} has NaN/inf at index {bad.tolist()}; "
                         "frame not written")
    return arr
