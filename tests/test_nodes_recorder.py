"""recorder_node with real rclpy: a SpaceMouse-style Twist drives the ``dry_run`` robot
(observations from the topics this test publishes), episodes are started / saved /
discarded / re-recorded through the services, and the dataset loads with the reader."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers_nodes import (
    IMAGE_HW,
    SensorFeed,
    Spinner,
    call_trigger,
    ros_context,
    session_domain_id,
    wait_for,
)

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")


def test_record_save_discard_rerecord(tmp_path) -> None:
    from geometry_msgs.msg import Twist
    from rclpy.parameter import Parameter

    from theia_ros.dataset import EpisodeDataset
    from theia_ros.ros.recorder_node import RecorderNode

    root = tmp_path / "demos"
    params = {"dataset": str(root), "task": "open the door", "robot": "dry_run",
              "scale_linear_m": 0.01, "teleop_timeout_s": 1.0}
    with ros_context(session_domain_id() + 1) as ctx:
        node = RecorderNode(context=ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        peer = rclpy.create_node("recorder_test_peer", context=ctx)
        twist_pub = peer.create_publisher(Twist, "/spacenav/twist", 10)
        feed = SensorFeed(peer).start()
        stop = threading.Event()

        def push_twist() -> None:  # operator pushes the SpaceMouse forward (+x) half-way
            while not stop.is_set():
                msg = Twist()
                msg.linear.x = 0.5
                twist_pub.publish(msg)
                time.sleep(0.05)

        pusher = threading.Thread(target=push_twist, daemon=True)
        pusher.start()
        spinner = Spinner(ctx, node, peer)
        try:
            assert not call_trigger(peer, "/recorder_node/save").success  # nothing recorded
            assert wait_for(lambda: node.loop.stats.commands >= 1, 10.0)
            assert call_trigger(peer, "/recorder_node/start").success
            assert not call_trigger(peer, "/recorder_node/start").success  # already recording
            assert wait_for(lambda: node.frames >= 5, 5.0)
            res = call_trigger(peer, "/recorder_node/save_success")
            assert res.success, res.message
            assert call_trigger(peer, "/recorder_node/start").success
            assert wait_for(lambda: node.frames >= 2, 5.0)
            assert call_trigger(peer, "/recorder_node/discard").success
            assert call_trigger(peer, "/recorder_node/rerecord").success
            assert wait_for(lambda: node.frames >= 3, 5.0)
            res = call_trigger(peer, "/recorder_node/rerecord")  # throw away, start again
            assert res.success
            assert wait_for(lambda: node.frames >= 3, 5.0)
            assert call_trigger(peer, "/recorder_node/save_failure").success
        finally:
            stop.set()
            feed.stop()
            node.shutdown()
            spinner.close()
            node.destroy_node()
            peer.destroy_node()

    ds = EpisodeDataset(root)
    assert ds.num_episodes == 2 and ds.fps == 5
    assert [e.success for e in ds.episodes] == [True, False]
    ep = ds.episode(0)
    assert ep["observation.images.front"].shape[1:] == (*IMAGE_HW, 3)
    actions = ep["action"]
    assert actions.shape[1] == 7 and actions.shape[0] >= 5
    np.testing.assert_allclose(actions[:, 0], 0.005, atol=1e-6)  # 0.5 x 1 cm per step
    np.testing.assert_allclose(actions[:, 1:6], 0.0, atol=1e-6)
    assert ep["observation.state"].shape[1] == 7
