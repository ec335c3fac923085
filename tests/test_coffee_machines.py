"""Partners declare their fleets; the registry health-checks every machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import grpc
import pytest

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.bus.v1 import events_pb2
from brewmesh.client import MeshClient, connect, field_violations
from brewmesh.mesh import Mesh
from brewmesh.partners.v1 import partners_pb2 as pb
from brewmesh.server import Server
from brewmesh.settings import Settings
from tests.conftest import PartnerClient, create_partner, free_port

PARENT = "partners/my-coffee-company"


def machine(
    machine_id: str, endpoint: str, handled: tuple[str, ...] = ("takeout_requested",)
) -> pb.CoffeeMachine:
    return pb.CoffeeMachine(
        name=f"{PARENT}/coffeeMachines/{machine_id}",
        api_type="vending",
        program_api=pb.ProgramApi(endpoint=endpoint),
        handled_events=handled,
    )


@pytest.fixture
async def machine_server() -> AsyncIterator[Server]:
    """A real gRPC server with a health service, standing in for a machine's endpoint."""
    server = Server([])
    await server.start()
    yield server
    await server.stop(grace=0)


async def put(client: MeshClient, *machines: pb.CoffeeMachine) -> pb.PutCoffeeMachinesResponse:
    return await client.partners.PutCoffeeMachines(
        pb.PutCoffeeMachinesRequest(parent=PARENT, coffee_machines=machines)
    )


async def wait_for_status(
    client: MeshClient, name: str, status: int, timeout: float = 10
) -> pb.CoffeeMachine:
    for _ in range(int(timeout / 0.1)):
        found = await client.partners.GetCoffeeMachine(pb.GetCoffeeMachineRequest(name=name))
        if found.serving_status == status:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never became {pb.ServingStatus.Name(status)}")  # type: ignore[arg-type]


async def test_partner_declares_its_fleet_and_reads_it_back(
    partner: PartnerClient, anonymous: MeshClient
) -> None:
    declared = await put(partner.client, machine("m2", "10.0.0.2:50061"), machine("m1", "10.0.0.1:50061"))
    assert [m.name for m in declared.coffee_machines] == [
        f"{PARENT}/coffeeMachines/m1",
        f"{PARENT}/coffeeMachines/m2",
    ]
    got = await anonymous.partners.GetCoffeeMachine(
        pb.GetCoffeeMachineRequest(name=f"{PARENT}/coffeeMachines/m1")
    )
    assert got.api_type == "vending"
    assert got.program_api.endpoint == "10.0.0.1:50061"
    assert list(got.handled_events) == ["takeout_requested"]


async def test_putting_the_fleet_again_replaces_it(partner: PartnerClient) -> None:
    await put(partner.client, machine("m1", "10.0.0.1:1"), machine("m2", "10.0.0.2:1"))
    await put(partner.client, machine("m2", "10.0.0.2:1"))
    listed = await partner.client.partners.ListCoffeeMachines(pb.ListCoffeeMachinesRequest(parent=PARENT))
    assert [m.name.rpartition("/")[2] for m in listed.coffee_machines] == ["m2"]


async def test_machines_page_in_order(partner: PartnerClient) -> None:
    await put(partner.client, *(machine(f"m{i}", f"10.0.0.{i}:1") for i in range(5)))
    seen, token = [], ""
    while True:
        page = await partner.client.partners.ListCoffeeMachines(
            pb.ListCoffeeMachinesRequest(parent=PARENT, page_size=2, page_token=token)
        )
        seen += [m.name.rpartition("/")[2] for m in page.coffee_machines]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"m{i}" for i in range(5)]


async def test_a_partner_touches_only_its_own_fleet(
    partner: PartnerClient, other_partner: PartnerClient
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await put(other_partner.client, machine("m1", "10.0.0.1:1"))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_invalid_fleet_lists_every_violation(partner: PartnerClient) -> None:
    bad = [
        machine("m1", "no-port"),
        pb.CoffeeMachine(name="partners/rival-roasters/coffeeMachines/x", api_type="Vending Machine!"),
        machine("m3", "10.0.0.3:1", handled=("Takeout Requested",)),
        machine("m3", "10.0.0.3:1"),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await put(partner.client, *bad)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in field_violations(error.value)}
    assert fields == {
        "coffee_machines[0].program_api.endpoint",
        "coffee_machines[1].name",
        "coffee_machines[1].api_type",
        "coffee_machines[1].program_api.endpoint",
        "coffee_machines[2].handled_events[0]",
        "coffee_machines[3].name",
    }
    listed = await partner.client.partners.ListCoffeeMachines(pb.ListCoffeeMachinesRequest(parent=PARENT))
    assert not listed.coffee_machines


async def test_unknown_machine_is_not_found(anonymous: MeshClient, partner: PartnerClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await anonymous.partners.GetCoffeeMachine(
            pb.GetCoffeeMachineRequest(name=f"{PARENT}/coffeeMachines/none")
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_registry_health_checks_machines_and_fires_status_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine_server: Server
) -> None:
    mesh = await Mesh.start(Settings(data_dir=tmp_path / "data", health_interval_seconds=0.2))
    try:
        async with connect(f"127.0.0.1:{mesh.port}", key=mesh.admin_key) as admin:
            owner = await create_partner(mesh, admin, "my-coffee-company")
            up = f"127.0.0.1:{machine_server.port}"
            down = f"127.0.0.1:{free_port()}"
            await put(owner.client, machine("up", up), machine("down", down))
            await wait_for_status(admin, f"{PARENT}/coffeeMachines/up", pb.SERVING_STATUS_SERVING)
            await wait_for_status(admin, f"{PARENT}/coffeeMachines/down", pb.SERVING_STATUS_UNREACHABLE)
            await machine_server.stop(grace=0)
            gone = await wait_for_status(admin, f"{PARENT}/coffeeMachines/up", pb.SERVING_STATUS_UNREACHABLE)
            assert gone.HasField("status_time")
            events = admin.bus.Subscribe(
                bus_pb.SubscribeRequest(
                    api="brewmesh.partners.v1.PartnerService", event_types=["machine_status_changed"]
                )
            )
            expected: set[tuple[str, int, int]] = {
                ("up", pb.SERVING_STATUS_UNSPECIFIED, pb.SERVING_STATUS_SERVING),
                ("up", pb.SERVING_STATUS_SERVING, pb.SERVING_STATUS_UNREACHABLE),
                ("down", pb.SERVING_STATUS_UNSPECIFIED, pb.SERVING_STATUS_UNREACHABLE),
            }
            changes = await asyncio.wait_for(collect_changes(events, expected), 10)
            await owner.client.channel.close(None)
    finally:
        await mesh.stop(grace=0)
    assert expected <= changes


async def collect_changes(
    events: AsyncIterable[events_pb2.Event], expected: set[tuple[str, int, int]]
) -> set[tuple[str, int, int]]:
    """Status changes from the bus until every expected one was seen."""
    changes: set[tuple[str, int, int]] = set()
    async for event in events:
        change = pb.MachineStatusChangedEvent()
        event.payload.Unpack(change)
        changes.add((change.machine.rpartition("/")[2], change.previous_status, change.serving_status))
        if expected <= changes:
            break
    return changes
