"""Spot adapter against a stand-in that moves like a robot: streaming, stopping, shutting down.

THE SERVER IN THESE TESTS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE
(``tests/spot_standin``): its arm follows commanded trajectories at finite speed with the Spot
arm's kinematics, reports feedback, refuses to stow while holding, and its network can be
slowed or cut. Each test here fails against the adapter's earlier behaviour (one-point
commands, no unstow, stow-then-sit, fault on the first failed RPC, feedback never read).
"""
# ruff: noqa: F401, F811 - pytest fixtures imported from spot_standin.fixtures

from __future__ import annotations

import time

import numpy as np
import pytest
from spot_standin import SpotStandIn
from spot_standin.fixtures import (
    PASSWORD,
    QUICK,
    USERNAME,
    config_for,
    pose_action,
    robot_env,
    run_ticks,
    standin,
    wait_until,
)
from spot_standin.motion import stopped_intervals

from theia_ros.robots.spot.adapter import SpotAdapter

SPEED_M_S = 0.1  # the scripted hand's speed
RATE_HZ = 5.0  # the drawer task's rate


def _line(step_m: float):
    """Targets moving steadily along -x from the ready pose, one step per tick."""
    return lambda tick: pose_action(0.78 - step_m * tick, 0.0, 0.35, gripper=1.0,
                                    rpy=(0.0, 0.0, 0.0))


def _stops(server: SpotStandIn, spot: SpotAdapter, ticks: int) -> list[bool]:
    """Stop or not for each interval between arm-command arrivals (startup ticks skipped)."""
    arrivals = [c.received_s for c in server.commands() if c.accepted and
                c.request.command.synchronized_command.arm_command.HasField(
                    "arm_cartesian_command")]
    assert len(arrivals) == ticks, (len(arrivals), spot.fault)
    return stopped_intervals(server.state.speed_log(), arrivals[2:], 0.2 * SPEED_M_S)


@pytest.mark.parametrize("latency_s", [0.0, 0.05])
def test_streamed_hand_never_stops_between_ticks(standin, robot_env, latency_s):
    ticks, period = 14, 1.0 / RATE_HZ
    with SpotAdapter(config_for(standin, rate_hz=RATE_HZ)) as spot:
        standin.network.set(latency_s=latency_s, jitter_s=0.01)
        run_ticks(spot, ticks, period, _line(SPEED_M_S * period))
        standin.network.set()
        stops = _stops(standin, spot, ticks)
        assert spot.fault is None
    assert not any(stops), stops


@pytest.mark.slow
def test_one_point_commands_stop_and_go(standin, robot_env):
    """The stand-in can tell: the earlier one-point commands stop the hand at every tick."""
    ticks, period = 10, 1.0 / RATE_HZ
    with SpotAdapter(config_for(standin, rate_hz=RATE_HZ, stream=False)) as spot:
        standin.network.set(latency_s=0.02, jitter_s=0.01)
        run_ticks(spot, ticks, period, _line(SPEED_M_S * period))
        standin.network.set()
        stops = _stops(standin, spot, ticks)
    assert sum(stops) >= len(stops) // 2, stops


def test_safe_stop_while_gripping_opens_backs_off_stows_then_sits(standin, robot_env):
    cfg = config_for(standin)
    with SpotAdapter(cfg) as spot:
        spot.observe()
        for tick in range(24):  # open the claw around the handle, then close it on it
            if tick == 10:
                standin.state.grasp_item(width=0.3)  # a drawer handle between the jaws
            spot.apply(pose_action(0.8, 0.0, 0.35, gripper=1.0 if tick < 12 else 0.0,
                                   rpy=(0.0, 0.0, 0.0)))
            time.sleep(cfg.period_s)
        assert wait_until(lambda: spot.observe().gripper == pytest.approx(0.3, abs=0.01))
        assert standin.state.arm.holding
        handle = standin.state.arm.item.pos.copy()
    events = standin.events()
    tail = events[events.index("gripper"):]
    assert [e for e in tail if e in ("gripper", "arm_cartesian", "stow", "safe_power_off")] \
        == ["gripper", "arm_cartesian", "stow", "safe_power_off"]
    assert "sat_with_arm_out" not in events and "powered_off" in tail
    assert standin.state.arm.stowed and not standin.state.motors_on
    # the back-off command took the hand away from the handle before stowing
    back_off = [c for c in standin.commands() if c.request.command.synchronized_command
                .arm_command.HasField("arm_cartesian_command")][-1]
    point = back_off.request.command.synchronized_command.arm_command.arm_cartesian_command \
        .pose_trajectory_in_task.points[-1].pose.position
    assert np.linalg.norm(np.array([point.x, point.y, point.z]) - handle) > 0.08


def test_safe_stop_never_sits_with_the_arm_out(standin, robot_env):
    with SpotAdapter(config_for(standin, power_timeout_s=1.0)) as spot:
        spot.observe()
        standin.state.jam_arm()  # the stow cannot finish
    events = standin.events()
    assert "safe_power_off" not in events and "sat_with_arm_out" not in events
    assert standin.state.standing and standin.state.motors_on
    assert events[-2:] == ["arm_stop", "lease_return"]


def test_power_off_still_decided_when_the_stow_command_raises(standin, robot_env):
    with SpotAdapter(config_for(standin, ready_arm=False)) as spot:  # arm stays stowed
        spot.observe()
        standin.network.fail_next(1, methods=("RobotCommandService/RobotCommand",))
    assert standin.network.refused == 1  # the stow request never reached the robot
    assert "safe_power_off" in standin.events() and not standin.state.motors_on


def test_arm_is_unstowed_and_ready_before_the_first_target(standin, robot_env):
    with SpotAdapter(config_for(standin)) as spot:
        events = standin.events()
        assert events[-1] == "ready" and standin.state.arm.status[
            max(standin.state.arm.status)] == "COMPLETE"
        spot.observe()
        spot.apply(pose_action(0.78, 0.0, 0.35))
    assert standin.state.cartesian_while_stowed == 0


def test_transient_rpc_failures_hold_then_resume(standin, robot_env):
    cfg = config_for(standin, rate_hz=RATE_HZ, rpc_tolerance_s=1.0, lease_keepalive_s=0.2)
    with SpotAdapter(cfg) as spot:
        step = _line(0.01)
        run_ticks(spot, 3, cfg.period_s, step)
        standin.network.outage(0.5)  # everything: observe, commands, lease check-ins
        run_ticks(spot, 6, cfg.period_s, lambda t: step(t + 3))
        assert spot.fault is None, spot.fault
        sent = spot.commands_sent
        run_ticks(spot, 3, cfg.period_s, lambda t: step(t + 9))
        assert spot.commands_sent == sent + 3 and spot.fault is None
        survived = dict(spot.transient_failures)
        assert survived.get("observe", 0) >= 1 and survived.get("lease keep-alive", 0) >= 1
        standin.network.outage(1.6)  # longer than the tolerance: a fault
        run_ticks(spot, 8, cfg.period_s, lambda t: step(t + 12))
        assert spot.fault is not None and spot.fault.kind == "connection"


def test_missed_lease_checkins_revoke_the_lease_and_the_robot_sits(robot_env):
    with SpotStandIn(username=USERNAME, password=PASSWORD, **QUICK, lease_timeout_s=0.5) as server:
        with SpotAdapter(config_for(server, lease_keepalive_s=0.2)) as spot:
            spot.observe()
            server.network.outage(1.5, methods=("LeaseService",))
            assert wait_until(lambda: "comms_loss" in server.events(), timeout_s=2.0)
            assert wait_until(lambda: not server.state.motors_on, timeout_s=2.0)
            assert wait_until(lambda: spot.fault is not None, timeout_s=2.0)
        assert "lease_revoked" in server.events()


def test_cancelled_trajectory_faults_and_stalls_hold_then_fault(standin, robot_env):
    cfg = config_for(standin, rate_hz=10.0, feedback_interval_s=0.1, max_tracking_error_m=0.05)
    with SpotAdapter(cfg) as spot:
        run_ticks(spot, 3, cfg.period_s, _line(0.01))
        standin.state.jam_arm()
        run_ticks(spot, 25, cfg.period_s, lambda t: _line(0.02)(t + 3))
        assert spot.fault is not None and spot.fault.kind == "arm"
        assert "cancelled" in spot.fault.detail
        standin.state.jam_arm(False)
    # without a tracking-error limit the robot reports STALLED: hold, then fault
    with SpotStandIn(username=USERNAME, password=PASSWORD, **QUICK) as server:
        cfg = config_for(server, rate_hz=10.0, feedback_interval_s=0.1,
                         max_tracking_error_m=None, stall_tolerance_s=0.5)
        with SpotAdapter(cfg) as spot:
            run_ticks(spot, 3, cfg.period_s, _line(0.01))
            server.state.jam_arm()
            start, asked = time.monotonic(), server.state.feedback_requests
            run_ticks(spot, 25, cfg.period_s, lambda t: _line(0.02)(t + 3))
            elapsed = time.monotonic() - start
            assert spot.fault is not None and "stalled" in spot.fault.detail
            # feedback is polled at a bounded rate, never once per tick
            assert server.state.feedback_requests - asked <= elapsed / 0.1 + 2
            server.state.jam_arm(False)


def test_estop_endpoint_timeout_cuts_power_and_faults(robot_env):
    with (SpotStandIn(username=USERNAME, password=PASSWORD, **QUICK,
                      estop_timeout_s=0.3) as server,
          SpotAdapter(config_for(server)) as spot):
        spot.observe()
        server.silence_estop_endpoint()
        assert wait_until(lambda: "estop_timeout" in server.events())
        spot.observe()
        assert spot.fault.kind == "estop" and not server.state.motors_on


def test_recover_stands_a_robot_someone_else_sat_down(standin, robot_env):
    with SpotAdapter(config_for(standin, recover=True, recover_interval_s=0.01)) as spot:
        spot.observe()
        standin.revoke_lease()
        standin.state.sit_down_elsewhere()
        assert wait_until(lambda: not standin.state.standing)
        spot.apply(pose_action(0.78, 0.0, 0.35))
        assert spot.fault is not None and spot.fault.kind == "lease"
        assert spot.recover()
        assert standin.state.standing and standin.state.motors_on
