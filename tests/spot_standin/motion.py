"""Re-export of ``theia_ros.sim.spot.motion`` (a stand-in, not Boston Dynamics' software)."""

from theia_ros.sim.spot.motion import *  # noqa: F403
