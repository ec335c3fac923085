"""Instances of a service relay one API's events from its outbox to Redis, whatever came before.

Each instance relays its own commits from memory; an event another instance
committed leaves a gap that the relay fills from the outbox. Whatever the
interleaving, every event reaches the API's stream once, in sequence order;
and so do events staged before a restart, after an outbox emptied by
relaying, and in a log kept while the store's bus was embedded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from google.protobuf import any_pb2, field_mask_pb2

from brewmesh import event_backend
from brewmesh.apis import ApiRegistry
from brewmesh.backends import open_store
from brewmesh.backends.embedded_bus import EmbeddedEventBackend
from brewmesh.backends.redis_bus import RedisEventBackend, stream_key
from brewmesh.event_backend import EVERYTHING, OUTBOX_TABLE, EventBackend, Reader
from brewmesh.events import Bus
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.storage import Store, Tx
from tests.conftest import free_port
from tests.engines import start_redis

API = "brewmesh.recipes.v1.RecipeService"
INSTANCES = 3
EVENTS_EACH = 60
WAIT_SECONDS = 2.0


@asynccontextmanager
async def instance(store_url: str | None, bus_url: str, data_dir: Path) -> AsyncIterator[RedisEventBackend]:
    store = open_store(store_url, data_dir)
    await store.migrate(event_backend.MIGRATIONS)
    bus = RedisEventBackend(bus_url, store, (API,), retention=100_000)
    try:
        await bus.start()
        yield bus
    finally:
        await bus.aclose()
        await store.close()


def _record(label: str) -> event_backend.EventRecord:
    payload = any_pb2.Any(type_url="type.googleapis.com/test.Label", value=label.encode())
    return event_backend.new_record(API, "recipe_updated", "", payload, label.split("/", maxsplit=1)[0])


async def _fire(bus: EventBackend, store: Store, name: str, count: int = EVENTS_EACH) -> None:
    for i in range(count):
        record = _record(f"{name}/{i}")

        def stage(tx: Tx, record: event_backend.EventRecord = record) -> None:
            bus.stage(tx, record)

        await store.write(stage)


async def _stream(bus: RedisEventBackend, count: int) -> list[str]:
    """The labels of the first `count` events on the API's stream."""
    seen: list[str] = []
    cursor = None
    while len(seen) < count:
        batch, cursor = await bus.read(API, cursor, (), EVERYTHING, 500, WAIT_SECONDS)
        assert batch, f"the stream stopped at {len(seen)} of {count} events: {seen[-3:]}"
        seen += [event.payload.value.decode() for event in batch]
    return seen


async def test_interleaved_instances_put_every_event_on_the_stream_once_in_order(
    pg_database: str, fresh_redis_url: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        buses = [
            await stack.enter_async_context(instance(pg_database, fresh_redis_url, tmp_path / f"i{n}"))
            for n in range(INSTANCES)
        ]
        await asyncio.gather(*(_fire(bus, bus.store, f"i{n}") for n, bus in enumerate(buses)))
        total = INSTANCES * EVENTS_EACH
        seen = await _stream(buses[0], total)
        assert len(seen) == total and len(set(seen)) == total  # none lost, none twice
        for n in range(INSTANCES):  # each instance's events in the order it committed them
            mine = [label for label in seen if label.startswith(f"i{n}/")]
            assert mine == [f"i{n}/{i}" for i in range(EVENTS_EACH)]


async def test_entries_an_older_relay_wrote_field_by_field_are_still_read(
    tmp_path: Path, pg_database: str, fresh_redis_url: str
) -> None:
    """Before one `h` field held an entry's type, scope, source, time and trace, each had a
    field of its own: a stream written then is read the same after an upgrade."""
    old = {"type": "recipe_updated", "scope": "", "payload": _record("old/0").payload,
           "time_ns": "1796178596556897117", "source": "old-host:1/recipes", "trace": ""}  # fmt: skip
    async with redis.Redis.from_url(fresh_redis_url) as client:
        await client.xadd(stream_key(API), old)  # type: ignore[arg-type]
    async with instance(pg_database, fresh_redis_url, tmp_path / "new") as bus:
        await _fire(bus, bus.store, "new")
        async with asyncio.timeout(10):
            events: list[Any] = []
            cursor = None
            while len(events) < 1 + EVENTS_EACH:
                batch, cursor = await bus.read(API, cursor, (), EVERYTHING, 1000, WAIT_SECONDS)
                events += batch
    first, *rest = events
    assert (first.type, first.source, first.time.ToNanoseconds()) == (
        "recipe_updated", "old-host:1/recipes", 1796178596556897117,
    )  # fmt: skip
    assert first.payload.value == b"old/0"
    assert [e.payload.value.decode() for e in rest] == [f"new/{i}" for i in range(EVENTS_EACH)]
    assert {e.source for e in rest} == {"new"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("pg_database") if request.param == "postgresql" else None


async def _outbox_rows(store: Store) -> int:
    row = await store.read(lambda tx: tx.fetchone(f"SELECT COUNT(*) AS n FROM {OUTBOX_TABLE}"))
    return int(row["n"]) if row else 0


async def test_events_after_the_outbox_emptied_and_a_restart_are_relayed(
    store_url: str | None, fresh_redis_url: str, tmp_path: Path
) -> None:
    """Relayed rows are deleted; the API's sequence must not start again below what Redis has
    (the relay would take the new events for ones it had relayed, and drop them)."""
    async with instance(store_url, fresh_redis_url, tmp_path) as bus:
        await _fire(bus, bus.store, "before", 5)
        await _stream(bus, 5)
    async with instance(store_url, fresh_redis_url, tmp_path) as bus:
        assert await _outbox_rows(bus.store) == 0  # the relayed rows left as the instance stopped
        await _fire(bus, bus.store, "after", 5)
        seen = await _stream(bus, 10)
    assert seen == [f"before/{i}" for i in range(5)] + [f"after/{i}" for i in range(5)]


async def test_events_of_a_log_kept_while_the_bus_was_embedded_are_relayed_first(
    store_url: str | None, fresh_redis_url: str, tmp_path: Path
) -> None:
    """The store's log holds events the Redis bus never relayed (staged by the embedded bus, or
    by a version whose outbox was the log's table): they go to the stream, then new ones."""
    store = open_store(store_url, tmp_path)
    await store.migrate(event_backend.MIGRATIONS)
    try:
        await _fire(EmbeddedEventBackend(store, retention=100_000), store, "logged", 5)
    finally:
        await store.close()
    async with instance(store_url, fresh_redis_url, tmp_path) as bus:
        await _fire(bus, bus.store, "outboxed", 5)
        seen = await _stream(bus, 10)
    assert seen == [f"logged/{i}" for i in range(5)] + [f"outboxed/{i}" for i in range(5)]


async def test_a_store_behind_redis_numbers_its_events_after_what_redis_relayed(
    store_url: str | None, fresh_redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store restored from a backup older than the bus (here: its bus tables emptied) would
    number new events below Redis's marker, and the relay would skip them as relayed."""
    async with instance(store_url, fresh_redis_url, tmp_path) as bus:
        await _fire(bus, bus.store, "before", 5)
        await _stream(bus, 5)
    store = open_store(store_url, tmp_path)
    try:
        await store.write(_forget_every_event)
    finally:
        await store.close()
    async with instance(store_url, fresh_redis_url, tmp_path) as bus:
        await _fire(bus, bus.store, "after", 3)
        seen = await _stream(bus, 8)
    assert seen == [f"before/{i}" for i in range(5)] + [f"after/{i}" for i in range(3)]
    assert "Redis relayed up to 5" in caplog.text


def _forget_every_event(tx: Tx) -> None:
    for table in ("bus_heads", OUTBOX_TABLE, "bus_events"):
        tx.execute(f"DELETE FROM {table}")


async def test_an_observer_begun_while_redis_is_down_hears_events_once_it_is_back(tmp_path: Path) -> None:
    """An observer (a cache kept in step) that starts while Redis does not answer keeps trying,
    and hears the next event once Redis is back; it must not end on the first refusal."""
    port, password = free_port(), secrets.token_hex(16)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    store = open_store(None, tmp_path / "observer")
    await store.migrate(event_backend.MIGRATIONS)
    observer_bus = Bus(RedisEventBackend(url, store, (), retention=1000), store, ApiRegistry(), "observer")
    heard = asyncio.Event()
    observer_bus.observe(f"{API}.recipe_updated", lambda payload: heard.set())
    await asyncio.sleep(0)  # the observer's task starts, and finds nothing listening on the port
    try:
        with start_redis(tmp_path, port=port, password=password):  # answers PING when it returns
            async with instance(None, url, tmp_path / "firer") as firer:
                # An observer hears what is fired from the moment it follows: fire until it hears.
                async with asyncio.timeout(15):
                    while not heard.is_set():
                        await firer.store.write(functools.partial(firer.stage, record=_recipe_updated()))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(heard.wait(), 0.5)
    finally:
        await observer_bus.close()
        await store.close()


def _recipe_updated() -> event_backend.EventRecord:
    """An event an observer unpacks: a real payload type."""
    payload = any_pb2.Any()
    payload.Pack(recipes_pb2.RecipeUpdatedEvent(recipe=recipes_pb2.Recipe(name="recipes/common:r1")))
    return event_backend.new_record(API, "recipe_updated", "", payload, "firer")


async def test_an_observer_passes_over_events_it_cannot_read_and_hears_the_next(
    fresh_redis_url: str, tmp_path: Path
) -> None:
    """Another process's event whose payload this process cannot read (a type from a newer
    proto, bytes that do not decode) is passed over, and so is an observer's failure: the
    other observers hear that event, and every observer the events after it."""
    store = open_store(None, tmp_path / "observer")
    await store.migrate(event_backend.MIGRATIONS)
    backend = RedisEventBackend(fresh_redis_url, store, (), retention=1000)
    observer_bus = Bus(backend, store, ApiRegistry(), "observer")
    heard: list[str] = []
    arrived = asyncio.Event()

    def observer(payload: Any) -> None:
        heard.append(str(payload))
        arrived.set()

    def buggy(payload: Any) -> None:
        raise RuntimeError("an observer's bug")

    observer_bus.observe(f"{API}.recipe_updated", buggy)  # called first, fails on every event
    observer_bus.observe(f"{API}.recipe_updated", observer)
    unknown_type = any_pb2.Any(type_url="type.googleapis.com/brewmesh.recipes.v9.Newer", value=b"\x08\x01")
    undecodable = any_pb2.Any(
        type_url="type.googleapis.com/" + recipes_pb2.RecipeUpdatedEvent.DESCRIPTOR.full_name, value=b"\xff"
    )
    try:
        async with instance(None, fresh_redis_url, tmp_path / "firer") as firer:
            async with asyncio.timeout(15):  # it hears from the moment it follows: until it hears
                while not heard:
                    await firer.store.write(functools.partial(firer.stage, record=_recipe_updated()))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(arrived.wait(), 0.5)
            arrived.clear()  # following now: the unreadable events are read, then the next one
            for payload in (unknown_type, undecodable):
                record = event_backend.new_record(API, "recipe_updated", "", payload, "firer")
                await firer.store.write(functools.partial(firer.stage, record=record))
            await firer.store.write(functools.partial(firer.stage, record=_recipe_updated()))
            await asyncio.wait_for(arrived.wait(), 10)
    finally:
        await observer_bus.close()
        await store.close()
    assert len(heard) >= 2 and all("recipes/common:r1" in text for text in heard)


@pytest.mark.parametrize("bus_kind", ["embedded", "redis"])
async def test_an_observer_that_fails_on_a_local_fire_neither_fails_the_write_nor_stops_the_others(
    bus_kind: str, fresh_redis_url: str, tmp_path: Path
) -> None:
    """The change is committed when observers run: the write returns, later observers hear it,
    and the event is relayed as usual."""
    store = open_store(None, tmp_path / "local")
    await store.migrate(event_backend.MIGRATIONS)
    backend: EventBackend
    if bus_kind == "redis":
        backend = RedisEventBackend(fresh_redis_url, store, (API,), retention=1000)
    else:
        backend = EmbeddedEventBackend(store, retention=1000)
    registry = ApiRegistry()
    registry.register(API)  # this process is the authority that fires
    bus = Bus(backend, store, registry, "local")
    heard: list[Any] = []

    def buggy(payload: Any) -> None:
        raise RuntimeError("an observer's bug")

    try:
        if isinstance(backend, RedisEventBackend):
            await backend.start()
        bus.observe(f"{API}.recipe_updated", buggy)
        bus.observe(f"{API}.recipe_updated", heard.append)
        before = await backend.head(API)
        payload = recipes_pb2.RecipeUpdatedEvent(
            recipe=recipes_pb2.Recipe(name="recipes/common:r1"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
        await bus.fire_now(API, "recipe_updated", payload, "")
        assert heard == [payload]
        logged: list[Any] = []
        async with asyncio.timeout(10):  # relayed (Redis) or logged (embedded) as usual
            while not logged:
                logged, before = await backend.read(API, before, (), EVERYTHING, 10, WAIT_SECONDS)
        assert [event.type for event in logged] == ["recipe_updated"]
    finally:
        await bus.close()
        await store.close()


@pytest.mark.parametrize("protocol", ["", "?protocol=2"], ids=["resp3-default", "resp2"])
async def test_a_reader_passing_over_one_source_reads_the_rest_in_either_protocol(
    tmp_path: Path, fresh_redis_url: str, protocol: str
) -> None:
    """Observers pass over their own process's events unparsed, from XREAD's reply as sent,
    whichever protocol the bus URL asks redis-py for."""
    async with instance(None, fresh_redis_url + protocol, tmp_path / "i") as bus:
        await _fire(bus, bus.store, "ours")
        await _fire(bus, bus.store, "theirs")
        await _fire(bus, bus.store, "ours", count=3)
        assert len(await _stream(bus, 2 * EVENTS_EACH + 3)) == 2 * EVENTS_EACH + 3
        others, cursor = await bus.read(API, None, (), Reader(None, not_from="ours"), 1000, WAIT_SECONDS)
        assert [e.payload.value.decode() for e in others] == [f"theirs/{i}" for i in range(EVENTS_EACH)]
        assert cursor == await bus.head(API)  # past the last entry, though it was passed over
