"""Events are visible to exactly those who may read what they are about, on both buses.

A partner's fleet events are its own; partners and the catalogue are public;
the admin sees everything; no key sees nothing. Listener groups belong to the
caller's namespace: a rival using the same listener name has a group of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.bus.v1 import events_pb2
from brewmesh.client import MeshClient
from brewmesh.partners.v1 import partners_pb2
from tests.conftest import PartnerClient
from tests.event_streams import STREAM_RPCS, events_of
from tests.fleet import create_recipe, register_machines

PARTNERS = "brewmesh.partners.v1.PartnerService"
RECIPES = "brewmesh.recipes.v1.RecipeService"


@pytest.fixture(params=STREAM_RPCS)
def rpc(request: pytest.FixtureRequest) -> str:
    """Each test reads through each of the EventBus's streams."""
    return str(request.param)


async def _events(
    client: MeshClient, api: str, until_type: str, rpc: str, listener: str = ""
) -> list[events_pb2.Event]:
    """The API's events from the oldest, up to the first of `until_type` (which every reader sees)."""
    got: list[events_pb2.Event] = []

    async def read() -> None:
        request = bus_pb.SubscribeRequest(api=api, listener_name=listener)
        async for event in events_of(client, request, rpc):
            got.append(event)
            if event.type == until_type and (api != PARTNERS or _created(event) == LAST):
                return

    await asyncio.wait_for(read(), 15)
    return got


LAST = "zz-last"


def _created(event: events_pb2.Event) -> str:
    created = partners_pb2.PartnerCreatedEvent()
    event.payload.Unpack(created)
    return str(created.partner.namespace)


async def _fleet_owners(events: list[events_pb2.Event]) -> set[str]:
    owners = set()
    for event in events:
        if event.type == "coffee_machines_put":
            put = partners_pb2.CoffeeMachinesPutEvent()
            event.payload.Unpack(put)
            owners.add(put.parent)
    return owners


@pytest.fixture
async def two_fleets(
    partner: PartnerClient, other_partner: PartnerClient, admin: MeshClient
) -> AsyncIterator[None]:
    await register_machines(partner.client, partner.namespace, {"m1": ("legacy", "127.0.0.1:1", ())})
    await register_machines(
        other_partner.client, other_partner.namespace, {"m1": ("legacy", "127.0.0.1:1", ())}
    )
    await create_recipe(partner.client, partner.namespace, "lungo")
    # A public marker fired last: every reader reads up to it.
    await admin.partners.CreatePartner(
        partners_pb2.CreatePartnerRequest(namespace=LAST, partner=partners_pb2.Partner(display_name="Z"))
    )
    yield


async def test_each_reader_sees_its_own_private_events_and_the_public_ones(
    two_fleets: None, partner: PartnerClient, other_partner: PartnerClient, admin: MeshClient, rpc: str
) -> None:
    own = f"partners/{partner.namespace}"
    rival = f"partners/{other_partner.namespace}"
    seen = {
        "own key": await _fleet_owners(await _events(partner.client, PARTNERS, "partner_created", rpc)),
        "other partner's key": await _fleet_owners(
            await _events(other_partner.client, PARTNERS, "partner_created", rpc)
        ),
        "admin key": await _fleet_owners(await _events(admin, PARTNERS, "partner_created", rpc)),
    }
    assert seen == {"own key": {own}, "other partner's key": {rival}, "admin key": {own, rival}}
    for reader in (partner.client, other_partner.client, admin):
        recipes = await _events(reader, RECIPES, "recipe_created", rpc)
        assert [e.type for e in recipes] == ["recipe_created"]  # the catalogue is public


async def test_no_key_sees_no_event(two_fleets: None, anonymous: MeshClient, rpc: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _events(anonymous, PARTNERS, "partner_created", rpc)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_rivals_group_of_the_same_name_is_another_group(
    two_fleets: None, partner: PartnerClient, other_partner: PartnerClient, rpc: str
) -> None:
    mine = await _events(partner.client, PARTNERS, "partner_created", rpc, listener="billing")
    theirs = await _events(other_partner.client, PARTNERS, "partner_created", rpc, listener="billing")
    assert await _fleet_owners(mine) == {f"partners/{partner.namespace}"}
    assert await _fleet_owners(theirs) == {f"partners/{other_partner.namespace}"}
