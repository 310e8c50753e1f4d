"""Action chunks: run a predicted ``[H, 7]`` chunk step by step, re-plan every k steps.

Time here is counted in control ticks, not seconds: row ``i`` of a chunk planned from the
observation of tick ``s`` is the action for tick ``s + i``. That one rule covers all modes:

- synchronous: the policy runs inside the tick every ``k`` ticks (``k = 1``: every tick);
- temporal ensembling (ACT, Zhao et al. 2023): every stored chunk that covers tick ``t``
  proposes an action; they are averaged with weights ``w_i = exp(-m * i)``, ``i = 0`` for
  the *oldest* proposal. ``m = 0`` is a plain mean; larger ``m`` trusts older predictions
  more (smoother, slower to react); negative ``m`` favours the newest. ACT used ``m = 0.01``
  at 50 Hz. Angles (columns 3..5) are unwrapped around the newest proposal before averaging;
- asynchronous planning: a worker thread runs the policy (slow diffusion inference) while
  the ticks go on. A plan started at tick ``s`` that arrives at tick ``t`` is used from row
  ``t - s`` (the rows for ticks already past are skipped). A tick never waits for inference
  longer than ``plan_wait_s``; without a fresh plan it continues the current chunk, or holds
  (returns None) when that is exhausted. Make ``H >= k + inference ticks`` to avoid holds.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theia_ros.control.clock import Clock, MonotonicClock
from theia_ros.control.rotations import wrap_angle
from theia_ros.errors import TheiaError
from theia_ros.types import ACTION_DIM, Observation

log = logging.getLogger(__name__)

Policy = Callable[[Observation], np.ndarray]  # observation -> chunk [H, 7] in physical units


@dataclass(frozen=True)
class ChunkingConfig:
    """How chunks are executed.

    Args:
        replan_every: k, ticks between two plans (1 = plan every tick).
        temporal_ensemble: average the overlapping chunks' proposals for each tick.
        ensemble_m: m in the ensembling weights ``exp(-m * i)`` (i = 0 oldest).
        async_planning: run the policy in a worker thread, ahead of the ticks.
        plan_wait_s: async only: the longest one tick waits for an in-flight plan when it has
            nothing to execute (0: never wait).
    """

    replan_every: int = 1
    temporal_ensemble: bool = False
    ensemble_m: float = 0.01
    async_planning: bool = False
    plan_wait_s: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.replan_every, int) and self.replan_every >= 1):
            raise TheiaError(f"chunking.replan_every must be an integer >= 1, got "
                             f"{self.replan_every!r}")
        if not math.isfinite(self.ensemble_m):
            raise TheiaError(f"chunking.ensemble_m must be finite, got {self.ensemble_m!r}")
        if not (math.isfinite(self.plan_wait_s) and self.plan_wait_s >= 0):
            raise TheiaError(f"chunking.plan_wait_s must be >= 0, got {self.plan_wait_s!r}")


def as_chunk(raw: object) -> np.ndarray:
    """Validate a policy output as a chunk ``[H, 7]`` float64 (NaN allowed: safety rejects it)."""
    arr = np.asarray(raw, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != ACTION_DIM or arr.shape[0] < 1:
        raise TheiaError(f"policy output: expected an action chunk [H, {ACTION_DIM}], got shape "
                         f"{list(arr.shape)}")
    return arr


class ChunkBuffer:
    """The chunks that may still propose actions, keyed by the tick they were planned at."""

    def __init__(self, temporal_ensemble: bool = False, ensemble_m: float = 0.01) -> None:
        self.temporal_ensemble = temporal_ensemble
        self.ensemble_m = float(ensemble_m)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (start tick, [H, 7]), by start

    def add(self, chunk: np.ndarray, start_tick: int) -> None:
        """Store ``chunk`` ``[H, 7]`` whose row 0 is the action for ``start_tick``."""
        chunk = as_chunk(chunk)
        if self._chunks and start_tick < self._chunks[-1][0]:
            return  # an older plan arriving late: the newer one already supersedes it
        self._chunks.append((int(start_tick), chunk))

    def clear(self) -> None:
        self._chunks.clear()

    def __len__(self) -> int:
        return len(self._chunks)

    def _prune(self, tick: int) -> None:
        keep_all = self.temporal_ensemble
        live = [(s, c) for s, c in self._chunks if s + c.shape[0] > tick]
        if not keep_all:
            live = live[-1:]
        self._chunks = deque(live)

    def remaining(self, tick: int) -> int:
        """Rows of the newest chunk left for ticks ``>= tick`` (0 when none)."""
        if not self._chunks:
            return 0
        start, chunk = self._chunks[-1]
        return max(0, start + chunk.shape[0] - max(tick, start))

    def action_at(self, tick: int) -> np.ndarray | None:
        """The action ``[7]`` for ``tick``, or None when no stored chunk covers it."""
        self._prune(tick)
        rows = [c[tick - s] for s, c in self._chunks if s <= tick < s + c.shape[0]]
        if not rows:
            return None
        if not self.temporal_ensemble or len(rows) == 1:
            return rows[-1].copy()
        stack = np.stack(rows)  # [N, 7], oldest first
        newest = stack[-1, 3:6]
        stack[:, 3:6] = newest + wrap_angle(stack[:, 3:6] - newest)
        weights = np.exp(-self.ensemble_m * np.arange(len(rows), dtype=np.float64))
        weights /= weights.sum()
        out = weights @ stack
        out[3:6] = wrap_angle(out[3:6])
        return out


@dataclass(frozen=True)
class PlanResult:
    """A chunk computed in the worker: planned from the observation of ``tick``."""

    chunk: np.ndarray  # [H, 7]
    tick: int
    latency_s: float
    generation: int


class AsyncPlanner:
    """Runs the policy in one worker thread; the caller never blocks longer than it asks.

    One request slot and one result slot: a request made while the worker is busy is
    refused (the caller retries next tick); a newer result replaces an unread older one.
    A policy exception is kept and re-raised in the caller's thread by :meth:`take`/`wait`.
    """

    def __init__(self, policy: Policy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._cond = threading.Condition()
        self._request: tuple[Observation, int, int] | None = None
        self._result: PlanResult | None = None
        self._error: Exception | None = None
        self._busy = False
        self._closed = False
        self._generation = 0
        self._thread = threading.Thread(target=self._work, name="theia-planner", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a request is queued or running."""
        with self._cond:
            return self._busy

    def submit(self, obs: Observation, tick: int) -> bool:
        """Ask for a plan from ``obs`` (taken at ``tick``); False if the worker is busy."""
        with self._cond:
            if self._busy or self._closed:
                return False
            self._request = (obs, int(tick), self._generation)
            self._busy = True
            self._cond.notify_all()
            return True

    def cancel(self) -> None:
        """Discard the result of anything in flight (e.g. after a hold)."""
        with self._cond:
            self._generation += 1
            self._result = None

    def take(self) -> PlanResult | None:
        """The newest finished plan, if any (never blocks)."""
        with self._cond:
            return self._take_locked()

    def wait(self, timeout_s: float) -> PlanResult | None:
        """Wait up to ``timeout_s`` (real seconds) for a plan while one is in flight."""
        with self._cond:
            self._cond.wait_for(lambda: self._result is not None or self._error is not None
                                or not self._busy, timeout=max(0.0, timeout_s))
            return self._take_locked()

    def _take_locked(self) -> PlanResult | None:
        if self._error is not None:
            err, self._error = self._error, None
            raise PolicyError(f"policy failed in the planner thread: {err!r}") from err
        result, self._result = self._result, None
        if result is not None and result.generation != self._generation:
            return None
        return result

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the worker (a policy call in progress finishes on its own, unused)."""
        with self._cond:
            self._closed = True
            self._generation += 1
            self._cond.notify_all()
        self._thread.join(timeout=timeout_s)

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._request is not None or self._closed)
                if self._closed:
                    return
                obs, tick, generation = self._request  # type: ignore[misc]
                self._request = None
            start = self._clock.now()
            try:
                chunk = as_chunk(self._policy(obs))
            except Exception as exc:  # handed to the caller's thread
                with self._cond:
                    if generation == self._generation:
                        self._error = exc
                    self._busy = False
                    self._cond.notify_all()
                continue
            latency = self._clock.now() - start
            with self._cond:
                self._result = PlanResult(chunk, tick, latency, generation)
                self._busy = False
                self._cond.notify_all()


class PolicyError(RuntimeError):
    """The policy raised or returned something unusable (the loop treats it as a fault)."""


class ActionChunker:
    """Turns a chunk-predicting policy into one action per tick (see the module docstring).

    Args:
        policy: ``(Observation) -> [H, 7]`` in physical units.
        config: chunking options.
        clock: used to time policy calls (read them with :meth:`drain_latencies`).
    """

    def __init__(self, policy: Policy, config: ChunkingConfig | None = None,
                 clock: Clock | None = None) -> None:
        self.policy = policy
        self.config = config or ChunkingConfig()
        self.clock = clock or MonotonicClock()
        self.buffer = ChunkBuffer(self.config.temporal_ensemble, self.config.ensemble_m)
        self._latencies_s: list[float] = []
        self.plans = 0
        self.plans_since_reset = 0  # 0 while the first plan after a (re)start is in flight
        self.last_status = "idle"  # planned | continued | waiting | exhausted | idle
        self._last_plan_tick: int | None = None
        self._planner = AsyncPlanner(policy, self.clock) if self.config.async_planning else None
        self._warned_no_overlap = False

    def reset(self) -> None:
        """Drop every stored chunk and any plan in flight; the next tick plans afresh."""
        self.buffer.clear()
        self.plans_since_reset = 0
        self._last_plan_tick = None
        if self._planner is not None:
            self._planner.cancel()
        self.last_status = "idle"

    def drain_latencies(self) -> list[float]:
        """Policy latencies (s) of the plans accepted since the last call."""
        out, self._latencies_s = self._latencies_s, []
        return out

    def close(self) -> None:
        if self._planner is not None:
            self._planner.close()

    def _accept(self, result: PlanResult | None) -> None:
        if result is None:
            return
        self._check_horizon(result.chunk)
        if result.chunk.shape[0] <= self.config.replan_every and not self._warned_no_overlap:
            self._warned_no_overlap = True
            log.warning("async planning with replan_every=%d and a %d-step chunk: the next "
                        "plan starts only when this chunk ends, so every %d-th tick holds; "
                        "use replan_every <= %d", self.config.replan_every,
                        result.chunk.shape[0], self.config.replan_every,
                        result.chunk.shape[0] - 1)
        self.buffer.add(result.chunk, result.tick)
        self._latencies_s.append(result.latency_s)
        self.plans += 1
        self.plans_since_reset += 1

    def _check_horizon(self, chunk: np.ndarray) -> None:
        if chunk.shape[0] < self.config.replan_every:
            raise TheiaError(f"chunking.replan_every={self.config.replan_every} exceeds the "
                             f"policy's chunk horizon H={chunk.shape[0]}")

    def act(self, obs: Observation, tick: int) -> np.ndarray | None:
        """The action ``[7]`` for ``tick`` (``obs`` taken at this tick), or None to hold.

        Raises :class:`PolicyError` / :class:`~theia_ros.errors.TheiaError` when the policy
        fails or returns a wrong shape.
        """
        due = self._last_plan_tick is None or tick - self._last_plan_tick >= \
            self.config.replan_every
        if self._planner is None:
            if due:
                start = self.clock.now()
                try:
                    raw = self.policy(obs)
                except Exception as exc:
                    raise PolicyError(f"policy raised: {exc!r}") from exc
                chunk = as_chunk(raw)
                self._latencies_s.append(self.clock.now() - start)
                self._check_horizon(chunk)
                self.buffer.add(chunk, tick)
                self.plans += 1
                self.plans_since_reset += 1
                self._last_plan_tick = tick
            action = self.buffer.action_at(tick)
            self.last_status = "planned" if due else ("continued" if action is not None
                                                      else "exhausted")
            return action

        self._accept(self._planner.take())
        if due and self._planner.submit(obs, tick):
            self._last_plan_tick = tick
        action = self.buffer.action_at(tick)
        if action is None and self._planner.busy and self.config.plan_wait_s > 0:
            self._accept(self._planner.wait(self.config.plan_wait_s))
            action = self.buffer.action_at(tick)
        if action is not None:
            self.last_status = "continued"
        else:
            self.last_status = "waiting" if self._planner.busy else "exhausted"
        return action
