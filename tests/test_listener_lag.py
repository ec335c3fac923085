"""How far behind a listener group is: EventBus.ListListenerGroups, on both buses.

A partner's group that stopped reading shows the events waiting for it (only
those of its types), how long the oldest has waited, and where it stands;
other partners never see it; the admin sees every group.
"""

from __future__ import annotations

import time

import grpc
import pytest

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.bus.v1 import events_pb2
from brewmesh.client import MeshClient
from tests.conftest import PartnerClient
from tests.fleet import create_recipe

RECIPES = "brewmesh.recipes.v1.RecipeService"
LISTENER = "audit"
ACK_SECONDS = 10.0


async def _take_one_then_leave(client: MeshClient) -> str:
    """Join the group, take one recipe_created event, leave once it is acknowledged; its id."""
    stream = client.bus.Subscribe(
        bus_pb.SubscribeRequest(api=RECIPES, event_types=["recipe_created"], listener_name=LISTENER)
    )
    try:
        event = await stream.read()
        assert isinstance(event, events_pb2.Event), event
        # Taken once written: wait for the acknowledgement, so leaving cannot race it.
        deadline = time.monotonic() + ACK_SECONDS
        while [g.pending_events for g in await _groups(client, api=RECIPES)] != [0]:
            assert time.monotonic() < deadline, "the event was never acknowledged"
        return str(event.id)
    finally:
        stream.cancel()


async def _groups(client: MeshClient, **fields: object) -> list[bus_pb.ListenerGroup]:
    response = await client.bus.ListListenerGroups(bus_pb.ListListenerGroupsRequest(**fields))  # type: ignore[arg-type]
    return list(response.listener_groups)


async def test_a_group_that_stopped_reading_shows_its_lag_to_its_owner_and_the_admin(
    partner: PartnerClient, other_partner: PartnerClient, admin: MeshClient
) -> None:
    await create_recipe(partner.client, partner.namespace, "first")
    position = await _take_one_then_leave(partner.client)
    await create_recipe(partner.client, partner.namespace, "second")
    await create_recipe(partner.client, partner.namespace, "third")

    # Distributed, events reach the bus a moment after their commit: wait for both.
    deadline = time.monotonic() + ACK_SECONDS
    while (group := (await _groups(partner.client, api=RECIPES))[0]).lag_events < 2:
        assert time.monotonic() < deadline, f"the lag never reached 2: {group}"
    assert (group.namespace, group.listener_name, list(group.event_types)) == (
        partner.namespace,
        LISTENER,
        ["recipe_created"],
    )
    assert group.position == position
    assert group.lag_events == 2  # "second" and "third", not the other types' events
    assert group.lag.ToNanoseconds() > 0
    assert (group.pending_events, group.dead_letters) == (0, 0)

    assert await _groups(other_partner.client, api=RECIPES) == []
    everyone = await _groups(admin)
    assert [(g.namespace, g.listener_name) for g in everyone if g.api == RECIPES].count(
        (partner.namespace, LISTENER)
    ) == 1


async def test_a_group_that_caught_up_has_no_lag(partner: PartnerClient) -> None:
    await create_recipe(partner.client, partner.namespace, "only")
    await _take_one_then_leave(partner.client)
    [group] = await _groups(partner.client, api=RECIPES)
    assert group.lag_events == 0 and group.lag.ToNanoseconds() == 0


async def test_listing_groups_needs_a_key_and_a_known_api(
    anonymous: MeshClient, partner: PartnerClient
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _groups(anonymous)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _groups(partner.client, api="brewmesh.nothing.v1.Nothing")
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
