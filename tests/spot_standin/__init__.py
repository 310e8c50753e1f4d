"""A stand-in Spot robot for tests: a loopback TLS gRPC server speaking the bosdyn API.

THIS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. A real Spot cannot exist
in CI, so tests run the real ``bosdyn-client`` against services built from the ``bosdyn-api``
generated servicers (robot id, auth, directory, time sync, e-stop, lease, power, robot command,
robot state, image). The robot it models is kinematic and idealised; see ``robot.py``.
"""

from .robot import ReceivedCommand, StandInRobot
from .server import SpotStandIn

__all__ = ["ReceivedCommand", "SpotStandIn", "StandInRobot"]
