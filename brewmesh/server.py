"""Server bootstrap on grpc.aio: health, reflection, error mapping, graceful stop.

Every brewmesh server (the embedded mesh, one service per process, a partner
machine) is built here, so each serves `grpc.health.v1.Health` (a status per
service) and server reflection, maps domain errors in one place and drains
in-flight calls and streams on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from brewmesh import reflection
from brewmesh.errors import ErrorMappingInterceptor

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 5.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_PENDING_CALLS = 50_000


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
    ) -> None:
        self.services = list(services)
        self.address = address
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
            ],
        )
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        for service in self.services:
            service.add_to_server(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [s.name for s in self.services] + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        reflection.enable(names, self._server)
        self.port = self._server.add_insecure_port(self.address)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.address}")
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
