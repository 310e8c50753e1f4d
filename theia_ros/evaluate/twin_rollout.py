"""Closed-loop door episodes through the real WidowX path, for comparison with ``rollout``.

Same episodes, policy, safety filter and loop settings as :func:`rollout.run_episodes`, but the
robot is :class:`~theia_ros.robots.widowx.WidowXAdapter` driving Interbotix's
``interbotix_xs_modules`` over DDS to the MuJoCo xs_sdk twin (``sim/xs_sdk_twin.py``), and
the camera frames arrive on a ROS topic from the twin's renderer, so what differs from
``SimWidowX`` is exactly what a real arm adds: real-time physics, the servos' time-based
profile, joint states and images that are a little old, register reads.

Needs rclpy, the ``interbotix_xs_msgs`` types and ``interbotix_xs_modules`` (a ROS 2 install
with the Interbotix workspace, or the test set-up's ``tests/ros_upstream.activate()``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from theia_ros.control import (
    ControlLoop,
    Freshness,
    ImageCache,
    LoopConfig,
    SafetyFilter,
    SafetyLimits,
    TickReport,
)
from theia_ros.evaluate.rollout import EpisodeResult, RunResult, RunSettings, _timed, tally_tick
from theia_ros.sim.success import DoorStage
from theia_ros.types import Observation

CAMERA = "front"
_ids = itertools.count()


def run_twin_episodes(policy: Callable[[Observation], np.ndarray], seeds: Sequence[int],
                      settings: RunSettings | None = None, *, image_size: int = 224,
                      camera_rate_hz: float = 10.0, park_moving_time_s: float = 0.5,
                      on_episode: Callable[[EpisodeResult], None] | None = None) -> RunResult:
    """Run ``policy`` for each seed on the twin through the WidowX adapter (real time only:
    ``settings.fast`` is ignored)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from theia_ros.ros.common import stamp_to_monotonic
    from theia_ros.ros.image_conversion import image_to_rgb
    from theia_ros.sim.xs_sdk_twin import XsSdkTwin

    settings = settings or RunSettings()
    result = RunResult(fast=False)
    timed = _timed(policy, result.policy_s)
    own_rclpy = not rclpy.ok()
    if own_rclpy:
        rclpy.init()
    ns = f"wx250s_eval{next(_ids)}"
    topic = f"/{ns}/camera/image_raw"
    twin = XsSdkTwin(ns, seed=int(seeds[0]) if len(seeds) else None, start_qpos="scene",
                     camera_topic=topic, image_hw=(image_size, image_size),
                     camera_rate_hz=camera_rate_hz)
    node = rclpy.create_node(f"{ns}_camera")
    cache = ImageCache()
    frames = {"last_stamp": -math.inf}

    def on_image(msg: Any) -> None:
        stamp = stamp_to_monotonic(node, msg.header.stamp)
        cache.put(CAMERA, image_to_rgb(msg), stamp)
        frames["last_stamp"] = stamp

    node.create_subscription(Image, topic, on_image, qos_profile_sensor_data)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        for seed in seeds:
            ep = _run_one(twin, cache, frames, timed, int(seed), settings, result, ns,
                          park_moving_time_s)
            result.episodes.append(ep)
            if on_episode is not None:
                on_episode(ep)
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        twin.close()
        if own_rclpy:
            rclpy.try_shutdown()
    return result


def _stage(twin: Any) -> tuple[DoorStage, float]:
    with twin._lock:
        return twin.env.stage(), twin.env.door_angle_rad()


def _run_one(twin: Any, cache: ImageCache, frames: dict[str, float], policy: Any, seed: int,
             settings: RunSettings, result: RunResult, ns: str,
             park_moving_time_s: float) -> EpisodeResult:
    from theia_ros.robots.widowx import WidowXAdapter, WidowXConfig

    twin.reset_scene(seed)
    reset_s = time.monotonic()
    end = reset_s + 5.0  # a frame rendered after the reset, so the first tick sees this scene
    while frames["last_stamp"] <= reset_s and time.monotonic() < end:
        time.sleep(0.01)
    adapter = WidowXAdapter(WidowXConfig(robot_name=ns, control_rate_hz=settings.rate_hz,
                                         park_moving_time_s=park_moving_time_s,
                                         node_name=f"{ns}_widowx_{seed}"))
    adapter.connect()
    safety = SafetyFilter(SafetyLimits.wx250s())
    config = LoopConfig(rate_hz=settings.rate_hz, freshness=Freshness(cameras=(CAMERA,)))
    stage0, angle0 = _stage(twin)
    state: dict[str, Any] = {"steps": 0, "holds": 0, "final": stage0, "best": stage0,
                             "angle_rad": angle0}
    loop: ControlLoop | None = None

    def on_tick(report: TickReport) -> None:
        stage, angle = _stage(twin)
        state["final"], state["angle_rad"] = stage, angle
        state["best"] = max(state["best"], stage)
        tally_tick(report, state, result.tick_s, result.command_latency_s)
        if settings.stop_on_success and stage >= DoorStage.FULLY_OPEN and loop is not None:
            loop.stop()

    t0 = time.perf_counter()
    try:
        loop = ControlLoop(adapter, policy, safety, config, settings.chunking(), images=cache,
                           on_tick=on_tick)
        try:
            loop.run(max_ticks=settings.max_steps)
        finally:
            loop.close()
    finally:
        with contextlib.suppress(Exception):
            adapter.disconnect()
    stats = loop.stats.summary()
    result.overruns += int(stats["overruns"])
    return EpisodeResult(seed=seed, final_stage=state["final"].name,
                         best_stage=state["best"].name, steps=int(state["steps"]),
                         door_angle_deg=math.degrees(state["angle_rad"]),
                         wall_s=time.perf_counter() - t0, holds=int(state["holds"]),
                         interventions=dict(stats["interventions"]))
