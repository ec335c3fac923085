"""The partners component: PartnerService, its storage, key lookup, health checks."""

from __future__ import annotations

import functools

from brewmesh.auth import KeyGrant, KeyLookup, Principal, hash_key
from brewmesh.partners.v1 import partners_pb2_grpc
from brewmesh.runtime import Component, Runtime
from brewmesh.server import ServiceBinding
from brewmesh.services.partners import machines, partners
from brewmesh.services.partners.fleet_rpcs import API, status_changed_event
from brewmesh.services.partners.health_checks import HealthChecker
from brewmesh.services.partners.machines import CoffeeMachine, ServingStatus
from brewmesh.services.partners.servicer import PartnerServicer
from brewmesh.storage import Store, Tx
from brewmesh.tls import machine_credentials


def key_lookup(store: Store) -> KeyLookup:
    """Partner keys from this service's own key table."""

    async def lookup(key: str) -> KeyGrant | None:
        digest = hash_key(key)
        owner = await store.lookup(lambda tx: partners.key_owner(tx, digest))
        return KeyGrant(Principal(owner[0]), owner[1]) if owner else None

    return lookup


class Partners:
    """The component's state in one process: its health checker."""

    def __init__(self) -> None:
        self.checker: HealthChecker | None = None

    async def start(self, rt: Runtime) -> None:
        def on_change(tx: Tx, machine: CoffeeMachine, status: ServingStatus) -> None:
            rt.bus.fire(
                tx, API, "machine_status_changed", status_changed_event(machine, status), machine.namespace
            )
            up = rt.metrics.machine_up.labels(f"{machine.namespace}/{machine.machine_id}")
            tx.after_commit(functools.partial(up.set, int(status == ServingStatus.SERVING)))

        interval = rt.settings.health_interval_seconds
        self.checker = HealthChecker(rt.store, on_change, interval, machine_credentials(rt.tls))
        self.checker.start()

    async def stop(self, rt: Runtime) -> None:
        if self.checker:
            await self.checker.stop()

    def bindings(self, rt: Runtime) -> list[ServiceBinding]:
        servicer = PartnerServicer(rt, self._poke)
        return [
            ServiceBinding(API, lambda s: partners_pb2_grpc.add_PartnerServiceServicer_to_server(servicer, s))
        ]

    def _poke(self) -> None:
        if self.checker:
            self.checker.poke()


def component() -> Component:
    state = Partners()
    return Component(
        name="partners",
        apis=[API],
        migrations=[*partners.MIGRATIONS, *machines.MIGRATIONS],
        key_lookup=key_lookup,
        bindings=state.bindings,
        start=state.start,
        stop=state.stop,
    )
