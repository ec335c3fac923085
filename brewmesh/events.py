"""The bus as a Python service sees it: `fire`, `subscribe` and `listen`.

`fire` stages a validated event in the caller's transaction (only for APIs
this process registered). `listen` runs a handler for each event with
at-least-once delivery: with a listener name, the group's place and its
unacknowledged events are durable, and a failing handler is retried with
backoff; without one, the listener follows the log from now on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from google.protobuf import any_pb2, message, symbol_database

from brewmesh.apis import ApiRegistry
from brewmesh.bus.v1 import events_pb2
from brewmesh.event_log import Group, SqliteEventLog
from brewmesh.storage import Tx

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
CLAIM_VISIBILITY_SECONDS = 30.0
BATCH = 100


@dataclass(frozen=True)
class ReceivedEvent:
    """An event as a listener receives it, payload unpacked."""

    id: str
    api: str
    type: str
    payload: message.Message
    time: datetime
    source: str


Handler = Callable[[ReceivedEvent], Awaitable[None]]
Observer = Callable[[message.Message], None]


def unpack(event: events_pb2.Event) -> ReceivedEvent:
    name = event.payload.TypeName()
    payload = symbol_database.Default().GetSymbol(name)()
    event.payload.Unpack(payload)
    return ReceivedEvent(event.id, event.api, event.type, payload, event.time.ToDatetime(), event.source)


def retry_delay(attempt: int) -> float:
    """Exponential backoff for a failing handler: 0.1 s doubling to 30 s."""
    return float(min(30.0, 0.1 * 2 ** min(attempt, 10)))


class Bus:
    """This process's handle on the event bus."""

    def __init__(self, event_log: SqliteEventLog, registry: ApiRegistry, service: str = "brewmesh") -> None:
        self.log = event_log
        self.registry = registry
        self.source = f"{socket.gethostname()}:{os.getpid()}/{service}"
        self._listeners: set[asyncio.Task[None]] = set()
        self._observers: dict[tuple[str, str], list[Observer]] = {}

    # -- firing ---------------------------------------------------------------
    def fire(self, tx: Tx, api: str, event_type: str, payload: message.Message) -> None:
        """Validate the event and stage it in `tx` (sent if `tx` commits)."""
        self.registry.check_fire(api, event_type, payload)
        packed = any_pb2.Any()
        packed.Pack(payload)
        self.log.append(tx, api, event_type, packed, self.source)
        for observer in self._observers.get((api, event_type), ()):
            tx.after_commit(functools.partial(observer, payload))

    async def fire_now(self, api: str, event_type: str, payload: message.Message) -> None:
        """Fire an event in a transaction of its own."""
        self.registry.check_fire(api, event_type, payload)
        await self.log.store.write(lambda tx: self.fire(tx, api, event_type, payload))

    # -- streaming --------------------------------------------------------------
    async def follow(
        self, api: str, types: Sequence[str], after_id: int, stop: asyncio.Event
    ) -> AsyncIterator[events_pb2.Event]:
        """Every event of `api` after `after_id`, then new ones, until `stop` is set."""
        cursor = after_id
        while not stop.is_set():
            batch = await self.log.read(api, cursor, types, BATCH)
            for event in batch:
                yield event
                cursor = int(event.id)
            if not batch:
                await _wait_either(self.log.wait_for_append(api, POLL_SECONDS), stop)

    async def follow_group(
        self, group: Group, start_after: int, stop: asyncio.Event
    ) -> AsyncIterator[events_pb2.Event]:
        """Events of a listener group for one member; each is acked once the consumer takes the next."""
        await self.log.join(group, start_after)
        member = uuid.uuid4().hex
        while not stop.is_set():
            batch = await self.log.claim(group, member, 1, CLAIM_VISIBILITY_SECONDS)
            for event in batch:
                yield event
                await self.log.ack(group, [event.id])
            if not batch:
                await _wait_either(self.log.wait_for_append(group.api, POLL_SECONDS), stop)

    # -- listening --------------------------------------------------------------
    def observe(self, event: str, observer: Observer) -> None:
        """Call `observer(payload)` for each `event` (`<api>.<event type>`) from now on.

        Made for keeping derived state (a cache) in step: an event fired in
        this process is observed as its transaction commits, before the
        caller hears back; one fired by another process sharing the log,
        within the poll interval. The observer runs on the event loop and
        must be quick and must not fail.
        """
        api, _, event_type = event.rpartition(".")
        self.registry.spec(api, event_type)  # fail fast on a typo
        self._observers.setdefault((api, event_type), []).append(observer)

        async def from_elsewhere(received: ReceivedEvent) -> None:
            if received.source != self.source:  # ours were observed at commit
                observer(received.payload)

        self.listen(event, from_elsewhere)

    def listen(self, event: str, handler: Handler, listener_name: str | None = None) -> asyncio.Task[None]:
        """Run `handler` for each `event` (`<api>.<event type>`), at least once.

        With `listener_name`, every process listening under that name shares
        the events (each handled once by the group) and the group resumes
        where it left off after a restart; a new group starts from now.
        """
        api, _, event_type = event.rpartition(".")
        self.registry.spec(api, event_type)  # fail fast on a typo
        runner = self._run_group if listener_name else self._run_solo
        task = asyncio.get_running_loop().create_task(runner(api, event_type, handler, listener_name or ""))
        self._listeners.add(task)
        task.add_done_callback(self._listeners.discard)
        return task

    async def _run_solo(self, api: str, event_type: str, handler: Handler, _: str) -> None:
        cursor = await self.log.last_id(api)
        while True:
            batch = await self.log.read(api, cursor, [event_type], BATCH)
            for event in batch:
                await _handle_until_done(handler, event)
                cursor = int(event.id)
            if not batch:
                await self.log.wait_for_append(api, POLL_SECONDS)

    async def _run_group(self, api: str, event_type: str, handler: Handler, listener: str) -> None:
        group = Group(api, listener, (event_type,))
        await self.log.join(group, await self.log.last_id(api))
        member = uuid.uuid4().hex
        attempts: dict[str, int] = {}
        while True:
            batch = await self.log.claim(group, member, 10, CLAIM_VISIBILITY_SECONDS)
            for event in batch:
                try:
                    await handler(unpack(event))
                except Exception:
                    attempts[event.id] = attempts.get(event.id, 0) + 1
                    log.exception("listener %s failed on event %s; retrying", listener, event.id)
                    await self.log.release(group, event.id, retry_delay(attempts[event.id]))
                    continue
                attempts.pop(event.id, None)
                await self.log.ack(group, [event.id])
            if not batch:
                await self.log.wait_for_append(api, POLL_SECONDS)

    async def close(self) -> None:
        for task in list(self._listeners):
            task.cancel()
        for task in list(self._listeners):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _handle_until_done(handler: Handler, event: events_pb2.Event) -> None:
    attempt = 0
    while True:
        try:
            await handler(unpack(event))
            return
        except Exception:
            attempt += 1
            log.exception("listener failed on event %s; retrying", event.id)
            await asyncio.sleep(retry_delay(attempt))


async def _wait_either(waiting: Awaitable[None], stop: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(waiting), asyncio.ensure_future(stop.wait())]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
