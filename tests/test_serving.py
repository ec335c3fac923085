"""What every brewmesh server owes its clients: health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import AsyncIterable
from contextlib import closing
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brewmesh import mesh as mesh_module
from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.client import MeshClient, connect
from brewmesh.mesh import Mesh, all_components
from brewmesh.partners.v1 import partners_pb2
from brewmesh.runtime import Component, Runtime
from brewmesh.settings import Settings
from tests.conftest import MeshProcess, embedded_only, grpcurl, start_mesh_process
from tests.event_streams import STREAM_RPCS, events_of

SERVICES = [
    "brewmesh.partners.v1.PartnerService",
    "brewmesh.recipes.v1.RecipeService",
    "brewmesh.recipes.v1.LayoutService",
    "brewmesh.recipes.v1.FormatterService",
    "brewmesh.runner.v1.ProgramRunner",
    "brewmesh.bus.v1.EventBus",
]


@pytest.mark.parametrize("service", ["", *SERVICES])
async def test_health_reports_each_service_serving(mesh: Mesh, service: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_of_an_unknown_service_is_not_found(mesh: Mesh) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="acme.Nope")
            )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@embedded_only
async def test_health_watch_streams_each_change_of_status(mesh: Mesh) -> None:
    """A load balancer watching a server hears SERVING, then NOT_SERVING as it begins to stop."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="brewmesh.recipes.v1.RecipeService")
        )
        first = await asyncio.wait_for(watch.read(), 10)
        stopping = asyncio.create_task(mesh.server.stop(grace=1))
        second = await asyncio.wait_for(watch.read(), 10)
        await stopping
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_grpcurl_lists_services_and_shows_doc_comments(mesh_process: MeshProcess) -> None:
    listed = grpcurl(mesh_process.address, "list")
    assert listed.returncode == 0, listed.stderr
    for service in [*SERVICES, "grpc.health.v1.Health"]:
        assert service in listed.stdout.split()
    described = grpcurl(mesh_process.address, "describe", "brewmesh.recipes.v1.FormatterService.FormatVolume")
    assert described.returncode == 0, described.stderr
    assert "else the one for the language" in described.stdout
    message = grpcurl(mesh_process.address, "describe", "brewmesh.recipes.v1.ValueTransform")
    assert "Digits after the decimal point" in message.stdout


def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    mesh_process = start_mesh_process(tmp_path / "data", BREWMESH_LOG_LEVEL="INFO")  # the drain is logged
    output = mesh_process.stop()
    assert mesh_process.process.returncode == 0
    assert "draining in-flight calls" in output and "brewmesh stopped" in output


@embedded_only
@pytest.mark.parametrize("rpc", STREAM_RPCS)
async def test_stop_ends_open_streams_with_unavailable(mesh: Mesh, rpc: str) -> None:
    async with connect(f"127.0.0.1:{mesh.port}", key=mesh.admin_key) as client:
        await client.partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(
                namespace="open-co", partner=partners_pb2.Partner(display_name="O")
            )
        )
        stream = aiter(
            events_of(client, bus_pb.SubscribeRequest(api="brewmesh.partners.v1.PartnerService"), rpc)
        )
        await asyncio.wait_for(anext(stream), 5)  # the stream is open and served: it has the event
        reading = asyncio.create_task(_drain(stream))
        await mesh.server.stop(grace=5)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(reading, 5)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "resume with after_id" in (ended.value.details() or "")


async def _drain(stream: AsyncIterable[object]) -> None:
    async for _ in stream:
        pass


async def test_a_stream_ends_at_the_callers_deadline(admin: MeshClient) -> None:
    request = bus_pb.SubscribeRequest(api="brewmesh.partners.v1.PartnerService", new_only=True)
    started = asyncio.get_running_loop().time()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _drain(admin.bus.Subscribe(request, timeout=0.5))
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert asyncio.get_running_loop().time() - started < 3


async def test_restart_keeps_data_and_keys(tmp_path: Path) -> None:
    data = tmp_path / "keep"
    first = await Mesh.start(Settings(data_dir=data))
    async with connect(f"127.0.0.1:{first.port}", key=first.admin_key) as admin:
        created = await admin.partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(
                namespace="kept-co", partner=partners_pb2.Partner(display_name="Kept")
            )
        )
    await first.stop(grace=0)
    second = await Mesh.start(Settings(data_dir=data))
    try:
        assert second.admin_key == first.admin_key and not second.admin_key_generated
        async with connect(f"127.0.0.1:{second.port}", key=created.api_key) as partner:
            kept = await partner.partners.GetPartner(partners_pb2.GetPartnerRequest(name="partners/kept-co"))
        assert kept.display_name == "Kept"
    finally:
        await second.stop(grace=0)


async def test_stop_is_prompt_while_a_machine_never_answers(tmp_path: Path) -> None:
    """A machine endpoint that accepts TCP and never speaks must not hold up a stop."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    black_hole = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    mesh = await Mesh.start(Settings(data_dir=tmp_path / "data"))
    try:
        async with connect(f"127.0.0.1:{mesh.port}", key=mesh.admin_key) as admin:
            await _declare_machine(admin, f"127.0.0.1:{port}")
            for _ in range(50):  # until the health probe is under way
                if held:
                    break
                await asyncio.sleep(0.05)
            assert held, "the health checker never probed the machine"
        await asyncio.wait_for(mesh.stop(grace=0), 10)
    finally:
        for writer in held:
            writer.close()
        black_hole.close()
        await black_hole.wait_closed()


async def _declare_machine(admin: MeshClient, endpoint: str) -> None:
    namespace = "black-hole-co"
    await admin.partners.CreatePartner(
        partners_pb2.CreatePartnerRequest(namespace=namespace, partner=partners_pb2.Partner(display_name="B"))
    )
    machine = partners_pb2.CoffeeMachine(
        name=f"partners/{namespace}/coffeeMachines/m1",
        api_type="vending",
        program_api=partners_pb2.ProgramApi(endpoint=endpoint),
    )
    await admin.partners.PutCoffeeMachines(
        partners_pb2.PutCoffeeMachinesRequest(parent=f"partners/{namespace}", coffee_machines=[machine])
    )


async def test_a_stuck_part_cannot_hold_up_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping goes on past a part that never finishes, and says which part it was."""
    monkeypatch.setattr(mesh_module, "STEP_SECONDS", 0.3)

    async def never_stops(_: Runtime) -> None:
        await asyncio.Event().wait()

    stuck = Component(name="stuck", apis=[], migrations=[], bindings=lambda _: [], stop=never_stops)
    mesh = await Mesh.start(Settings(data_dir=tmp_path / "data"), components=[*all_components(), stuck])
    await asyncio.wait_for(mesh.stop(grace=0), 10)
    assert "stopping stuck took over" in caplog.text
    assert "never_stops" in caplog.text  # the report shows where it was stuck
    with pytest.raises(RuntimeError):  # and the store was still closed
        await mesh.runtime.store.read(lambda tx: tx.fetchone("SELECT 1"))


async def test_a_stopped_mesh_leaves_all_its_data_in_the_database_file(tmp_path: Path) -> None:
    """After a clean stop, `brewmesh.db` alone (say, a backup copy) holds every change."""
    data = tmp_path / "data"
    mesh = await Mesh.start(Settings(data_dir=data))
    async with connect(f"127.0.0.1:{mesh.port}", key=mesh.admin_key) as admin:
        for i in range(20):
            partner = partners_pb2.Partner(display_name=f"Co {i}")
            await admin.partners.CreatePartner(
                partners_pb2.CreatePartnerRequest(namespace=f"co-{i}", partner=partner)
            )
    await mesh.stop(grace=0)
    copy = tmp_path / "backup.db"
    shutil.copyfile(data / "brewmesh.db", copy)  # without its -wal file
    with closing(sqlite3.connect(copy)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM partners WHERE namespace LIKE 'co-%'").fetchone()
    assert count == 20


async def test_a_failing_part_still_lets_the_stop_close_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def fails(_: Runtime) -> None:
        raise RuntimeError("disk on fire")

    broken = Component(name="broken", apis=[], migrations=[], bindings=lambda _: [], stop=fails)
    mesh = await Mesh.start(Settings(data_dir=tmp_path / "data"), components=[*all_components(), broken])
    await asyncio.wait_for(mesh.stop(grace=0), 10)
    assert "stopping broken failed" in caplog.text and "disk on fire" in caplog.text
    with pytest.raises(RuntimeError):  # the store was closed all the same
        await mesh.runtime.store.read(lambda tx: tx.fetchone("SELECT 1"))
