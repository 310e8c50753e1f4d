"""Render an episode to MP4 with its actions drawn on the frames, to eyeball a demonstration.

On each frame: an arrow from the image centre for the commanded xy motion (top-down,
base frame: +x forward = up, +y left = left), a bar on the right edge for z, a gripper
gauge (filled = open) at the bottom left, and a text panel with the numbers. For
``ee_absolute`` actions the arrow shows the target minus the current ee pose. Arrow
lengths are scaled by the episode's largest motion so small deltas stay visible.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from theia_ros.dataset import EE_POSE_KEY, EpisodeDataset, VideoSettings, image_key
from theia_ros.dataset.video import encode_video
from theia_ros.errors import TheiaError
from theia_ros.types import ActionKind

MIN_SIDE_PX = 256
PANEL_PX = 54
WHITE, YELLOW, CYAN, GREEN, RED = (255, 255, 255), (255, 220, 0), (0, 220, 255), \
    (60, 220, 60), (230, 60, 60)


def motion_xyz(ep: dict[str, np.ndarray], kind: ActionKind | None) -> np.ndarray:
    """``[T, 3]`` commanded motion: the delta itself, or target - current pose (absolute)."""
    xyz = ep["action"][:, :3].astype(np.float64)
    if kind is ActionKind.EE_ABSOLUTE and EE_POSE_KEY in ep:
        return xyz - ep[EE_POSE_KEY][:, :3]
    return xyz


def draw_frame(img: np.ndarray, action: np.ndarray, motion: np.ndarray, scale_m: float,
               lines: list[str]) -> np.ndarray:
    """One annotated RGB frame: image ``[H, W, 3]`` upscaled + overlays + text panel."""
    h, w = img.shape[:2]
    zoom = max(1, int(np.ceil(MIN_SIDE_PX / min(h, w))))
    big = cv2.resize(img, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST)
    bh, bw = big.shape[:2]
    canvas = np.zeros((bh + PANEL_PX, bw + (bw % 2), 3), np.uint8)
    canvas[:bh, :bw] = big
    centre = np.array([bw // 2, bh // 2])
    reach_px = 0.4 * min(bh, bw)
    dx, dy, dz = motion / scale_m if scale_m > 0 else np.zeros(3)
    tip = centre + np.array([-dy, -dx]) * reach_px  # top-down: x up, y left
    cv2.circle(canvas, tuple(int(v) for v in centre), 3, WHITE, -1)
    if np.hypot(dx, dy) > 1e-3:
        cv2.arrowedLine(canvas, tuple(int(v) for v in centre), tuple(int(v) for v in tip),
                        YELLOW, 2, tipLength=0.25)
    bar_x, mid_y, half = bw - 12, bh // 2, int(reach_px)
    cv2.line(canvas, (bar_x, mid_y - half), (bar_x, mid_y + half), (90, 90, 90), 1)
    cv2.rectangle(canvas, (bar_x - 4, mid_y), (bar_x + 4, int(mid_y - dz * half)), CYAN, -1)
    grip = float(np.clip(action[6], 0.0, 1.0))
    g0, g1 = (8, bh - 16), (8 + 60, bh - 6)
    cv2.rectangle(canvas, g0, g1, WHITE, 1)
    cv2.rectangle(canvas, g0, (int(g0[0] + 60 * grip), g1[1]), GREEN if grip > 0.5 else RED, -1)
    for k, text in enumerate(lines):
        cv2.putText(canvas, text, (6, bh + 16 + 17 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    WHITE, 1, cv2.LINE_AA)
    if canvas.shape[0] % 2:
        canvas = canvas[:-1]
    return canvas


def render_episode(root: str | Path, episode: int, out: str | Path,
                   camera: str | None = None) -> int:
    """Write ``out`` (MP4, H.264 yuv420p for any player); returns the number of frames."""
    ds = EpisodeDataset(root)
    camera = camera or (ds.cameras[0] if ds.cameras else None)
    if camera is None or camera not in ds.cameras:
        raise TheiaError(f"{root}: camera {camera!r} not in dataset cameras {ds.cameras}")
    ep = ds.episode(episode)
    info = ds.episodes[episode]
    frames = ep[image_key(camera)]
    motion = motion_xyz(ep, ds.action_kind)
    scale_m = float(np.max(np.linalg.norm(motion, axis=1))) if len(motion) else 0.0
    names = ds.meta["features"]["action"].get("names") or [f"a{i}" for i in range(7)]
    status = {True: "success", False: "failure", None: "?"}[info.success]

    def annotated() -> object:
        for j in range(len(frames)):
            act = ep["action"][j]
            lines = [
                f"ep {episode} [{status}] {j + 1}/{len(frames)} t={ep['timestamp'][j]:.2f}s "
                f"{info.task[:40]}",
                " ".join(f"{n}={v:+.3f}" for n, v in zip(names[:3], act[:3]))
                + f"  grip={act[6]:.2f}",
            ]
            yield draw_frame(frames[j], act, motion[j], scale_m, lines)

    out = Path(out)
    settings = VideoSettings(pix_fmt="yuv420p", crf=20, gop=2 * ds.fps)
    return encode_video(annotated(), out, ds.fps, settings)
