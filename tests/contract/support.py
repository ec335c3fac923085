"""Reading a run's stream and checking what the proto promises about it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from brewmesh.runner.v1 import program_runner_pb2 as pb

if TYPE_CHECKING:
    from brewmesh.runner.v1.program_runner_pb2_grpc import ProgramRunnerAsyncStub as Stub

State = pb.ProgramRun.State
LIFECYCLE = {
    "started": State.STATE_RUNNING,
    "finished": State.STATE_FINISHED,
    "canceled": State.STATE_CANCELED,
    "failed": State.STATE_FAILED,
}
TERMINAL = {State.STATE_FINISHED, State.STATE_CANCELED, State.STATE_FAILED}
WATCH_SECONDS = 10.0


async def watch(
    stub: Stub, run: str, after: int = 0, timeout: float = WATCH_SECONDS
) -> list[pb.ProgramEvent]:
    """Every event the stream sends until it ends; DEADLINE_EXCEEDED if it does not end in time."""
    call = stub.Watch(pb.WatchRequest(run=run, after_sequence=after), timeout=timeout)
    return [event async for event in call]


async def read_until(call: Any, event_name: str) -> list[pb.ProgramEvent]:
    """Read a live Watch call up to and including the first `event_name`."""
    seen: list[pb.ProgramEvent] = []
    while True:
        event = await call.read()
        assert event is not grpc.aio.EOF, f"the stream ended before '{event_name}': {names(seen)}"
        seen.append(event)
        if event.event == event_name:
            return seen


async def read_to(call: Any, sequence: int) -> list[pb.ProgramEvent]:
    """Read a live Watch call up to and including `sequence`."""
    seen: list[pb.ProgramEvent] = []
    while not seen or seen[-1].sequence < sequence:
        event = await call.read()
        assert event is not grpc.aio.EOF, f"the stream ended before sequence {sequence}: {names(seen)}"
        seen.append(event)
    return seen


def names(events: list[pb.ProgramEvent]) -> list[str]:
    return [e.event for e in events]


def keys(events: list[pb.ProgramEvent]) -> list[tuple[int, str]]:
    return [(e.sequence, e.event) for e in events]


def attributes(event: pb.ProgramEvent) -> dict[str, Any]:
    return json_format.MessageToDict(event.attributes)


def check_stream(events: list[pb.ProgramEvent], run: str, after: int = 0) -> None:
    """The stream's own invariants: numbering, state per event, lifecycle details."""
    assert [e.sequence for e in events] == list(range(after + 1, after + 1 + len(events))), keys(events)
    state = State.STATE_PENDING
    for event in events:
        assert event.run == run, event
        assert event.origin != pb.ORIGIN_UNSPECIFIED, event
        assert event.time.seconds > 0, event
        assert state not in TERMINAL, f"an event after the run ended: {keys(events)}"
        if after == 0 or event.event in LIFECYCLE:
            state = LIFECYCLE.get(event.event, state)
            assert event.state == state, f"event {event.sequence} '{event.event}' has state {event.state}"
        state = event.state
        if event.event == "failed":
            assert attributes(event).get("reason"), "a failed event says why"
        if event.event == "context_set":
            assert event.context_changes.fields, "a context_set event carries its changes"


def folded_context(events: list[pb.ProgramEvent]) -> dict[str, Any]:
    """The context the stream's `context_set` events add up to."""
    context: dict[str, Any] = {}
    for event in events:
        context.update(json_format.MessageToDict(event.context_changes))
    return context
