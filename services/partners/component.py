"""The partners component: PartnerService, its storage and the key lookup."""

from __future__ import annotations

from brewmesh.auth import KeyLookup
from brewmesh.partners.v1 import partners_pb2_grpc
from brewmesh.runtime import Component, Runtime
from brewmesh.server import ServiceBinding
from brewmesh.storage import Store
from services.partners import partners
from services.partners.servicer import API, PartnerServicer


def key_lookup(store: Store) -> KeyLookup:
    async def lookup(key_hash: str) -> str | None:
        return await store.read(lambda tx: partners.namespace_for_key_hash(tx, key_hash))

    return lookup


def bindings(rt: Runtime) -> list[ServiceBinding]:
    servicer = PartnerServicer(rt)
    return [
        ServiceBinding(API, lambda s: partners_pb2_grpc.add_PartnerServiceServicer_to_server(servicer, s))
    ]


def component() -> Component:
    return Component(
        name="partners",
        apis=[API],
        migrations=partners.MIGRATIONS,
        bindings=bindings,
        extras={"key_lookup": key_lookup},
    )
