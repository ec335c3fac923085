"""The durable event log behind the bus (embedded form: SQLite).

Events are appended inside the firing service's own transaction (an
outbox), so an event exists if and only if the change it reports was
committed. Listener groups keep a cursor and a set of claimed-but-unacked
events; a claim not acknowledged in time is handed out again
(at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2, timestamp_pb2

from brewmesh.bus.v1 import events_pb2
from brewmesh.storage import Migration, Row, Store, Tx

MIGRATIONS = (
    Migration(
        "event_log",
        1,
        (
            "CREATE TABLE events ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, api TEXT NOT NULL, type TEXT NOT NULL,"
            " payload BLOB NOT NULL, time_ns INTEGER NOT NULL, source TEXT NOT NULL)",
            "CREATE INDEX events_by_api ON events (api, id)",
            "CREATE TABLE listener_groups ("
            " api TEXT NOT NULL, group_key TEXT NOT NULL, cursor INTEGER NOT NULL,"
            " PRIMARY KEY (api, group_key))",
            "CREATE TABLE listener_claims ("
            " api TEXT NOT NULL, group_key TEXT NOT NULL, event_id INTEGER NOT NULL,"
            " member TEXT NOT NULL, deadline REAL NOT NULL, attempts INTEGER NOT NULL,"
            " PRIMARY KEY (api, group_key, event_id))",
        ),
    ),
)


@dataclass(frozen=True)
class Group:
    """A listener group: API, listener name and the event types it takes."""

    api: str
    listener: str
    types: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.listener}|{','.join(sorted(self.types))}"


class SqliteEventLog:
    """The event log in the service's own SQLite store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._appended: dict[str, asyncio.Event] = {}

    # -- writing ---------------------------------------------------------
    def append(self, tx: Tx, api: str, event_type: str, payload: any_pb2.Any, source: str) -> None:
        """Stage an event in `tx`; listeners of `api` are woken once `tx` commits."""
        tx.execute(
            "INSERT INTO events (api, type, payload, time_ns, source) VALUES (?, ?, ?, ?, ?)",
            (api, event_type, payload.SerializeToString(), time.time_ns(), source),
        )
        tx.after_commit(lambda: self._wake(api))

    def _wake(self, api: str) -> None:
        # Wake everyone waiting on this API, then arm a fresh event for the next append.
        woken = self._appended.pop(api, None)
        if woken is not None:
            woken.set()

    async def wait_for_append(self, api: str, timeout: float) -> None:
        """Return when an event of `api` was appended in this process, or after `timeout`.

        The timeout doubles as polling for events appended by another
        process sharing the file.
        """
        appended = self._appended.setdefault(api, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await appended.wait()

    # -- reading ---------------------------------------------------------
    async def read(self, api: str, after_id: int, types: Sequence[str], limit: int) -> list[events_pb2.Event]:
        def fetch(tx: Tx) -> list[Row]:
            sql, params = _select(api, after_id, types, limit)
            return tx.fetchall(sql, params)

        return [_to_event(row) for row in await self.store.read(fetch)]

    async def last_id(self, api: str) -> int:
        def fetch(tx: Tx) -> int:
            row = tx.fetchone("SELECT MAX(id) AS id FROM events WHERE api = ?", (api,))
            return int(row["id"] or 0) if row else 0

        return await self.store.read(fetch)

    # -- listener groups ---------------------------------------------------
    async def join(self, group: Group, start_after: int) -> None:
        """Create the group at `start_after` unless it exists (then keep its place)."""
        await self.store.write(
            lambda tx: tx.execute(
                "INSERT OR IGNORE INTO listener_groups (api, group_key, cursor) VALUES (?, ?, ?)",
                (group.api, group.key, start_after),
            )
        )

    async def claim(self, group: Group, member: str, limit: int, visibility: float) -> list[events_pb2.Event]:
        """Hand `member` up to `limit` events: expired claims first, then new ones."""

        def claim(tx: Tx) -> list[Row]:
            now = time.time()
            rows = _reclaim_expired(tx, group, member, now, visibility, limit)
            if rows:
                return rows
            cursor_row = tx.fetchone(
                "SELECT cursor FROM listener_groups WHERE api = ? AND group_key = ?", (group.api, group.key)
            )
            cursor = int(cursor_row["cursor"]) if cursor_row else 0
            sql, params = _select(group.api, cursor, group.types, limit)
            rows = tx.fetchall(sql, params)
            for row in rows:
                tx.execute(
                    "INSERT INTO listener_claims VALUES (?, ?, ?, ?, ?, 1)",
                    (group.api, group.key, row["id"], member, now + visibility),
                )
            if rows:
                tx.execute(
                    "UPDATE listener_groups SET cursor = ? WHERE api = ? AND group_key = ?",
                    (rows[-1]["id"], group.api, group.key),
                )
            return rows

        return [_to_event(row) for row in await self.store.write(claim)]

    async def ack(self, group: Group, event_ids: Sequence[str]) -> None:
        def ack(tx: Tx) -> None:
            for event_id in event_ids:
                tx.execute(
                    "DELETE FROM listener_claims WHERE api = ? AND group_key = ? AND event_id = ?",
                    (group.api, group.key, int(event_id)),
                )

        await self.store.write(ack)

    async def release(self, group: Group, event_id: str, retry_after: float) -> None:
        """Give a claimed event back, to be handed out again after `retry_after` seconds."""
        await self.store.write(
            lambda tx: tx.execute(
                "UPDATE listener_claims SET deadline = ? WHERE api = ? AND group_key = ? AND event_id = ?",
                (time.time() + retry_after, group.api, group.key, int(event_id)),
            )
        )


def _reclaim_expired(
    tx: Tx, group: Group, member: str, now: float, visibility: float, limit: int
) -> list[Row]:
    expired = tx.fetchall(
        "SELECT e.* FROM listener_claims c JOIN events e ON e.id = c.event_id"
        " WHERE c.api = ? AND c.group_key = ? AND c.deadline < ? ORDER BY c.event_id LIMIT ?",
        (group.api, group.key, now, limit),
    )
    for row in expired:
        tx.execute(
            "UPDATE listener_claims SET member = ?, deadline = ?, attempts = attempts + 1"
            " WHERE api = ? AND group_key = ? AND event_id = ?",
            (member, now + visibility, group.api, group.key, row["id"]),
        )
    return expired


def _select(api: str, after_id: int, types: Sequence[str], limit: int) -> tuple[str, list[object]]:
    sql = "SELECT * FROM events WHERE api = ? AND id > ?"
    params: list[object] = [api, after_id]
    if types:
        sql += f" AND type IN ({','.join('?' * len(types))})"
        params.extend(types)
    sql += " ORDER BY id LIMIT ?"
    params.append(limit)
    return sql, params


def _to_event(row: Row) -> events_pb2.Event:
    payload = any_pb2.Any()
    payload.ParseFromString(row["payload"])
    moment = timestamp_pb2.Timestamp()
    moment.FromNanoseconds(row["time_ns"])
    return events_pb2.Event(
        id=str(row["id"]),
        api=row["api"],
        type=row["type"],
        payload=payload,
        time=moment,
        source=row["source"],
    )
