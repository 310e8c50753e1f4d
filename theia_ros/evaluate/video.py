"""Rollout video: the sim camera upscaled, with the episode's status drawn on each frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from theia_ros.atomic import commit
from theia_ros.sim.success import DoorStage

VIDEO_SCALE = 2  # 224 -> 448 px, so the overlay text is legible


class VideoWriter:
    """MP4 (H.264) of RGB frames at the control rate; written to a temp file, then renamed."""

    def __init__(self, path: str | Path, fps: float) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}{self.path.suffix}")
        self._container = av.open(str(self._tmp), mode="w")
        self._stream = None
        self._fps = max(1, round(fps))
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self._fps)
            self._stream.height, self._stream.width = rgb.shape[0], rgb.shape[1]
            self._stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; None (and nothing written) when no frame came."""
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        if self.frames == 0:
            self._tmp.unlink(missing_ok=True)
            return None
        commit(self._tmp, self.path)
        return self.path


def annotate(image: np.ndarray, lines: Sequence[str], stage: DoorStage) -> np.ndarray:
    """Upscaled copy of ``image`` ``[H, W, 3]`` with text lines and a stage-coloured border."""
    import cv2

    img = cv2.resize(image, None, fx=VIDEO_SCALE, fy=VIDEO_SCALE,
                     interpolation=cv2.INTER_NEAREST)
    colour = {DoorStage.CLOSED: (200, 60, 60), DoorStage.OPEN: (230, 180, 40),
              DoorStage.FULLY_OPEN: (60, 200, 60)}[stage]
    cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), colour, 6)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.55
    for i, text in enumerate(lines):
        y = 24 + 22 * i
        # A dark box, not a thick black outline: Hershey glyph advances grow with stroke
        # thickness, so an outline drawn thicker drifts away from the text it should frame.
        (w, h), base = cv2.getTextSize(text, font, scale, 1)
        cv2.rectangle(img, (7, y - h - 4), (13 + w, y + base + 1), (0, 0, 0), -1)
        cv2.putText(img, text, (10, y), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img
