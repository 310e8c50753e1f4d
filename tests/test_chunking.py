"""Action chunking: step-by-step execution, re-planning every k, ACT ensembling numbers, and
the async planner (slow inference in a worker thread never blocks a tick past its budget).
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from theia_ros.control import (
    ActionChunker,
    ChunkBuffer,
    ChunkingConfig,
    MonotonicClock,
    PolicyError,
)
from theia_ros.errors import TheiaError
from theia_ros.types import Observation

OBS = Observation(images={}, joint_positions=np.zeros(6), ee_pose=np.zeros(6), gripper=1.0,
                  stamp_s=0.0)


def marked_chunk(plan: int, horizon: int) -> np.ndarray:
    """[H, 7] whose every entry of row i reads 100 * plan + i (translation columns only)."""
    chunk = np.zeros((horizon, 7))
    chunk[:, :3] = (100 * plan + np.arange(horizon))[:, None]
    return chunk


class CountingPolicy:
    """Returns ``marked_chunk(call_number, H)``; records the observations it saw."""

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.calls = 0

    def __call__(self, obs: Observation) -> np.ndarray:
        chunk = marked_chunk(self.calls, self.horizon)
        self.calls += 1
        return chunk


def wait_until(pred, timeout_s: float = 2.0) -> None:
    end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


# -- synchronous ---------------------------------------------------------------------------
def test_chunk_is_executed_row_by_row_then_exhausted() -> None:
    policy = CountingPolicy(horizon=4)
    chunker = ActionChunker(policy, ChunkingConfig(replan_every=4))
    got = [chunker.act(OBS, t)[0] for t in range(8)]
    assert got == [0, 1, 2, 3, 100, 101, 102, 103]
    assert policy.calls == 2 and chunker.plans == 2
    assert len(chunker.drain_latencies()) == 2 and chunker.drain_latencies() == []


@pytest.mark.parametrize("k", [1, 2, 3])
def test_replan_every_k_ticks(k: int) -> None:
    policy = CountingPolicy(horizon=5)
    chunker = ActionChunker(policy, ChunkingConfig(replan_every=k))
    got = [chunker.act(OBS, t)[0] for t in range(9)]
    expected = [100 * (t // k) + t % k for t in range(9)]
    assert got == expected
    assert policy.calls == math.ceil(9 / k)


def test_exhausted_buffer_returns_none() -> None:
    buf = ChunkBuffer()
    buf.add(marked_chunk(0, 3), start_tick=10)
    assert [buf.action_at(t)[0] for t in (10, 11, 12)] == [0, 1, 2]
    assert buf.action_at(13) is None and buf.remaining(13) == 0


def test_replan_every_larger_than_horizon_is_an_error() -> None:
    chunker = ActionChunker(CountingPolicy(horizon=2), ChunkingConfig(replan_every=3))
    with pytest.raises(TheiaError, match=r"replan_every=3 exceeds .* H=2"):
        chunker.act(OBS, 0)


@pytest.mark.parametrize("bad", [np.zeros(7), np.zeros((4, 6)), np.zeros((1, 4, 7)),
                                 np.zeros((0, 7))])
def test_wrong_policy_output_shape_is_rejected(bad: np.ndarray) -> None:
    chunker = ActionChunker(lambda obs: bad)
    with pytest.raises(TheiaError, match=r"expected an action chunk \[H, 7\]"):
        chunker.act(OBS, 0)


def test_policy_exception_becomes_policy_error() -> None:
    def broken(obs: Observation) -> np.ndarray:
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(PolicyError, match="CUDA out of memory"):
        ActionChunker(broken).act(OBS, 0)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_invalid_config(bad: object) -> None:
    with pytest.raises(TheiaError, match="replan_every"):
        ChunkingConfig(replan_every=bad)  # type: ignore[arg-type]


# -- temporal ensembling -------------------------------------------------------------------
def test_ensemble_weights_follow_act_formula() -> None:
    m = 0.5
    policy = CountingPolicy(horizon=3)
    chunker = ActionChunker(policy, ChunkingConfig(replan_every=1, temporal_ensemble=True,
                                                   ensemble_m=m))
    got = [chunker.act(OBS, t)[0] for t in range(4)]
    w = [1.0, math.exp(-0.5), math.exp(-1.0)]  # oldest first
    # tick 0: plan 0 row 0; tick 1: plan0 row1 (=1), plan1 row0 (=100)
    assert got[0] == pytest.approx(0.0)
    assert got[1] == pytest.approx((1 * w[0] + 100 * w[1]) / (w[0] + w[1]))
    # tick 2: plan0 row2 (=2), plan1 row1 (=101), plan2 row0 (=200)
    assert got[2] == pytest.approx((2 * w[0] + 101 * w[1] + 200 * w[2]) / sum(w))
    # tick 3: plan 0 has expired; plan1 row2, plan2 row1, plan3 row0
    assert got[3] == pytest.approx((102 * w[0] + 201 * w[1] + 300 * w[2]) / sum(w))


def test_ensemble_m_zero_is_plain_mean_and_disabled_uses_newest() -> None:
    ens = ChunkBuffer(temporal_ensemble=True, ensemble_m=0.0)
    plain = ChunkBuffer(temporal_ensemble=False)
    for buf in (ens, plain):
        buf.add(marked_chunk(0, 4), 0)
        buf.add(marked_chunk(1, 4), 2)
    assert ens.action_at(3)[0] == pytest.approx((3 + 101) / 2)
    assert plain.action_at(3)[0] == pytest.approx(101)


def test_ensemble_unwraps_angles() -> None:
    buf = ChunkBuffer(temporal_ensemble=True, ensemble_m=0.0)
    a = np.zeros((2, 7))
    b = np.zeros((2, 7))
    a[:, 5] = 3.1
    b[:, 5] = -3.1
    buf.add(a, 0)
    buf.add(b, 1)
    yaw = buf.action_at(1)[5]
    assert abs(abs(yaw) - math.pi) < 1e-9  # halfway across +-pi, not 0


# -- asynchronous --------------------------------------------------------------------------
class GatedPolicy:
    """Blocks each call until ``gate`` is set (then clears it): slow inference on demand."""

    def __init__(self, horizon: int, block_from_call: int = 0) -> None:
        self.horizon = horizon
        self.block_from_call = block_from_call
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls = 0

    def __call__(self, obs: Observation) -> np.ndarray:
        n = self.calls
        self.calls += 1
        if n >= self.block_from_call:
            self.started.set()
            assert self.gate.wait(timeout=5.0), "test never released the policy"
            self.gate.clear()
        return marked_chunk(n, self.horizon)


def test_async_tick_never_waits_longer_than_its_budget() -> None:
    policy = GatedPolicy(horizon=6)
    chunker = ActionChunker(policy, ChunkingConfig(async_planning=True, plan_wait_s=0.03),
                            MonotonicClock())
    try:
        durations = []
        for t in range(5):
            t0 = time.monotonic()
            assert chunker.act(OBS, t) is None
            durations.append(time.monotonic() - t0)
            assert chunker.last_status == "waiting"
        assert max(durations) < 0.03 + 0.05
        assert policy.calls == 1  # one request in flight, not one per tick
    finally:
        policy.gate.set()
        chunker.close()


def test_async_plan_arriving_late_starts_at_the_current_row() -> None:
    policy = GatedPolicy(horizon=8)
    chunker = ActionChunker(policy, ChunkingConfig(replan_every=4, async_planning=True),
                            MonotonicClock())
    try:
        assert chunker.act(OBS, 0) is None  # plan requested from tick 0's observation
        assert chunker.act(OBS, 1) is None
        policy.gate.set()
        wait_until(lambda: not chunker._planner.busy)
        assert chunker.act(OBS, 2)[0] == 2  # rows 0, 1 belong to ticks already gone
        assert chunker.act(OBS, 3)[0] == 3
    finally:
        policy.gate.set()
        chunker.close()


def test_async_continues_current_chunk_while_next_plan_runs_then_holds() -> None:
    policy = GatedPolicy(horizon=4, block_from_call=1)  # first plan instant, then slow
    chunker = ActionChunker(policy, ChunkingConfig(replan_every=2, async_planning=True,
                                                   plan_wait_s=0.5), MonotonicClock())
    try:
        assert chunker.act(OBS, 0)[0] == 0  # waits (<= 0.5 s) for the instant first plan
        assert chunker.act(OBS, 1)[0] == 1
        assert chunker.act(OBS, 2)[0] == 2  # second plan requested, still running
        assert policy.started.wait(2.0)
        assert chunker.act(OBS, 3)[0] == 3
        t0 = time.monotonic()
        assert chunker.act(OBS, 4) is None  # chunk exhausted, plan still in flight
        assert 0.4 < time.monotonic() - t0 < 0.5 + 0.1  # waited its budget, no longer
        policy.gate.set()
        wait_until(lambda: not chunker._planner.busy)
        assert chunker.act(OBS, 5)[0] == 103  # plan 1 was from tick 2: row 3 is tick 5
    finally:
        policy.gate.set()
        chunker.close()


@pytest.mark.parametrize(("replan_every", "holds"), [(4, True), (3, False)])
def test_async_chunk_without_overlap_holds_every_kth_tick_and_says_so(
        replan_every, holds, caplog) -> None:
    """H = k with async planning: the plan for tick k is only asked for at tick k, so that
    tick has nothing to run (the Spot drawer config had k = H = 4: one tick in four held).
    k = H - 1 keeps a row for the plan in flight."""
    policy = GatedPolicy(horizon=4, block_from_call=10)  # instant plans
    chunker = ActionChunker(policy, ChunkingConfig(replan_every=replan_every,
                                                   async_planning=True), MonotonicClock())
    try:
        assert chunker.act(OBS, 0) is None  # tick 0's plan is in flight
        held = []
        for t in range(1, 13):  # every plan done before the next tick (fast inference)
            wait_until(lambda: not chunker._planner.busy)
            held.append(chunker.act(OBS, t) is None)
        assert held == [t % replan_every == 0 for t in range(1, 13)] if holds else not any(held)
        assert ("every 4-th tick holds" in caplog.text) is holds
    finally:
        policy.gate.set()
        chunker.close()


def test_async_policy_exception_reaches_the_tick() -> None:
    def broken(obs: Observation) -> np.ndarray:
        raise ValueError("bad weights")

    chunker = ActionChunker(broken, ChunkingConfig(async_planning=True), MonotonicClock())
    try:
        chunker.act(OBS, 0)
        wait_until(lambda: not chunker._planner.busy)
        with pytest.raises(PolicyError, match="bad weights"):
            chunker.act(OBS, 1)
    finally:
        chunker.close()


def test_async_reset_discards_plan_in_flight() -> None:
    policy = GatedPolicy(horizon=4)
    chunker = ActionChunker(policy, ChunkingConfig(async_planning=True), MonotonicClock())
    try:
        chunker.act(OBS, 0)
        chunker.reset()  # e.g. a stale camera: the old plan must not be resumed
        policy.gate.set()
        wait_until(lambda: not chunker._planner.busy)
        assert chunker.act(OBS, 1) is None  # stale result dropped; a new plan requested
        wait_until(lambda: policy.calls == 2)
        policy.gate.set()
        wait_until(lambda: not chunker._planner.busy)
        assert chunker.act(OBS, 2)[0] == 101
    finally:
        policy.gate.set()
        chunker.close()
