"""``ros2 launch theia_ros teleop_record.launch.py dataset:=<root> task:="open the door"``

Reads ``config/teleop_record.yaml``: the arm driver, the camera, the SpaceMouse driver and
``recorder_node``; run ``keyboard_teleop`` in a terminal for start / save / discard.
"""

from theia_ros.ros.launch_description import task_launch


def generate_launch_description():
    return task_launch("teleop_record", kind="recorder")
