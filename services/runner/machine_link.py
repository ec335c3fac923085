"""Calls from the runner to a partner machine's own ProgramRunner."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any, TypeAlias

import grpc

from brewmesh import keepalive
from brewmesh.call_observer import NOT_OBSERVED, ClientObservers
from brewmesh.client import channel
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from brewmesh.services.runner.program_runs import MachineTarget, ProgramRun
from brewmesh.services.runner.run_protos import program_proto
from brewmesh.struct_values import to_struct

_Link: TypeAlias = "tuple[grpc.aio.Channel, program_runner_pb2_grpc.ProgramRunnerAsyncStub]"
"""A machine's channel and its stub (the stub's type exists for type checkers only)."""


class MachineLink:
    """One channel per machine endpoint, reused by every run on it."""

    def __init__(
        self,
        tls: grpc.ChannelCredentials | None = None,
        keepalive_seconds: float = keepalive.MACHINE_SECONDS,
        observers: ClientObservers = NOT_OBSERVED,
    ) -> None:
        """`tls`: the credentials for machines declared with TLS (default: the system's roots).
        `keepalive_seconds`: ping a quiet connection after this long, and drop it when the ping
        is not answered within as long again, so a frozen machine is noticed. `observers`:
        for every call to a machine (metrics, traces)."""
        self._tls = tls
        self._keepalive = keepalive.client_options(keepalive_seconds)
        self._observers = observers
        # A channel and its stub (built once: a stub makes a multi-callable per method).
        self._links: dict[tuple[str, bool, str], _Link] = {}

    def _stub(self, target: MachineTarget) -> program_runner_pb2_grpc.ProgramRunnerAsyncStub:
        key = (target.endpoint, target.tls, target.caller_token)
        link = self._links.get(key)
        if link is None:
            credentials = self._tls if target.tls else None
            # The machine's caller token goes with every call, as `authorization: Bearer`.
            opened = channel(
                target.endpoint,
                target.caller_token or None,
                tls=target.tls,
                credentials=credentials,
                keepalive=self._keepalive,
                interceptors=self._observers.interceptors,
                counted_by=self._observers.metrics,
            )
            link = self._links[key] = (opened, program_runner_pb2_grpc.ProgramRunnerStub(opened))
        return link[1]

    async def run(self, run: ProgramRun, timeout: float) -> pb.ProgramRun:
        request = pb.RunRequest(
            run_id=run.request.run_id,
            machine=run.request.machine,
            recipe=run.request.recipe,
            volume_ml=run.request.volume_ml,
            program=program_proto(run.program),
            api_type=run.target.api_type,
        )
        return await self._stub(run.target).Run(request, timeout=timeout)

    async def get_run(self, run: ProgramRun, timeout: float) -> pb.ProgramRun:
        return await self._stub(run.target).GetRun(pb.GetRunRequest(name=run.name), timeout=timeout)

    def watch(self, run: ProgramRun, after: int) -> AsyncIterable[pb.ProgramEvent]:
        request = pb.WatchRequest(run=run.name, after_sequence=after)
        return self._stub(run.target).Watch(request)

    async def signal(
        self, run: ProgramRun, event: str, attributes: dict[str, Any], timeout: float
    ) -> pb.SignalResponse:
        request = pb.SignalRequest(run=run.name, event=event, attributes=to_struct(attributes))
        return await self._stub(run.target).Signal(request, timeout=timeout)

    async def close(self) -> None:
        for opened, _ in self._links.values():
            await opened.close(None)
        self._links.clear()
