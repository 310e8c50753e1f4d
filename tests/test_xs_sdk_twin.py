"""What xs_sdk_sim does not model, through our MuJoCo xs_sdk twin: time-based profiles on
real physics, the driver's short register list for a motor in hardware error, torque loss.

The adapter runs through the unmodified upstream ``interbotix_xs_modules`` over real DDS to
``theia_ros.sim.xs_sdk_twin`` (real generated ``interbotix_xs_msgs`` types), as in
``test_widowx_adapter.py``.
"""
# ruff: noqa: F401, F811 - the twin fixture is imported from helpers_xs_twin

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import ros_upstream as ru
from helpers_xs_twin import START_Q, make_adapter, twin

from theia_ros.control import (
    ControlLoop,
    ImageCache,
    LoopConfig,
    LoopState,
    SafetyFilter,
    SafetyLimits,
)
from theia_ros.control import kinematics as K
from theia_ros.robots.widowx import WidowXAdapter, WidowXConfig
from theia_ros.sim.xs_sdk_twin import profile_fraction
from theia_ros.types import Action, ActionKind


def test_time_based_profile_is_a_trapezoid() -> None:
    assert profile_fraction(0.0, 2.0, 0.3) == 0.0
    assert profile_fraction(2.0, 2.0, 0.3) == 1.0
    assert profile_fraction(1.0, 2.0, 0.3) == pytest.approx(0.5)
    ts = np.linspace(0, 2, 201)
    s = np.array([profile_fraction(t, 2.0, 0.3) for t in ts])
    assert np.all(np.diff(s) >= 0)
    v = np.diff(s) / np.diff(ts)
    assert v[100] == pytest.approx(1 / 1.7, rel=1e-3)  # cruise speed: 1 / (T - Ta)
    assert profile_fraction(0.1, 0.0, 0.0) == 1.0  # Profile_Velocity 0: as fast as it can


@pytest.fixture
def arm(twin):
    adapter = make_adapter(twin)
    adapter.connect()
    adapter.move_joints(START_Q, 1.0, tolerance_rad=5e-3)
    yield adapter
    adapter.disconnect()
    twin._srv_reboot(type("R", (), {"cmd_type": "group", "name": "all", "enable": True,
                                    "smart_reboot": True})(), None)


def step(vec: list[float]) -> Action:
    return Action.from_vector(ActionKind.EE_DELTA, np.asarray(vec, dtype=np.float64))


def progress(adapter: WidowXAdapter, q0: np.ndarray, target: np.ndarray) -> float:
    q = adapter.observe().joint_positions
    return float(np.dot(q - q0, target - q0) / np.dot(target - q0, target - q0))


def test_step_profile_reaches_the_servos(twin, arm) -> None:
    """The same 2 cm step, once on the 200 ms profile the adapter sets, once on modes.yaml's
    2000 ms profile that upstream leaves on the servos: only the first keeps up with 5 Hz."""
    results = {}
    for label in ("adapter", "modes.yaml"):
        if label == "modes.yaml":
            arm.link.write_registers("arm", "Profile_Velocity", 2000, 1.0)
            arm.link.write_registers("arm", "Profile_Acceleration", 300, 1.0)
        q0 = arm.observe().joint_positions
        arm.apply(step([0.0, 0, 0.02, 0, 0, 0, 1.0]))
        target = np.asarray(arm.bot.arm.get_joint_commands())
        time.sleep(0.3)
        results[label] = progress(arm, q0, target)
        time.sleep(2.0)
    arm._profile = None  # the registers were changed behind the adapter's back
    assert results["adapter"] > 0.8, results
    assert results["modes.yaml"] < 0.3, results


def test_upstream_alone_leaves_the_two_second_profile(twin, arm) -> None:
    """Why the adapter writes the profile itself: upstream's constructor does not."""
    from interbotix_common_modules.common_robot.robot import InterbotixRobotNode
    from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS

    arm.link.write_registers("arm", "Profile_Velocity", 2000, 1.0)
    node = InterbotixRobotNode("upstream_alone", use_global_arguments=False)
    try:
        InterbotixManipulatorXS(robot_model="wx250s", robot_name=arm.link.ns[1:],
                                moving_time=0.2, accel_time=0.05, node=node)
    finally:
        node.destroy_node()
    arm._profile = None
    assert arm.link.read_registers("arm", "Profile_Velocity", 1.0) == [2000] * 6


def test_motor_in_hardware_error_is_a_fault(twin) -> None:
    adapter = make_adapter(twin, fault_check_period_s=0.05)
    adapter.connect()
    try:
        adapter.observe()
        assert adapter.fault is None
        twin.inject_hardware_error("elbow", 4)
        # the driver's read stops at the elbow and still succeeds: two values, not six
        assert adapter.link.read_registers("arm", "Hardware_Error_Status", 1.0) == [0, 0]
        time.sleep(0.06)
        adapter.observe()
        assert adapter.fault is not None and "elbow" in adapter.fault, adapter.fault
        q_cmd = list(adapter.bot.arm.get_joint_commands())
        adapter.apply(step([0.02, 0, 0, 0, 0, 0, 1.0]))
        adapter.safe_stop()
        assert adapter.bot.arm.get_joint_commands() != [] and adapter.counters["parks"] == 0
        assert np.allclose(adapter.bot.arm.get_joint_commands()[:2], q_cmd[:2], atol=0.05)
        assert adapter.recover() is False  # still in error
        adapter.bot.core.srv_reboot.call_async(_reboot_request())
        assert ru.wait_for(lambda: adapter.recover(), 2.0)
        assert adapter.fault is None
    finally:
        adapter.disconnect()


def _reboot_request():
    from interbotix_xs_msgs.srv import Reboot

    return Reboot.Request(cmd_type="group", name="arm", enable=True, smart_reboot=True)


def test_register_reads_leave_no_timers_behind(twin) -> None:
    """Upstream's register read waits on a 20 Hz rate it never destroys; ours does not."""
    adapter = make_adapter(twin, fault_check_period_s=0.001)
    adapter.connect()
    try:
        timers = len(list(adapter.link.node.timers))
        reads = twin.registers_read
        for _ in range(20):
            adapter.observe()
            time.sleep(0.002)
        assert twin.registers_read - reads >= 15
        assert len(list(adapter.link.node.timers)) == timers
        assert adapter.fault is None
    finally:
        adapter.disconnect()


def test_control_loop_through_the_twin_safe_stops_on_motor_fault(twin, arm) -> None:
    arm.config = WidowXConfig(**{**arm.config.__dict__, "fault_check_period_s": 0.05})
    cache = ImageCache()
    safety = SafetyFilter(SafetyLimits.wx250s(), joint_solver=K.solve_ik)

    def policy(obs):
        cache.put("front", np.zeros((4, 4, 3), np.uint8), time.monotonic())
        return np.tile([0.0, 0, 0.01, 0, 0, 0, 1.0], (2, 1))

    cache.put("front", np.zeros((4, 4, 3), np.uint8), time.monotonic())
    loop = ControlLoop(arm, policy, safety, LoopConfig(rate_hz=5.0), images=cache)
    z0 = arm.observe().ee_pose[2]
    loop.run(max_ticks=5)
    assert loop.stats.commands >= 4
    time.sleep(0.3)
    assert 0.02 < arm.observe().ee_pose[2] - z0 < 0.01 * loop.stats.commands + 5e-3
    twin.inject_hardware_error("waist", 32)
    loop.run(max_ticks=5)
    assert loop.state is LoopState.FAULTED and "waist" in str(arm.fault)
    assert arm.counters["parks"] == 0  # a motor in error: hold, do not park


def test_camera_publishes_the_door_scene_at_the_requested_size(twin) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from theia_ros.ros.image_conversion import image_to_rgb
    from theia_ros.sim.xs_sdk_twin import XsSdkTwin

    topic = f"/wxcam{os.getpid()}/image"
    cam = XsSdkTwin(f"wxcam{os.getpid()}", seed=3, camera_topic=topic, image_hw=(64, 64),
                    camera_rate_hz=10.0)
    node = rclpy.create_node(f"cam_probe_{os.getpid()}")
    frames = []
    node.create_subscription(Image, topic, frames.append, qos_profile_sensor_data)
    try:
        end = time.monotonic() + 20.0
        while len(frames) < 3 and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        cam.close()
    assert len(frames) >= 3
    rgb = image_to_rgb(frames[-1])
    assert rgb.shape == (64, 64, 3) and frames[-1].encoding == "rgb8"
    assert frames[-1].header.stamp.sec > 0
    # the view SimWidowX renders of the same scene and arm pose
    from theia_ros.sim.door_env import DoorEnv

    env = DoorEnv(image_size=64)
    try:
        env.reset(3, arm_qpos=K.SLEEP_QPOS_RAD)
        ref = env.render()
    finally:
        env.close()
    assert np.abs(rgb.astype(int) - ref.astype(int)).mean() < 3.0


def test_linger_serves_until_the_commanding_node_leaves(twin) -> None:
    assert twin.linger(0.2) is True  # nobody commands the arm
    adapter = make_adapter(twin)
    adapter.connect()
    try:
        assert twin.linger(0.3) is False
    finally:
        adapter.disconnect()
    assert twin.linger(5.0) is True
