"""The partner SDK around a partner's code: lifecycle, callbacks, dispatch, retention, shutdown.

Each test serves a small machine of its own in this process; what the
ProgramRunner contract promises every caller is in tests/contract.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from brewmesh.client import channel, field_violations
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from brewmesh.sdk import ContextEvent, Machine, Program, RunEnded
from brewmesh.sdk.handlers import Handlers
from brewmesh.sdk.runs import RunStore
from brewmesh.sdk.servicer import ProgramRunnerServicer
from brewmesh.server import Shutdown

if TYPE_CHECKING:
    from brewmesh.runner.v1.program_runner_pb2_grpc import ProgramRunnerAsyncStub as Stub

State = pb.ProgramRun.State


@asynccontextmanager
async def serving(machine: Machine) -> AsyncIterator[Stub]:
    port = await machine.start("127.0.0.1:0")
    ch = channel(f"127.0.0.1:{port}")
    try:
        yield program_runner_pb2_grpc.ProgramRunnerStub(ch)
    finally:
        await ch.close()
        await machine.stop(grace=1)


def run_request(run_id: str, api_type: str = "", **parameters: Any) -> pb.RunRequest:
    values = struct_pb2.Struct()
    values.update(parameters)
    return pb.RunRequest(
        run_id=run_id,
        recipe="recipes/acme:lungo",
        volume_ml=200,
        program=pb.Program(program_id="lungo", parameters=values),
        api_type=api_type,
    )


async def run_to_end(
    stub: Stub, run_id: str, api_type: str = ""
) -> tuple[pb.ProgramRun, list[pb.ProgramEvent]]:
    await stub.Run(run_request(run_id, api_type), timeout=5)
    name = f"programRuns/{run_id}"
    events = [e async for e in stub.Watch(pb.WatchRequest(run=name), timeout=5)]
    return await stub.GetRun(pb.GetRunRequest(name=name), timeout=5), events


def reason(event: pb.ProgramEvent) -> str:
    return str(json_format.MessageToDict(event.attributes).get("reason", ""))


async def wait_forever(program: Program) -> None:
    await asyncio.Event().wait()


async def status_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


# --- the lifecycle the SDK keeps around the handler ------------------------


async def test_a_handler_that_returns_finishes_the_run() -> None:
    machine = Machine()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        await program.context.emit("poured", volume_ml=program.volume_ml)

    async with serving(machine) as stub:
        got, events = await run_to_end(stub, "r1")
    assert [(e.event, e.origin) for e in events] == [
        ("started", pb.ORIGIN_MACHINE),
        ("poured", pb.ORIGIN_MACHINE),
        ("finished", pb.ORIGIN_MACHINE),
    ]
    assert json_format.MessageToDict(events[1].attributes) == {"volume_ml": 200}
    assert got.state == State.STATE_FINISHED
    assert got.api_type == "simple"


async def test_a_handler_that_raises_fails_the_run_with_the_reason() -> None:
    machine = Machine()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        raise RuntimeError("water tank empty")

    async with serving(machine) as stub:
        got, events = await run_to_end(stub, "r1")
    assert [e.event for e in events] == ["started", "failed"]
    assert "water tank empty" in reason(events[-1])
    assert got.state == State.STATE_FAILED
    assert got.failure_reason == reason(events[-1])


async def test_a_program_can_fail_with_its_own_reason_or_none() -> None:
    machine = Machine()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        if program.parameters.get("silent"):
            await program.context.emit("failed")
        else:
            await program.context.emit("failed", reason="grinder jammed")

    async with serving(machine) as stub:
        loud, _ = await run_to_end(stub, "loud")
        await stub.Run(run_request("silent", silent=True), timeout=5)
        silent = [e async for e in stub.Watch(pb.WatchRequest(run="programRuns/silent"), timeout=5)]
    assert loud.failure_reason == "grinder jammed"
    assert silent[-1].event == "failed"
    assert reason(silent[-1]), "a failed event always says why"


@pytest.mark.parametrize("event", ["started", "context_set", "Not Snake"])
async def test_emitting_a_name_the_sdk_owns_or_a_bad_name_fails_the_run(event: str) -> None:
    machine = Machine()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        await program.context.emit(event)

    async with serving(machine) as stub:
        got, _ = await run_to_end(stub, "r1")
    assert got.state == State.STATE_FAILED
    assert "ValueError" in got.failure_reason


async def test_a_value_that_is_not_json_fails_the_run() -> None:
    machine = Machine()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        await program.context.set("cup", object())

    async with serving(machine) as stub:
        got, _ = await run_to_end(stub, "r1")
    assert got.state == State.STATE_FAILED


async def test_emitting_after_the_end_raises_run_ended_and_changes_nothing() -> None:
    machine = Machine()
    late: list[BaseException] = []

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        await program.context.emit("finished")
        try:
            await program.context.emit("late")
        except RunEnded as error:
            late.append(error)

    async with serving(machine) as stub:
        got, events = await run_to_end(stub, "r1")
    assert [e.event for e in events] == ["started", "finished"]
    assert got.state == State.STATE_FINISHED
    assert len(late) == 1


# --- callbacks ----------------------------------------------------------------


async def test_sync_and_async_callbacks_run_in_order_before_signal_answers() -> None:
    machine = Machine()
    calls: list[str] = []

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        async def remember(event: ContextEvent) -> None:
            await asyncio.sleep(0.2)  # a callback that takes a moment: Signal still waits for it
            await program.context.set("mode", event.attributes["mode"])
            calls.append("async")

        program.context.on("modify_requested", lambda event: calls.append(f"sync {event.sequence}"))
        program.context.on("modify_requested", remember)
        await asyncio.Event().wait()

    async with serving(machine) as stub:
        await stub.Run(run_request("r1"), timeout=5)
        attrs = struct_pb2.Struct()
        attrs.update({"mode": "contactless"})
        answer = await stub.Signal(
            pb.SignalRequest(run="programRuns/r1", event="modify_requested", attributes=attrs), timeout=5
        )
        got = await stub.GetRun(pb.GetRunRequest(name="programRuns/r1"), timeout=5)
    assert answer.handled
    assert calls == [f"sync {answer.sequence}", "async"]
    assert json_format.MessageToDict(got.context) == {"mode": "contactless"}


async def test_callbacks_registered_before_the_first_pause_are_ready_when_run_returns() -> None:
    machine = Machine()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        await program.context.emit("warming_up")  # records at once: not a pause
        program.context.on("poke", lambda _: None)
        await asyncio.Event().wait()

    async with serving(machine) as stub:
        await stub.Run(run_request("r1"), timeout=5)
        answer = await stub.Signal(pb.SignalRequest(run="programRuns/r1", event="poke"), timeout=5)
    assert answer.handled


async def test_run_returns_once_the_handler_reached_its_first_pause() -> None:
    # Called directly, without a network round trip that would hide a race:
    # the callbacks a handler registers first must be in place when Run returns.
    handlers = Handlers()

    async def handler(program: Program) -> None:
        await program.context.emit("warming_up")
        program.context.on("poke", lambda _: None)
        await asyncio.Event().wait()

    handlers.register("simple", handler)
    servicer = ProgramRunnerServicer(handlers, RunStore(), Shutdown())
    context = cast("grpc.aio.ServicerContext[pb.RunRequest, pb.ProgramRun]", None)  # Run does not use it
    run = await servicer.Run(run_request("r1"), context)
    record = servicer.store.get("r1")
    assert record is not None and record.execution is not None
    assert record.execution.program.context.handles("poke")
    assert run.last_sequence == 2
    await servicer.shut_down()


async def test_off_stops_handling_an_event() -> None:
    machine = Machine()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        program.context.on("poke", lambda _: program.context.off("poke"))
        await asyncio.Event().wait()

    async with serving(machine) as stub:
        await stub.Run(run_request("r1"), timeout=5)
        first = await stub.Signal(pb.SignalRequest(run="programRuns/r1", event="poke"), timeout=5)
        second = await stub.Signal(pb.SignalRequest(run="programRuns/r1", event="poke"), timeout=5)
    assert (first.handled, second.handled) == (True, False)
    assert second.sequence == first.sequence + 1, "an unhandled signal is still recorded"


async def test_a_callback_that_raises_fails_the_run_and_signal_still_answers() -> None:
    machine = Machine()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        def explode(event: ContextEvent) -> None:
            raise KeyError("no such button")

        program.context.on("poke", explode)
        await asyncio.Event().wait()

    async with serving(machine) as stub:
        await stub.Run(run_request("r1"), timeout=5)
        answer = await stub.Signal(pb.SignalRequest(run="programRuns/r1", event="poke"), timeout=5)
        got = await stub.GetRun(pb.GetRunRequest(name="programRuns/r1"), timeout=5)
    assert answer.handled
    assert got.state == State.STATE_FAILED
    assert "handling 'poke' raised KeyError" in got.failure_reason


async def test_a_run_ended_by_a_callback_cancels_the_program() -> None:
    machine = Machine()
    program_stopped = asyncio.Event()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        program.context.on("order_canceled", lambda _: program.context.emit("canceled"))
        try:
            await asyncio.Event().wait()
        finally:
            program_stopped.set()

    async with serving(machine) as stub:
        await stub.Run(run_request("r1"), timeout=5)
        await stub.Signal(pb.SignalRequest(run="programRuns/r1", event="order_canceled"), timeout=5)
        await asyncio.wait_for(program_stopped.wait(), timeout=2)
        events = [e async for e in stub.Watch(pb.WatchRequest(run="programRuns/r1"), timeout=5)]
    assert [e.event for e in events] == ["started", "order_canceled", "canceled"]


async def test_handling_an_undeclared_event_warns(caplog: pytest.LogCaptureFixture) -> None:
    machine = Machine()

    @machine.program_run_handler("simple", handles=["order_canceled"])
    async def run(program: Program) -> None:
        program.context.on("poke", lambda _: None)

    with caplog.at_level(logging.WARNING, logger="brewmesh.sdk.program"):
        async with serving(machine) as stub:
            await run_to_end(stub, "r1")
    assert "'poke', which the machine does not declare" in caplog.text
    assert machine.handled_events == {"order_canceled"}


# --- dispatch on api type ---------------------------------------------------------


def two_kinds() -> Machine:
    machine = Machine()

    async def espresso(program: Program) -> None:
        await program.context.emit("espresso_poured")

    async def tea(program: Program) -> None:
        await program.context.emit("tea_steeped")

    machine.register_program_run_handler("espresso", espresso)
    machine.register_program_run_handler("tea", tea)
    return machine


async def test_runs_are_dispatched_on_their_api_type() -> None:
    async with serving(two_kinds()) as stub:
        got, events = await run_to_end(stub, "r1", api_type="tea")
    assert got.api_type == "tea"
    assert "tea_steeped" in [e.event for e in events]


async def test_an_api_type_the_machine_does_not_serve_is_failed_precondition() -> None:
    async with serving(two_kinds()) as stub:
        unknown = await status_of(stub.Run(run_request("r1", "vending"), timeout=5))
        missing = await status_of(stub.Run(run_request("r2", ""), timeout=5))
        malformed = await status_of(stub.Run(run_request("r3", "Tea!"), timeout=5))
    assert unknown.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'espresso', 'tea'" in (unknown.details() or "")
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(missing)] == ["api_type"]
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_machine_with_one_handler_serves_an_empty_api_type() -> None:
    machine = Machine()
    machine.register_program_run_handler("only", lambda program: asyncio.sleep(0))
    async with serving(machine) as stub:
        got, _ = await run_to_end(stub, "r1")
    assert (got.api_type, got.state) == ("only", State.STATE_FINISHED)


def test_registration_is_checked() -> None:
    machine = Machine()

    async def handler(program: Program) -> None:
        return None

    machine.register_program_run_handler("vending", handler)
    with pytest.raises(ValueError, match="already registered"):
        machine.register_program_run_handler("vending", handler)
    with pytest.raises(ValueError, match="not a valid api type"):
        machine.register_program_run_handler("Vending Machine", handler)
    with pytest.raises(ValueError, match="not a valid event name"):
        machine.register_program_run_handler("cafe", handler, handles=["Modify"])


async def test_a_machine_without_handlers_does_not_start() -> None:
    with pytest.raises(RuntimeError, match="register a program run handler"):
        await Machine().start()


# --- requests ---------------------------------------------------------------------


async def test_every_violation_of_a_run_request_is_reported_at_once() -> None:
    machine = Machine()
    machine.register_program_run_handler("only", lambda program: asyncio.sleep(0))
    bad = pb.RunRequest(run_id="Bad Id", machine="m1", recipe="lungo", volume_ml=-1, program=pb.Program())
    async with serving(machine) as stub:
        error = await status_of(stub.Run(bad, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in field_violations(error)}
    assert fields == {"run_id", "machine", "recipe", "volume_ml", "program.program_id"}


async def test_a_repeated_run_with_the_api_type_now_explicit_is_the_same_run() -> None:
    machine = Machine()
    machine.register_program_run_handler("only", wait_forever)
    async with serving(machine) as stub:
        first = await stub.Run(run_request("r1"), timeout=5)
        again = await stub.Run(run_request("r1", "only"), timeout=5)
    assert again.name == first.name


async def test_watch_refuses_a_negative_after_sequence() -> None:
    machine = Machine()
    machine.register_program_run_handler("only", lambda program: asyncio.sleep(0))
    async with serving(machine) as stub:
        await run_to_end(stub, "r1")
        call = stub.Watch(pb.WatchRequest(run="programRuns/r1", after_sequence=-1), timeout=5)
        error = await status_of(call.read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- retention and shutdown -------------------------------------------------------


async def test_ended_runs_are_kept_up_to_the_limit_and_active_ones_always() -> None:
    machine = Machine(keep_finished_runs=2)

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        if program.parameters.get("hold"):
            await asyncio.Event().wait()

    async with serving(machine) as stub:
        await stub.Run(run_request("held", hold=True), timeout=5)
        for run_id in ("a", "b", "c"):
            await run_to_end(stub, run_id)
        forgotten = await status_of(stub.GetRun(pb.GetRunRequest(name="programRuns/a"), timeout=5))
        kept = [
            await stub.GetRun(pb.GetRunRequest(name=f"programRuns/{i}"), timeout=5)
            for i in ("b", "c", "held")
        ]
    assert forgotten.code() == grpc.StatusCode.NOT_FOUND
    assert [r.state for r in kept] == [State.STATE_FINISHED, State.STATE_FINISHED, State.STATE_RUNNING]


async def test_stopping_the_machine_fails_running_runs_and_ends_their_watchers() -> None:
    machine = Machine()
    program_stopped = asyncio.Event()

    @machine.program_run_handler("simple")
    async def run(program: Program) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            program_stopped.set()

    port = await machine.start()
    ch = channel(f"127.0.0.1:{port}")
    try:
        stub = program_runner_pb2_grpc.ProgramRunnerStub(ch)
        await stub.Run(run_request("r1"), timeout=5)
        call = stub.Watch(pb.WatchRequest(run="programRuns/r1"), timeout=10)
        first = await call.read()
        assert isinstance(first, pb.ProgramEvent) and first.event == "started"
        stopping = asyncio.ensure_future(machine.stop(grace=5))
        rest = []
        while isinstance(event := await call.read(), pb.ProgramEvent):
            rest.append(event)
        await asyncio.wait_for(stopping, timeout=5)
    finally:
        await ch.close()
    assert [e.event for e in rest] == ["failed"]
    assert "shut down" in reason(rest[0])
    assert await call.code() == grpc.StatusCode.OK
    assert program_stopped.is_set()
