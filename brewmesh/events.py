"""The bus as a Python service sees it: `fire`, `observe`, `listen` and the streams behind EventBus.

`fire` stages a validated event in the caller's transaction (only for APIs
this process registered), with the scope of the resource it is about.
`listen` runs a handler for each event with at-least-once delivery: with a
listener name, the group's place and its unacknowledged events are durable;
a failing handler is retried, and after `max_deliveries` attempts its event
goes to the group's dead letters. Nothing polls: every wait is a blocking
read in the backend (an in-process wake-up, or a blocking Redis read).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from google.protobuf import any_pb2, message, symbol_database

from brewmesh.apis import ApiRegistry
from brewmesh.bus.v1 import events_pb2
from brewmesh.errors import Unavailable
from brewmesh.event_backend import EVERYTHING, PLATFORM, Delivery, EventBackend, GroupRef, Reader, new_record
from brewmesh.metrics import Metrics
from brewmesh.storage import Store, Tx
from brewmesh.tracing import current_traceparent, joined

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH = 100
MESSAGE_BYTES = 1 << 20
"""About the most a stream message of several events carries: well under a client's
default receive limit (4 MiB)."""
WAIT_SECONDS = 30.0
OBSERVE_GATHER_SECONDS = 0.005


@dataclass(frozen=True)
class BusSettings:
    """How listener groups deliver and how much the log keeps."""

    visibility_seconds: float = 30.0
    """An event a member took but did not acknowledge goes to another member after this long."""
    max_deliveries: int = 5
    """After this many failed deliveries an event moves to the group's dead letters."""
    retention: int = 1_000_000
    """The log keeps about this many newest events per API (Redis: MAXLEN ~)."""
    # The bounds of each are checked once, where they are configured (brewmesh.settings).


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

    def __init__(
        self,
        backend: EventBackend,
        store: Store,
        registry: ApiRegistry,
        service: str = "brewmesh",
        settings: BusSettings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.registry = registry
        self.settings = settings or BusSettings()
        self.metrics = metrics or Metrics()
        self.source = f"{socket.gethostname()}:{os.getpid()}/{service}"
        self._listeners: set[asyncio.Task[None]] = set()
        self._observers: dict[tuple[str, str], list[Observer]] = {}
        self._observed_apis: set[str] = set()

    # -- firing ---------------------------------------------------------------
    def fire(self, tx: Tx, api: str, event_type: str, payload: message.Message, scope: str) -> None:
        """Validate the event and stage it in `tx` (sent if `tx` commits).

        `scope` is the namespace of the resource the event is about ("" for
        the public catalogue): only those who may read it see the event.
        """
        spec = self.registry.check_fire(api, event_type, payload)
        packed = any_pb2.Any(type_url=spec.type_url, value=payload.SerializeToString())  # as Pack does
        record = new_record(api, event_type, scope, packed, self.source, current_traceparent())
        self.backend.stage(tx, record)
        tx.after_commit(self.metrics.increment(self.metrics.events_fired, api, event_type))
        for observer in self._observers.get((api, event_type), ()):
            tx.after_commit(functools.partial(observer, payload))

    async def fire_now(self, api: str, event_type: str, payload: message.Message, scope: str) -> None:
        """Fire an event in a transaction of its own."""
        self.registry.check_fire(api, event_type, payload)
        await self.store.quick_write(lambda tx: self.fire(tx, api, event_type, payload, scope))

    # -- streaming --------------------------------------------------------------
    async def follow(
        self,
        api: str,
        types: Sequence[str],
        after: object | None,
        reader: Reader,
        stop: asyncio.Event,
        per_message: int = 1,
    ) -> AsyncIterator[list[events_pb2.Event]]:
        """Every event of `api` after `after` (None: the oldest kept) that `reader` may see,
        then new ones, until `stop` is set; in messages of at most `per_message` events
        (see `messages`)."""
        cursor = after
        while not stop.is_set():
            read = self.backend.read(api, cursor, types, reader, max(BATCH, per_message), WAIT_SECONDS)
            outcome = await unless_stopped(read, stop)
            if outcome is None:
                return
            batch, cursor = outcome
            for events in messages(batch, per_message):
                yield events

    async def follow_group(
        self,
        group: GroupRef,
        start: object | None,
        stop: asyncio.Event,
        per_message: int = 1,
        explicit_ack: bool = False,
    ) -> AsyncIterator[list[events_pb2.Event]]:
        """Events of a listener group for one new member, in messages of at most
        `per_message` events (see `messages`).

        A message is acknowledged once the consumer has taken it; if the
        consumer goes away midway, what it took is acknowledged and the rest
        goes to another member after the visibility timeout. With
        `explicit_ack` nothing is acknowledged here: the consumer acknowledges
        what it handled (`acknowledge`), and the rest is delivered again after
        the visibility timeout.
        """
        member = uuid.uuid4().hex
        settings = self.settings
        limit = max(BATCH, per_message)
        taken: list[str] = []  # acknowledged with the next claim, or as the member goes
        try:
            while not stop.is_set():
                claim = self.backend.claim(
                    group, start, member, limit, WAIT_SECONDS, settings.visibility_seconds, acked=taken
                )
                batch = await unless_stopped(claim, stop)
                if batch is None:
                    return
                taken = []
                due = []
                for delivery in batch:
                    if delivery.attempts > settings.max_deliveries:
                        # Handed out this often and never taken: poison for this group's members.
                        # This claim is not a delivery: the letter counts those before it.
                        delivered = replace(delivery, attempts=delivery.attempts - 1)
                        reason = f"not taken by a member after {delivered.attempts} deliveries"
                        await self._bury(group, delivered, reason)
                        log.error(  # after the bury, as for a failing handler: where the event is now
                            "listener %s: event %s was %s; it is in the dead letters",
                            group.listener,
                            delivery.event.id,
                            reason,
                        )
                    else:
                        due.append(delivery.event)
                for events in messages(due, per_message):
                    yield events
                    if not explicit_ack:
                        taken += (event.id for event in events)
                    self._delivered(group, len(events))
        finally:
            await asyncio.shield(self.backend.ack(group, taken))

    async def acknowledge(self, group: GroupRef, event_ids: Sequence[str]) -> None:
        """The consumer of an `explicit_ack` member handled these events: never deliver them again."""
        await self.backend.ack(group, event_ids)

    # -- listening --------------------------------------------------------------
    def observe(self, event: str, observer: Observer) -> None:
        """Call `observer(payload)` for each `event` (`<api>.<event type>`) from now on.

        Made for keeping derived state (a cache) in step: an event fired in
        this process is observed as its transaction commits, before the
        caller hears back; one fired by another process (Redis bus), as soon
        as the backend delivers it. The observer runs on the event loop and
        must be quick; should it fail, or an event's payload not be readable
        here, that event is logged and passed over and the next ones observed.
        """
        api, _, event_type = event.rpartition(".")
        self.registry.spec(api, event_type)  # fail fast on a typo
        self._observers.setdefault((api, event_type), []).append(observer)
        if not self.backend.crosses_processes or api in self._observed_apis:
            return  # every event of this log is fired here (observed at commit), or the API is followed
        self._observed_apis.add(api)
        self._keep(asyncio.get_running_loop().create_task(self._observe_elsewhere(api)))

    async def _observe_elsewhere(self, api: str) -> None:
        """One reader per API for every observer of its events fired by other processes."""
        cursor = await _until_answered(f"observing {api}", functools.partial(self.backend.head, api))
        others = Reader(None, not_from=self.source)  # ours were observed at commit
        while True:
            types = sorted(t for (a, t) in self._observers if a == api)
            read = functools.partial(self.backend.read, api, cursor, types, others, BATCH, WAIT_SECONDS)
            before = cursor
            batch, cursor = await _until_answered(f"observing {api}", read)
            for event in batch:
                self._tell_observers(api, event)
            if cursor != before:
                # Busy: let the next moment's events gather, one read for many (caches
                # still hear of a change within milliseconds).
                await asyncio.sleep(OBSERVE_GATHER_SECONDS)

    def _tell_observers(self, api: str, event: events_pb2.Event) -> None:
        """Hand one event to its observers; an event they cannot take is logged and passed over,
        so one bad event (another version's payload type, bytes that do not decode, an
        observer's bug) does not end the reader and leave every cache deaf from then on."""
        try:
            payload = unpack(event).payload
        except (KeyError, message.DecodeError) as error:
            log.warning(
                "observers of %s.%s skip event %s: its payload %r cannot be read here (%s)",
                api,
                event.type,
                event.id,
                event.payload.type_url,
                error,
            )
            return
        for observer in self._observers.get((api, event.type), ()):
            try:
                observer(payload)
            except Exception:  # at commit, the store's after-commit rule does the same
                log.exception("an observer of %s.%s failed on event %s", api, event.type, event.id)

    def listen(self, event: str, handler: Handler, listener_name: str | None = None) -> asyncio.Task[None]:
        """Run `handler` for each `event` (`<api>.<event type>`), at least once.

        With `listener_name`, every process listening under that name shares
        the events (each handled once by the group) and the group resumes
        where it left off after a restart; a new group starts from now.
        """
        api, _, event_type = event.rpartition(".")
        self.registry.spec(api, event_type)  # fail fast on a typo
        if listener_name:
            work = self._run_group(GroupRef(api, PLATFORM, listener_name, (event_type,)), handler)
        else:
            work = self._run_solo(api, event_type, handler)
        return self._keep(asyncio.get_running_loop().create_task(work))

    def _keep(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Hold a background task until it ends; `close` cancels it."""
        self._listeners.add(task)
        task.add_done_callback(self._listeners.discard)
        return task

    async def _run_solo(self, api: str, event_type: str, handler: Handler) -> None:
        cursor = await _until_answered(f"listening to {api}", functools.partial(self.backend.head, api))
        while True:
            read = functools.partial(
                self.backend.read, api, cursor, [event_type], EVERYTHING, BATCH, WAIT_SECONDS
            )
            batch, cursor = await _until_answered(f"listening to {api}.{event_type}", read)
            for event in batch:
                await _handle_until_done(handler, event)

    async def _run_group(self, group: GroupRef, handler: Handler) -> None:
        start = await _until_answered(
            f"listener {group.listener}", functools.partial(self.backend.head, group.api)
        )
        member = uuid.uuid4().hex
        settings = self.settings
        done: list[str] = []  # acknowledged with the next claim, or as the listener stops
        try:
            while True:
                claim = functools.partial(
                    self.backend.claim,
                    group,
                    start,
                    member,
                    BATCH,
                    WAIT_SECONDS,
                    settings.visibility_seconds,
                    acked=done,
                )
                batch = await _until_answered(f"listener {group.listener}", claim)
                done = []
                for delivery in batch:
                    try:
                        with joined(delivery.event.traceparent):  # the handler's calls join the firer's trace
                            await handler(unpack(delivery.event))
                    except Exception as error:
                        await self._failed(group, delivery, error)
                        continue
                    done.append(delivery.event.id)
                    self._delivered(group)
        finally:
            with contextlib.suppress(Unavailable):  # unacknowledged: handed out again later
                await asyncio.shield(self.backend.ack(group, done))

    def _delivered(self, group: GroupRef, count: int = 1) -> None:
        self.metrics.increment(
            self.metrics.events_delivered, group.api, f"{group.namespace}/{group.listener}"
        )(count)

    async def _bury(self, group: GroupRef, delivery: Delivery, reason: str) -> None:
        await self.backend.bury(group, delivery, reason)
        self.metrics.increment(
            self.metrics.events_dead_lettered, group.api, f"{group.namespace}/{group.listener}"
        )()

    async def _failed(self, group: GroupRef, delivery: Delivery, error: Exception) -> None:
        event_id = delivery.event.id
        if delivery.attempts >= self.settings.max_deliveries:
            await self._bury(group, delivery, f"{type(error).__name__}: {error}")
            log.error(  # after the bury: the log says where the event is now
                "listener %s gave up on event %s after %d attempts; it is in the dead letters",
                group.listener,
                event_id,
                delivery.attempts,
                exc_info=error,
            )
            return
        log.warning(
            "listener %s failed on event %s (attempt %d of %d); retrying",
            group.listener,
            event_id,
            delivery.attempts,
            self.settings.max_deliveries,
            exc_info=error,
        )
        await self.backend.retry_later(group, event_id, retry_delay(delivery.attempts))

    async def close(self) -> None:
        for task in list(self._listeners):
            task.cancel()
        for task in list(self._listeners):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backend.aclose()


async def _until_answered(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`'s answer, trying again (with backoff) while the bus is unavailable."""
    failures = 0
    while True:
        try:
            return await call()
        except Unavailable as error:
            failures += 1
            if failures == 1 or failures % 10 == 0:
                log.warning("%s: %s; retrying", what, error)
            await asyncio.sleep(retry_delay(failures))


async def _handle_until_done(handler: Handler, event: events_pb2.Event) -> None:
    attempt = 0
    while True:
        try:
            with joined(event.traceparent):
                await handler(unpack(event))
            return
        except Exception:
            attempt += 1
            log.exception("listener failed on event %s; retrying", event.id)
            await asyncio.sleep(retry_delay(attempt))


def messages(events: Sequence[events_pb2.Event], per_message: int) -> Iterator[list[events_pb2.Event]]:
    """`events` in order, as stream messages: at most `per_message` events each and about
    MESSAGE_BYTES (an event larger than that goes alone)."""
    if per_message == 1:
        for event in events:
            yield [event]
        return
    chunk: list[events_pb2.Event] = []
    size = 0
    for event in events:
        event_size = event.ByteSize()
        if chunk and (len(chunk) == per_message or size + event_size > MESSAGE_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(event)
        size += event_size
    if chunk:
        yield chunk


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None if `stop` was set first (`work` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if not task.cancelled() else None
