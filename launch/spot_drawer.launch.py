"""``ros2 launch theia_ros spot_drawer.launch.py [policy:=<bundle>] [camera:=...]``

Reads ``config/spot_drawer.yaml``; arguments: ``theia_ros.ros.launch_description``.
"""

from theia_ros.ros.launch_description import task_launch


def generate_launch_description():
    return task_launch("spot_drawer", kind="policy")
