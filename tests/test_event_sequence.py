"""Each event an API fires takes the next number of that API's sequence, whoever wrote before it.

On SQLite the outbox takes its next number without reading the head while
the store's `version()` says nothing but its own connection wrote. These
tests write from everywhere else that could move the head: another
connection to the same file (another process), another outbox on the same
store, a fire rolled back after taking its number, a floor raised by
`continue_after`; and from the writer thread's and the event loop's
connections in turn. Every number stays distinct and in commit order, and
no write fails.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from brewmesh import event_backend
from brewmesh.backends import open_store
from brewmesh.event_backend import LOG_TABLE, EventRecord, Outbox
from brewmesh.storage import Store, Tx

API = "brewmesh.recipes.v1.RecipeService"


class Refused(Exception):
    """What the rolled-back write raises after firing."""


def record(label: str) -> EventRecord:
    return EventRecord(API, "recipe_updated", "", label.encode(), 1, "test")


def insert(tx: Tx, outbox: Outbox, label: str) -> int:
    return outbox.insert(tx, record(label))


async def fire(store: Store, outbox: Outbox, label: str, quick: bool = True) -> int:
    write = store.quick_write if quick else store.write
    return await write(functools.partial(insert, outbox=outbox, label=label))


async def logged(store: Store) -> list[tuple[int, str]]:
    rows = await store.read(
        lambda tx: tx.fetchall(f"SELECT seq, payload FROM {LOG_TABLE} WHERE api = ? ORDER BY seq", (API,))
    )
    return [(int(r["seq"]), bytes(r["payload"]).decode()) for r in rows]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(None, tmp_path)
    await opened.migrate(event_backend.MIGRATIONS)
    yield opened
    await opened.close()


async def test_fires_from_another_connection_to_the_file_are_numbered_around(
    store: Store, tmp_path: Path
) -> None:
    other = open_store(None, tmp_path)  # the same file, as another process opens it
    try:
        ours, theirs = Outbox(LOG_TABLE, True), Outbox(LOG_TABLE, True)
        taken = []
        for i in range(20):
            taken.append(await fire(store, ours, f"ours/{i}", quick=i % 3 != 0))
            if i % 4 == 0:
                taken.append(await fire(other, theirs, f"theirs/{i}"))
        assert taken == list(range(1, len(taken) + 1))
        assert [seq for seq, _ in await logged(store)] == taken
        # Theirs fires and deletes what it fired, as a relay prunes its outbox: no row is left to
        # clash with, and still the next number of ours comes after theirs.
        last = await fire(other, theirs, "theirs/pruned")
        await other.write(functools.partial(prune, outbox=theirs, upto=last))
        assert await fire(store, ours, "ours/after") == last + 1
    finally:
        await other.close()


def prune(tx: Tx, outbox: Outbox, upto: int) -> None:
    outbox.forget(tx, API, upto)
    tx.execute(f"DELETE FROM {LOG_TABLE} WHERE api = ? AND seq <= ?", (API, upto))


async def test_two_outboxes_on_one_store_take_distinct_numbers(store: Store) -> None:
    first, second = Outbox(LOG_TABLE, True), Outbox(LOG_TABLE, True)
    taken = [await fire(store, (first, second)[i % 2], f"e/{i}") for i in range(10)]
    taken += [await fire(store, first, "first/again"), await fire(store, first, "first/again2")]
    assert taken == list(range(1, 13))
    assert len(await logged(store)) == 12


async def test_a_fire_rolled_back_after_taking_its_number_does_not_stop_the_next(store: Store) -> None:
    outbox = Outbox(LOG_TABLE, True)
    assert await fire(store, outbox, "kept/0") == 1

    def fire_then_refuse(tx: Tx) -> None:
        outbox.insert(tx, record("rolled-back"))
        raise Refused

    with pytest.raises(Refused):
        await store.quick_write(fire_then_refuse)
    after = await fire(store, outbox, "kept/1")
    assert after > 1
    assert await logged(store) == [(1, "kept/0"), (after, "kept/1")]  # the rolled-back one left no row


async def test_a_raised_floor_numbers_the_next_fire_after_it(store: Store) -> None:
    outbox = Outbox(LOG_TABLE, True)
    assert await fire(store, outbox, "e/0") == 1
    # On the connection the fires use (the event loop's): the store's version stays as it was.
    await store.quick_write(functools.partial(outbox.continue_after, api=API, seq=500))
    assert await fire(store, outbox, "e/1") == 501
    await store.write(functools.partial(outbox.continue_after, api=API, seq=600))  # the writer's
    assert await fire(store, outbox, "e/2") == 601
    assert await fire(store, outbox, "e/3") == 602
