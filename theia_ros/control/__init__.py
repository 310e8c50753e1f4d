"""ROS-free control core: safety filter, action chunking, fixed-rate loop, statistics.

Typical use (a ROS node does the same around its own timer with ``loop.step()``)::

    from theia_ros.control import (ControlLoop, LoopConfig, SafetyFilter, SafetyLimits,
                                   ChunkingConfig)

    safety = SafetyFilter(SafetyLimits.wx250s())
    loop = ControlLoop(adapter, policy, safety, LoopConfig(rate_hz=5.0),
                       ChunkingConfig(replan_every=4, temporal_ensemble=True))
    loop.run(duration_s=60.0)   # safe-stops on faults; loop.stop() parks the robot
    print(loop.stats.summary())
"""

from theia_ros.control.chunking import (
    ActionChunker,
    AsyncPlanner,
    ChunkBuffer,
    ChunkingConfig,
    Policy,
    PolicyError,
    as_chunk,
)
from theia_ros.control.clock import Clock, ManualClock, MonotonicClock
from theia_ros.control.loop import ControlLoop, LoopConfig, LoopState, TickReport
from theia_ros.control.observation import JOINTS_KEY, Freshness, HoldReason, ImageCache
from theia_ros.control.safety import (
    LIMIT_PRESETS,
    FilterResult,
    Intervention,
    SafetyFilter,
    SafetyLimits,
)
from theia_ros.control.stats import LoopStats

__all__ = [
    "JOINTS_KEY",
    "LIMIT_PRESETS",
    "ActionChunker",
    "AsyncPlanner",
    "ChunkBuffer",
    "ChunkingConfig",
    "Clock",
    "ControlLoop",
    "FilterResult",
    "Freshness",
    "HoldReason",
    "ImageCache",
    "Intervention",
    "LoopConfig",
    "LoopState",
    "LoopStats",
    "ManualClock",
    "MonotonicClock",
    "Policy",
    "PolicyError",
    "SafetyFilter",
    "SafetyLimits",
    "TickReport",
    "as_chunk",
]
