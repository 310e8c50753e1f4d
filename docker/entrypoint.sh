#!/usr/bin/env bash
# Source ROS 2, the Interbotix workspace and theia_ros, then run the command.
set -e
for setup in "/opt/ros/${ROS_DISTRO}/setup.bash" "/opt/ros/${ROS_DISTRO}/install/setup.bash" \
             /opt/interbotix_ws/install/setup.bash /opt/theia_ws/install/setup.bash; do
  # shellcheck disable=SC1090
  [ -f "$setup" ] && source "$setup"
done
exec "$@"
