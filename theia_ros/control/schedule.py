"""Fixed-rate tick deadlines with no catch-up, shared by every loop that paces itself.

Deadlines fall on ``t0, t0 + p, t0 + 2p, ...``. A tick that ends past the next deadline
does not trigger a burst of late ticks: the next deadline moves to one period after that
tick's end, so two commands are never closer than a period, and the skipped slots are
counted. Used by ``ControlLoop.run``, the nodes' ``Ticker`` thread and the recorders.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from theia_ros.control.clock import Clock, MonotonicClock


class Deadlines:
    """The deadline grid of one loop.

    Args:
        period_s: tick period (> 0).
        clock: time source (``ManualClock`` in tests runs the grid instantly).
        start_s: first deadline (default: now).
    """

    def __init__(self, period_s: float, clock: Clock | None = None,
                 start_s: float | None = None) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.period_s = float(period_s)
        self.clock = clock or MonotonicClock()
        self.next_s = self.clock.now() if start_s is None else float(start_s)

    def wait(self, sleep: Callable[[float], object] | None = None) -> float:
        """Sleep until the next deadline (``sleep`` may be a stop event's ``wait``) and
        return the time now."""
        now = self.clock.now()
        if now < self.next_s:
            (sleep or self.clock.sleep)(self.next_s - now)
            now = self.clock.now()
        return now

    def advance(self, end_s: float | None = None) -> int:
        """Close the tick that ended at ``end_s`` (default now); return the slots skipped."""
        end = self.clock.now() if end_s is None else end_s
        nxt = self.next_s + self.period_s
        missed = 0
        if end > nxt:  # overran: one period after the end, never a catch-up burst
            missed = max(1, math.floor((end + self.period_s - self.next_s) / self.period_s
                                       + 1e-9) - 1)
            nxt = end + self.period_s
        self.next_s = nxt
        return missed
