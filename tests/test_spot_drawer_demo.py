"""``theia demo --task spot_drawer`` end to end, shrunk: record -> train -> export -> closed loop.

Runs the real ``SpotAdapter`` / ``bosdyn-client`` against the simulated Spot
(``theia_ros.sim.spot``, a stand-in, not Boston Dynamics' software). Slow (~3 min on 2 cores).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("bosdyn.client")
pytest.importorskip("torch")


@pytest.mark.slow
def test_quick_spot_drawer_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    from training.demo.spot_pipeline import SpotDemoConfig, run_spot_demo

    config = SpotDemoConfig.quick(demos=2, iters=20, eval_episodes=1, max_steps=25)
    report = run_spot_demo(config, tmp_path, show_progress=False)
    assert report["recorded"]["episodes"] == 2  # only successful demos are kept
    info = json.loads((tmp_path / "dataset" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2
    assert (tmp_path / "bundle" / "bundle.yaml").exists()
    (episode,) = report["per_episode"]
    assert episode["steps"] >= 20  # the loop acted at 5 Hz through the adapter
    assert 0.0 <= episode["opening_m"] <= 0.3
    assert report["timing"]["tick_ms"]["p50"] is not None
    assert (tmp_path / "rollout.mp4").exists()
    assert json.loads((tmp_path / "report.json").read_text())["success"]["n"] == 1
