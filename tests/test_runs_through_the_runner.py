"""Program runs through the mesh runner, with reference machines in this process.

The real-process versions of these journeys are in test_runs_end_to_end.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.client import MeshClient, field_violations
from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.mesh import Mesh
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.sdk import Machine
from tests.conftest import PartnerClient
from tests.fleet import create_recipe, names, read_to_end, read_until, register_machines, run_request

NS = "my-coffee-company"
FINISHED, CANCELED, FAILED = (
    run_pb.ProgramRun.STATE_FINISHED,
    run_pb.ProgramRun.STATE_CANCELED,
    run_pb.ProgramRun.STATE_FAILED,
)


@dataclass
class Fleet:
    partner: PartnerClient
    recipe: str

    def machine(self, kind: str) -> str:
        return f"partners/{NS}/coffeeMachines/{kind}-1"

    @property
    def runner(self) -> MeshClient:
        return self.partner.client


@pytest.fixture
async def fleet(partner: PartnerClient) -> AsyncIterator[Fleet]:
    """The three reference machines, brewing in 0.2 s, registered by the partner."""
    machines: list[Machine] = []
    registered = {}
    for kind, reference in REFERENCE_MACHINES.items():
        machine = reference.build(0.2)
        port = await machine.start("127.0.0.1:0")
        machines.append(machine)
        registered[f"{kind}-1"] = (kind, f"127.0.0.1:{port}", reference.handles)
    await register_machines(partner.client, NS, registered)
    recipe = await create_recipe(partner.client, NS, "lungo-customato", volume_ml=300)
    yield Fleet(partner, recipe)
    for machine in machines:
        await machine.stop(grace=0)


async def test_vending_run_waits_for_takeout_then_finishes(fleet: Fleet) -> None:
    run = await fleet.runner.runner.Run(run_request("vend-1", fleet.machine("vending"), fleet.recipe))
    assert run.name == "programRuns/vend-1" and run.volume_ml == 300
    assert run.program.program_id == "lungo" and run.api_type == "vending"
    watch = fleet.runner.runner.Watch(run_pb.WatchRequest(run=run.name))
    brewed = await read_until(watch, "brewing_finished")
    assert names(brewed)[:2] == ["run_requested", "started"]
    signal = await fleet.runner.runner.Signal(run_pb.SignalRequest(run=run.name, event="takeout_requested"))
    assert signal.forwarded and signal.handled
    rest = await read_to_end(watch)
    assert names(rest) == ["takeout_requested", "context_set", "takeout_ready", "finished"]
    events = brewed + rest
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert rest[0].origin == run_pb.ORIGIN_CALLER and rest[-1].origin == run_pb.ORIGIN_MACHINE
    done = await fleet.runner.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    assert done.state == FINISHED
    assert done.context["takeout_ready"] is True
    assert done.last_sequence == events[-1].sequence


async def test_cafe_run_takes_a_contactless_modify(fleet: Fleet) -> None:
    run = await fleet.runner.runner.Run(run_request("cafe-1", fleet.machine("cafe"), fleet.recipe, 250))
    watch = fleet.runner.runner.Watch(run_pb.WatchRequest(run=run.name))
    await read_until(watch, "brewing_started")
    modify = run_pb.SignalRequest(run=run.name, event="modify_requested")
    modify.attributes.update({"takeout": "contactless"})
    reply = await fleet.runner.runner.Signal(modify)
    assert reply.forwarded and reply.handled
    rest = await read_to_end(watch)
    assert names(rest)[-1] == "finished"
    done = await fleet.runner.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    assert done.state == FINISHED and done.volume_ml == 250
    assert done.context["takeout_mode"] == "contactless"


async def test_legacy_machine_records_but_is_not_sent_takeout(fleet: Fleet) -> None:
    run = await fleet.runner.runner.Run(run_request("legacy-1", fleet.machine("legacy"), fleet.recipe))
    reply = await fleet.runner.runner.Signal(run_pb.SignalRequest(run=run.name, event="takeout_requested"))
    assert not reply.forwarded and not reply.handled and reply.sequence > 0
    events = await read_to_end(fleet.runner.runner.Watch(run_pb.WatchRequest(run=run.name)))
    assert "takeout_requested" in names(events)
    assert names(events)[-1] == "finished"


@pytest.mark.parametrize("kind", ["vending", "cafe", "legacy"])
async def test_cancel_ends_each_kind_of_run(fleet: Fleet, kind: str) -> None:
    run = await fleet.runner.runner.Run(run_request(f"cancel-{kind}", fleet.machine(kind), fleet.recipe))
    watch = fleet.runner.runner.Watch(run_pb.WatchRequest(run=run.name))
    await read_until(watch, "started")
    cancel = run_pb.SignalRequest(run=run.name, event="order_canceled")
    cancel.attributes.update({"reason": "customer left"})
    reply = await fleet.runner.runner.Signal(cancel)
    assert reply.forwarded and reply.handled
    rest = await read_to_end(watch)
    assert names(rest)[-1] == "canceled"
    done = await fleet.runner.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    assert done.state == CANCELED
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await fleet.runner.runner.Signal(run_pb.SignalRequest(run=run.name, event="takeout_requested"))
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_run_is_idempotent_for_a_client_chosen_id(fleet: Fleet) -> None:
    request = run_request("order-42", fleet.machine("legacy"), fleet.recipe)
    first, again = await asyncio.gather(fleet.runner.runner.Run(request), fleet.runner.runner.Run(request))
    assert first.name == again.name == "programRuns/order-42"
    assert first.create_time == again.create_time
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await fleet.runner.runner.Run(run_request("order-42", fleet.machine("cafe"), fleet.recipe))
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    events = await read_to_end(fleet.runner.runner.Watch(run_pb.WatchRequest(run=first.name)))
    assert names(events).count("run_requested") == 1 and names(events).count("started") == 1


async def test_watch_resumes_after_a_sequence_without_gap_or_duplicate(fleet: Fleet) -> None:
    run = await fleet.runner.runner.Run(run_request("resume-1", fleet.machine("legacy"), fleet.recipe))
    everything = await read_to_end(fleet.runner.runner.Watch(run_pb.WatchRequest(run=run.name)))
    tail = await read_to_end(fleet.runner.runner.Watch(run_pb.WatchRequest(run=run.name, after_sequence=2)))
    assert [e.sequence for e in tail] == [e.sequence for e in everything[2:]]
    assert [e.event for e in tail] == [e.event for e in everything[2:]]


async def test_other_partners_cannot_run_on_or_see_a_partners_machines(
    fleet: Fleet, other_partner: PartnerClient
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await other_partner.client.runner.Run(run_request("stolen", fleet.machine("legacy"), fleet.recipe))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    run = await fleet.runner.runner.Run(run_request("private", fleet.machine("legacy"), fleet.recipe))
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await other_partner.client.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


async def test_run_rejects_bad_requests_field_by_field(fleet: Fleet) -> None:
    bad = run_pb.RunRequest(run_id="Order 42!", machine="m1", recipe="lungo", volume_ml=-5)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await fleet.runner.runner.Run(bad)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in field_violations(error.value)} == {"run_id", "machine", "recipe", "volume_ml"}


async def test_unknown_machine_or_recipe_is_not_found(fleet: Fleet) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as machine:
        await fleet.runner.runner.Run(run_request("x1", f"partners/{NS}/coffeeMachines/ghost", fleet.recipe))
    assert machine.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as recipe:
        await fleet.runner.runner.Run(run_request("x2", fleet.machine("legacy"), f"recipes/{NS}:ghost"))
    assert recipe.value.code() == grpc.StatusCode.NOT_FOUND


async def test_runner_fires_program_events_on_the_bus(mesh: Mesh, fleet: Fleet, admin: MeshClient) -> None:
    run = await fleet.runner.runner.Run(run_request("bus-1", fleet.machine("legacy"), fleet.recipe))
    recorded = await read_to_end(fleet.runner.runner.Watch(run_pb.WatchRequest(run=run.name)))
    request = bus_pb.SubscribeRequest(api="brewmesh.runner.v1.ProgramRunner", event_types=["program_event"])
    seen = []
    async for event in admin.bus.Subscribe(request):
        payload = run_pb.ProgramEventRecorded()
        event.payload.Unpack(payload)
        seen.append((payload.event.sequence, payload.event.event, payload.machine))
        if len(seen) == len(recorded):
            break
    assert seen == [(e.sequence, e.event, fleet.machine("legacy")) for e in recorded]


async def test_unreachable_machine_fails_the_run_with_a_reason(partner: PartnerClient) -> None:
    from tests.conftest import free_port

    await register_machines(partner.client, NS, {"gone": ("legacy", f"127.0.0.1:{free_port()}", ())})
    recipe = await create_recipe(partner.client, NS, "espresso")
    run = await partner.client.runner.Run(
        run_request("doomed", f"partners/{NS}/coffeeMachines/gone", recipe), timeout=10
    )
    assert run.state == FAILED
    assert "did not start the run" in run.failure_reason and "UNAVAILABLE" in run.failure_reason
    events = await read_to_end(partner.client.runner.Watch(run_pb.WatchRequest(run=run.name)))
    assert names(events) == ["run_requested", "failed"]


async def test_concurrent_signals_on_one_run_get_distinct_gap_free_sequences(fleet: Fleet) -> None:
    machine = REFERENCE_MACHINES["legacy"].build(30.0)  # brews long enough to take every signal
    port = await machine.start("127.0.0.1:0")
    try:
        await register_machines(
            fleet.runner, NS, {"slow-1": ("legacy", f"127.0.0.1:{port}", ("order_canceled",))}
        )
        run = await fleet.runner.runner.Run(
            run_request("raced", f"partners/{NS}/coffeeMachines/slow-1", fleet.recipe)
        )
        signals = [
            fleet.runner.runner.Signal(run_pb.SignalRequest(run=run.name, event=f"note_{i}"))
            for i in range(12)
        ]
        await asyncio.gather(*signals)

        async def until_every_note() -> list[run_pb.ProgramEvent]:
            seen: list[run_pb.ProgramEvent] = []
            async for event in fleet.runner.runner.Watch(run_pb.WatchRequest(run=run.name)):
                seen.append(event)
                if sum(e.event.startswith("note_") for e in seen) == 12:
                    return seen
            raise AssertionError(f"the stream ended early: {names(seen)}")

        events = await asyncio.wait_for(until_every_note(), 15)
    finally:
        await machine.stop(grace=0)
    sequences = [e.sequence for e in events]
    assert sequences == list(range(1, len(sequences) + 1))
    assert sorted(e.event for e in events if e.event.startswith("note_")) == sorted(
        f"note_{i}" for i in range(12)
    )
