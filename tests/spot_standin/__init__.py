"""Test fixtures over the simulated Spot robot (``theia_ros.sim.spot``).

THE SERVER IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE: see
``theia_ros/sim/spot/__init__.py``. This package only re-exports it for the tests and adds
pytest fixtures (``fixtures.py``).
"""

from theia_ros.sim.spot import ReceivedCommand, SpotStandIn, StandInRobot

__all__ = ["ReceivedCommand", "SpotStandIn", "StandInRobot"]
