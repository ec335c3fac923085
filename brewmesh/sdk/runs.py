"""A machine's runs in memory: each run's events in order, its state and context.

A machine keeps what happened to its runs only while it lives: the mesh
runner keeps the durable record. Every event of a run goes through
`RunRecord.record`, which numbers it, applies it to the state and context,
and wakes the run's watchers, so stream, state and context never disagree.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from google.protobuf import timestamp_pb2

from brewmesh.run_rules import LIFECYCLE, RUN_NAME_PREFIX
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.struct_values import from_struct, to_struct

if TYPE_CHECKING:
    from brewmesh.sdk.execution import Execution

State: TypeAlias = pb.ProgramRun.State.ValueType
Origin: TypeAlias = pb.Origin.ValueType

PENDING = pb.ProgramRun.STATE_PENDING
RUNNING = pb.ProgramRun.STATE_RUNNING
FINISHED = pb.ProgramRun.STATE_FINISHED
CANCELED = pb.ProgramRun.STATE_CANCELED
FAILED = pb.ProgramRun.STATE_FAILED

CALLER = pb.ORIGIN_CALLER
MACHINE = pb.ORIGIN_MACHINE

TERMINAL = frozenset({FINISHED, CANCELED, FAILED})
CONTEXT_SET = "context_set"
RUN_PREFIX = RUN_NAME_PREFIX
DEFAULT_FAILURE_REASON = "the program failed without giving a reason"


class RunEnded(RuntimeError):
    """A program emitted or set something on a run that has already ended."""


def state_name(state: State) -> str:
    return pb.ProgramRun.State.Name(state).removeprefix("STATE_").lower()


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


@dataclass(eq=False)
class RunRecord:
    """One program run: the request it was started with and everything since."""

    run_id: str
    request: pb.RunRequest
    api_type: str
    state: State = PENDING
    failure_reason: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    events: list[pb.ProgramEvent] = field(default_factory=list)
    create_time: timestamp_pb2.Timestamp = field(default_factory=_now)
    update_time: timestamp_pb2.Timestamp = field(default_factory=_now)
    # Called once, synchronously, by the `record` that ends the run.
    on_end: list[Callable[[RunRecord], None]] = field(default_factory=list, init=False)
    execution: Execution | None = field(default=None, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _closed: bool = field(default=False, init=False)

    @property
    def name(self) -> str:
        return RUN_PREFIX + self.run_id

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def last_sequence(self) -> int:
        return len(self.events)

    @property
    def closed(self) -> bool:
        return self._closed

    def record(
        self,
        event: str,
        origin: Origin,
        attributes: Mapping[str, Any] | None = None,
        context_changes: Mapping[str, Any] | None = None,
    ) -> pb.ProgramEvent:
        """Append one event: the next sequence, the state and context it leads to."""
        if self.terminal:
            raise RunEnded(
                f"run '{self.name}' already ended ({state_name(self.state)}); '{event}' was not recorded"
            )
        attributes = dict(attributes or {})
        state = LIFECYCLE.get(event, self.state)
        if state == FAILED and not attributes.get("reason"):
            # The proto promises a `reason` on every `failed` event.
            attributes["reason"] = DEFAULT_FAILURE_REASON
        attrs = to_struct(attributes)
        changes = to_struct(context_changes or {})
        recorded = pb.ProgramEvent(
            run=self.name,
            sequence=self.last_sequence + 1,
            event=event,
            attributes=attrs,
            context_changes=changes,
            origin=origin,
            state=state,
            time=_now(),
        )
        self.events.append(recorded)
        self.state = state
        if state == FAILED:
            self.failure_reason = str(attrs["reason"])
        self.context.update(from_struct(changes))
        self.update_time = recorded.time
        self._wake()
        if self.terminal:
            for callback in self.on_end:
                callback(self)
        return recorded

    def events_after(self, sequence: int) -> list[pb.ProgramEvent]:
        return self.events[sequence:]

    async def changed(self) -> None:
        """Return once the run records an event or the store closes."""
        await self._changed.wait()

    def close(self) -> None:
        """Wake every watcher for good: the machine is going away."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        # A fresh Event per change: watchers that were waiting are woken,
        # later waiters wait for the next change.
        woken, self._changed = self._changed, asyncio.Event()
        woken.set()

    def to_proto(self) -> pb.ProgramRun:
        return pb.ProgramRun(
            name=self.name,
            machine=self.request.machine,
            recipe=self.request.recipe,
            volume_ml=self.request.volume_ml,
            program=self.request.program,
            state=self.state,
            failure_reason=self.failure_reason,
            context=to_struct(self.context),
            last_sequence=self.last_sequence,
            create_time=self.create_time,
            update_time=self.update_time,
            api_type=self.api_type,
        )


class RunStore:
    """The runs a machine knows: all active ones, the last `keep_finished` ended ones.

    Ended runs are forgotten oldest first, so a long-lived machine's memory
    stays bounded while a caller can still read or re-watch a recent run.
    """

    def __init__(self, keep_finished: int = 1000) -> None:
        if keep_finished < 1:
            raise ValueError(
                "keep_finished must be at least 1: a caller must be able to read a run that just ended"
            )
        self.keep_finished = keep_finished
        self._runs: dict[str, RunRecord] = {}
        self._ended: deque[str] = deque()

    def get(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    def add(self, run: RunRecord) -> None:
        if run.run_id in self._runs:
            raise KeyError(f"run '{run.run_id}' exists")
        self._runs[run.run_id] = run
        run.on_end.append(self._retain)

    def active(self) -> list[RunRecord]:
        return [run for run in self._runs.values() if not run.terminal]

    def close(self) -> None:
        for run in self._runs.values():
            run.close()

    def _retain(self, run: RunRecord) -> None:
        self._ended.append(run.run_id)
        while len(self._ended) > self.keep_finished:
            self._runs.pop(self._ended.popleft(), None)
