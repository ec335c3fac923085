"""Live feed of recorded run events for Watch.

Watchers of a run read its events from memory (loaded once from storage,
then appended as each event commits, here or, through the bus, in another
runner instance) instead of querying storage for every event; a wake-up per
run tells them a new event is there. An idle watcher costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.services.runner import run_store
from brewmesh.services.runner.program_runs import TERMINAL, RunKey, State
from brewmesh.services.runner.run_protos import event_proto
from brewmesh.storage import Store

MAX_CACHED_RUNS = 2000
PAGE = 500


@dataclass
class _RunLog:
    events: list[pb.ProgramEvent] = field(default_factory=list)
    terminal: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: int = 0
    # Events that committed while older ones were still being loaded from storage.
    early: dict[int, pb.ProgramEvent] = field(default_factory=dict)

    def add(self, event: pb.ProgramEvent) -> None:
        """Append `event` (and those it was early for) in sequence; wake the watchers if any was."""
        if event.sequence > len(self.events):
            self.early[event.sequence] = event
        known = len(self.events)
        while (following := self.early.pop(len(self.events) + 1, None)) is not None:
            self.events.append(following)
            self.terminal = State(following.state) in TERMINAL
        if len(self.events) > known:  # an event seen twice, or one still early, wakes no one
            self.wake()

    def wake(self) -> None:
        # Wake everyone waiting, then arm a fresh event for the next append.
        self.changed.set()
        self.changed = asyncio.Event()


class RunFeed:
    def __init__(self, store: Store, stop: asyncio.Event) -> None:
        self.store = store
        self.stop = stop
        self._logs: OrderedDict[RunKey, _RunLog] = OrderedDict()
        self._waker = asyncio.get_running_loop().create_task(self._wake_all_on_stop())

    def created(self, key: RunKey) -> None:
        """A run was created here (on the event loop, before its first event is published).

        Its log starts complete and empty, so its first watcher reads nothing from storage.
        """
        if key not in self._logs:
            self._logs[key] = _RunLog()
            self._evict()

    def published(self, key: RunKey, event: pb.ProgramEvent) -> None:
        """Called once an event of run `key` committed (on the event loop), here or in another instance."""
        log = self._logs.get(key)
        if log is not None:
            log.add(event)

    async def watch(self, key: RunKey, after: int) -> AsyncIterator[pb.ProgramEvent]:
        """Events after `after` in order; ends once the run is terminal and all were sent, or on stop."""
        log = await self._load(key)
        log.watchers += 1
        try:
            cursor = after
            while not self.stop.is_set():
                while cursor < len(log.events):
                    yield log.events[cursor]
                    cursor += 1
                if log.terminal:
                    return
                await self._wait(key, log)
        finally:
            log.watchers -= 1

    async def _wait(self, key: RunKey, log: _RunLog) -> None:
        await log.changed.wait()

    async def close(self) -> None:
        self._waker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._waker

    async def _wake_all_on_stop(self) -> None:
        await self.stop.wait()
        for log in self._logs.values():
            log.wake()

    async def _load(self, key: RunKey) -> _RunLog:
        log = self._logs.get(key)
        if log is None:
            # Registered before loading, so events committed meanwhile are not missed.
            log = self._logs[key] = _RunLog()
            self._evict()
            await self._catch_up(key, log)
        self._logs.move_to_end(key)
        return log

    async def _catch_up(self, key: RunKey, log: _RunLog) -> None:
        while True:
            batch = await self.store.read(
                functools.partial(run_store.events_after, key=key, after=len(log.events), limit=PAGE)
            )
            for event in batch:
                log.add(event_proto(event))
            if len(batch) < PAGE:
                return

    def _evict(self) -> None:
        # Oldest first; runs still watched or still live stay.
        excess = len(self._logs) - MAX_CACHED_RUNS
        if excess <= 0:
            return
        idle = (key for key, log in self._logs.items() if log.watchers == 0 and log.terminal)
        for key in list(itertools.islice(idle, excess)):
            del self._logs[key]
