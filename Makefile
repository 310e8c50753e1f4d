# Two entry points on a fresh machine:  `make demo`  and  `make test`.
# Both create and use the virtual environment in .venv/.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ROS_TEST_WHEELS := "ros-rclpy[fastrtps]" ros-sensor-msgs ros-std-msgs ros-geometry-msgs \
	ros-std-srvs ros-diagnostic-msgs colcon-common-extensions
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
$(VENV)/.stamp-test: $(VENV)/.stamp-setup
	$(PIP) install -q $(ROS_TEST_WHEELS)
	touch $@

setup: $(VENV)/.stamp-setup
test-setup: $(VENV)/.stamp-test

demo: setup
	$(VENV)/bin/theia demo

demo-quick: setup
	$(VENV)/bin/theia demo --quick

test: test-setup
	$(VENV)/bin/pytest

test-slow: test-setup
	$(VENV)/bin/pytest -m slow

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/encoder_latency.py --quick
