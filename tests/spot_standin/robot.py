"""Re-export of ``theia_ros.sim.spot.robot`` (a stand-in, not Boston Dynamics' software)."""

from theia_ros.sim.spot.robot import *  # noqa: F403
