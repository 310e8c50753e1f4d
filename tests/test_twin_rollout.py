"""The closed-loop door episode through the real WidowX path (WidowXAdapter -> upstream
``interbotix_xs_modules`` -> the MuJoCo xs_sdk twin, camera over a ROS topic) runs the same
episode as the SimWidowX path. The success comparison on 20 held-out seeds with a trained
bundle is ``benchmarks/widowx_real_path.py``."""

from __future__ import annotations

import os

import pytest
import ros_upstream as ru
from helpers_nodes import session_tiny_bundle


@pytest.mark.slow
def test_twin_episodes_act_every_tick_and_track_the_door(tmp_path_factory) -> None:
    ru.activate()
    os.environ["ROS_DOMAIN_ID"] = str(ru.domain_id())
    from theia_ros.evaluate.rollout import RunSettings, run_episodes
    from theia_ros.evaluate.twin_rollout import run_twin_episodes
    from theia_ros.runtime import load

    runtime = load(session_tiny_bundle(tmp_path_factory, (96, 96)), backend="onnxruntime")
    settings = RunSettings(max_steps=15)
    seeds = [10_000, 10_001]
    twin = run_twin_episodes(runtime, seeds, settings, image_size=96)
    sim = run_episodes(runtime, seeds, settings, image_size=96)
    for a, b in zip(twin.episodes, sim.episodes):
        assert a.seed == b.seed
        assert a.steps >= 12 and a.holds <= 3, a  # a command on (nearly) every tick
        # each seed's own door: its starting angle differs between scenes
        assert abs(a.door_angle_deg - b.door_angle_deg) < 3.0, (a, b)
    assert twin.episodes[0].door_angle_deg != twin.episodes[1].door_angle_deg
