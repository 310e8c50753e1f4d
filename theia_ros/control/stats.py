"""Counters and timing statistics of the control loop, in a form diagnostics can publish."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np


def _percentiles_ms(samples: deque[float]) -> tuple[float, float, float]:
    """(p50, p99, max) of ``samples`` in milliseconds; NaN when there are none."""
    if not samples:
        return (float("nan"),) * 3
    arr = np.asarray(samples, dtype=np.float64) * 1e3
    p50, p99 = np.percentile(arr, [50.0, 99.0])
    return float(p50), float(p99), float(arr.max())


@dataclass
class LoopStats:
    """What the loop did. Timing samples keep the most recent ``window`` values.

    ``period_error_s`` is ``|start_k - start_{k-1} - period|`` between consecutive running
    ticks (a missed tick shows up as about one period of error); ``start_lateness_s`` is how
    long after its deadline a tick started; ``command_latency_s`` runs from the observation's
    oldest sensor stamp to the command having been handed to the adapter. ``missed_ticks``
    counts deadline slots that got no tick (overruns, late timers); ``skipped_ticks`` counts
    ticks refused for coming too soon after the previous command.
    """

    window: int = 10_000
    ticks: int = 0
    commands: int = 0
    overruns: int = 0
    missed_ticks: int = 0
    skipped_ticks: int = 0
    safe_stops: int = 0
    holds: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    interventions: Counter[str] = field(default_factory=Counter)
    period_error_s: deque[float] = field(init=False)
    start_lateness_s: deque[float] = field(init=False)
    tick_duration_s: deque[float] = field(init=False)
    policy_latency_s: deque[float] = field(init=False)
    command_latency_s: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("period_error_s", "start_lateness_s", "tick_duration_s",
                     "policy_latency_s", "command_latency_s"):
            setattr(self, name, deque(maxlen=self.window))
        self.lock = threading.Lock()  # held by writers (the loop) and by summary()

    def summary(self) -> dict[str, object]:
        """Numbers for logs, benchmarks and tests (times in ms)."""
        with self.lock:
            out: dict[str, object] = {
                "ticks": self.ticks,
                "commands": self.commands,
                "overruns": self.overruns,
                "missed_ticks": self.missed_ticks,
                "skipped_ticks": self.skipped_ticks,
                "safe_stops": self.safe_stops,
                "holds": dict(self.holds),
                "faults": dict(self.faults),
                "interventions": dict(self.interventions),
            }
            for name in ("period_error_s", "start_lateness_s", "tick_duration_s",
                         "policy_latency_s", "command_latency_s"):
                p50, p99, top = _percentiles_ms(getattr(self, name))
                stem = name[: -len("_s")]
                out[f"{stem}_p50_ms"] = p50
                out[f"{stem}_p99_ms"] = p99
                out[f"{stem}_max_ms"] = top
        return out

    def diagnostics(self) -> dict[str, str]:
        """Flat ``key -> text`` pairs (``diagnostic_msgs/KeyValue``-ready)."""
        flat: dict[str, str] = {}
        for key, value in self.summary().items():
            if isinstance(value, dict):
                for sub, count in sorted(value.items()):
                    flat[f"{key}.{sub}"] = str(count)
            elif isinstance(value, float):
                flat[key] = f"{value:.2f}"
            else:
                flat[key] = str(value)
        return flat
