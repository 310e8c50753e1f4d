"""A network between client and stand-in robot that can be slow, jittery, lossy or down.

THIS IS PART OF A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. A gRPC server
interceptor delays each request before the robot handles it (one-way latency + uniform
jitter), drops a fraction of them (the client's deadline then expires: it sees a timeout) and
refuses everything while the link is down (UNAVAILABLE). ``methods`` limits the impairment to
RPC names containing one of the given strings (e.g. ``("RetainLease",)``). Built on grpcio's
``grpc.ServerInterceptor``; the failures are the gRPC status codes bosdyn-client maps to its
 own errors (``bosdyn/client/channel.py``: DEADLINE_EXCEEDED -> TimedOutError, UNAVAILABLE ->
UnableToConnectToRobotError).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import grpc


@dataclass
class Network:
    latency_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0  # probability that a request is never answered
    down_until_s: float = 0.0  # time.monotonic() until which every call is refused
    methods: tuple[str, ...] = ()  # empty = every RPC
    seed: int = 0
    fail_count: int = 0  # the next this many matching calls are refused
    dropped: int = 0
    refused: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def set(self, latency_s: float = 0.0, jitter_s: float = 0.0, loss: float = 0.0,
            methods: tuple[str, ...] = ()) -> None:
        with self._lock:
            self.latency_s, self.jitter_s, self.loss, self.methods = (latency_s, jitter_s,
                                                                      loss, methods)

    def outage(self, duration_s: float, methods: tuple[str, ...] = ()) -> None:
        """Refuse calls (matching ``methods``) for ``duration_s`` from now."""
        with self._lock:
            self.down_until_s, self.methods = time.monotonic() + duration_s, methods

    def fail_next(self, count: int, methods: tuple[str, ...] = ()) -> None:
        """Refuse (UNAVAILABLE) the next ``count`` calls matching ``methods``."""
        with self._lock:
            self.fail_count, self.methods = count, methods

    def _applies(self, method: str) -> bool:
        return not self.methods or any(name in method for name in self.methods)

    def delay(self, method: str, context: grpc.ServicerContext) -> None:
        """Called before the robot sees the request: wait, drop or refuse it."""
        with self._lock:
            if not self._applies(method):
                return
            down = time.monotonic() < self.down_until_s or self.fail_count > 0
            self.fail_count = max(0, self.fail_count - 1)
            lost = self.loss > 0 and self._rng.random() < self.loss
            wait_s = self.latency_s + (self._rng.uniform(0.0, self.jitter_s)
                                       if self.jitter_s else 0.0)
            if down:
                self.refused += 1
            elif lost:
                self.dropped += 1
        if down:
            context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in network is down")
        if lost:  # never answered: the client's deadline runs out
            remaining = context.time_remaining()
            time.sleep(min(remaining if remaining is not None else 5.0, 5.0) + 0.01)
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "stand-in network lost it")
        if wait_s > 0:
            time.sleep(wait_s)


class Impair(grpc.ServerInterceptor):
    """Route every unary RPC through :meth:`Network.delay` first."""

    def __init__(self, network: Network) -> None:
        self.network = network

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method, inner, network = handler_call_details.method, handler.unary_unary, self.network

        def impaired(request, context):
            network.delay(method, context)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            impaired, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
