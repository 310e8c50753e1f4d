"""Pictures of a Spot drawer run: drawer opening per held-out trial, control-step times, and
a strip of rollout frames (what the README shows next to the door demo's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from theia_ros.atomic import atomic_write
from theia_ros.evaluate.spot_drawer import SUCCESS_OPEN_M
from training.demo.report import save_figure, tick_histogram


def write_spot_plot(path: str | Path, report: Mapping[str, Any],
                    tick_ms: Sequence[float] | None = None) -> Path | None:
    """Opening per trial (final and the most reached) against the 10 cm criterion, and the
    control-step histogram against the 5 Hz period. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    trials = report["per_episode"]
    s = report["success"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    x = np.arange(len(trials))
    final = np.array([100 * t["opening_m"] for t in trials])
    most = np.array([100 * t["max_opening_m"] for t in trials])
    colours = ["#4c8c4a" if t["success"] else "#b5651d" for t in trials]
    ax.bar(x, most, color="#d9d9d9", width=0.8, label="most opened")
    ax.bar(x, final, color=colours, width=0.55, label="at the end (green: success)")
    ax.axhline(100 * SUCCESS_OPEN_M, color="k", ls="--", lw=1, label="10 cm criterion")
    for i, t in enumerate(trials):
        if t.get("fault"):
            ax.text(i, 0.5, "fault", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [str(t["seed"] - trials[0]["seed"]) for t in trials], fontsize=7)
    ax.set_xlabel(f"held-out trial (seed - {trials[0]['seed']})" if trials else "trial")
    ax.set_ylabel("drawer opening (cm)")
    ax.set_ylim(0, max(25.0, float(most.max(initial=0.0))) + 9)  # room for the legend
    ax.legend(fontsize=7, loc="upper center", ncol=3, frameon=False)
    ax.set_title(f"success {s['successes']}/{s['n']} = {100 * s['rate']:.0f} % "
                 f"(95 % Wilson CI {100 * s['ci95_low']:.0f}-{100 * s['ci95_high']:.0f} %)",
                 fontsize=10)
    ax = axes[1]
    if tick_ms:
        tick_histogram(ax, tick_ms, 200.0)
    else:
        ax.set_axis_off()
    return save_figure(fig, path)


def write_frame_strip(video: str | Path, path: str | Path, frames: int = 4,
                      width: int = 240, episode_frames: int | None = None) -> Path | None:
    """``frames`` evenly spaced frames of the video's first ``episode_frames`` (the first
    trial; default: the whole video) side by side. None if the video has no frames."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    images = []
    try:
        while episode_frames is None or len(images) < episode_frames:
            ok, frame = cap.read()
            if not ok:
                break
            images.append(frame)
    finally:
        cap.release()
    if not images:
        return None
    picks = np.linspace(0, len(images) - 1, frames).round().astype(int)
    tiles = [cv2.resize(images[i], (width, width * images[i].shape[0] // images[i].shape[1]))
             for i in picks]
    strip = np.concatenate(tiles, axis=1)
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", strip)
    if not ok:
        return None
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))
    return path
