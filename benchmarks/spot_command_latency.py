"""Spot command latency over loopback gRPC + TLS: ``apply()`` call -> RobotCommand received.

Runs the real ``bosdyn-client`` against the test stand-in (``theia_ros.sim.spot``: a loopback
server that plays a robot; it is NOT Boston Dynamics' software). For each of ``--commands``
commands, interleaved call by call so machine noise hits both alike:

- ``adapter``: ``SpotAdapter.apply(action)`` (workspace clip, fault checks, command building,
  lease-wallet processors, RPC), from the call until the server's RobotCommand handler runs;
- ``sdk (reference)``: the same synchro command sent with ``RobotCommandClient.robot_command``
  directly, pre-built, measured the same way: what the SDK + gRPC + TLS cost alone.

Also timed: ``observe()`` (robot state + one JPEG image, decoded) and the full ``apply()`` round
trip. The table gives p50 / p99 / max in ms and the adapter / reference ratio (absolute times
on a shared machine are noisy; the ratio less so). A real robot adds Wi-Fi / Ethernet latency
(typically 1-20 ms) on top.

Then, with the stand-in's arm moving at finite speed along what it is sent:

- hand-speed continuity: a steady 0.1 m/s circle at the task's 5 Hz, with 0 / 20 / 50 ms
  one-way network latency (+10 ms jitter); the fraction of tick intervals in which the
  commanded hand's speed drops below 20 % of that, *before* (``stream: false``: one point per
  tick, due one period later, as the adapter used to send) and *after* (streamed trajectory);
- transient faults survived per kind, *before* (a fault on the first failure, as the adapter
  used to: ``rpc_tolerance_s`` ~0, ``time_sync_tolerance_s`` ~0) and *after* (defaults).

Example::

    python benchmarks/spot_command_latency.py --commands 300 --ticks 25
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from theia_ros.robots.spot.adapter import SpotAdapter, SpotConfig
from theia_ros.sim.spot import SpotStandIn
from theia_ros.sim.spot.motion import stopped_intervals
from theia_ros.types import Action, ActionKind


def _row(name: str, samples_s: list[float], reference_p50_s: float | None = None) -> str:
    ms = np.asarray(samples_s) * 1e3
    p50, p99, worst = np.percentile(ms, 50), np.percentile(ms, 99), ms.max()
    ratio = "" if reference_p50_s is None else f"{p50 / (reference_p50_s * 1e3):6.2f}x"
    return f"{name:<34} {len(ms):>5} {p50:8.3f} {p99:8.3f} {worst:8.3f}  {ratio}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--rate-hz", type=float, default=50.0,
                        help="pace of the commands (the stand-in accepts any rate)")
    parser.add_argument("--ticks", type=int, default=25,
                        help="ticks per latency in the continuity measurement")
    args = parser.parse_args()
    os.environ["BOSDYN_CLIENT_USERNAME"] = "bench"
    os.environ["BOSDYN_CLIENT_PASSWORD"] = "bench-password"
    latency_table(args)
    continuity_table(args.ticks)
    faults_table()
    return 0


def _config(server: SpotStandIn, **overrides: object) -> SpotConfig:
    values: dict[str, object] = {"hostname": "127.0.0.1", "port": server.port,
                                 "robot_cert": server.cert_path,
                                 "cameras": {"front": "hand_color_image"}}
    values.update(overrides)
    return SpotConfig(**values)  # type: ignore[arg-type]


def _line_action(tick: int, step_m: float) -> Action:
    return Action(ActionKind.EE_ABSOLUTE, np.array([0.78 - step_m * tick, 0.0, 0.35]),
                  np.zeros(3), 1.0)


def _ticks(spot: SpotAdapter, ticks: int, period_s: float, action_at) -> None:
    start = time.monotonic()
    for tick in range(ticks):
        with contextlib.suppress(Exception):  # a failed observe is reported as a fault
            spot.observe()
        spot.apply(action_at(tick))
        time.sleep(max(0.0, start + (tick + 1) * period_s - time.monotonic()))


def _circle_action(tick: int, step_m: float, radius_m: float = 0.1) -> Action:
    """Around a 0.1 m circle below the ready pose (y-z plane) at a steady speed."""
    angle = step_m * tick / radius_m
    return Action(ActionKind.EE_ABSOLUTE, np.array([0.8, radius_m * np.sin(angle),
                                                    0.25 + radius_m * np.cos(angle)]),
                  np.zeros(3), 1.0)


def continuity_table(ticks: int, rate_hz: float = 5.0, speed_m_s: float = 0.1) -> None:
    period_s = 1.0 / rate_hz
    rows = {}
    for stream in (False, True):
        with (SpotStandIn(username="bench", password="bench-password") as server,
              SpotAdapter(_config(server, rate_hz=rate_hz, stream=stream)) as spot):
            for latency_s in (0.0, 0.02, 0.05):
                server.network.set(latency_s=latency_s, jitter_s=0.01)
                first = len(server.commands())
                _ticks(spot, ticks, period_s, lambda t: _circle_action(t, speed_m_s * period_s))
                server.network.set()
                arrivals = [c.received_s for c in server.commands()[first:]
                            if c.accepted and c.request.command.synchronized_command
                            .arm_command.HasField("arm_cartesian_command")]
                stops = stopped_intervals(server.state.speed_log(), arrivals[2:],
                                          0.2 * speed_m_s)
                rows[(stream, latency_s)] = (sum(stops), len(stops))
                spot.hold()  # back to rest, then start the next run afresh
                time.sleep(0.5)
            assert spot.fault is None, spot.fault
    print(f"\nHand-speed continuity: {speed_m_s} m/s circle at {rate_hz:g} Hz, "
          f"{ticks} ticks per row; commanded hand speed < 20 % in a tick interval = a stop")
    print(f"{'one-way latency':<16} {'before (one point)':>20} {'after (streamed)':>18}")
    for latency_s in (0.0, 0.02, 0.05):
        before, after = rows[(False, latency_s)], rows[(True, latency_s)]
        print(f"{latency_s * 1e3:>6.0f} ms +10 ms {before[0]:>6}/{before[1]:<3} "
              f"({before[0] / before[1]:4.0%})   {after[0]:>5}/{after[1]:<3} "
              f"({after[0] / after[1]:4.0%})")


def _fault_scenarios():
    """(kind, injection(server) -> None) with a run of ticks around each."""
    return [
        ("network outage 0.5 s (all RPCs)", lambda s: s.network.outage(0.5)),
        ("lease check-ins failing 0.8 s", lambda s: s.network.outage(
            0.8, methods=("RetainLease",))),
        ("time-sync RPC error (thread ends)", lambda s: s.network.fail_next(
            1, methods=("TimeSyncUpdate",))),
        ("arm feedback RPC lost", lambda s: s.network.fail_next(
            1, methods=("RobotCommandFeedback",))),
    ]


def faults_table(rate_hz: float = 5.0) -> None:
    period_s = 1.0 / rate_hz
    print("\nTransient faults survived (run of 15 ticks at 5 Hz, fault injected at tick 3)")
    print(f"{'fault':<36} {'before':>8} {'after':>8}   transient failures held through")
    for kind, inject in _fault_scenarios():
        verdicts, held = [], ""
        for tolerant in (False, True):
            strict = {} if tolerant else {"rpc_tolerance_s": 1e-3,
                                          "time_sync_tolerance_s": 1e-3}
            with SpotStandIn(username="bench", password="bench-password") as server:
                cfg = _config(server, rate_hz=rate_hz, lease_keepalive_s=0.2,
                              time_sync_interval_s=0.1, feedback_interval_s=0.1, **strict)
                with SpotAdapter(cfg) as spot:
                    def act(tick: int, server=server, inject=inject) -> Action:
                        if tick == 3:
                            inject(server)
                        return _line_action(tick, 0.01)

                    _ticks(spot, 15, period_s, act)
                    verdicts.append("survived" if spot.fault is None
                                    else f"{spot.fault.kind}")
                    if tolerant:
                        held = ", ".join(f"{k} x{n}" for k, n in
                                         sorted(spot.transient_failures.items()))
        print(f"{kind:<36} {verdicts[0]:>8} {verdicts[1]:>8}   {held}")


def latency_table(args: argparse.Namespace) -> None:

    with SpotStandIn(username="bench", password="bench-password") as server:
        cfg = _config(server, rate_hz=args.rate_hz)
        t0 = time.monotonic()
        with SpotAdapter(cfg) as spot:
            connect_s = time.monotonic() - t0
            command_client = spot._command_client  # the SDK client the adapter itself uses
            spot.observe()
            adapter_s, sdk_s, roundtrip_s, observe_s = [], [], [], []
            period_s = 1.0 / args.rate_hz
            for i in range(args.commands):
                phase = 0.05 * i
                action = Action(ActionKind.EE_ABSOLUTE,
                                np.array([0.75 + 0.03 * np.cos(phase), 0.03 * np.sin(phase),
                                          0.35]),
                                np.array([0.0, 0.2, 0.0]), 0.5)
                start = time.monotonic()
                spot.apply(action)
                done = time.monotonic()
                adapter_s.append(server.commands()[-1].received_s - start)
                roundtrip_s.append(done - start)

                command = spot._pose_command(action)  # pre-built: SDK + transport only
                start = time.monotonic()
                command_client.robot_command(command, timeout=1.0)
                sdk_s.append(server.commands()[-1].received_s - start)

                start = time.monotonic()
                spot.observe()
                observe_s.append(time.monotonic() - start)
                time.sleep(max(0.0, period_s - (time.monotonic() - start)))
            assert spot.fault is None, spot.fault

    reference = float(np.percentile(sdk_s, 50))
    print(f"Spot command latency over loopback TLS gRPC (stand-in robot), connect "
          f"{connect_s * 1e3:.0f} ms")
    print(f"{'measure':<34} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  vs ref")
    print(_row("sdk robot_command -> received (ref)", sdk_s, reference))
    print(_row("adapter apply() -> received", adapter_s, reference))
    print(_row("adapter apply() round trip", roundtrip_s))
    print(_row("adapter observe() (state + 1 JPEG)", observe_s))


if __name__ == "__main__":
    raise SystemExit(main())
