"""Re-export of ``theia_ros.sim.spot.kinematics`` (a stand-in, not Boston Dynamics' software)."""

from theia_ros.sim.spot.kinematics import *  # noqa: F403
