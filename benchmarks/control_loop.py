"""Control-loop timing of the real ``policy_node``: tick period error and end-to-end latency.

Spins ``policy_node`` in-process (real rclpy, ``dry_run`` robot) with a Theia-Tiny bundle on
CPU (onnxruntime), while a separate process publishes camera frames and joint states at
``--sensor-hz`` stamped at publication. Reports, over ``--ticks`` ticks at ``--rate-hz``:

- period error ``|t_k - t_{k-1} - period|`` between consecutive tick starts (p50 / p99 / max),
- missed ticks and overruns (ticks longer than a period),
- end-to-end latency: oldest sensor header stamp (the image, at equal publish rates) -> the
  command handed to the robot adapter, p50 / p99,
- policy inference time per plan.

The reference row runs the same node with a zero policy (no inference) for the same number
of ticks, so the table separates timer/executor jitter from inference load. Targets: period
error p99 <= 5 ms and no missed ticks.

Example::

    python benchmarks/control_loop.py --quick            # 100 ticks (20 s) per row
    python benchmarks/control_loop.py --ticks 1000       # 200 s per row at 5 Hz
    python benchmarks/control_loop.py --bundle bundles/door --skip-reference
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _publisher(domain_id: int, hw: tuple[int, int], rate_hz: float, stop) -> None:
    """Child process: camera + joint states at ``rate_hz``, stamped now."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from theia_ros.control import kinematics as K
    from theia_ros.ros.image_conversion import rgb_to_image_fields

    rclpy.init(domain_id=domain_id)
    node = rclpy.create_node("bench_sensors")
    ip = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    jp = node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    fields = rgb_to_image_fields(np.random.default_rng(0).integers(0, 256, (*hw, 3), np.uint8))
    names = [*K.JOINT_NAMES, "left_finger"]
    pos = [*map(float, K.HOME_QPOS_RAD), 0.03]
    period = 1.0 / rate_hz
    nxt = time.monotonic()
    while not stop.is_set():
        stamp = node.get_clock().now().to_msg()
        img = Image(**fields)
        img.header.stamp = stamp
        js = JointState(name=names, position=pos)
        js.header.stamp = stamp
        ip.publish(img)
        jp.publish(js)
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
    node.destroy_node()
    rclpy.shutdown()


def _run_node(bundle: Path, ticks: int, rate_hz: float, domain_id: int,
              zero_policy: bool, threads: int) -> dict[str, object]:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from theia_ros.ros.policy_node import PolicyNode
    from theia_ros.runtime import read_bundle

    meta = read_bundle(bundle, verify=False)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    params = {"bundle": str(bundle), "backend": "onnxruntime", "threads": threads,
              "robot": "dry_run", "rate_hz": rate_hz, "autostart": False}
    kwargs: dict[str, object] = {}
    if zero_policy:
        horizon = meta.horizon
        kwargs = {"policy": lambda obs: np.zeros((horizon, 7)), "image_hw": meta.image_hw}
    node = PolicyNode(context=ctx, parameter_overrides=[Parameter(k, value=v)
                                                        for k, v in params.items()], **kwargs)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 10.0
        while node.sensors.images_received < 3 or node.joints.latest() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("no sensor data reached the node")
            time.sleep(0.05)
        node.loop.start()
        last = -1
        try:
            from tqdm import tqdm

            bar = tqdm(total=ticks, desc="zero policy" if zero_policy else "theia-tiny",
                       unit="tick", leave=False)
        except ImportError:
            bar = None
        while node.loop.stats.ticks < ticks:
            time.sleep(0.2)
            if bar is not None:
                n = node.loop.stats.ticks
                bar.update(n - max(last, 0))
                last = n
        if bar is not None:
            bar.close()
        node.loop.pause()
        summary = node.loop.stats.summary()
    finally:
        node.shutdown()
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="100 ticks per row")
    ap.add_argument("--rate-hz", type=float, default=5.0)
    ap.add_argument("--sensor-hz", type=float, default=30.0)
    ap.add_argument("--bundle", type=Path, help="default: export a random Theia-Tiny bundle")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime CPU threads")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)
    ticks = 100 if args.quick else args.ticks
    domain_id = 150 + os.getpid() % 50

    tmp = None
    bundle = args.bundle
    if bundle is None:
        from helpers_nodes import build_tiny_bundle

        tmp = tempfile.TemporaryDirectory()
        print("exporting a random Theia-Tiny bundle (96 x 128 camera) ...", flush=True)
        bundle = build_tiny_bundle(Path(tmp.name))
    from theia_ros.runtime import read_bundle

    hw = tuple(read_bundle(bundle, verify=False).image_hw)
    stop = mp.get_context("spawn").Event()
    pub = mp.get_context("spawn").Process(target=_publisher,
                                          args=(domain_id, hw, args.sensor_hz, stop),
                                          daemon=True)
    pub.start()
    rows = []
    try:
        rows.append(("theia-tiny (onnxruntime CPU)",
                     _run_node(bundle, ticks, args.rate_hz, domain_id, False, args.threads)))
        if not args.skip_reference:
            rows.append(("reference: zero policy",
                         _run_node(bundle, ticks, args.rate_hz, domain_id, True, args.threads)))
    finally:
        stop.set()
        pub.join(timeout=5.0)
        if tmp is not None:
            tmp.cleanup()

    print(f"\npolicy_node control loop: {ticks} ticks at {args.rate_hz:g} Hz, camera "
          f"{hw[0]}x{hw[1]} at {args.sensor_hz:g} Hz, dry_run robot")
    head = (f"{'run':32s} {'ticks':>6s} {'cmds':>6s} {'missed':>6s} {'overrun':>7s} "
            f"{'per.err p50':>11s} {'p99':>7s} {'max':>7s} {'e2e p50':>8s} {'p99':>7s} "
            f"{'infer p50':>9s}")
    print(head)
    print("-" * len(head))
    for name, s in rows:
        print(f"{name:32s} {s['ticks']:6d} {s['commands']:6d} {s['missed_ticks']:6d} "
              f"{s['overruns']:7d} {s['period_error_p50_ms']:9.2f}ms "
              f"{s['period_error_p99_ms']:5.2f}ms {s['period_error_max_ms']:5.1f}ms "
              f"{s['command_latency_p50_ms']:6.1f}ms "
              f"{s['command_latency_p99_ms']:5.1f}ms {s['policy_latency_p50_ms']:7.1f}ms")
    main_row = rows[0][1]
    ok = main_row["period_error_p99_ms"] <= 5.0 and main_row["missed_ticks"] == 0
    if len(rows) > 1:
        ref = rows[1][1]
        ratio = main_row["period_error_p99_ms"] / max(ref["period_error_p99_ms"], 1e-9)
        print(f"period error p99 vs reference: x{ratio:.2f}")
    print(f"target (p99 <= 5 ms, no missed ticks): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
