"""Spot command latency over loopback gRPC + TLS: ``apply()`` call -> RobotCommand received.

Runs the real ``bosdyn-client`` against the test stand-in (``tests/spot_standin``: a loopback
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

Example::

    python benchmarks/spot_command_latency.py --commands 300
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spot_standin import SpotStandIn

from theia_ros.robots.spot.adapter import SpotAdapter, SpotConfig
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
    args = parser.parse_args()

    with SpotStandIn(username="bench", password="bench-password") as server:
        os.environ["BOSDYN_CLIENT_USERNAME"] = "bench"
        os.environ["BOSDYN_CLIENT_PASSWORD"] = "bench-password"
        cfg = SpotConfig(hostname="127.0.0.1", port=server.port, robot_cert=server.cert_path,
                         cameras={"front": "hand_color_image"}, rate_hz=args.rate_hz)
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
                                np.array([0.65 + 0.03 * np.cos(phase), 0.03 * np.sin(phase), 0.3]),
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
