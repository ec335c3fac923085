"""A machine's caller token: declared by its partner, write-only, never sent in plaintext.

How a machine uses it (refusing everyone but the runner) is in test_tls.py.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.client import MeshClient, field_violations
from brewmesh.partners.v1 import partners_pb2 as pb
from tests.conftest import MeshUnderTest, PartnerClient

PARENT = "partners/my-coffee-company"
NAME = f"{PARENT}/coffeeMachines/m1"
TOKEN = "a-long-caller-token-7c1e9b42"
FULL = pb.COFFEE_MACHINE_VIEW_FULL


def machine(token: str = TOKEN, tls: bool = True, endpoint: str = "127.0.0.1:1") -> pb.CoffeeMachine:
    return pb.CoffeeMachine(
        name=NAME,
        api_type="vending",
        program_api=pb.ProgramApi(endpoint=endpoint, tls=tls, caller_token=token),
    )


async def put(client: MeshClient, *machines: pb.CoffeeMachine) -> pb.PutCoffeeMachinesResponse:
    return await client.partners.PutCoffeeMachines(
        pb.PutCoffeeMachinesRequest(parent=PARENT, coffee_machines=machines)
    )


async def test_a_caller_token_is_shown_only_in_the_full_view_to_its_partner(
    partner: PartnerClient, admin: MeshClient
) -> None:
    declared = await put(partner.client, machine())
    assert declared.coffee_machines[0].program_api.caller_token == ""
    assert declared.coffee_machines[0].program_api.caller_token_set
    basic = await partner.client.partners.GetCoffeeMachine(pb.GetCoffeeMachineRequest(name=NAME))
    assert basic.program_api.caller_token == "" and basic.program_api.caller_token_set
    listed = await partner.client.partners.ListCoffeeMachines(pb.ListCoffeeMachinesRequest(parent=PARENT))
    assert [m.program_api.caller_token for m in listed.coffee_machines] == [""]
    for reader in (partner.client, admin):
        full = await reader.partners.GetCoffeeMachine(pb.GetCoffeeMachineRequest(name=NAME, view=FULL))
        assert full.program_api.caller_token == TOKEN


@pytest.mark.parametrize("who", ["other partner", "anonymous"])
async def test_no_one_else_reads_a_caller_token(
    partner: PartnerClient, other_partner: PartnerClient, anonymous: MeshClient, who: str
) -> None:
    await put(partner.client, machine())
    reader, code = {
        "other partner": (other_partner.client, grpc.StatusCode.PERMISSION_DENIED),
        "anonymous": (anonymous, grpc.StatusCode.UNAUTHENTICATED),
    }[who]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reader.partners.GetCoffeeMachine(pb.GetCoffeeMachineRequest(name=NAME, view=FULL))
    assert refused.value.code() == code
    assert TOKEN not in (refused.value.details() or "")


async def test_the_fleet_event_carries_no_caller_token(partner: PartnerClient, mesh: MeshUnderTest) -> None:
    await put(partner.client, machine())

    async def first_put() -> pb.CoffeeMachinesPutEvent:
        request = bus_pb.SubscribeRequest(api="brewmesh.partners.v1.PartnerService")
        async for event in partner.client.bus.Subscribe(request):
            if event.type == "coffee_machines_put":
                payload = pb.CoffeeMachinesPutEvent()
                event.payload.Unpack(payload)
                return payload
        raise AssertionError("the stream ended")

    payload = await asyncio.wait_for(first_put(), 15)
    assert payload.coffee_machines[0].program_api.caller_token_set
    assert payload.coffee_machines[0].program_api.caller_token == ""
    assert TOKEN.encode() not in payload.SerializeToString()


async def test_a_caller_token_needs_tls_and_a_refused_fleet_changes_nothing(partner: PartnerClient) -> None:
    await put(partner.client, machine(token="", tls=False, endpoint="127.0.0.1:2"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await put(partner.client, machine(tls=False))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(refused.value)
    assert [v.field for v in violations] == ["coffee_machines[0].program_api.caller_token"]
    assert "tls" in violations[0].description
    kept = await partner.client.partners.GetCoffeeMachine(pb.GetCoffeeMachineRequest(name=NAME))
    assert kept.program_api.endpoint == "127.0.0.1:2" and not kept.program_api.caller_token_set


@pytest.mark.parametrize("token", ["short", "has a space in it, long enough", "x" * 257])
async def test_a_malformed_caller_token_is_refused_without_being_quoted(
    partner: PartnerClient, token: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await put(partner.client, machine(token=token))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(refused.value)
    assert [v.field for v in violations] == ["coffee_machines[0].program_api.caller_token"]
    assert "16 to 256" in violations[0].description
    assert token not in violations[0].description + (refused.value.details() or "")
