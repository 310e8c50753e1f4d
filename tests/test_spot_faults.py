"""Spot adapter faults over real gRPC: nothing is sent after the tick that saw the fault.

THE SERVER IN THESE TESTS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE
(``tests/spot_standin``). The lease-revocation, e-stop and NaN tests drive the adapter with the
control core's real ``ControlLoop`` + ``SafetyFilter``; the others call the adapter directly.
"""
# ruff: noqa: F401, F811 - pytest fixtures imported from spot_standin.fixtures

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from bosdyn.api import robot_command_pb2
from spot_standin.fixtures import config_for, pose_action, robot_env, standin, wait_until

from theia_ros.control import ControlLoop, Freshness, LoopConfig, LoopState, SafetyFilter
from theia_ros.errors import TheiaError
from theia_ros.robots.spot.adapter import SpotAdapter
from theia_ros.types import Observation

RATE_HZ = 20.0


def _circle_policy(nan_every: int = 0):
    """Scripted drawer-like policy: absolute hand poses on a small circle, chunk [4, 7]."""
    calls = [0]

    def policy(obs: Observation) -> np.ndarray:
        calls[0] += 1
        phase = 0.3 * calls[0] + 0.05 * np.arange(4)
        chunk = np.stack([0.65 + 0.03 * np.cos(phase), 0.03 * np.sin(phase),
                          np.full(4, 0.3), np.zeros(4), np.full(4, 0.2), np.zeros(4),
                          np.full(4, 0.8)], axis=1)
        if nan_every and calls[0] % nan_every == 0:
            chunk[:, 1] = np.nan
        return chunk

    return policy


def _loop(spot: SpotAdapter, nan_every: int = 0) -> ControlLoop:
    safety = SafetyFilter(spot.config.safety_limits())
    freshness = Freshness(cameras=("front",), max_image_age_s=0.5, max_joint_age_s=0.5)
    return ControlLoop(spot, _circle_policy(nan_every), safety,
                       LoopConfig(rate_hz=RATE_HZ, freshness=freshness))


def _run_in_thread(loop: ControlLoop, duration_s: float) -> threading.Thread:
    thread = threading.Thread(target=loop.run, kwargs={"duration_s": duration_s}, daemon=True)
    thread.start()
    return thread


def _arm_commands_after(server, t_s: float) -> list:
    return [c for c in server.commands() if c.received_s > t_s]


@pytest.mark.parametrize("fault", ["lease_revoked", "estop"])
def test_fault_mid_run_stops_commands_within_one_tick(standin, robot_env, fault):
    with SpotAdapter(config_for(standin, rate_hz=RATE_HZ)) as spot:
        loop = _loop(spot)
        thread = _run_in_thread(loop, duration_s=5.0)
        assert wait_until(lambda: spot.commands_sent >= 5), loop.last_fault
        t_fault = time.monotonic()
        standin.revoke_lease() if fault == "lease_revoked" else standin.engage_estop()
        assert wait_until(lambda: loop.state is LoopState.FAULTED, timeout_s=2.0)
        thread.join(timeout=2.0)
        late = _arm_commands_after(standin, t_fault)
        # at most the command already in flight in the tick that saw it, and the robot refused it
        assert len(late) <= 1, [c.verdict for c in late]
        assert not any(c.accepted for c in late)
        expected = "lease" if fault == "lease_revoked" else "estop"
        assert spot.fault.kind == expected
        assert spot.fault.stamp_s - t_fault < 0.5  # detected in about a tick (50 ms)
        # more ticks do not send anything either
        for _ in range(3):
            spot.apply(pose_action(0.66, 0.0, 0.3))
        assert len(_arm_commands_after(standin, t_fault)) == len(late)
    events = standin.events()
    tail = events[events.index("lease_revoked" if fault == "lease_revoked"
                               else "estop_engaged"):]
    assert "stow" not in tail and "safe_power_off" not in tail  # cannot/must not command now
    assert not thread.is_alive()


def test_nan_actions_are_never_sent(standin, robot_env):
    with SpotAdapter(config_for(standin, rate_hz=RATE_HZ)) as spot:
        loop = _loop(spot, nan_every=3)
        loop.run(max_ticks=15)
        assert loop.stats.holds.get("safety:non_finite", 0) >= 3
        assert spot.commands_sent >= 6 and spot.fault is None
        # the adapter refuses non-finite poses itself too, without a filter in front
        before = len(standin.commands())
        held = spot.apply(pose_action(math.nan, 0.0, 0.3))
        assert spot.actions_refused == 1 and len(standin.commands()) == before
        assert np.all(np.isfinite(held.to_vector()))
    for command in standin.commands():
        arm = command.request.command.synchronized_command.arm_command
        if arm.HasField("arm_cartesian_command"):
            pose = arm.arm_cartesian_command.pose_trajectory_in_task.points[0].pose
            numbers = [pose.position.x, pose.position.y, pose.position.z, pose.rotation.w,
                       pose.rotation.x, pose.rotation.y, pose.rotation.z]
            assert all(math.isfinite(v) for v in numbers)
            assert command.accepted


def test_rejected_command_stops_sending_and_still_shuts_down(standin, robot_env):
    with SpotAdapter(config_for(standin)) as spot:
        spot.observe()
        spot.apply(pose_action(0.7, 0.0, 0.3))
        standin.reject_commands(robot_command_pb2.RobotCommandResponse.STATUS_BEHAVIOR_FAULT)
        before = len(standin.commands())
        spot.apply(pose_action(0.7, 0.01, 0.3))
        assert spot.fault.kind == "rejected" and "BehaviorFault" in spot.fault.detail
        for _ in range(3):
            spot.apply(pose_action(0.7, 0.02, 0.3))
        assert len(standin.commands()) == before + 1
        standin.reject_commands(None)
    commanded = [e for e in standin.events() if e in ("stow", "safe_power_off", "lease_return")]
    assert commanded[-3:] == ["stow", "safe_power_off", "lease_return"]


def test_lost_connection_holds_then_faults_and_disconnect_is_prompt(standin, robot_env):
    spot = SpotAdapter(config_for(standin, rpc_tolerance_s=0.3))
    spot.connect()
    last = spot.observe()
    spot.apply(pose_action(0.7, 0.0, 0.3))
    sent = spot.commands_sent
    standin.drop_connection()
    # within the tolerance: the last observation again (its stamps are stale: the loop holds)
    assert spot.observe() is last and spot.fault is None
    spot.apply(pose_action(0.7, 0.01, 0.3))
    assert spot.commands_sent == sent and spot.fault is None
    time.sleep(0.35)
    with pytest.raises(TheiaError, match="no observation"):
        spot.observe()
    assert spot.fault.kind == "connection"
    spot.apply(pose_action(0.7, 0.01, 0.3))
    assert spot.commands_sent == sent
    start = time.monotonic()
    spot.safe_stop()
    spot.disconnect()
    spot.disconnect()  # idempotent
    assert time.monotonic() - start < 5.0


def test_lost_time_sync_is_restarted_then_faults_if_it_stays_down(standin, robot_env):
    cfg = config_for(standin, time_sync_interval_s=0.05, time_sync_tolerance_s=0.5)
    with SpotAdapter(cfg) as spot:
        spot.observe()
        spot.apply(pose_action(0.7, 0.0, 0.3))
        assert spot.time_synced
        standin.stop_time_sync()
        assert wait_until(lambda: not spot.time_synced)
        before = len(standin.commands())
        spot.apply(pose_action(0.7, 0.01, 0.3))  # the last estimate still holds: sent
        assert spot.fault is None and len(standin.commands()) == before + 1
        with standin.state.lock:
            standin.state.time_sync_up = True  # a blip: the restarted thread syncs again
        assert wait_until(lambda: (spot.apply(pose_action(0.7, 0.0, 0.3)) is not None
                                   and spot.time_synced), timeout_s=2.0)
        assert spot.fault is None and spot.transient_failures["time sync"] == 1
        standin.stop_time_sync()  # now for good
        assert wait_until(lambda: spot.apply(pose_action(0.7, 0.01, 0.3)) is not None
                          and spot.fault is not None, timeout_s=3.0)
        assert spot.fault.kind == "time_sync"
        sent = len(standin.commands())
        spot.apply(pose_action(0.7, 0.02, 0.3))
        assert len(standin.commands()) == sent


def test_recover_reacquires_a_revoked_lease(standin, robot_env):
    cfg = config_for(standin, recover=True, recover_interval_s=0.01)
    with SpotAdapter(cfg) as spot:
        spot.observe()
        spot.apply(pose_action(0.7, 0.0, 0.3))
        first_seq = standin.state.lease_seq
        standin.revoke_lease()
        spot.apply(pose_action(0.7, 0.01, 0.3))  # refused by the robot: lease fault
        assert spot.fault.kind == "lease"
        time.sleep(0.02)
        spot.apply(pose_action(0.7, 0.01, 0.3))  # recovers, sends nothing this tick
        assert spot.fault is None and standin.state.lease_seq == first_seq + 1
        spot.observe()
        sent = spot.apply(pose_action(0.7, 0.02, 0.3))
        last = standin.commands()[-1]
        assert last.accepted and last.request.lease.sequence[0] == first_seq + 1
        assert sent.xyz_m[1] == pytest.approx(0.02)
    assert standin.events().count("lease_acquire") == 2 and "lease_take" not in standin.events()


def test_recover_never_takes_the_lease_and_never_clears_an_estop(standin, robot_env):
    with SpotAdapter(config_for(standin, recover=True)) as spot:
        spot.observe()
        standin.revoke_lease()
        with standin.state.lock:
            standin.state.grant_lease("tablet")  # an operator took over
        spot.apply(pose_action(0.7, 0.0, 0.3))
        assert spot.fault.kind == "lease"
        assert spot.recover() is False and standin.state.lease_owner == "tablet"
        standin.engage_estop()
        spot.observe()
        assert spot.fault.kind == "estop" and spot.recover() is False
    assert "lease_take" not in standin.events() and standin.state.lease_owner == "tablet"
