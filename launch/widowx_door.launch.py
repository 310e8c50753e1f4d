"""``ros2 launch theia_ros widowx_door.launch.py [policy:=<bundle>] [camera:=...]``

Reads ``config/widowx_door.yaml``; arguments: ``theia_ros.ros.launch_description``.
"""

from theia_ros.ros.launch_description import task_launch


def generate_launch_description():
    return task_launch("widowx_door", kind="policy")
