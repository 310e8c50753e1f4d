"""A stand-in Spot robot for tests: a loopback TLS gRPC server speaking the bosdyn API.

THIS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. A real Spot cannot exist
in CI, so tests run the real ``bosdyn-client`` against services built from the ``bosdyn-api``
generated servicers (robot id, auth, directory, time sync, e-stop, lease, power, robot command,
robot state, image). The robot it models moves at finite speed with the Spot arm's kinematics,
takes time to power on and stand, and can lose its network, lease and e-stop like the real one
(``robot.py``, ``motion.py``, ``network.py``); it is still a model, not the robot.
"""

from .robot import ReceivedCommand, StandInRobot
from .server import SpotStandIn

__all__ = ["ReceivedCommand", "SpotStandIn", "StandInRobot"]
