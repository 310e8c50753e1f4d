"""Two-stage success for door opening, as in the paper's WidowX task: "open", "fully open".

Thresholds on the hinge angle (0 = closed). "Open" at 30 deg: the door has clearly left its
frame (the handle has moved ~10 cm), which a human judge would call opened; "fully open" at
70 deg: the door is swung wide enough to reach into the fridge. The door stops at 105 deg.
"""

from __future__ import annotations

import enum
import math

OPEN_ANGLE_RAD = math.radians(30.0)
FULLY_OPEN_ANGLE_RAD = math.radians(70.0)


class DoorStage(enum.IntEnum):
    """How far the door got; ordered, so ``stage >= DoorStage.OPEN`` reads naturally."""

    CLOSED = 0
    OPEN = 1
    FULLY_OPEN = 2


def door_stage(angle_rad: float) -> DoorStage:
    """Stage reached at hinge angle ``angle_rad``."""
    if angle_rad >= FULLY_OPEN_ANGLE_RAD:
        return DoorStage.FULLY_OPEN
    if angle_rad >= OPEN_ANGLE_RAD:
        return DoorStage.OPEN
    return DoorStage.CLOSED


def stage_flags(stage: DoorStage) -> dict[str, bool]:
    """Per-stage success flags for reports: ``{"open": ..., "fully_open": ...}``."""
    return {"open": stage >= DoorStage.OPEN, "fully_open": stage >= DoorStage.FULLY_OPEN}
