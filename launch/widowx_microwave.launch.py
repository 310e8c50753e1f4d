"""``ros2 launch theia_ros widowx_microwave.launch.py [policy:=<bundle>] [camera:=...]``

Reads ``config/widowx_microwave.yaml``; arguments: ``theia_ros.ros.launch_description``.
"""

from theia_ros.ros.launch_description import task_launch


def generate_launch_description():
    return task_launch("widowx_microwave", kind="policy")
