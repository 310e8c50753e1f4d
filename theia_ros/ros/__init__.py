"""ROS 2 nodes (rclpy) and their ROS-free helpers.

rclpy needed: ``common``, ``policy_node``, ``recorder_node``, ``encoder_node``,
``keyboard_teleop``. ROS-free (importable anywhere): ``image_conversion``, ``params``,
``task_config``, ``teleop_mapping``, ``launch_description`` (needs ``launch_ros`` when
called). Importing this package imports neither.
"""
