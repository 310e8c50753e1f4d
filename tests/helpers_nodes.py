"""Fixtures for the node tests: a tiny exported bundle, an isolated ROS domain, publishers.

The bundle is real: a random-weight Theia-Tiny CNN-MLP policy exported with the EXPORT
helper's ``export_bundle`` (ONNX, parity-checked), 96 x 128 camera, horizon 4, built once per
test session. Nodes run in-process on a private ``rclpy`` context with a per-session
``ROS_DOMAIN_ID`` so concurrent test runs on this machine cannot hear each other.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from theia_ros.control import kinematics as K
from theia_ros.ros.image_conversion import rgb_to_image_fields

IMAGE_HW = (96, 128)


def session_domain_id() -> int:
    """A ROS domain for this process (ROS allows 0..232 with FastDDS' default ports)."""
    return 100 + os.getpid() % 100


def build_tiny_bundle(root: Path, image_hw: tuple[int, int] = IMAGE_HW) -> Path:
    """Export a random Theia-Tiny CNN-MLP policy (EE deltas, state [7], horizon 4) for a
    camera of ``image_hw``."""
    import torch

    from policies.cnn_mlp import CnnMlpConfig
    from policies.encoder import create_encoder
    from policies.normalize import Normalizer
    from policies.policy import PolicyConfig, build_policy, save_policy
    from training.export import ExportOptions, export_bundle

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = PolicyConfig(type="cnn_mlp", action_kind="ee_delta", state_dim=7, horizon=4)
    head = CnnMlpConfig(feature_dim=192, state_dim=7, horizon=4, neck_channels=32,
                        hidden_dim=32)
    # small action scale: the policy's raw outputs become ~1 cm steps
    unit = {"mean": [0.0] * 7, "std": [1.0] * 7, "min": [-1.0] * 7, "max": [1.0] * 7}
    small = {"mean": [0.0] * 6 + [0.5], "std": [0.01] * 6 + [0.1],
             "min": [-0.03] * 6 + [0.0], "max": [0.03] * 6 + [1.0]}
    norm = Normalizer.from_stats("mean_std", unit, small)
    policy = build_policy(cfg, create_encoder("theia_tiny", seed=0), head, norm)
    save_policy(policy, root / "policy")
    opts = ExportOptions(image_hw=tuple(image_hw), exporter="torchscript", torch_copy=False)
    out, _ = export_bundle(root / "policy", root / "bundle", opts, log=lambda *_: None)
    return out


def session_tiny_bundle(tmp_path_factory, image_hw: tuple[int, int]) -> Path:
    """:func:`build_tiny_bundle` once per test session and camera size."""
    root = tmp_path_factory.getbasetemp() / f"tiny_bundle_{image_hw[0]}x{image_hw[1]}"
    if (root / "bundle" / "bundle.yaml").is_file():
        return root / "bundle"
    return build_tiny_bundle(root, image_hw)


def joint_state_fields() -> tuple[list[str], list[float]]:
    return [*K.JOINT_NAMES, "left_finger"], [*map(float, K.HOME_QPOS_RAD), 0.03]


class SensorFeed:
    """Publishes camera frames and joint states from a background thread at ``rate_hz``.

    ``mode`` switches what is sent: ``ok``, ``no_image`` (joints only: the camera is stale),
    ``bad`` (malformed images cycling through wrong step / truncated / unknown encoding).
    ``joint_overrides`` (joint name -> position) replaces values in the joint states sent;
    ``stamp_override`` (sec, nanosec) replaces every header stamp (fault injection).
    """

    def __init__(self, node, image_topic: str = "/camera/image_raw",
                 joints_topic: str = "/joint_states", rate_hz: float = 20.0) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState

        self.node = node
        self.Image, self.JointState = Image, JointState
        self.image_pub = node.create_publisher(Image, image_topic, qos_profile_sensor_data)
        self.joint_pub = node.create_publisher(JointState, joints_topic, qos_profile_sensor_data)
        self.period_s = 1.0 / rate_hz
        self.mode = "ok"
        self.joint_overrides: dict[str, float] = {}
        self.stamp_override: tuple[int, int] | None = None
        self.sent_bad = 0
        rng = np.random.default_rng(1)
        self.rgb = rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SensorFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _bad_image(self, i: int):
        fields = rgb_to_image_fields(self.rgb)
        variants = [{"step": 10}, {"data": fields["data"][:100]}, {"encoding": "yuv422"}]
        return self.Image(**{**fields, **variants[i % len(variants)]})

    def _run(self) -> None:
        i = 0
        names, positions = joint_state_fields()
        while not self._stop.is_set():
            stamp = self.node.get_clock().now().to_msg()
            if self.stamp_override is not None:
                stamp.sec, stamp.nanosec = self.stamp_override
            if self.mode == "ok":
                img = self.Image(**rgb_to_image_fields(self.rgb))
            elif self.mode == "bad":
                img = self._bad_image(i)
                self.sent_bad += 1
            else:
                img = None
            if img is not None:
                img.header.stamp = stamp
                img.header.frame_id = "camera"
                self.image_pub.publish(img)
            overrides = dict(self.joint_overrides)
            js = self.JointState(name=names, position=[overrides.get(n, v)
                                                       for n, v in zip(names, positions)])
            js.header.stamp = stamp
            self.joint_pub.publish(js)
            i += 1
            time.sleep(self.period_s)


def wait_for(cond: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step_s)
    return cond()


def call_trigger(node, name: str, timeout_s: float = 10.0):
    """Call a ``std_srvs/Trigger`` service from ``node`` (spun by a background executor)."""
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, name)
    assert client.wait_for_service(timeout_sec=timeout_s), f"{name} not available"
    future = client.call_async(Trigger.Request())
    assert wait_for(future.done, timeout_s), f"{name} did not answer"
    node.destroy_client(client)
    return future.result()


class Spinner:
    """A SingleThreadedExecutor (as ``spin_node`` uses) spinning nodes in a background thread."""

    def __init__(self, context, *nodes) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=context)
        for n in nodes:
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=2.0)


@contextlib.contextmanager
def ros_context(domain_id: int) -> Iterator[object]:
    """An initialised private rclpy context on ``domain_id``."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)
