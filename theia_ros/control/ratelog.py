"""Rate-limited logging: one line per kind per interval, with how many were folded in.

At 5 Hz a stuck sensor or a policy emitting NaN would otherwise write a log line every tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


class RateLimitedLogger:
    """Log at most one message per ``key`` every ``interval_s``; later ones are counted.

    Args:
        logger: where the lines go.
        interval_s: minimum time between two lines with the same key.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, logger: logging.Logger, interval_s: float,
                 clock: Callable[[], float]) -> None:
        self._logger = logger
        self._interval_s = float(interval_s)
        self._clock = clock
        self._last_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval_s`` ago.

        Returns True when a line was written.
        """
        now = self._clock()
        last = self._last_s.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        folded = self._suppressed.pop(key, 0)
        self._last_s[key] = now
        if folded:
            msg = msg + " (+%d similar in the last %.1f s)"
            args = (*args, folded, self._interval_s)
        self._logger.log(level, msg, *args)
        return True
