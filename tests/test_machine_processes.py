"""The reference machines as real processes: `brewmesh machine --kind ...` on a free port.

Each machine runs in its own process, as a partner would run it; the tests
talk to it over gRPC only, stop it with SIGTERM and check it exits cleanly.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from brewmesh.client import channel
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from tests.conftest import MachineProcess, grpcurl, start_machine_process

if TYPE_CHECKING:
    from brewmesh.runner.v1.program_runner_pb2_grpc import ProgramRunnerAsyncStub as Stub

State = pb.ProgramRun.State
# Short, but long enough to signal a run while it brews.
BREW_SECONDS = {"vending": 0.3, "cafe": 1.5, "legacy": 1.5}
HOLD = {"brew_seconds": 60}  # a run that brews until it is canceled


def start_machine(kind: str, brew_seconds: float) -> MachineProcess:
    return start_machine_process(kind, brew_seconds)


def stop_gracefully(machine: MachineProcess, signalled: bool = False) -> str:
    output = machine.stop(signalled)
    code = machine.process.returncode
    assert code == 0, f"{machine.kind} machine exited with {code}:\n{output}"
    assert "machine stopped" in output, output
    return output


@pytest.fixture(scope="module")
def machines() -> Iterator[dict[str, MachineProcess]]:
    started: dict[str, MachineProcess] = {}
    try:
        for kind, brew in BREW_SECONDS.items():
            started[kind] = start_machine(kind, brew)
        yield started
    finally:
        outputs = [(machine.stop(), machine.process.returncode) for machine in started.values()]
    for kind, (output, code) in zip(started, outputs, strict=True):
        assert code == 0 and "machine stopped" in output, f"{kind} machine did not stop cleanly:\n{output}"


@pytest.fixture
async def stubs(machines: dict[str, MachineProcess]) -> AsyncIterator[dict[str, Stub]]:
    channels = {kind: channel(m.address) for kind, m in machines.items()}
    yield {kind: program_runner_pb2_grpc.ProgramRunnerStub(ch) for kind, ch in channels.items()}
    for ch in channels.values():
        await ch.close()


def run_request(kind: str, **parameters: Any) -> pb.RunRequest:
    values = struct_pb2.Struct()
    values.update(parameters)
    return pb.RunRequest(
        run_id=f"e2e-{uuid.uuid4().hex[:12]}",
        machine=f"partners/my-coffee-company/coffeeMachines/{kind}-1",
        recipe="recipes/my-coffee-company:lungo-customato",
        volume_ml=300,
        program=pb.Program(program_id="lungo", parameters=values),
        api_type=kind,
    )


def signal_request(run: str, event: str, **attributes: Any) -> pb.SignalRequest:
    values = struct_pb2.Struct()
    values.update(attributes)
    return pb.SignalRequest(run=run, event=event, attributes=values)


async def read_until(call: Any, event_name: str | None) -> list[pb.ProgramEvent]:
    """Events of a live Watch up to `event_name`, or (None) to the end of the stream."""
    seen: list[pb.ProgramEvent] = []
    while True:
        event = await call.read()
        if event is grpc.aio.EOF:
            assert event_name is None, f"the stream ended before '{event_name}': {[e.event for e in seen]}"
            return seen
        seen.append(event)
        if event.event == event_name:
            return seen


def changes(event: pb.ProgramEvent) -> dict[str, Any]:
    return json_format.MessageToDict(event.context_changes)


async def get(stub: Stub, run: str) -> pb.ProgramRun:
    return await stub.GetRun(pb.GetRunRequest(name=run), timeout=5)


async def test_a_vending_run_waits_for_takeout_then_releases_the_cup(stubs: dict[str, Stub]) -> None:
    stub = stubs["vending"]
    run = await stub.Run(run_request("vending"), timeout=5)
    call = stub.Watch(pb.WatchRequest(run=run.name), timeout=15)
    brewed = await read_until(call, "brewing_finished")
    assert (await get(stub, run.name)).state == State.STATE_RUNNING, "the cup waits for the buyer"
    answer = await stub.Signal(signal_request(run.name, "takeout_requested"), timeout=5)
    rest = await read_until(call, None)
    events = brewed + rest
    assert [e.event for e in events] == [
        "started",
        "brewing_started",
        "brewing_finished",
        "takeout_requested",
        "context_set",
        "takeout_ready",
        "finished",
    ]
    assert (answer.handled, answer.forwarded, answer.sequence) == (True, True, events[3].sequence)
    assert events[3].origin == pb.ORIGIN_CALLER
    assert changes(events[4]) == {"takeout_ready": True}
    done = await get(stub, run.name)
    assert done.state == State.STATE_FINISHED
    assert json_format.MessageToDict(done.context) == {"takeout_ready": True}


async def test_a_cafe_run_switches_to_contactless_takeout_while_brewing(stubs: dict[str, Stub]) -> None:
    stub = stubs["cafe"]
    run = await stub.Run(run_request("cafe"), timeout=5)
    call = stub.Watch(pb.WatchRequest(run=run.name), timeout=15)
    brewing = await read_until(call, "brewing_started")
    answer = await stub.Signal(signal_request(run.name, "modify_requested", takeout="contactless"), timeout=5)
    rest = await read_until(call, None)
    events = brewing + rest
    assert answer.handled and answer.forwarded
    assert [e.event for e in events] == [
        "started",
        "context_set",
        "brewing_started",
        "modify_requested",
        "context_set",
        "brewing_finished",
        "finished",
    ]
    assert [changes(e) for e in events if e.event == "context_set"] == [
        {"takeout_mode": "counter"},
        {"takeout_mode": "contactless"},
    ]
    assert json_format.MessageToDict(events[5].attributes) == {"takeout_mode": "contactless"}
    done = await get(stub, run.name)
    assert done.state == State.STATE_FINISHED
    assert json_format.MessageToDict(done.context) == {"takeout_mode": "contactless"}


async def test_a_legacy_run_records_takeout_without_handling_it_and_completes(stubs: dict[str, Stub]) -> None:
    stub = stubs["legacy"]
    run = await stub.Run(run_request("legacy"), timeout=5)
    answer = await stub.Signal(signal_request(run.name, "takeout_requested"), timeout=5)
    assert (answer.handled, answer.forwarded) == (False, False)
    events = [e async for e in stub.Watch(pb.WatchRequest(run=run.name), timeout=15)]
    assert [(e.event, e.origin) for e in events] == [
        ("started", pb.ORIGIN_MACHINE),
        ("takeout_requested", pb.ORIGIN_CALLER),
        ("finished", pb.ORIGIN_MACHINE),
    ]
    assert events[1].sequence == answer.sequence
    assert (await get(stub, run.name)).state == State.STATE_FINISHED


@pytest.mark.parametrize("kind", sorted(BREW_SECONDS))
async def test_a_run_is_canceled_on_each_machine(stubs: dict[str, Stub], kind: str) -> None:
    stub = stubs[kind]
    run = await stub.Run(run_request(kind, **HOLD), timeout=5)
    answer = await stub.Signal(
        signal_request(run.name, "order_canceled", reason="changed my mind"), timeout=5
    )
    assert answer.handled
    events = [e async for e in stub.Watch(pb.WatchRequest(run=run.name), timeout=15)]
    assert [e.event for e in events][-2:] == ["order_canceled", "canceled"]
    assert json_format.MessageToDict(events[-1].attributes) == {"reason": "changed my mind"}
    assert (await get(stub, run.name)).state == State.STATE_CANCELED
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.Signal(signal_request(run.name, "takeout_requested"), timeout=5)
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_machine_process_serves_health_and_reflection(machines: dict[str, MachineProcess]) -> None:
    listed = grpcurl(machines["cafe"].address, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) >= {"brewmesh.runner.v1.ProgramRunner", "grpc.health.v1.Health"}
    described = grpcurl(machines["cafe"].address, "describe", "brewmesh.runner.v1.ProgramRunner.Signal")
    assert "forwarded to" in described.stdout, "reflection serves the protos' doc comments"


async def test_sigterm_mid_run_fails_the_run_for_its_watcher_and_exits_cleanly() -> None:
    machine = start_machine("vending", 0)
    signalled = False
    try:
        ch = channel(machine.address)
        stub = program_runner_pb2_grpc.ProgramRunnerStub(ch)
        run = await stub.Run(run_request("vending"), timeout=5)  # waits for a takeout that never comes
        call = stub.Watch(pb.WatchRequest(run=run.name), timeout=15)
        await read_until(call, "brewing_finished")
        machine.process.send_signal(signal.SIGTERM)
        signalled = True  # a second SIGTERM while it exits would kill it outright
        rest = await read_until(call, None)
        assert await call.code() == grpc.StatusCode.OK, "the stream ends cleanly, not dropped"
        await ch.close()
    finally:
        output = stop_gracefully(machine, signalled)
    assert [e.event for e in rest] == ["failed"]
    assert "shut down" in json_format.MessageToDict(rest[0].attributes)["reason"]
    assert "handles: takeout_requested, order_canceled" in output
