"""Program runs with every part in its own process: the mesh and each machine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from brewmesh.client import MeshClient, connect
from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.partners.v1 import partners_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from tests.conftest import BIN, MachineProcess, MeshProcess, start_machine_process, start_mesh_process
from tests.fleet import create_recipe, names, read_to_end, read_until, register_machines, run_request

NS = "my-coffee-company"
RESUME_SECONDS = "2"


@dataclass
class World:
    mesh: MeshProcess
    partner: MeshClient
    partner_key: str
    recipe: str

    def machine(self, kind: str) -> str:
        return f"partners/{NS}/coffeeMachines/{kind}-1"


@pytest.fixture
def mesh_proc(tmp_path: Path) -> Iterator[MeshProcess]:
    running = start_mesh_process(tmp_path / "data", BREWMESH_MACHINE_RESUME_SECONDS=RESUME_SECONDS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def machines() -> Iterator[dict[str, MachineProcess]]:
    """One process per reference machine, shared by this module's tests (runs do not interfere)."""
    started = {kind: start_machine_process(kind, brew_seconds=0.3) for kind in REFERENCE_MACHINES}
    yield started
    for machine in started.values():
        machine.stop()


async def open_world(mesh: MeshProcess, machines: dict[str, MachineProcess]) -> World:
    async with connect(mesh.address, key=mesh.admin_key) as admin:
        created = await admin.partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(
                namespace=NS, partner=partners_pb2.Partner(display_name="My Coffee")
            )
        )
    partner = connect(mesh.address, key=created.api_key)
    fleet = {f"{kind}-1": (kind, m.address, REFERENCE_MACHINES[kind].handles) for kind, m in machines.items()}
    await register_machines(partner, NS, fleet)
    recipe = await create_recipe(partner, NS, "lungo-customato")
    return World(mesh, partner, created.api_key, recipe)


@pytest.fixture
async def world(mesh_proc: MeshProcess, machines: dict[str, MachineProcess]) -> AsyncIterator[World]:
    opened = await open_world(mesh_proc, machines)
    yield opened
    await opened.partner.channel.close(None)


async def test_vending_journey(world: World) -> None:
    run = await world.partner.runner.Run(run_request("v-1", world.machine("vending"), world.recipe))
    watch = world.partner.runner.Watch(run_pb.WatchRequest(run=run.name))
    before = await read_until(watch, "brewing_finished")
    reply = await world.partner.runner.Signal(run_pb.SignalRequest(run=run.name, event="takeout_requested"))
    assert reply.forwarded and reply.handled
    after = await read_to_end(watch)
    assert names(before) == ["run_requested", "started", "brewing_started", "brewing_finished"]
    assert names(after) == ["takeout_requested", "context_set", "takeout_ready", "finished"]
    done = await world.partner.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    assert done.state == run_pb.ProgramRun.STATE_FINISHED and done.context["takeout_ready"] is True


async def test_cafe_journey_with_contactless_takeout(world: World) -> None:
    run = await world.partner.runner.Run(run_request("c-1", world.machine("cafe"), world.recipe))
    watch = world.partner.runner.Watch(run_pb.WatchRequest(run=run.name))
    await read_until(watch, "brewing_started")
    modify = run_pb.SignalRequest(run=run.name, event="modify_requested")
    modify.attributes.update({"takeout": "contactless"})
    assert (await world.partner.runner.Signal(modify)).handled
    assert names(await read_to_end(watch))[-1] == "finished"
    done = await world.partner.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    assert done.context["takeout_mode"] == "contactless"


async def test_legacy_journey_records_takeout_without_forwarding(world: World) -> None:
    run = await world.partner.runner.Run(run_request("l-1", world.machine("legacy"), world.recipe))
    reply = await world.partner.runner.Signal(run_pb.SignalRequest(run=run.name, event="takeout_requested"))
    assert (reply.forwarded, reply.handled) == (False, False)
    events = await read_to_end(world.partner.runner.Watch(run_pb.WatchRequest(run=run.name)))
    assert "takeout_requested" in names(events) and names(events)[-1] == "finished"
    done = await world.partner.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    assert done.state == run_pb.ProgramRun.STATE_FINISHED


@pytest.mark.parametrize("kind", sorted(REFERENCE_MACHINES))
async def test_cancel_journey(world: World, kind: str) -> None:
    run = await world.partner.runner.Run(run_request(f"x-{kind}", world.machine(kind), world.recipe))
    watch = world.partner.runner.Watch(run_pb.WatchRequest(run=run.name))
    await read_until(watch, "started")
    assert (
        await world.partner.runner.Signal(run_pb.SignalRequest(run=run.name, event="order_canceled"))
    ).handled
    assert names(await read_to_end(watch))[-1] == "canceled"
    done = await world.partner.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    assert done.state == run_pb.ProgramRun.STATE_CANCELED


def grpcurl_cmd(world: World, method: str, data: dict[str, object]) -> list[str]:
    return [
        str(BIN / "grpcurl"), "-plaintext", "-H", f"authorization: Bearer {world.partner_key}",
        "-d", json.dumps(data), world.mesh.address, f"brewmesh.runner.v1.ProgramRunner/{method}",
    ]  # fmt: skip


async def grpcurl(world: World, method: str, data: dict[str, object]) -> str:
    """Run the real grpcurl without blocking the event loop; its stdout."""
    process = await asyncio.create_subprocess_exec(
        *grpcurl_cmd(world, method, data), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_grpcurl_runs_watches_and_signals(world: World) -> None:
    ran = await grpcurl(
        world, "Run", {"runId": "g-1", "machine": world.machine("vending"), "recipe": world.recipe}
    )
    assert json.loads(ran)["name"] == "programRuns/g-1"
    watching = asyncio.create_task(grpcurl(world, "Watch", {"run": "programRuns/g-1"}))
    await read_until(
        world.partner.runner.Watch(run_pb.WatchRequest(run="programRuns/g-1")), "brewing_finished"
    )
    signalled = await grpcurl(world, "Signal", {"run": "programRuns/g-1", "event": "takeout_requested"})
    assert json.loads(signalled)["forwarded"] is True
    streamed = [json.loads(chunk) for chunk in split_json_stream(await watching)]
    assert [e["event"] for e in streamed][-4:] == [
        "takeout_requested",
        "context_set",
        "takeout_ready",
        "finished",
    ]
    assert [int(e["sequence"]) for e in streamed] == list(range(1, len(streamed) + 1))


def split_json_stream(text: str) -> list[str]:
    """grpcurl prints one pretty JSON object per streamed message."""
    decoder, chunks, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, end = decoder.raw_decode(text, i)
        chunks.append(json.dumps(obj))
        i = end
    return chunks
