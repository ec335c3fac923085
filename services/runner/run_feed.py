"""Live feed of recorded run events for Watch.

Watchers of a run read its events from memory (loaded once from storage,
then appended as each event commits) instead of querying storage for every
event; a wake-up per run tells them a new event is there. The poll on
timeout also picks up events another runner instance recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.storage import Store
from services.runner import run_store
from services.runner.program_runs import TERMINAL, State
from services.runner.run_protos import event_proto

POLL_SECONDS = 1.0
MAX_CACHED_RUNS = 2000
PAGE = 500


@dataclass
class _RunLog:
    events: list[pb.ProgramEvent] = field(default_factory=list)
    terminal: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: int = 0

    def add(self, event: pb.ProgramEvent) -> None:
        if event.sequence == len(self.events) + 1:
            self.events.append(event)
            self.terminal = State(event.state) in TERMINAL
        # Wake everyone waiting, then arm a fresh event for the next append.
        self.changed.set()
        self.changed = asyncio.Event()


class RunFeed:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._logs: OrderedDict[str, _RunLog] = OrderedDict()

    def published(self, event: pb.ProgramEvent) -> None:
        """Called once an event committed (on the event loop)."""
        run_id = event.run.removeprefix("programRuns/")
        log = self._logs.get(run_id)
        if log is not None:
            log.add(event)

    async def watch(self, run_id: str, after: int, stop: asyncio.Event) -> AsyncIterator[pb.ProgramEvent]:
        """Events after `after` in order; ends once the run is terminal and all were sent."""
        log = await self._load(run_id)
        log.watchers += 1
        try:
            cursor = after
            while not stop.is_set():
                while cursor < len(log.events):
                    yield log.events[cursor]
                    cursor += 1
                if log.terminal:
                    return
                await self._wait(run_id, log, stop)
        finally:
            log.watchers -= 1

    async def _wait(self, run_id: str, log: _RunLog, stop: asyncio.Event) -> None:
        changed = asyncio.ensure_future(log.changed.wait())
        stopping = asyncio.ensure_future(stop.wait())
        done, pending = await asyncio.wait(
            {changed, stopping}, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED"
        )
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not done:
            await self._catch_up(run_id, log)

    async def _load(self, run_id: str) -> _RunLog:
        log = self._logs.get(run_id)
        if log is None:
            # Registered before loading, so events committed meanwhile are not missed.
            log = self._logs[run_id] = _RunLog()
            self._evict()
            await self._catch_up(run_id, log)
        self._logs.move_to_end(run_id)
        return log

    async def _catch_up(self, run_id: str, log: _RunLog) -> None:
        while True:
            batch = await self.store.read(
                functools.partial(run_store.events_after, run_id=run_id, after=len(log.events), limit=PAGE)
            )
            for event in batch:
                log.add(event_proto(event))
            if len(batch) < PAGE:
                return

    def _evict(self) -> None:
        for run_id in list(self._logs):
            if len(self._logs) <= MAX_CACHED_RUNS:
                return
            if self._logs[run_id].watchers == 0 and self._logs[run_id].terminal:
                del self._logs[run_id]
