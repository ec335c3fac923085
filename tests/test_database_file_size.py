"""The SQLite store's write-ahead log stays bounded while writes never stop.

Checkpoints copy the log into the database off the event loop; a passive
one never catches up with a steady stream of writes, so without a restart
now and then the log (a file beside the database) would grow with every
write for as long as the stream lasts.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from brewmesh.backends.sqlite_store import SqliteBackend
from brewmesh.storage import Migration, Store, Tx

WRITES = 6000
CHECKPOINT_WRITES = 200
RESTART_FRAMES = 1000
PAGE_BYTES = 4096 + 24  # a WAL frame: a page and its header
TABLE = Migration(
    "wal_test",
    1,
    (
        "CREATE TABLE wal_items (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
        "CREATE INDEX wal_items_by_body ON wal_items (body)",
    ),
)


def _insert(tx: Tx, i: int) -> None:
    tx.execute("INSERT INTO wal_items (id, body) VALUES (?, ?)", (i, f"item {i:08d} " + "x" * 200))


async def test_the_log_stays_bounded_under_a_steady_stream_of_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    backend = SqliteBackend(path, checkpoint_writes=CHECKPOINT_WRITES, restart_frames=RESTART_FRAMES)
    store = Store(backend, str(path))
    await store.migrate([TABLE])
    wal = Path(f"{path}-wal")
    largest = 0
    try:
        for i in range(WRITES):  # back to back, as a busy service writes
            await store.quick_write(functools.partial(_insert, i=i))
            if i % 100 == 0:
                largest = max(largest, wal.stat().st_size)
        # Writes queued behind a restarting checkpoint still land: every one is there.
        row = await store.read(lambda tx: tx.fetchone("SELECT COUNT(*) AS n FROM wal_items"))
    finally:
        await store.close()
    assert row is not None and row["n"] == WRITES
    # Each write dirties two or three pages: unbounded, the log would reach ~15,000 frames
    # (84-98 MB). A restart lands some way past RESTART_FRAMES on a busy machine (4,180
    # frames once in CI): the bound leaves room for that and still fails unbounded.
    bound = 8 * RESTART_FRAMES * PAGE_BYTES
    assert largest < bound, f"the WAL reached {largest} bytes (bound {bound})"


async def test_writes_queued_and_on_the_loop_during_restarts_all_commit(tmp_path: Path) -> None:
    """A restart runs on the writer thread between writes: none is lost or fails meanwhile."""
    path = tmp_path / "store.db"
    backend = SqliteBackend(path, checkpoint_writes=50, restart_frames=100)
    store = Store(backend, str(path))
    await store.migrate([TABLE])
    try:
        await asyncio.gather(
            *(store.write(functools.partial(_insert, i=i)) for i in range(2000)),
            *(store.quick_write(functools.partial(_insert, i=i)) for i in range(2000, 4000)),
        )
        row = await store.read(lambda tx: tx.fetchone("SELECT COUNT(*) AS n FROM wal_items"))
    finally:
        await store.close()
    assert row is not None and row["n"] == 4000
