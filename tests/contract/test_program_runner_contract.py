"""The ProgramRunner contract: what every implementation of the proto owes its caller.

Run against every target in TARGET_FIXTURES (the reference machines today;
the mesh runner is one fixture away), so both sides of the runner's proxy
keep the same promise. Only the proto's behaviour is checked here, never
an implementation's internals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from brewmesh.client import field_violations
from brewmesh.runner.v1 import program_runner_pb2 as pb
from tests.contract.conftest import Runs, new_run_id
from tests.contract.support import (
    TERMINAL,
    attributes,
    check_stream,
    folded_context,
    keys,
    names,
    read_to,
    watch,
)
from tests.contract.targets import RunnerTarget

if TYPE_CHECKING:
    from brewmesh.runner.v1.program_runner_pb2_grpc import ProgramRunnerAsyncStub as Stub

State = pb.ProgramRun.State
PROBE = "contract_probe"  # an event no target handles


def signal(run: str, event: str, **attrs: Any) -> pb.SignalRequest:
    values = struct_pb2.Struct()
    values.update(attrs)
    return pb.SignalRequest(run=run, event=event, attributes=values)


async def finished_run(runs: Runs, runner: Stub) -> tuple[pb.ProgramRun, list[pb.ProgramEvent]]:
    """A run driven to its end, and its whole stream."""
    run = await runs.quick_run()
    await runs.complete(run.name)
    return run, await watch(runner, run.name)


async def status_of(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


# --- Run --------------------------------------------------------------------


async def test_run_returns_the_new_run_going(runs: Runs, target: RunnerTarget) -> None:
    run = await runs.held_run()
    request = target.run_request(run.name.removeprefix("programRuns/"), True)
    assert run.name.startswith("programRuns/contract-")
    assert run.state in (State.STATE_PENDING, State.STATE_RUNNING)
    assert run.recipe == request.recipe
    assert run.volume_ml == request.volume_ml
    assert run.create_time.seconds > 0


async def test_run_returns_before_the_program_ends(runs: Runs, runner: Stub) -> None:
    started = time.monotonic()
    run = await runs.held_run()
    assert time.monotonic() - started < 2
    got = await runner.GetRun(pb.GetRunRequest(name=run.name), timeout=5)
    assert got.state not in TERMINAL


async def test_run_is_idempotent_for_a_client_chosen_id(
    runner: Stub, target: RunnerTarget, runs: Runs
) -> None:
    request = target.run_request(new_run_id(), False)
    first = await runner.Run(request, timeout=5)
    again = await runner.Run(request, timeout=5)
    assert again.name == first.name
    assert again.create_time == first.create_time
    await runs.complete(first.name)
    events = await watch(runner, first.name)
    assert names(events).count("started") <= 1, "repeating Run must not start the program again"
    assert sum(e.event in ("finished", "canceled", "failed") for e in events) == 1


async def test_run_repeated_after_the_end_returns_the_ended_run(runner: Stub, target: RunnerTarget) -> None:
    request = target.run_request(new_run_id(), False)
    first = await runner.Run(request, timeout=5)
    await target.complete(runner, first.name)
    events = await watch(runner, first.name)
    again = await runner.Run(request, timeout=5)
    assert again.name == first.name
    assert again.state == State.STATE_FINISHED
    assert again.last_sequence == events[-1].sequence


async def test_a_different_request_under_a_used_id_is_already_exists(runs: Runs, runner: Stub) -> None:
    run = await runs.held_run()
    run_id = run.name.removeprefix("programRuns/")
    conflicting = runs.target.run_request(run_id, True)
    conflicting.volume_ml = run.volume_ml + 10
    error = await status_of(runner.Run(conflicting, timeout=5))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert run_id in (error.details() or "")
    kept = await runner.GetRun(pb.GetRunRequest(name=run.name), timeout=5)
    assert kept.volume_ml == run.volume_ml


async def test_without_an_id_each_run_gets_a_fresh_one(runner: Stub, target: RunnerTarget) -> None:
    names_ = []
    for _ in range(2):
        request = target.run_request(new_run_id(), False)
        request.run_id = ""
        run = await runner.Run(request, timeout=5)
        await target.complete(runner, run.name)
        names_.append(run.name)
    assert all(name.startswith("programRuns/") and len(name) > len("programRuns/") for name in names_)
    assert names_[0] != names_[1]


async def test_an_invalid_run_request_lists_every_violation(runner: Stub, target: RunnerTarget) -> None:
    request = target.run_request(new_run_id(), False)
    request.run_id = "Not A Run Id!"
    request.volume_ml = 9999
    error = await status_of(runner.Run(request, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"run_id", "volume_ml"} <= {v.field for v in field_violations(error)}


# --- GetRun -----------------------------------------------------------------


async def test_get_run_of_an_unknown_run_is_not_found(runner: Stub) -> None:
    error = await status_of(runner.GetRun(pb.GetRunRequest(name=f"programRuns/{new_run_id()}"), timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_get_run_with_a_malformed_name_is_invalid_argument(runner: Stub) -> None:
    error = await status_of(runner.GetRun(pb.GetRunRequest(name="runs/Nope"), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(error)] == ["name"]


async def test_get_run_agrees_with_the_stream(runs: Runs, runner: Stub) -> None:
    run, events = await finished_run(runs, runner)
    got = await runner.GetRun(pb.GetRunRequest(name=run.name), timeout=5)
    assert got.last_sequence == events[-1].sequence
    assert got.state == events[-1].state
    assert json_format.MessageToDict(got.context) == folded_context(events)


# --- Watch ------------------------------------------------------------------


async def test_watch_sends_every_event_in_order_and_ends_when_the_run_ended(runs: Runs, runner: Stub) -> None:
    run, events = await finished_run(runs, runner)
    check_stream(events, run.name)
    assert events[-1].event == "finished"
    assert events[-1].state == State.STATE_FINISHED


async def test_watch_resumes_from_any_sequence_without_gap_or_duplicate(runs: Runs, runner: Stub) -> None:
    run, events = await finished_run(runs, runner)
    for after in range(len(events) + 1):
        resumed = await watch(runner, run.name, after=after)
        assert keys(resumed) == keys(events[after:]), f"after_sequence={after}"
        check_stream(resumed, run.name, after=after)


async def test_watch_resumes_a_live_run_after_a_disconnect(runs: Runs, runner: Stub) -> None:
    run = await runs.held_run()
    first = runner.Watch(pb.WatchRequest(run=run.name), timeout=10)
    seen = await read_to(first, run.last_sequence)
    first.cancel()  # the caller drops its stream
    missed = await runner.Signal(signal(run.name, PROBE, n=1), timeout=5)
    second = runner.Watch(pb.WatchRequest(run=run.name, after_sequence=seen[-1].sequence), timeout=10)
    resumed = await read_to(second, missed.sequence)
    second.cancel()
    assert resumed[0].sequence == seen[-1].sequence + 1
    check_stream(seen + resumed, run.name)
    assert resumed[-1].event == PROBE


async def test_watch_streams_new_events_as_they_happen(runs: Runs, runner: Stub) -> None:
    run = await runs.held_run()
    call = runner.Watch(pb.WatchRequest(run=run.name), timeout=10)
    await read_to(call, run.last_sequence)
    sent = await runner.Signal(signal(run.name, PROBE, n=2), timeout=5)
    live = await read_to(call, sent.sequence)
    call.cancel()
    assert live[-1].event == PROBE
    assert live[-1].origin == pb.ORIGIN_CALLER
    assert attributes(live[-1]) == {"n": 2}


async def test_concurrent_watchers_see_the_same_stream(runs: Runs, runner: Stub) -> None:
    run = await runs.quick_run()
    watchers = [asyncio.ensure_future(watch(runner, run.name)) for _ in range(5)]
    await runs.complete(run.name)
    streams = await asyncio.gather(*watchers)
    assert all(keys(s) == keys(streams[0]) for s in streams)
    check_stream(streams[0], run.name)


async def test_watch_after_the_last_event_of_an_ended_run_ends_at_once(runs: Runs, runner: Stub) -> None:
    run, events = await finished_run(runs, runner)
    assert await watch(runner, run.name, after=events[-1].sequence, timeout=3) == []


async def test_watch_beyond_the_last_event_is_refused(runs: Runs, runner: Stub) -> None:
    run, events = await finished_run(runs, runner)
    error = await status_of(watch(runner, run.name, after=events[-1].sequence + 5, timeout=3))
    assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE)


async def test_watch_of_an_unknown_run_is_not_found(runner: Stub) -> None:
    error = await status_of(watch(runner, f"programRuns/{new_run_id()}", timeout=3))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_honours_the_callers_deadline(runs: Runs, runner: Stub) -> None:
    run = await runs.held_run()
    started = time.monotonic()
    error = await status_of(watch(runner, run.name, timeout=0.5))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3


# --- Signal -----------------------------------------------------------------


async def test_an_event_the_target_does_not_handle_is_recorded_and_not_handled(
    runs: Runs, runner: Stub
) -> None:
    run = await runs.held_run()
    answer = await runner.Signal(signal(run.name, PROBE, note="hello"), timeout=5)
    assert (answer.handled, answer.forwarded) == (False, False)
    assert answer.sequence > run.last_sequence
    got = await runner.GetRun(pb.GetRunRequest(name=run.name), timeout=5)
    assert got.state not in TERMINAL, "an unhandled event is not an error"
    call = runner.Watch(pb.WatchRequest(run=run.name, after_sequence=answer.sequence - 1), timeout=5)
    recorded = await call.read()
    call.cancel()
    assert isinstance(recorded, pb.ProgramEvent)
    assert (recorded.sequence, recorded.event, recorded.origin) == (answer.sequence, PROBE, pb.ORIGIN_CALLER)
    assert attributes(recorded) == {"note": "hello"}


async def test_every_event_the_target_handles_is_handled(
    runs: Runs, runner: Stub, target: RunnerTarget
) -> None:
    assert target.handles, "a target handles at least its cancel event"
    for event in sorted(target.handles):
        run = await runs.held_run()
        answer = await runner.Signal(signal(run.name, event), timeout=5)
        assert answer.handled, event
        assert answer.forwarded, f"{event}: an event handled below was forwarded to it"


async def test_signal_to_an_ended_run_is_failed_precondition(runs: Runs, runner: Stub) -> None:
    run, _ = await finished_run(runs, runner)
    error = await status_of(runner.Signal(signal(run.name, PROBE), timeout=5))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_signal_to_an_unknown_run_is_not_found(runner: Stub) -> None:
    error = await status_of(runner.Signal(signal(f"programRuns/{new_run_id()}", PROBE), timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def assert_refused(runs: Runs, runner: Stub, event: str) -> None:
    run = await runs.held_run()
    error = await status_of(runner.Signal(signal(run.name, event), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(error)] == ["event"]
    got = await runner.GetRun(pb.GetRunRequest(name=run.name), timeout=5)
    assert got.state not in TERMINAL
    call = runner.Watch(pb.WatchRequest(run=run.name), timeout=5)
    recorded = await read_to(call, got.last_sequence)
    call.cancel()
    assert not [e for e in recorded if e.origin == pb.ORIGIN_CALLER], "a refused signal is not recorded"


@pytest.mark.parametrize("event", ["Takeout Requested", "takeout-requested", ""])
async def test_a_malformed_event_name_is_refused(runs: Runs, runner: Stub, event: str) -> None:
    await assert_refused(runs, runner, event)


@pytest.mark.parametrize("event", ["started", "finished", "canceled", "failed"])
async def test_a_caller_cannot_signal_a_lifecycle_event(runs: Runs, runner: Stub, event: str) -> None:
    # Lifecycle events change the run's state; only the level running the
    # program may end it (a caller asks with e.g. `order_canceled`).
    await assert_refused(runs, runner, event)


# --- Terminal states --------------------------------------------------------


async def test_cancel_ends_the_run_canceled(runs: Runs, runner: Stub, target: RunnerTarget) -> None:
    run = await runs.held_run()
    answer = await runner.Signal(signal(run.name, target.cancel_event, reason="changed my mind"), timeout=5)
    assert answer.handled
    events = await watch(runner, run.name)
    check_stream(events, run.name)
    assert events[-1].event == "canceled"
    assert events[-1].sequence > answer.sequence, "the cancel request precedes the cancellation"
    got = await runner.GetRun(pb.GetRunRequest(name=run.name), timeout=5)
    assert got.state == State.STATE_CANCELED
    error = await status_of(runner.Signal(signal(run.name, PROBE), timeout=5))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_completed_run_ends_finished(runs: Runs, runner: Stub) -> None:
    run, events = await finished_run(runs, runner)
    got = await runner.GetRun(pb.GetRunRequest(name=run.name), timeout=5)
    assert got.state == State.STATE_FINISHED
    assert got.failure_reason == ""
    assert [e.event for e in events if e.state in TERMINAL] == ["finished"]
