"""The launch files through the real ROS 2 launch system, from a colcon install of this package.

``ros2 launch theia_ros <file> <args>`` as ros2cli runs it (upstream ``launch``, ``launch_ros``
and ``ros2launch`` from ``../shared/upstream``; see ``ros_upstream.Launch``), after ``colcon
build --symlink-install`` of this repository, with a real exported bundle. A probe node on
the same ROS domain calls the services and listens to ``/diagnostics``, ``~/action`` and the
arm's joint states; the interrupt is a Ctrl-C in the launch's terminal (SIGINT to its whole
process group).

``robot:=sim`` runs in the default suite; ``robot:=widowx use_sim:=true`` (the policy node's
WidowXAdapter through the unmodified upstream ``interbotix_xs_modules`` to our MuJoCo xs_sdk
twin, which also renders the camera) and the teleop recorder are slow.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ros_upstream as ru
from helpers_nodes import session_tiny_bundle

from theia_ros.control import kinematics as K

SIM_IMAGE_HW = (96, 96)  # robot:=sim renders square images


class Probe:
    """A node in this process that records what the launched nodes publish."""

    def __init__(self, robot_ns: str = "wx250s") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float32MultiArray

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("launch_probe", context=self.context)
        self.lock = threading.Lock()
        self.diagnostics: list[tuple[float, str, dict[str, str]]] = []
        self.actions: list[float] = []
        self.joints: list[tuple[float, np.ndarray]] = []
        n = self.node
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        n.create_subscription(Float32MultiArray, "/policy_node/action",
                              lambda _m: self._add(self.actions, time.monotonic()), 10)
        n.create_subscription(JointState, f"/{robot_ns}/joint_states", self._on_joints,
                              qos_profile_sensor_data)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _add(self, where: list, item: object) -> None:
        with self.lock:
            where.append(item)

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name.startswith("theia_ros"):
                self._add(self.diagnostics, (time.monotonic(), st.message,
                                             {kv.key: kv.value for kv in st.values}))

    def _on_joints(self, msg) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        if all(n in index for n in K.JOINT_NAMES):
            q = np.array([msg.position[index[n]] for n in K.JOINT_NAMES])
            self._add(self.joints, (time.monotonic(), q))

    def call(self, service: str, timeout_s: float = 10.0):
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, service)
        try:
            assert client.wait_for_service(timeout_sec=timeout_s), f"no {service}"
            done = threading.Event()
            future = client.call_async(Trigger.Request())
            future.add_done_callback(lambda _f: done.set())
            assert done.wait(timeout_s), f"{service} did not answer"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def last_diagnostics(self) -> dict[str, str]:
        with self.lock:
            return dict(self.diagnostics[-1][2]) if self.diagnostics else {}

    def actions_since(self, t: float) -> int:
        with self.lock:
            return sum(1 for a in self.actions if a >= t)

    def joints_now(self) -> np.ndarray | None:
        with self.lock:
            return self.joints[-1][1].copy() if self.joints else None

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    ru.require()
    ru.activate()
    return ru.colcon_install(tmp_path_factory.mktemp("colcon"))


@pytest.fixture(scope="module")
def sim_bundle(tmp_path_factory) -> Path:
    return session_tiny_bundle(tmp_path_factory, SIM_IMAGE_HW)


@pytest.fixture
def probe():
    os.environ["ROS_DOMAIN_ID"] = str(ru.domain_id())
    p = Probe()
    yield p
    p.close()


def launch(installed: Path, tmp_path: Path, launch_file: str, *args: str) -> ru.Launch:
    return ru.Launch(installed, launch_file, list(args), tmp_path / "launch.log",
                     ru.domain_id())


def finished_cleanly(log: str, executable: str) -> bool:
    return any(f"[{executable}-" in line and "process has finished cleanly" in line
               for line in log.splitlines())


def run_policy(probe: Probe, run: ru.Launch, seconds: float,
               end: str = "stop") -> tuple[dict[str, str], int]:
    """~/start, ``seconds`` of ticking, then ``~/<end>`` (stop: park; pause: hold); the
    diagnostics before the end and how many actions came after it."""
    try:
        assert probe.call("/policy_node/start", timeout_s=90.0).success, run.log()[-3000:]
    except AssertionError:
        run.close()
        raise
    t0 = time.monotonic()
    time.sleep(seconds)
    assert ru.wait_for(lambda: probe.last_diagnostics().get("state") == "running", 5.0)
    diag = probe.last_diagnostics()
    counted = probe.actions_since(t0)
    diag["actions_counted"] = str(counted)
    stop = probe.call(f"/policy_node/{end}")
    assert stop.success and stop.message in {"stop": ("stopped", "stopped; parking"),
                                             "pause": ("paused",)}[end]
    time.sleep(1.0)
    after = probe.actions_since(time.monotonic() - 0.8)
    return diag, after


def test_widowx_door_launch_robot_sim(installed, sim_bundle, probe, tmp_path) -> None:
    run = launch(installed, tmp_path, "widowx_door.launch.py", "robot:=sim",
                 f"policy:={sim_bundle}", "backend:=onnxruntime", "sim_seed:=3")
    diag, after = run_policy(probe, run, 6.0)
    assert int(diag["ticks"]) >= 10, diag  # 30 at 5 Hz; a loaded 2-core machine keeps fewer
    assert int(diag["actions_counted"]) >= 5, diag
    assert after == 0, "actions after ~/stop"
    assert ru.wait_for(lambda: probe.last_diagnostics().get("state") == "stopped", 3.0)
    rc = run.interrupt()
    log = run.log()
    assert rc == 0, log[-3000:]
    assert finished_cleanly(log, "policy_node"), log[-3000:]


@pytest.mark.slow
def test_widowx_door_launch_interbotix_twin(installed, sim_bundle, probe, tmp_path) -> None:
    """robot:=widowx use_sim:=true: the arm moves at 5 Hz, ~/pause holds it, ~/start resumes,
    and a Ctrl-C parks the arm at the sleep pose before every process exits cleanly.

    (~/stop parks too, as with robot:=sim above; from the sleep pose a new ~/start only
    holds, because the sleep pose sits at the safety filter's joint limits.)"""
    run = launch(installed, tmp_path, "widowx_door.launch.py", "robot:=widowx",
                 "use_sim:=true", f"policy:={sim_bundle}", "backend:=onnxruntime", "sim_seed:=3")
    assert ru.wait_for(lambda: probe.joints_now() is not None, 90.0), run.log()[-3000:]
    q_start = probe.joints_now()
    diag, after = run_policy(probe, run, 10.0, end="pause")
    print("\nwidowx + xs_sdk twin, launched:", {k: diag.get(k) for k in (
        "ticks", "commands", "actions_counted", "rate_hz", "period_error_p50_ms",
        "period_error_p99_ms", "period_error_max_ms", "missed_ticks", "images_received")})
    assert int(diag["ticks"]) >= 25, diag
    assert int(diag["commands"]) >= 10, diag
    assert int(diag["images_received"]) >= 10, diag
    assert after == 0, "actions after ~/pause"
    q_paused = probe.joints_now()
    assert np.max(np.abs(q_paused - q_start)) > 0.02, "the policy did not move the arm"
    time.sleep(1.0)
    assert np.max(np.abs(probe.joints_now() - q_paused)) < 0.01, "paused, the arm moved"
    assert probe.call("/policy_node/start").success
    time.sleep(3.0)
    assert probe.last_diagnostics()["state"] == "running"
    assert not np.allclose(probe.joints_now(), K.SLEEP_QPOS_RAD, atol=0.05)
    rc = run.interrupt()
    log = run.log()
    assert rc == 0, log[-3000:]
    assert np.allclose(probe.joints_now(), K.SLEEP_QPOS_RAD, atol=0.05), probe.joints_now()
    assert finished_cleanly(log, "policy_node"), log[-3000:]
    assert finished_cleanly(log, "xs_sdk_twin"), log[-3000:]


@pytest.mark.slow
def test_teleop_record_launch_interbotix_twin(installed, probe, tmp_path) -> None:
    """teleop_record.launch.py with the twin: a SpaceMouse twist moves the arm, an episode is
    saved, and a Ctrl-C parks the arm."""
    from geometry_msgs.msg import Twist

    dataset = tmp_path / "demos"
    run = launch(installed, tmp_path, "teleop_record.launch.py", "robot:=widowx",
                 "use_sim:=true", "spacenav:=false", f"dataset:={dataset}", "sim_seed:=3")
    pub = probe.node.create_publisher(Twist, "/spacenav/twist", 10)
    try:  # refused until the first camera frame and joint state have arrived
        assert probe.call("/recorder_node/start", timeout_s=90.0) is not None
        assert ru.wait_for(lambda: probe.call("/recorder_node/start").success, 30.0, 0.5), \
            run.log()[-3000:]
    except AssertionError:
        run.close()
        raise
    assert ru.wait_for(lambda: probe.joints_now() is not None, 10.0)
    q0 = probe.joints_now()
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        pub.publish(Twist())  # keep the teleop fresh at rest first, then push up
        if time.monotonic() > end - 3.0:
            msg = Twist()
            msg.linear.z = 0.5
            pub.publish(msg)
        time.sleep(0.05)
    moved = float(K.fk_pose(probe.joints_now())[2] - K.fk_pose(q0)[2])
    assert probe.call("/recorder_node/save_success").success
    rc = run.interrupt()
    log = run.log()
    assert rc == 0, log[-3000:]
    assert moved > 0.01, (moved, log[-2000:])
    assert np.allclose(probe.joints_now(), K.SLEEP_QPOS_RAD, atol=0.05), probe.joints_now()
    assert finished_cleanly(log, "recorder_node"), log[-3000:]
    assert (dataset / "meta" / "info.json").is_file()
