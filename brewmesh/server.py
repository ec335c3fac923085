"""Server bootstrap on grpc.aio: health, reflection, error mapping, TLS, graceful stop.

Every brewmesh server (the embedded mesh, one service per process, a partner
machine) is built here, so each serves `grpc.health.v1.Health` (a status per
service) and server reflection, maps domain errors in one place, serves TLS
when given a certificate (plaintext beyond loopback only when asked), and
drains in-flight calls and streams on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from brewmesh import keepalive, reflection
from brewmesh.errors import ErrorMappingInterceptor
from brewmesh.startup import Setting, StartError
from brewmesh.tls import Tls, check_plaintext, is_loopback

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 5.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_PENDING_CALLS = 50_000
MAX_PORT = 65535


@dataclass(frozen=True)
class ServiceBinding:
    """A gRPC service to serve: its full name and how to add it to a server."""

    name: str
    add_to_server: Callable[[grpc.aio.Server], None]


@dataclass
class Shutdown:
    """Set when the server begins to stop: long-lived streams end on it."""

    event: asyncio.Event = field(default_factory=asyncio.Event)

    def begin(self) -> None:
        self.event.set()

    @property
    def started(self) -> bool:
        return self.event.is_set()


class Server:
    """One grpc.aio server hosting some services of the mesh."""

    def __init__(
        self,
        services: Sequence[ServiceBinding],
        address: str = "127.0.0.1:0",
        shutdown: Shutdown | None = None,
        on_stop: Sequence[Callable[[], object]] = (),
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        tls: Tls | None = None,
        insecure: bool = False,
    ) -> None:
        self.services = list(services)
        self.address = address
        self.tls = tls
        self.insecure = insecure
        self.shutdown = shutdown or Shutdown()
        self.health = HealthServicer()
        self.port = 0
        self._on_stop = list(on_stop)
        self._server = grpc.aio.server(
            interceptors=[*interceptors, ErrorMappingInterceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                # Thousands of watchers reconnecting at once (after a restart) must not be
                # refused: grpc's default cancels calls beyond 3000 pending.
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
                *keepalive.SERVER_OPTIONS,
            ],
        )
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Listen and serve; a StartError if the address cannot be served (busy, unknown, refused)."""
        host, port = split_address(self.address)
        check_plaintext(host, self.tls, self.insecure)
        check_free(host, port)
        for service in self.services:
            service.add_to_server(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [s.name for s in self.services] + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        reflection.enable(names, self._server)
        try:
            if self.tls:
                self.port = self._server.add_secure_port(self.address, self.tls.server_credentials())
            else:
                self.port = self._server.add_insecure_port(self.address)
        except RuntimeError as error:  # grpc's only word for it; check_free caught the usual causes
            raise StartError(Setting.PORT, f"cannot listen on {self.address}") from error
        if not self.tls and not is_loopback(host):
            log.warning("serving %s in plaintext (insecure): API keys cross the network in clear", host)
        await self._server.start()
        for name in ["", *(s.name for s in self.services)]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Stop taking calls, end streams, let in-flight calls finish for `grace` seconds."""
        if self._stopped.is_set():
            return
        await self.health.enter_graceful_shutdown()
        self.shutdown.begin()
        await self._server.stop(grace)
        for callback in self._on_stop:
            result = callback()
            if asyncio.iscoroutine(result):
                await result
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def serve_until_signalled(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Run until SIGINT or SIGTERM, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_requested.set)
        await stop_requested.wait()
        log.info("stopping: draining in-flight calls (up to %.0f s)", grace)
        await self.stop(grace)


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 hosts in brackets) as its host and port."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= MAX_PORT:
        raise StartError(Setting.PORT, f"'{address}' is not host:port with a port from 0 to {MAX_PORT}")
    return host, int(port)


def check_free(host: str, port: int) -> None:
    """Bind `host:port` for a moment, so a busy port or a wrong host reads as one clear error.

    grpc reports either as a bare RuntimeError (after logging to stderr itself).
    """
    try:
        found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StartError(
            Setting.HOST, f"'{host}' is not an address of this machine ({error.strerror})"
        ) from None
    failures: list[OSError] = []
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
            try:
                probe.bind(where)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise StartError(
                        Setting.PORT,
                        f"{host}:{port} is in use: stop what listens there or choose another port",
                    ) from None
                failures.append(error)
    if failures and len(failures) == len(found):
        reason = failures[0].strerror or str(failures[0])
        raise StartError(Setting.HOST, f"cannot listen on {host}:{port}: {reason}")
