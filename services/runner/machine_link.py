"""Calls from the runner to a partner machine's own ProgramRunner."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from brewmesh import keepalive
from brewmesh.call_observer import NOT_OBSERVED, ClientObservers
from brewmesh.client import channel
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from brewmesh.services.runner.program_runs import MachineTarget, ProgramRun
from brewmesh.services.runner.run_protos import program_proto
from brewmesh.struct_values import to_struct

IDLE_SECONDS = 300.0
"""A channel no call used for this long is closed; the next call opens a new one. Without
this, the channel of a machine's old endpoint or caller token would keep its connection
(pinged every few seconds) open for as long as the runner runs."""


@dataclass
class _Link:
    """A machine's channel, its stub (built once: a stub makes a multi-callable per method),
    and its use: calls in flight, and when the last one ended."""

    channel: grpc.aio.Channel
    stub: program_runner_pb2_grpc.ProgramRunnerAsyncStub  # a name for type checkers only
    calls: int = 0
    last_used: float = 0.0


class MachineLink:
    """One channel per machine endpoint (and caller token), reused by every run on it."""

    def __init__(
        self,
        tls: grpc.ChannelCredentials | None = None,
        keepalive_seconds: float = keepalive.MACHINE_SECONDS,
        observers: ClientObservers = NOT_OBSERVED,
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`tls`: the credentials for machines declared with TLS (default: the system's roots).
        `keepalive_seconds`: ping a quiet connection after this long, and drop it when the ping
        is not answered within as long again, so a frozen machine is noticed. `observers`:
        for every call to a machine (metrics, traces). `idle_seconds`: close a channel no call
        used for this long (measured by `clock`)."""
        self._tls = tls
        self._keepalive = keepalive.client_options(keepalive_seconds)
        self._observers = observers
        self._idle_seconds = idle_seconds
        self._clock = clock
        self._links: dict[tuple[str, bool, str], _Link] = {}
        self._swept_at = clock()
        self._closing: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def _using(self, target: MachineTarget) -> Iterator[program_runner_pb2_grpc.ProgramRunnerAsyncStub]:
        """The stub for `target`, counted as in use until the block ends."""
        link = self._link(target)
        link.calls += 1
        try:
            yield link.stub
        finally:
            link.calls -= 1
            link.last_used = self._clock()

    def _link(self, target: MachineTarget) -> _Link:
        self._close_idle()
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
            link = self._links[key] = _Link(opened, program_runner_pb2_grpc.ProgramRunnerStub(opened))
        return link

    def _close_idle(self) -> None:
        """Close the channels no call used for the idle time (looked over a few times per idle
        time, as calls come: nothing runs for this while no call does)."""
        now = self._clock()
        if now - self._swept_at < self._idle_seconds / 4:
            return
        self._swept_at = now
        for key, link in list(self._links.items()):
            if link.calls == 0 and now - link.last_used >= self._idle_seconds:
                del self._links[key]
                closing = asyncio.get_running_loop().create_task(link.channel.close(None))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    async def run(self, run: ProgramRun, timeout: float) -> pb.ProgramRun:
        request = pb.RunRequest(
            run_id=run.request.run_id,
            machine=run.request.machine,
            recipe=run.request.recipe,
            volume_ml=run.request.volume_ml,
            program=program_proto(run.program),
            api_type=run.target.api_type,
        )
        with self._using(run.target) as stub:
            return await stub.Run(request, timeout=timeout)

    async def get_run(self, run: ProgramRun, timeout: float) -> pb.ProgramRun:
        with self._using(run.target) as stub:
            return await stub.GetRun(pb.GetRunRequest(name=run.name), timeout=timeout)

    async def watch(self, run: ProgramRun, after: int) -> AsyncIterator[pb.ProgramEvent]:
        """The machine's events of `run` after `after`; its channel is in use until the stream ends."""
        request = pb.WatchRequest(run=run.name, after_sequence=after)
        with self._using(run.target) as stub:
            async for event in stub.Watch(request):
                yield event

    async def signal(
        self, run: ProgramRun, event: str, attributes: dict[str, Any], timeout: float
    ) -> pb.SignalResponse:
        request = pb.SignalRequest(run=run.name, event=event, attributes=to_struct(attributes))
        with self._using(run.target) as stub:
            return await stub.Signal(request, timeout=timeout)

    async def closed_idle(self) -> None:
        """Until every channel closed for idleness so far has closed (its connection gone): a
        call that closes one does not wait for it."""
        await asyncio.gather(*self._closing)

    async def close(self) -> None:
        for link in self._links.values():
            await link.channel.close(None)
        self._links.clear()
        await self.closed_idle()
