"""Shared pieces for the Spot tests: a running stand-in, credentials, a config pointing at it.

The server these fixtures start is a stand-in for a Spot robot, not Boston Dynamics' software.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from theia_ros.robots.spot.adapter import SpotAdapter, SpotConfig
from theia_ros.sim.spot import SpotStandIn
from theia_ros.types import Action, ActionKind

# a brisker robot than the default, so tests spend less time unstowing and stowing
QUICK = {"joint_speed_rad_s": 4.0, "power_on_s": 0.1, "stand_s": 0.1, "sit_s": 0.1}
USERNAME = "operator"
PASSWORD = "Xq7-s3cret-PW-4f9a"  # distinctive, so a leak into any log line is unmistakable


@pytest.fixture
def standin() -> Iterator[SpotStandIn]:
    with SpotStandIn(username=USERNAME, password=PASSWORD, **QUICK) as server:
        yield server


@pytest.fixture
def robot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOSDYN_CLIENT_USERNAME", USERNAME)
    monkeypatch.setenv("BOSDYN_CLIENT_PASSWORD", PASSWORD)


def config_for(server: SpotStandIn, **overrides: object) -> SpotConfig:
    """A config aimed at the stand-in: 20 Hz so tests are quick, colour source by default."""
    values: dict[str, object] = {
        "hostname": "127.0.0.1", "port": server.port, "robot_cert": server.cert_path,
        "cameras": {"front": "hand_color_image"}, "rate_hz": 20.0, "rpc_timeout_s": 2.0,
        "power_timeout_s": 5.0, "lease_keepalive_s": 0.5,
    }
    values.update(overrides)
    return SpotConfig(**values)  # type: ignore[arg-type]


def pose_action(x: float, y: float, z: float, gripper: float = 0.5,
                rpy: tuple[float, float, float] = (0.0, 0.2, 0.1)) -> Action:
    return Action(ActionKind.EE_ABSOLUTE, np.array([x, y, z]), np.array(rpy), gripper)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def run_ticks(adapter: SpotAdapter, ticks: int, period_s: float,
              action_at: Callable[[int], Action]) -> None:
    """A bare fixed-rate observe -> apply loop (the control core's loop is tested elsewhere)."""
    start = time.monotonic()
    for tick in range(ticks):
        with contextlib.suppress(Exception):  # a failed observe() is reported as a fault
            adapter.observe()
        adapter.apply(action_at(tick))
        delay = start + (tick + 1) * period_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
