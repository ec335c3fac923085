"""Runs recorded before run ids were per partner keep their id, events and owner after the upgrade,
on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from brewmesh.backends import open_store
from brewmesh.services.runner import run_store
from brewmesh.services.runner.program_runs import RunKey, State
from brewmesh.storage import Store, Tx

BEFORE = [m for m in run_store.MIGRATIONS if m.version <= 2]
"""The runner's schema while run ids were unique across the mesh."""
MACHINE = "partners/my-coffee-company/coffeeMachines/vending_1"


def _record_the_old_way(tx: Tx) -> None:
    program = '{"program_id": "lungo", "parameters": {}}'
    tx.execute(
        "INSERT INTO program_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("order-1", MACHINE, "recipes/my-coffee-company:lungo", 300, program, "127.0.0.1:50061", 0,
         "vending", "[]", int(State.FINISHED), "", "{}", 1, 0,
         "2024-01-01T00:00:00+00:00", "2024-01-01T00:00:01+00:00", ""),
    )  # fmt: skip
    tx.execute(
        "INSERT INTO program_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ("order-1", 1, "finished", "{}", "{}", 3, int(State.FINISHED), "2024-01-01T00:00:01+00:00"),
    )


async def _upgrade_keeps_the_run(store: Store) -> None:
    try:
        await store.migrate(BEFORE)
        await store.write(_record_the_old_way)
        await store.migrate(run_store.MIGRATIONS)
        key = RunKey("my-coffee-company", "order-1")
        run = await store.read(lambda tx: run_store.get_run(tx, key))
        events = await store.read(lambda tx: run_store.events_after(tx, key, 0, 10))
    finally:
        await store.close()
    assert run.request.machine == MACHINE and run.state == State.FINISHED and run.last_sequence == 1
    assert [(e.run_id, e.sequence, e.event) for e in events] == [("order-1", 1, "finished")]


async def test_sqlite_runs_keep_their_ids_and_events_through_the_upgrade(tmp_path: Path) -> None:
    await _upgrade_keeps_the_run(open_store(None, tmp_path))


@pytest.mark.usefixtures("postgres")
async def test_postgresql_runs_keep_their_ids_and_events_through_the_upgrade(pg_database: str) -> None:
    await _upgrade_keeps_the_run(open_store(pg_database, None))
