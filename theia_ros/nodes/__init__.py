"""ROS 2 nodes (rclpy) and their ROS-free helpers.

ROS-free (importable anywhere): ``image_conversion``, ``params``, ``task_config``,
``topic_robot``, ``robots``, ``teleop_mapping``. rclpy needed: ``ros_common``, ``policy_node``,
``recorder_node``, ``encoder_node``, ``keyboard_teleop``. Importing this package imports
neither.
"""
