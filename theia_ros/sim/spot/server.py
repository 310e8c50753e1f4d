"""``SpotStandIn``: an in-process TLS gRPC server on 127.0.0.1 that plays a Spot robot.

THIS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. It lets the real
``bosdyn-client`` code path (secure channels, directory look-ups, auth tokens, time sync, lease
wallet, request/response processors) run end to end against services built from the
``bosdyn-api`` generated servicers, and lets tests inject faults: revoke the lease, engage the
e-stop, silence the e-stop endpoint, reject commands, stop time sync, drop the connection,
and slow, jitter, lose or cut the network (``network``).

Imitates the robot's gRPC front end as bosdyn-client reaches it (``bosdyn/client/robot.py``,
``bosdyn/client/directory.py``: authority names, directory entries, TLS).
"""

from __future__ import annotations

import tempfile
from concurrent import futures
from pathlib import Path

import grpc

from .network import Impair, Network
from .robot import ReceivedCommand, StandInRobot
from .services import add_all
from .tls import make_self_signed

# RPCs a client may call before it has a user token (everything else needs "Bearer <token>")
_NO_TOKEN_METHODS = ("/bosdyn.api.AuthService/", "/bosdyn.api.RobotIdService/")


class _RequireToken(grpc.ServerInterceptor):
    """Reject calls without the issued user token, like the robot does (UNAUTHENTICATED)."""

    def __init__(self, robot: StandInRobot) -> None:
        self.robot = robot

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(_NO_TOKEN_METHODS):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        if metadata.get("authorization") == f"Bearer {self.robot.token}":
            return continuation(handler_call_details)

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid user token")

        return grpc.unary_unary_rpc_method_handler(deny)


class SpotStandIn:
    """Start with ``with SpotStandIn(...) as robot:``; connect a client to ``robot.port`` with
    ``robot.cert_path`` as the robot CA. ``robot.state`` is the shared :class:`StandInRobot`."""

    def __init__(self, username: str = "operator", password: str = "standin-password",
                 estop_registered: bool = True, clock_skew_s: float = 7.25,
                 image_hw: tuple[int, int] = (240, 320), workers: int = 16,
                 **robot_options: float) -> None:
        """``robot_options``: timing knobs of :class:`StandInRobot` (``power_on_s``,
        ``stand_s``, ``sit_s``, ``lease_timeout_s``, ``estop_timeout_s``, ...)."""
        self.state = StandInRobot(username=username, password=password,
                                  estop_registered=estop_registered, clock_skew_s=clock_skew_s,
                                  image_hw=image_hw, **robot_options)
        self.network = Network()
        self._tmp = tempfile.TemporaryDirectory(prefix="spot_standin_")
        self._tls = make_self_signed(Path(self._tmp.name))
        self._workers = workers
        self._server: grpc.Server | None = None
        self.port = 0

    @property
    def cert_path(self) -> str:
        return str(self._tls.cert_path)

    def start(self) -> SpotStandIn:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._workers),
                             interceptors=[_RequireToken(self.state), Impair(self.network)])
        add_all(server, self.state)
        creds = grpc.ssl_server_credentials([self._tls.server_pair()])
        self.port = server.add_secure_port(f"127.0.0.1:{self.port}", creds)
        server.start()
        self._server = server
        self.state.start_world()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def close(self) -> None:
        self.stop()
        self.state.stop_world()
        self._tmp.cleanup()

    def __enter__(self) -> SpotStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults on demand -------------------------------------------------------------------
    def revoke_lease(self) -> None:
        self.state.revoke_lease()

    def engage_estop(self) -> None:
        self.state.engage_estop()

    def reject_commands(self, status: int | None) -> None:
        """Answer every RobotCommand with ``status`` (a RobotCommandResponse.Status) or stop."""
        with self.state.lock:
            self.state.reject_status = status

    def stop_time_sync(self) -> None:
        with self.state.lock:
            self.state.time_sync_up = False

    def silence_estop_endpoint(self) -> None:
        self.state.silence_estop_endpoint()

    def drop_connection(self) -> None:
        """The robot vanishes from the network: the server stops, calls fail UNAVAILABLE."""
        self.stop()

    # -- what it saw ---------------------------------------------------------------------------
    def commands(self) -> list[ReceivedCommand]:
        with self.state.lock:
            return list(self.state.commands)

    def events(self) -> list[str]:
        with self.state.lock:
            return list(self.state.events)
