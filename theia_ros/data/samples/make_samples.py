"""Regenerate the bundled sample images (procedural scenes of coloured shapes).

They let ``theia encode`` / ``theia analyze`` and the README demo run without downloads:
flat-shaded table-top and door scenes, 320 x 240 RGB PNGs, a few KB each, deterministic.

Example::

    python theia_ros/data/samples/make_samples.py   # rewrites the PNGs next to this file
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 320, 240
HERE = Path(__file__).resolve().parent


def _background(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    """Vertical gradient (wall -> floor), quantised to 32 bands so the PNG stays small."""
    t = (np.floor(np.linspace(0.0, 1.0, HEIGHT) * 31) / 31)[:, None, None]
    rows = (1 - t) * np.array(top) + t * np.array(bottom)
    return Image.fromarray(np.repeat(rows, WIDTH, axis=1).astype(np.uint8), "RGB")


def table_blocks() -> Image.Image:
    img = _background((200, 205, 215), (150, 150, 160))
    d = ImageDraw.Draw(img)
    d.polygon([(20, 140), (300, 140), (320, 240), (0, 240)], fill=(139, 100, 60))  # table
    d.rectangle([60, 110, 110, 160], fill=(220, 40, 40))                           # red cube
    d.polygon([(60, 110), (75, 98), (125, 98), (110, 110)], fill=(240, 90, 90))
    d.polygon([(110, 110), (125, 98), (125, 148), (110, 160)], fill=(170, 30, 30))
    d.ellipse([180, 130, 250, 170], fill=(40, 90, 210))                            # blue bowl
    d.ellipse([190, 132, 240, 150], fill=(20, 50, 140))
    d.polygon([(270, 150), (290, 110), (310, 150)], fill=(240, 200, 40))           # yellow cone
    return img


def door_handle() -> Image.Image:
    img = _background((225, 220, 205), (120, 110, 100))
    d = ImageDraw.Draw(img)
    d.rectangle([100, 20, 230, 235], fill=(110, 70, 40))                           # door
    d.rectangle([110, 30, 220, 120], outline=(80, 50, 30), width=4)
    d.rectangle([110, 130, 220, 225], outline=(80, 50, 30), width=4)
    d.ellipse([195, 118, 215, 138], fill=(200, 190, 60))                           # knob
    d.rectangle([198, 124, 235, 132], fill=(210, 200, 80))                         # lever
    d.rectangle([0, 200, 60, 240], fill=(60, 130, 60))                             # plant pot
    d.ellipse([5, 150, 55, 205], fill=(40, 160, 60))
    return img


def drawer_scene() -> Image.Image:
    img = _background((190, 210, 230), (170, 170, 170))
    d = ImageDraw.Draw(img)
    d.rectangle([40, 60, 280, 230], fill=(230, 230, 225))                          # cabinet
    for i, top in enumerate((70, 125, 180)):
        d.rectangle([50, top, 270, top + 45], fill=(215, 215, 210), outline=(150, 150, 150),
                    width=2)
        d.rectangle([140, top + 18, 180, top + 26], fill=(80, 80, 90 + 40 * i))    # handles
    d.ellipse([230, 20, 270, 60], fill=(250, 160, 30))                              # orange
    d.rectangle([60, 30, 120, 60], fill=(30, 160, 170))                             # box
    return img


def gripper_view() -> Image.Image:
    img = _background((90, 90, 100), (200, 190, 170))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, 60, 240], fill=(50, 50, 55))                                 # gripper
    d.rectangle([260, 0, 320, 240], fill=(50, 50, 55))
    d.rectangle([60, 90, 90, 150], fill=(70, 70, 75))                               # fingers
    d.rectangle([230, 90, 260, 150], fill=(70, 70, 75))
    d.ellipse([125, 95, 195, 165], fill=(30, 180, 80))                              # green ball
    d.ellipse([140, 105, 160, 125], fill=(120, 230, 150))                           # highlight
    return img


SCENES = {"table_blocks": table_blocks, "door_handle": door_handle,
          "drawer": drawer_scene, "gripper_view": gripper_view}


def main(out_dir: Path = HERE) -> list[Path]:
    paths = []
    for name, make in SCENES.items():
        path = out_dir / f"{name}.png"
        make().save(path, optimize=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in main():
        print(f"{p} ({p.stat().st_size / 1024:.1f} KiB)")
