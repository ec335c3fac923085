"""Several instances of a service relay one API's events from a shared outbox.

Each instance relays its own commits from memory; an event another instance
committed leaves a gap that the relay fills from the outbox. Whatever the
interleaving, every event reaches the API's stream once, in sequence order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from google.protobuf import any_pb2

from brewmesh import event_backend
from brewmesh.backends import open_store
from brewmesh.backends.redis_bus import RedisEventBackend, stream_key
from brewmesh.event_backend import EVERYTHING
from brewmesh.storage import Tx

API = "brewmesh.recipes.v1.RecipeService"
INSTANCES = 3
EVENTS_EACH = 60
WAIT_SECONDS = 2.0


@asynccontextmanager
async def instance(store_url: str, bus_url: str, data_dir: Path) -> AsyncIterator[RedisEventBackend]:
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


async def _fire(bus: RedisEventBackend, name: str) -> None:
    for i in range(EVENTS_EACH):
        record = _record(f"{name}/{i}")

        def stage(tx: Tx, record: event_backend.EventRecord = record) -> None:
            bus.stage(tx, record)

        await bus.store.write(stage)


async def test_interleaved_instances_put_every_event_on_the_stream_once_in_order(
    pg_database: str, fresh_redis_url: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        buses = [
            await stack.enter_async_context(instance(pg_database, fresh_redis_url, tmp_path / f"i{n}"))
            for n in range(INSTANCES)
        ]
        await asyncio.gather(*(_fire(bus, f"i{n}") for n, bus in enumerate(buses)))
        total = INSTANCES * EVENTS_EACH
        seen: list[str] = []
        cursor = None
        while len(seen) < total:
            batch, cursor = await buses[0].read(API, cursor, (), EVERYTHING, 500, WAIT_SECONDS)
            assert batch, f"the stream stopped at {len(seen)} of {total} events"
            seen += [event.payload.value.decode() for event in batch]
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
        await _fire(bus, "new")
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
