"""Render an episode to MP4 with its actions beside the frames, to eyeball a demonstration.

Each video frame is the camera image (untouched, upscaled) with an action panel to its
right, all in the robot's base frame and at one fixed scale for every episode and dataset:

- **xy top view**: an arrow from the centre, +x (forward) up, +y (left) to the left;
- **z**: a bar up or down from the middle;
- **roll / pitch / yaw**: bars left or right from the middle;
- **gripper**: the commanded open fraction (filled = open).

Full scale is :data:`XYZ_FULL_M` for translation and :data:`ROT_FULL_RAD` for rotation;
larger values are drawn at full scale in red. For ``ee_absolute`` actions the panel shows
the commanded motion, target minus the current ee pose. A text strip below gives the
numbers. (The arrow is not projected into the camera image: the camera model is not part
of a dataset, and a top-down arrow over a perspective image misleads.)
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
TEXT_PX = 40  # text strip below image and panel
PANEL_W = 270
XYZ_FULL_M = 0.05  # translation drawn at full scale (5 cm per step)
ROT_FULL_RAD = 0.25  # rotation drawn at full scale
# panel geometry (pixels, relative to the panel's top-left corner)
XY_CENTRE = (62, 80)
XY_HALF = 50
Z_X, Z_HALF = 150, 50
BAR_X0, BAR_HALF = 50, 70  # rpy and gripper bars: centre at BAR_X0 + BAR_HALF
ROW_Y = {"roll": 167, "pitch": 187, "yaw": 207, "gripper": 227}
WHITE, GREY, DARK, YELLOW, CYAN, GREEN, RED = (255, 255, 255), (150, 150, 150), (60, 60, 60), \
    (255, 220, 0), (0, 220, 255), (60, 220, 60), (230, 60, 60)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def commanded_motion(ep: dict[str, np.ndarray], kind: ActionKind | None) -> np.ndarray:
    """``[T, 6]`` commanded motion (xyz m, rpy rad): the delta itself, or target - current
    pose for absolute actions (angles wrapped to [-pi, pi))."""
    motion = ep["action"][:, :6].astype(np.float64)
    if kind is ActionKind.EE_ABSOLUTE and EE_POSE_KEY in ep:
        motion = motion - ep[EE_POSE_KEY][:, :6]
        motion[:, 3:] = (motion[:, 3:] + np.pi) % (2 * np.pi) - np.pi
    return motion


def _text(img: np.ndarray, text: str, org: tuple[int, int], colour=WHITE,
          scale: float = 0.38) -> None:
    cv2.putText(img, text, org, FONT, scale, colour, 1, cv2.LINE_AA)


def _fraction(value: float, full: float) -> tuple[float, bool]:
    """``value / full`` clipped to [-1, 1], and whether it was clipped."""
    f = value / full
    return float(np.clip(f, -1.0, 1.0)), abs(f) > 1.0


def draw_action_panel(motion: np.ndarray, gripper: float, height: int) -> np.ndarray:
    """The action panel ``[height, PANEL_W, 3]`` for one step (see module docstring)."""
    panel = np.full((height, PANEL_W, 3), 24, np.uint8)
    _text(panel, "action (base frame)", (6, 14))
    # xy top view: +x up, +y left
    cx, cy = XY_CENTRE
    cv2.rectangle(panel, (cx - XY_HALF, cy - XY_HALF), (cx + XY_HALF, cy + XY_HALF), GREY, 1)
    cv2.line(panel, (cx - XY_HALF, cy), (cx + XY_HALF, cy), DARK, 1)
    cv2.line(panel, (cx, cy - XY_HALF), (cx, cy + XY_HALF), DARK, 1)
    _text(panel, "+x", (cx + 3, cy - XY_HALF + 11), GREY, 0.33)
    _text(panel, "+y", (cx - XY_HALF + 2, cy - 3), GREY, 0.33)
    fx, clip_x = _fraction(motion[0], XYZ_FULL_M)
    fy, clip_y = _fraction(motion[1], XYZ_FULL_M)
    tip = (round(cx - fy * XY_HALF), round(cy - fx * XY_HALF))
    if tip != (cx, cy):
        cv2.arrowedLine(panel, (cx, cy), tip, RED if clip_x or clip_y else YELLOW, 2,
                        tipLength=0.2)
    cv2.circle(panel, (cx, cy), 2, WHITE, -1)
    # z: up or down from the middle
    cv2.rectangle(panel, (Z_X - 6, cy - Z_HALF), (Z_X + 6, cy + Z_HALF), GREY, 1)
    cv2.line(panel, (Z_X - 9, cy), (Z_X + 9, cy), DARK, 1)
    fz, clip_z = _fraction(motion[2], XYZ_FULL_M)
    if abs(fz) * Z_HALF >= 0.5:
        cv2.rectangle(panel, (Z_X - 5, cy), (Z_X + 5, round(cy - fz * Z_HALF)),
                      RED if clip_z else CYAN, -1)
    _text(panel, "z", (Z_X - 3, cy - Z_HALF - 4), GREY, 0.33)
    _text(panel, f"{100 * motion[2]:+.1f}cm", (Z_X + 12, cy + 4), WHITE, 0.33)
    _text(panel, f"xy top view: x {100 * motion[0]:+.1f} y {100 * motion[1]:+.1f} cm",
          (6, cy + XY_HALF + 16), WHITE, 0.33)
    # roll / pitch / yaw: left or right from the middle
    mid = BAR_X0 + BAR_HALF
    for i, name in enumerate(("roll", "pitch", "yaw")):
        y = ROW_Y[name]
        _text(panel, name, (6, y + 4), GREY, 0.35)
        cv2.rectangle(panel, (BAR_X0, y - 6), (BAR_X0 + 2 * BAR_HALF, y + 6), GREY, 1)
        f, clipped = _fraction(motion[3 + i], ROT_FULL_RAD)
        if abs(f) * BAR_HALF >= 0.5:
            cv2.rectangle(panel, (mid, y - 5), (round(mid + f * BAR_HALF), y + 5),
                          RED if clipped else CYAN, -1)
        cv2.line(panel, (mid, y - 8), (mid, y + 8), WHITE, 1)
        _text(panel, f"{motion[3 + i]:+.3f} rad", (BAR_X0 + 2 * BAR_HALF + 6, y + 4), WHITE, 0.33)
    # gripper: open fraction 0..1
    y = ROW_Y["gripper"]
    grip = float(np.clip(gripper, 0.0, 1.0))
    _text(panel, "grip", (6, y + 4), GREY, 0.35)
    cv2.rectangle(panel, (BAR_X0, y - 6), (BAR_X0 + 2 * BAR_HALF, y + 6), GREY, 1)
    if grip > 0:
        cv2.rectangle(panel, (BAR_X0, y - 5), (round(BAR_X0 + grip * 2 * BAR_HALF), y + 5),
                      GREEN if grip > 0.5 else RED, -1)
    _text(panel, f"{grip:.2f} open", (BAR_X0 + 2 * BAR_HALF + 6, y + 4), WHITE, 0.33)
    _text(panel, f"full scale {100 * XYZ_FULL_M:g} cm, {ROT_FULL_RAD:g} rad; red = beyond",
          (6, min(height - 6, y + 24)), GREY, 0.32)
    return panel


def draw_frame(img: np.ndarray, action: np.ndarray, motion: np.ndarray,
               lines: list[str]) -> np.ndarray:
    """One frame: image ``[H, W, 3]`` upscaled | action panel, text strip below (RGB)."""
    h, w = img.shape[:2]
    zoom = max(1, int(np.ceil(MIN_SIDE_PX / min(h, w))))
    big = cv2.resize(img, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST)
    bh, bw = big.shape[:2]
    width = bw + PANEL_W
    canvas = np.zeros((bh + TEXT_PX + (bh + TEXT_PX) % 2, width + width % 2, 3), np.uint8)
    canvas[:bh, :bw] = big
    canvas[:bh, bw:bw + PANEL_W] = draw_action_panel(motion, float(action[6]), bh)
    for k, text in enumerate(lines):
        _text(canvas, text, (6, bh + 15 + 16 * k), WHITE, 0.4)
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
    motion = commanded_motion(ep, ds.action_kind)
    status = {True: "success", False: "failure", None: "?"}[info.success]
    kind = ds.action_kind.value if ds.action_kind else "action kind unknown"

    def annotated() -> object:
        for j in range(len(frames)):
            lines = [f"ep {episode} [{status}] {j + 1}/{len(frames)} t={ep['timestamp'][j]:.2f}s"
                     f"  {kind}",
                     info.task[:70]]
            yield draw_frame(frames[j], ep["action"][j], motion[j], lines)

    out = Path(out)
    settings = VideoSettings(pix_fmt="yuv420p", crf=20, gop=2 * ds.fps)
    return encode_video(annotated(), out, ds.fps, settings)
