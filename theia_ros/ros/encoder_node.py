"""``encoder_node``: Theia features of the newest camera frame, for other nodes to consume.

Publishes ``std_msgs/Float32MultiArray`` with layout ``[tokens 196, channels C]`` (row-major:
``data[t * C + c]``), the spatial tokens of the bundle's encoder graph (``PolicyRuntime.encode``)
for the newest frame, at most ``max_rate_hz`` (frames arriving faster are dropped, never queued).

Example::

    encoder_node --ros-args -p bundle:=bundles/door -p image_topic:=/camera/color/image_raw
    ros2 topic echo /encoder_node/features --field layout
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, MultiArrayDimension

from theia_ros.errors import TheiaError
from theia_ros.ros import common as rc
from theia_ros.ros.params import ENCODER_NODE_PARAMS


def features_message(tokens: np.ndarray) -> Float32MultiArray:
    """``[1, N, C]`` or ``[N, C]`` float tokens -> Float32MultiArray with dims tokens, channels."""
    arr = np.asarray(tokens, dtype=np.float32).reshape(tokens.shape[-2], tokens.shape[-1])
    n, c = arr.shape
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="tokens", size=n, stride=n * c),
                      MultiArrayDimension(label="channels", size=c, stride=c)]
    msg.data = arr.reshape(-1).tolist()
    return msg


class EncoderNode(Node):
    """See the module docstring. ``encode`` injects ``uint8 [H, W, 3] -> [1, N, C]``."""

    def __init__(self, *, encode: Any = None, node_name: str = "encoder_node",
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._log_handler = rc.attach_logging(self)
        p = rc.declare_all(self, ENCODER_NODE_PARAMS, {})
        self.params = p
        self.add_on_set_parameters_callback(rc.parameter_guard(ENCODER_NODE_PARAMS,
                                                               self._on_param))
        self.runtime = None
        if encode is None:
            if not p["bundle"]:
                raise TheiaError("encoder_node: parameter 'bundle' is required")
            from theia_ros.runtime import load

            self.runtime = load(p["bundle"], p["backend"], threads=p["threads"] or None)
            encode = self.runtime.encode
        self._encode = encode
        self._lock = threading.Lock()
        self._pending: tuple[np.ndarray, Any] | None = None
        self._last_encode_s = -np.inf
        self.published = 0
        self.errors = 0
        sensors = MutuallyExclusiveCallbackGroup()
        work = MutuallyExclusiveCallbackGroup()
        self.pub = self.create_publisher(Float32MultiArray, p["features_topic"], 5)
        self.create_subscription(rc.image_message_type(p["image_type"]), p["image_topic"],
                                 self._on_image, rc.SENSOR_QOS, callback_group=sensors)
        self.timer = self.create_timer(0.01, self._work, callback_group=work)

    def _on_param(self, name: str, value: Any) -> None:
        self.params[name] = value

    def _on_image(self, msg: Any) -> None:
        try:
            rgb = rc.message_to_rgb(msg)
        except TheiaError as exc:
            self.errors += 1
            self.get_logger().warning(f"dropped image: {exc}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._pending = (rgb, msg.header)

    def _work(self) -> None:
        """Encode the newest frame when one is pending and the rate allows (own thread)."""
        if time.monotonic() - self._last_encode_s < 1.0 / self.params["max_rate_hz"]:
            return
        with self._lock:
            item, self._pending = self._pending, None
        if item is None:
            return
        self._last_encode_s = time.monotonic()
        try:
            tokens = self._encode(item[0])
        except TheiaError as exc:
            self.errors += 1
            self.get_logger().warning(f"encode failed: {exc}", throttle_duration_sec=2.0)
            return
        self.pub.publish(features_message(tokens))
        self.published += 1

    def shutdown(self) -> None:
        self.timer.cancel()
        if self.runtime is not None:
            self.runtime.close()
        logging.getLogger("theia_ros").removeHandler(self._log_handler)


def main(argv: list[str] | None = None) -> int:
    """Console script ``encoder_node``."""
    return rc.spin_node(EncoderNode, argv if argv is not None else sys.argv, "encoder_node")


if __name__ == "__main__":
    sys.exit(main())
