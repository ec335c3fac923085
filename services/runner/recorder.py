"""Records run events durably, then publishes them (feed and bus)."""

from __future__ import annotations

from typing import Any

from brewmesh.events import Bus
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.storage import Store, Tx
from services.runner import run_store
from services.runner.program_runs import Origin, ProgramRun, RunEvent
from services.runner.run_feed import RunFeed
from services.runner.run_protos import event_proto

API = pb.DESCRIPTOR.services_by_name["ProgramRunner"].full_name

Recorded = tuple[ProgramRun, RunEvent]


class RunRecorder:
    def __init__(self, store: Store, bus: Bus, feed: RunFeed) -> None:
        self.store = store
        self.bus = bus
        self.feed = feed

    def stage(
        self,
        tx: Tx,
        run_id: str,
        event: str,
        origin: Origin,
        attributes: dict[str, Any] | None = None,
        context_changes: dict[str, Any] | None = None,
        machine_sequence: int | None = None,
    ) -> Recorded | None:
        """Record in `tx`: the event, its bus event, and its publication on commit."""
        recorded = run_store.append_event(
            tx, run_id, event, origin, attributes, context_changes, machine_sequence
        )
        if recorded is None:
            return None
        run, run_event = recorded
        proto = event_proto(run_event)
        payload = pb.ProgramEventRecorded(event=proto, machine=run.request.machine, recipe=run.request.recipe)
        self.bus.fire(tx, API, "program_event", payload)
        tx.after_commit(lambda: self.feed.published(proto))
        return recorded

    async def record(
        self,
        run_id: str,
        event: str,
        origin: Origin,
        attributes: dict[str, Any] | None = None,
        context_changes: dict[str, Any] | None = None,
        machine_sequence: int | None = None,
    ) -> Recorded | None:
        """Record one event; None if the run was already terminal."""
        return await self.store.write(
            lambda tx: self.stage(tx, run_id, event, origin, attributes, context_changes, machine_sequence)
        )

    async def fail(self, run_id: str, reason: str) -> Recorded | None:
        return await self.record(run_id, "failed", Origin.RUNNER, {"reason": reason})
