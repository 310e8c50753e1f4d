"""A simulated Spot robot: a loopback TLS gRPC server speaking the bosdyn API.

THIS IS A SIMULATOR / STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. A real Spot
cannot exist in CI or on a laptop, so tests and ``theia demo --task spot_drawer`` run the real
``bosdyn-client`` against services built from the ``bosdyn-api`` generated servicers (robot id,
auth, directory, time sync, e-stop, lease, power, robot command, robot state, image). The robot
it models moves at finite speed with the Spot arm's kinematics, takes time to power on and
stand, and can lose its network, lease and e-stop like the real one (``robot.py``,
``motion.py``, ``network.py``); ``drawer.py`` puts it in front of a MuJoCo cabinet whose top
drawer it can open. It is still a model, not the robot. Importing it needs ``bosdyn-api``,
``grpcio`` and (for the drawer) ``mujoco``; nothing on the deploy path imports it.
"""

from .robot import ReceivedCommand, StandInRobot
from .server import SpotStandIn

__all__ = ["ReceivedCommand", "SpotStandIn", "StandInRobot"]
