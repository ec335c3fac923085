"""A listener group's member costs nothing while nothing happens for it (embedded log).

A member waits for a commit of its API; when its wait runs out with nothing
committed, replayed or claimed since it last found nothing, it looks at
nothing (no store transaction). Whatever then happens (an event of another
type, one it takes, another member's claim that expires) it sees as before.
Transactions are counted at the store's seam, around the real SQLite backend.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TypeVar

from google.protobuf import any_pb2

from brewmesh import event_backend
from brewmesh.backends import open_store
from brewmesh.backends.embedded_bus import EmbeddedEventBackend
from brewmesh.event_backend import PLATFORM, GroupRef
from brewmesh.storage import Store, StoreBackend, Transaction, Tx

T = TypeVar("T")
API = "brewmesh.recipes.v1.RecipeService"
GROUP = GroupRef(API, PLATFORM, "billing", ("recipe_updated",))
SHORT_WAIT = 0.05
VISIBILITY = 30.0


class CountingBackend:
    """The store's backend, counting the write transactions it is handed."""

    def __init__(self, inner: StoreBackend) -> None:
        self.inner = inner
        self.serial_writes = inner.serial_writes
        self.writes = 0

    async def handle(self, transaction: Transaction[T]) -> T:
        self.writes += transaction.writes
        return await self.inner.handle(transaction)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def fire(store: Store, log: EmbeddedEventBackend, event_type: str) -> None:
    payload = any_pb2.Any(type_url="type.googleapis.com/test.Label", value=event_type.encode())
    record = event_backend.new_record(API, event_type, "", payload, "test")

    def stage(tx: Tx) -> None:
        log.stage(tx, record)

    await store.write(stage)


async def test_an_idle_member_runs_no_transaction_and_still_sees_what_happens_next(tmp_path: Path) -> None:
    counted = CountingBackend(open_store(None, tmp_path).backend)
    store = Store(counted, "counted")
    await store.migrate(event_backend.MIGRATIONS)
    log = EmbeddedEventBackend(store, retention=1000)
    try:
        start = await log.head(API)
        assert await log.claim(GROUP, start, "a", 10, SHORT_WAIT, VISIBILITY) == []  # the group is made
        idle_from = counted.writes
        for _ in range(5):  # each wait runs out with nothing committed
            assert await log.claim(GROUP, start, "a", 10, SHORT_WAIT, VISIBILITY) == []
        assert counted.writes == idle_from

        await fire(store, log, "recipe_deleted")  # not a type the group takes: one look, nothing
        assert await log.claim(GROUP, start, "a", 10, SHORT_WAIT, VISIBILITY) == []
        assert counted.writes == idle_from + 2  # the fire and the one look
        assert await log.claim(GROUP, start, "a", 10, SHORT_WAIT, VISIBILITY) == []
        assert counted.writes == idle_from + 2

        await fire(store, log, "recipe_updated")
        taken = await log.claim(GROUP, start, "a", 10, SHORT_WAIT, 0.3)  # and never acknowledged
        assert [(d.event.type, d.attempts) for d in taken] == [("recipe_updated", 1)]
        # Another member, idle meanwhile, takes it once its claim times out.
        async with asyncio.timeout(10):
            again = await log.claim(GROUP, start, "b", 10, 5.0, VISIBILITY)
        assert [(d.event.id, d.attempts) for d in again] == [(taken[0].event.id, 2)]
    finally:
        await log.aclose()
        await store.close()
