"""Writes stay correct under concurrent writers, on SQLite and on PostgreSQL.

The PostgreSQL store runs transactions on several connections at once, so
these races are real there: read-then-write sequences must neither collide
nor leave gaps, and two creates of one id give one success and one
ALREADY_EXISTS (never an internal error).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from brewmesh.backends import open_store
from brewmesh.errors import AlreadyExists
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from brewmesh.services.partners import partners
from brewmesh.storage import Conflict, Migration, Store, Tx
from tests.conftest import PartnerClient

RACERS = 16
COUNTER = Migration(
    "race_test",
    1,
    ("CREATE TABLE race_items (owner TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (owner, seq))",),
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = request.getfixturevalue("pg_database") if request.param == "postgresql" else None
    opened = open_store(url, tmp_path)
    await opened.migrate([COUNTER, *partners.MIGRATIONS])
    yield opened
    await opened.close()


def _next_item(tx: Tx) -> int:
    """Read the owner's last sequence, then write the next: correct only if transactions are isolated."""
    row = tx.fetchone("SELECT MAX(seq) AS seq FROM race_items WHERE owner = ?", ("run-1",))
    seq = int(row["seq"] or 0) + 1 if row else 1
    tx.execute("INSERT INTO race_items (owner, seq) VALUES (?, ?)", ("run-1", seq))
    return seq


async def test_concurrent_read_then_write_gets_distinct_gap_free_sequences(store: Store) -> None:
    got = await asyncio.gather(*(store.write(_next_item) for _ in range(RACERS)))
    assert sorted(got) == list(range(1, RACERS + 1))


async def test_concurrent_creates_of_one_id_give_one_success_and_already_exists(store: Store) -> None:
    outcomes = await asyncio.gather(
        *(store.write(lambda tx: partners.insert_partner(tx, "racer", "Racer")) for _ in range(RACERS)),
        return_exceptions=True,
    )
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(created) == 1
    assert all(isinstance(o, AlreadyExists) for o in refused), refused


async def test_a_unique_key_taken_concurrently_is_a_conflict(store: Store) -> None:
    def insert(tx: Tx) -> None:
        tx.execute("INSERT INTO race_items (owner, seq) VALUES (?, ?)", ("same", 1))

    outcomes = await asyncio.gather(*(store.write(insert) for _ in range(RACERS)), return_exceptions=True)
    assert sum(o is None for o in outcomes) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if o is not None), outcomes


async def test_an_after_commit_callback_that_fails_fails_no_write(store: Store) -> None:
    """Every concurrent writer is answered with its result, every other callback runs, and the
    store keeps writing: the changes are committed whatever a callback does."""
    ran: list[int] = []

    def write(tx: Tx) -> int:
        seq = _next_item(tx)
        tx.after_commit(_fail)
        tx.after_commit(lambda: ran.append(seq))
        return seq

    async with asyncio.timeout(30):
        got = await asyncio.gather(*(store.write(write) for _ in range(RACERS)))
        assert sorted(got) == sorted(ran) == list(range(1, RACERS + 1))
        assert await store.quick_write(write) == RACERS + 1


LOOPED_WRITES = 1000
MOST_WRITES_BETWEEN_TURNS = 100


async def test_a_tight_loop_of_small_writes_lets_the_rest_of_the_process_run(store: Store) -> None:
    """A service firing events back to back: SQLite commits small writes on the event loop itself,
    and the other tasks of the process (calls, streams, the relay) still get turns meanwhile."""
    written = 0
    between_turns: list[int] = []  # writes committed between two turns of the other task

    async def other_task() -> None:
        seen = 0
        while True:
            await asyncio.sleep(0)  # a yield, not a wait: each pass of this loop is one loop turn
            between_turns.append(written - seen)
            seen = written

    other = asyncio.create_task(other_task())
    for i in range(LOOPED_WRITES):
        await store.quick_write(functools.partial(_insert_item, owner="loop", seq=i))
        written += 1
    other.cancel()
    assert len(between_turns) >= LOOPED_WRITES // MOST_WRITES_BETWEEN_TURNS, between_turns
    assert max(between_turns) <= MOST_WRITES_BETWEEN_TURNS, between_turns


def _insert_item(tx: Tx, owner: str, seq: int) -> None:
    tx.execute("INSERT INTO race_items (owner, seq) VALUES (?, ?)", (owner, seq))


def _fail() -> None:
    raise RuntimeError("a callback's bug")


async def test_concurrent_creates_through_the_api_give_one_recipe(partner: PartnerClient) -> None:
    request = rpb.CreateRecipeRequest(
        namespace=partner.namespace,
        id_component="raced",
        recipe=rpb.Recipe(
            product_properties=rpb.ProductProperties(default_volume_ml=300),
            execution_properties=rpb.ExecutionProperties(program_id="lungo"),
        ),
    )
    outcomes = await asyncio.gather(
        *(partner.client.recipes.CreateRecipe(request) for _ in range(8)), return_exceptions=True
    )
    codes = sorted(o.code().name if isinstance(o, grpc.aio.AioRpcError) else "OK" for o in outcomes)
    assert codes == ["ALREADY_EXISTS"] * 7 + ["OK"]
