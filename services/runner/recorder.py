"""Records run events durably, each with its bus event (which brings it to the watchers)."""

from __future__ import annotations

from typing import Any

from brewmesh.errors import InvalidArgument, Violations
from brewmesh.events import Bus
from brewmesh.metrics import Metrics
from brewmesh.names import check_snake
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.services.runner import run_store
from brewmesh.services.runner.program_runs import (
    RUN_NAME_PREFIX,
    Origin,
    ProgramRun,
    RunEvent,
    RunKey,
    machine_namespace,
)
from brewmesh.services.runner.run_protos import event_proto
from brewmesh.storage import Store, Tx
from brewmesh.struct_values import check_struct

API = pb.DESCRIPTOR.services_by_name["ProgramRunner"].full_name

Recorded = tuple[ProgramRun, RunEvent]


class RunRecorder:
    def __init__(self, store: Store, bus: Bus, metrics: Metrics | None = None) -> None:
        self.store = store
        self.bus = bus
        self.metrics = metrics or bus.metrics

    def stage(
        self,
        tx: Tx,
        run: ProgramRun,
        event: str,
        origin: Origin,
        attributes: dict[str, Any] | None = None,
        context_changes: dict[str, Any] | None = None,
        machine_sequence: int | None = None,
    ) -> Recorded | None:
        """Record in `tx` after `run` (as `tx` read or wrote it): the event and its bus event.

        The bus event reaches this process's watchers as `tx` commits (the runner observes
        its own `program_event`s), and other runner instances' through the bus."""
        recorded = run_store.append_event(
            tx, run, event, origin, attributes, context_changes, machine_sequence
        )
        if recorded is None:
            return None
        run, run_event = recorded
        proto = event_proto(run_event)
        payload = pb.ProgramEventRecorded(event=proto, machine=run.request.machine, recipe=run.request.recipe)
        self.bus.fire(tx, API, "program_event", payload, run.request.namespace)  # private to the partner
        if run.state.terminal:
            tx.after_commit(self.metrics.runs_ended.labels(run.state.name).inc)
        return recorded

    async def record(
        self,
        key: RunKey,
        event: str,
        origin: Origin,
        attributes: dict[str, Any] | None = None,
        context_changes: dict[str, Any] | None = None,
        machine_sequence: int | None = None,
    ) -> Recorded | None:
        """Record one event; None if the run was already terminal."""
        return await self.store.quick_write(
            lambda tx: self.stage(
                tx, run_store.get_run(tx, key), event, origin, attributes, context_changes, machine_sequence
            )
        )

    async def record_machine_events(self, key: RunKey, events: list[pb.ProgramEvent]) -> bool:
        """Record events from the machine's stream, each once, in one transaction; True when the run is over.

        Checked against the machine sequence already recorded, so two runner
        instances following the same run (or a resumed stream) never record
        an event twice.
        """

        def stage_all(tx: Tx) -> bool:
            return any(self._stage_machine_event(tx, key, event) for event in events)

        return await self.store.quick_write(stage_all)

    def _stage_machine_event(self, tx: Tx, key: RunKey, event: pb.ProgramEvent) -> bool:
        run = run_store.get_run(tx, key)
        if run.state.terminal:
            return True
        if event.sequence <= run.machine_cursor:
            return False  # recorded already
        if event.origin == pb.ORIGIN_CALLER:
            # The caller's signal, echoed by the machine: recorded when it was signalled.
            run_store.advance_machine_cursor(tx, key, event.sequence)
            return False
        checked = checked_machine_event(event)
        if isinstance(checked, InvalidArgument):
            # A machine's events are stored and shown to its partner: none past the bounds a
            # client's values have. The run cannot go on without the event: it fails, saying why.
            reason = f"the machine sent an event the mesh cannot record: {checked}"
            self.stage(tx, run, "failed", Origin.RUNNER, {"reason": reason})
            return True
        attributes, changes = checked
        recorded = self.stage(tx, run, event.event, Origin.MACHINE, attributes, changes, event.sequence)
        return recorded is None or recorded[0].state.terminal

    async def fail(self, key: RunKey, reason: str) -> Recorded | None:
        return await self.record(key, "failed", Origin.RUNNER, {"reason": reason})


def checked_machine_event(
    event: pb.ProgramEvent,
) -> tuple[dict[str, Any], dict[str, Any]] | InvalidArgument:
    """The event's attributes and context changes as plain values, if its name and values are
    within the bounds of a client's (`check_snake`, `check_struct`); else what is wrong."""
    v = Violations()
    check_snake(v, "event", event.event, "event name")
    attributes = check_struct(v, "attributes", event.attributes)
    changes = check_struct(v, "context_changes", event.context_changes)
    return v.error() or (attributes, changes)


def key_of(recorded: pb.ProgramEventRecorded) -> RunKey:
    """The run a `program_event` is about (its name is unique only within its namespace)."""
    return RunKey(machine_namespace(recorded.machine), recorded.event.run.removeprefix(RUN_NAME_PREFIX))
