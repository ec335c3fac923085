"""A partner's machine: program run handlers, served as ProgramRunner.

    machine = Machine()

    @machine.program_run_handler("vending", handles=["takeout_requested"])
    async def run(program: Program) -> None:
        ...

    await machine.serve(50061)

The machine serves `brewmesh.runner.v1.ProgramRunner` plus health and
reflection through `brewmesh.server.Server`, like every server of the mesh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from brewmesh.caller_tokens import CallerCheck
from brewmesh.runner.v1 import program_runner_pb2_grpc
from brewmesh.sdk.execution import RunHandler
from brewmesh.sdk.handlers import Handlers, Registration
from brewmesh.sdk.runs import RunStore
from brewmesh.sdk.servicer import SERVICE_NAME, ProgramRunnerServicer
from brewmesh.server import DEFAULT_GRACE_SECONDS, Server, ServiceBinding, Shutdown
from brewmesh.tls import Tls
from brewmesh.tracing import NO_TRACING, Tracing

log = logging.getLogger(__name__)

DEFAULT_PORT = 50061
DEFAULT_KEEP_FINISHED_RUNS = 1000


class Machine:
    """Program run handlers by API type, and the ProgramRunner server for them."""

    def __init__(
        self, *, keep_finished_runs: int = DEFAULT_KEEP_FINISHED_RUNS, caller_token: str | None = None
    ) -> None:
        """`caller_token`: serve ProgramRunner only to callers presenting it (the mesh's runner,
        when the same token is declared for the machine with PutCoffeeMachines); others get
        UNAUTHENTICATED. See `brewmesh.caller_tokens`."""
        self.handlers = Handlers()
        self._keep_finished_runs = keep_finished_runs
        self._caller_check = CallerCheck(SERVICE_NAME, caller_token) if caller_token else None
        self._server: Server | None = None
        self._servicer: ProgramRunnerServicer | None = None
        self._closer: asyncio.Task[None] | None = None

    def register_program_run_handler(
        self, api_type: str, handler: RunHandler, *, handles: Iterable[str] | None = None
    ) -> Registration:
        """Run `handler` for runs of `api_type`.

        `handles` declares the events the handler listens to (what the
        partner registers as the machine's `handled_events`); optional.
        """
        return self.handlers.register(api_type, handler, handles)

    def program_run_handler(
        self, api_type: str, *, handles: Iterable[str] | None = None
    ) -> Callable[[RunHandler], RunHandler]:
        """Decorator form of `register_program_run_handler`."""

        def register(handler: RunHandler) -> RunHandler:
            self.register_program_run_handler(api_type, handler, handles=handles)
            return handler

        return register

    @property
    def handled_events(self) -> frozenset[str]:
        """Every event the machine's handlers declare they handle."""
        return frozenset(event for r in self.handlers for event in (r.handles or ()))

    @property
    def server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the machine is not started: call start() or serve()")
        return self._server

    @property
    def port(self) -> int:
        return self.server.port

    async def start(
        self,
        address: str = "127.0.0.1:0",
        tls: Tls | None = None,
        insecure: bool = False,
        tracing: Tracing = NO_TRACING,
    ) -> int:
        """Serve on `address` (port 0: any free port); returns the port.

        With `tls`, serve TLS (with its CA: only to clients presenting a certificate the CA
        signed, e.g. the mesh's runner). Plaintext beyond loopback only if `insecure`.
        With `tracing`, each call is a span in the trace of the runner's call.
        """
        if self._server is not None:
            raise RuntimeError("the machine is already started")
        if not len(self.handlers):
            raise RuntimeError("register a program run handler before starting the machine")
        shutdown = Shutdown()
        servicer = ProgramRunnerServicer(self.handlers, RunStore(self._keep_finished_runs), shutdown)
        binding = ServiceBinding(
            SERVICE_NAME,
            lambda server: program_runner_pb2_grpc.add_ProgramRunnerServicer_to_server(servicer, server),
        )
        checks = [*tracing.server_interceptors(), *([self._caller_check] if self._caller_check else [])]
        server = Server(
            [binding],
            address,
            shutdown,
            on_stop=[self._closed],
            interceptors=checks,
            tls=tls,
            insecure=insecure,
        )
        port = await server.start()  # a StartError if it cannot listen; the machine stays unstarted
        self._server, self._servicer = server, servicer
        # However the server is stopped (stop(), a signal), runs still going
        # end as failed the moment it begins to stop, so their watchers see
        # the end within the grace period instead of a dropped stream.
        self._closer = asyncio.create_task(self._close_on_shutdown(shutdown, servicer))
        return port

    async def stop(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        await self.server.stop(grace)

    async def serve(
        self,
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        grace: float = DEFAULT_GRACE_SECONDS,
        tls: Tls | None = None,
        insecure: bool = False,
    ) -> None:
        """Serve until SIGINT or SIGTERM, then stop gracefully; `tls`, `insecure` as for `start`."""
        await self.start(f"{host}:{port}", tls, insecure)
        log.info("machine serving %s on %s:%d", SERVICE_NAME, host, self.port)
        await self.server.serve_until_signalled(grace)

    @staticmethod
    async def _close_on_shutdown(shutdown: Shutdown, servicer: ProgramRunnerServicer) -> None:
        await shutdown.event.wait()
        await servicer.shut_down()

    async def _closed(self) -> None:
        if self._closer is not None:
            await self._closer
