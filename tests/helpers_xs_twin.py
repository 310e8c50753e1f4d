"""The MuJoCo xs_sdk twin for tests that drive the real ``WidowXAdapter`` through the
unmodified upstream ``interbotix_xs_modules`` over real DDS.

Contexts: the adapter's Interbotix node always lives on rclpy's DEFAULT context (it starts
it only when nobody else has), so the twin runs there too, on this process's
``ru.domain_id()``. :func:`twin_running` initialises that context and shuts it down again,
so the test modules that need it (each with its own module-scoped ``twin``) can run one
after another; the node tests' private contexts (``helpers_nodes.ros_context``) coexist
with it on another domain.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import ros_upstream as ru

from theia_ros.robots.widowx import WidowXAdapter, WidowXConfig

START_Q = np.array([0.0, -0.5, 0.6, 0.0, 0.4, 0.0])  # fingertip ~0.35 m ahead, 0.25 m up
HOME_Q = np.zeros(6)  # Interbotix's home pose (``go_to_home_pose``)
_names = itertools.count()


@contextlib.contextmanager
def twin_running(start_q: np.ndarray = START_Q) -> Iterator[Any]:
    """The default rclpy context, up only while an ``XsSdkTwin`` (arm at ``start_q``) runs."""
    ru.activate()
    import rclpy

    from theia_ros.sim.xs_sdk_twin import XsSdkTwin

    os.environ["ROS_DOMAIN_ID"] = str(ru.domain_id())
    assert not rclpy.ok(), "another test left the default rclpy context up"
    rclpy.init()
    try:
        twin = XsSdkTwin(f"wxtwin{os.getpid()}_{next(_names)}", start_qpos=start_q)
        try:
            yield twin
        finally:
            twin.close()
    finally:
        rclpy.try_shutdown()


@pytest.fixture(scope="module")
def twin():
    with twin_running() as t:
        yield t


def make_adapter(twin: Any, clock: Callable[[], float] = time.monotonic,
                 **kw: Any) -> WidowXAdapter:
    """An unconnected adapter for ``twin`` (1 s park poses, fault check off unless given)."""
    cfg = dict(robot_name=twin.node.get_namespace().strip("/"), park_moving_time_s=1.0,
               fault_check_period_s=0.0, node_name=f"theia_widowx_twin_{next(_names)}")
    cfg.update(kw)
    return WidowXAdapter(WidowXConfig(**cfg), clock=clock)


def connect_at_start(adapter: WidowXAdapter, log: CommandLog | None = None) -> None:
    """Connect, wait until ``log`` (if any) hears the adapter's commands, move to START_Q."""
    adapter.connect()
    if log is not None:  # else the first commands could go out before the log is matched
        pub = adapter.bot.core.pub_group
        assert ru.wait_for(lambda: pub.get_subscription_count() >= 2, 5.0), \
            "the command log never matched the adapter's publisher"
    adapter.move_joints(START_Q, 1.0, tolerance_rad=5e-3)


def is_pose(q: Any, pose: np.ndarray, atol: float = 1e-6) -> bool:
    return len(q) == len(pose) and bool(np.allclose(q, pose, atol=atol))


class CommandLog:
    """What the servos were told: every ``JointGroupCommand`` on the twin's
    ``commands/joint_group``, heard over DDS by a node of the test's own."""

    def __init__(self, twin: Any) -> None:
        import rclpy
        from interbotix_xs_msgs.msg import JointGroupCommand
        from rclpy.executors import SingleThreadedExecutor

        self._lock = threading.Lock()
        self._commands: list[np.ndarray] = []
        self.node = rclpy.create_node(f"command_log_{next(_names)}")
        topic = f"{twin.node.get_namespace()}/commands/joint_group"
        self.node.create_subscription(JointGroupCommand, topic, self._on_command, 100)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_command(self, msg: Any) -> None:
        with self._lock:
            self._commands.append(np.array(msg.cmd, dtype=np.float64))

    def since(self, start: int = 0) -> list[np.ndarray]:
        with self._lock:
            return list(self._commands[start:])

    def __len__(self) -> int:
        with self._lock:
            return len(self._commands)

    def last(self) -> np.ndarray:
        with self._lock:
            return self._commands[-1] if self._commands else np.zeros(0)

    def all_plausible(self) -> bool:
        """No command held a non-finite value or one beyond a full turn."""
        return all(np.all(np.abs(c) < 2 * math.pi) for c in self.since())

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()
