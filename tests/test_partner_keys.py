"""Partner keys rotate: the new key works at once, the old one stops (now or after a grace
period) on every service, the partner and the admin see the rotation, nobody else may do it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import duration_pb2

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.client import MeshClient, connect, field_violations
from brewmesh.partners.v1 import partners_pb2 as pb
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from tests.conftest import MeshUnderTest, PartnerClient, create_partner

PARTNERS = "brewmesh.partners.v1.PartnerService"
WAIT_SECONDS = 10.0


def rotate_request(namespace: str, grace_seconds: float = 0) -> pb.RotatePartnerKeyRequest:
    grace = duration_pb2.Duration()
    grace.FromNanoseconds(int(grace_seconds * 1e9))
    return pb.RotatePartnerKeyRequest(name=f"partners/{namespace}", old_key_grace_period=grace)


Check = Callable[[MeshClient], Awaitable[object]]


async def _partners_call(client: MeshClient) -> object:
    return await client.partners.GetCaller(pb.GetCallerRequest())


async def _recipes_call(client: MeshClient) -> object:
    return await client.recipes.ListRecipes(recipes_pb2.ListRecipesRequest())


async def _runner_call(client: MeshClient) -> object:
    # Any answer but UNAUTHENTICATED means the key was accepted: this run does not exist.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await client.runner.GetRun(run_pb.GetRunRequest(name="programRuns/no-such-run"))
    if error.value.code() != grpc.StatusCode.NOT_FOUND:
        raise error.value
    return None


SERVICES: dict[str, Check] = {"partners": _partners_call, "recipes": _recipes_call, "runner": _runner_call}
"""One call per service of the mesh (separate processes in the distributed mesh)."""


async def accepted_everywhere(client: MeshClient) -> None:
    for call in SERVICES.values():
        await call(client)


async def refused(call: Check, client: MeshClient) -> bool:
    try:
        await call(client)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNAUTHENTICATED:
            return True
        raise
    return False


async def refused_everywhere_within(client: MeshClient, seconds: float) -> None:
    """Each service refuses the key within `seconds` (across processes the rotation's event
    arrives a moment after the rotation returned)."""
    deadline = time.monotonic() + seconds
    for service, call in SERVICES.items():
        while not await refused(call, client):
            assert time.monotonic() < deadline, f"the {service} service still accepts the old key"
            await asyncio.sleep(0.05)


@pytest.fixture
async def old_client(mesh: MeshUnderTest, partner: PartnerClient) -> AsyncIterator[MeshClient]:
    """The partner's client with its first key, which every service has already accepted once."""
    await accepted_everywhere(partner.client)
    yield partner.client


async def test_a_partner_rotates_its_own_key_and_the_old_one_stops_everywhere(
    mesh: MeshUnderTest, partner: PartnerClient, old_client: MeshClient
) -> None:
    rotated = await old_client.partners.RotatePartnerKey(rotate_request(partner.namespace))
    assert rotated.partner.name == "partners/my-coffee-company"
    assert rotated.api_key.startswith("bmk_") and rotated.api_key != partner.key
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _partners_call(old_client)  # where the key table is: at once
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await refused_everywhere_within(old_client, WAIT_SECONDS)
    async with connect(f"127.0.0.1:{mesh.port}", key=rotated.api_key) as renewed:
        await accepted_everywhere(renewed)
        caller = await renewed.partners.GetCaller(pb.GetCallerRequest())
    assert caller.namespace == partner.namespace and not caller.HasField("key_expire_time")


async def test_the_admin_rotates_a_partners_key(
    mesh: MeshUnderTest, admin: MeshClient, partner: PartnerClient, old_client: MeshClient
) -> None:
    rotated = await admin.partners.RotatePartnerKey(rotate_request(partner.namespace))
    await refused_everywhere_within(old_client, WAIT_SECONDS)
    async with connect(f"127.0.0.1:{mesh.port}", key=rotated.api_key) as renewed:
        await accepted_everywhere(renewed)
    await accepted_everywhere(admin)  # the admin's own key is untouched


async def test_an_old_key_works_through_its_grace_period_then_stops(
    mesh: MeshUnderTest, partner: PartnerClient, old_client: MeshClient
) -> None:
    rotated = await old_client.partners.RotatePartnerKey(rotate_request(partner.namespace, 3))
    expires = rotated.old_key_expire_time.ToDatetime(UTC)
    await accepted_everywhere(old_client)  # within the grace period: still everywhere
    async with connect(f"127.0.0.1:{mesh.port}", key=rotated.api_key) as renewed:
        await accepted_everywhere(renewed)
    caller = await old_client.partners.GetCaller(pb.GetCallerRequest())
    assert caller.key_expire_time.ToDatetime(UTC) == expires
    await refused_everywhere_within(old_client, (expires - datetime.now(UTC)).total_seconds() + WAIT_SECONDS)
    assert datetime.now(UTC) >= expires


async def test_another_partner_may_not_rotate_a_key(
    admin: MeshClient, partner: PartnerClient, other_partner: PartnerClient, anonymous: MeshClient
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as rival:
        await other_partner.client.partners.RotatePartnerKey(rotate_request(partner.namespace))
    assert rival.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as nobody:
        await anonymous.partners.RotatePartnerKey(rotate_request(partner.namespace))
    assert nobody.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await admin.partners.RotatePartnerKey(rotate_request("nobody-here"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    await accepted_everywhere(partner.client)  # nothing was rotated


@pytest.mark.parametrize("grace_seconds", [-1, 86_401])
async def test_a_grace_period_beyond_its_bounds_is_invalid(
    partner: PartnerClient, grace_seconds: int
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await partner.client.partners.RotatePartnerKey(rotate_request(partner.namespace, grace_seconds))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(error.value)] == ["old_key_grace_period"]
    await accepted_everywhere(partner.client)  # nothing was rotated


async def test_the_rotation_event_is_seen_by_the_partner_and_the_admin_only(
    mesh: MeshUnderTest, admin: MeshClient, partner: PartnerClient, other_partner: PartnerClient
) -> None:
    rotated = await partner.client.partners.RotatePartnerKey(rotate_request(partner.namespace))
    marker = await create_partner(mesh, admin, "zz-last")  # public: every reader sees it
    await marker.client.channel.close()
    async with connect(f"127.0.0.1:{mesh.port}", key=rotated.api_key) as renewed:
        seen = {
            "own key": await _rotations(renewed),
            "other partner's key": await _rotations(other_partner.client),
            "admin key": await _rotations(admin),
        }
    mine = ["partners/my-coffee-company"]
    assert seen == {"own key": mine, "other partner's key": [], "admin key": mine}


async def _rotations(client: MeshClient) -> list[str]:
    """The partners whose key rotations the reader sees, up to the marker partner's creation."""
    rotations: list[str] = []

    async def read() -> None:
        async for event in client.bus.Subscribe(bus_pb.SubscribeRequest(api=PARTNERS)):
            if event.type == "partner_key_rotated":
                payload = pb.PartnerKeyRotatedEvent()
                event.payload.Unpack(payload)
                assert payload.HasField("old_key_expire_time")
                rotations.append(payload.partner)
            elif event.type == "partner_created":
                created = pb.PartnerCreatedEvent()
                event.payload.Unpack(created)
                if created.partner.namespace == "zz-last":
                    return

    await asyncio.wait_for(read(), WAIT_SECONDS)
    return rotations
