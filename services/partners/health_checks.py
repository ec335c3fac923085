"""Health-checks every machine's endpoint on a schedule (grpc.health.v1).

A status change is stored and fires `machine_status_changed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brewmesh.client import channel
from brewmesh.services.partners.machines import CoffeeMachine, ServingStatus, all_machines, record_status
from brewmesh.storage import Store, Tx

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
OnChange = Callable[[Tx, CoffeeMachine, ServingStatus], None]


class HealthChecker:
    """Checks all machines every `interval` seconds, or at once when poked."""

    def __init__(
        self, store: Store, on_change: OnChange, interval: float, tls: grpc.ChannelCredentials | None = None
    ) -> None:
        """`tls`: the credentials for machines declared with TLS (default: the system's roots)."""
        self.tls = tls
        self.store = store
        self.on_change = on_change
        self.interval = interval
        self._channels: dict[tuple[str, bool], grpc.aio.Channel] = {}
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def poke(self) -> None:
        """Check soon (e.g. after a fleet was declared)."""
        self._poke.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for ch in self._channels.values():
            await ch.close(None)
        self._channels.clear()

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:
                log.exception("machine health round failed; retrying next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval)
            self._poke.clear()

    async def check_all(self) -> None:
        machines = await self.store.read(all_machines)
        await asyncio.gather(*(self._check(m) for m in machines))

    async def _check(self, machine: CoffeeMachine) -> None:
        status = await self._probe(machine)
        changed = await self.store.quick_write(lambda tx: self._record(tx, machine, status))
        if changed:
            log.info("machine %s is now %s", machine.name, status.name)

    def _record(self, tx: Tx, machine: CoffeeMachine, status: ServingStatus) -> bool:
        before = record_status(tx, machine, status)
        if before is not None:
            self.on_change(tx, before, status)
        return before is not None

    async def _probe(self, machine: CoffeeMachine) -> ServingStatus:
        key = (machine.endpoint, machine.tls)
        if key not in self._channels:
            credentials = self.tls if machine.tls else None
            self._channels[key] = channel(machine.endpoint, tls=machine.tls, credentials=credentials)
        stub = health_pb2_grpc.HealthStub(self._channels[key])
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=CHECK_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError:
            return ServingStatus.UNREACHABLE
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        return ServingStatus.SERVING if serving else ServingStatus.NOT_SERVING
