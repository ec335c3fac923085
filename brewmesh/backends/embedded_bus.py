"""The embedded event log: the outbox in the service's own store is the log.

For one process (`brewmesh up`): readers and listener groups are woken in
process when an event commits, never by polling. Groups keep their place,
their claimed-but-unacknowledged events and their dead letters in the
store, so a restart loses nothing. The log keeps the newest `retention`
events of each API (and any a group still holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Sequence

from brewmesh.bus.v1 import events_pb2
from brewmesh.event_backend import (
    LAG_COUNT_LIMIT,
    LOG_TABLE,
    DeadLetter,
    Delivery,
    EventRecord,
    GroupRef,
    GroupState,
    Outbox,
    Reader,
    record_of,
    to_event,
)
from brewmesh.storage import Row, Store, Tx

ID_RE = re.compile(r"[0-9]{1,18}")
TRIM_EVERY = 1000


class EmbeddedEventBackend:
    """Events in the store's `bus_*` tables, woken in process."""

    crosses_processes = False

    def __init__(self, store: Store, retention: int) -> None:
        self.store = store
        self._outbox = Outbox(LOG_TABLE, store.serial_writes)
        self.retention = retention
        self._appended: dict[str, asyncio.Event] = {}
        self._wakes: dict[str, int] = {}
        # Groups whose last claim found nothing to take and no claim to wait for, with the
        # API's wake count then: until the next wake, a claim of theirs has nothing to look at.
        self._quiet: dict[tuple[str, str], int] = {}
        self._heads: dict[str, int] = {}
        self._since_trim: dict[str, int] = {}
        self._trims: set[asyncio.Task[None]] = set()

    # -- writing -------------------------------------------------------------------
    def stage(self, tx: Tx, record: EventRecord) -> None:
        seq = self._outbox.insert(tx, record)
        tx.after_commit(lambda: self._committed(record.api, seq))

    def _committed(self, api: str, seq: int) -> None:
        self._heads[api] = max(seq, self._heads.get(api, 0))
        self._wake(api)
        self._since_trim[api] = self._since_trim.get(api, 0) + 1
        if self._since_trim[api] >= TRIM_EVERY:
            self._since_trim[api] = 0
            task = asyncio.get_running_loop().create_task(self._trim(api, seq - self.retention))
            self._trims.add(task)
            task.add_done_callback(self._trims.discard)

    def _wake(self, api: str) -> None:
        # Wake everyone waiting on this API; the next waiter arms a fresh event.
        self._wakes[api] = self._wakes.get(api, 0) + 1
        woken = self._appended.pop(api, None)
        if woken is not None:
            woken.set()

    async def _trim(self, api: str, upto: int) -> None:
        """Drop events beyond retention, except those a group still holds or buried."""

        def trim(tx: Tx) -> None:
            self._outbox.forget(tx, api, upto)
            tx.execute(
                "DELETE FROM bus_events WHERE api = ? AND seq <= ?"
                " AND seq NOT IN (SELECT seq FROM bus_claims WHERE api = ?)"
                " AND seq NOT IN (SELECT seq FROM bus_dead_letters WHERE api = ?)",
                (api, upto, api, api),
            )

        await self.store.write(trim)

    # -- reading -------------------------------------------------------------------
    def parse_id(self, event_id: str) -> object | None:
        return int(event_id) if ID_RE.fullmatch(event_id) else None

    async def head(self, api: str) -> object:
        return await self._head(api)

    async def _head(self, api: str) -> int:
        known = self._heads.get(api)
        if known is None:
            known = self._heads[api] = await self.store.lookup(functools.partial(self._outbox.head, api=api))
        return known

    async def read(
        self, api: str, after: object | None, types: Sequence[str], reader: Reader, limit: int, wait: float
    ) -> tuple[list[events_pb2.Event], object]:
        cursor = int(after) if isinstance(after, int) else 0
        deadline = time.monotonic() + wait
        while True:
            appended = self._appended.setdefault(api, asyncio.Event())
            head = await self._head(api)
            if head > cursor:
                rows = await self.store.read(
                    functools.partial(_select, api=api, after=cursor, types=types, reader=reader, limit=limit)
                )
                if rows:
                    return [_event(row) for row in rows], int(rows[-1]["seq"])
                cursor = head  # nothing for this reader up to the head
            if not await _wait(appended, deadline - time.monotonic()):
                return [], cursor

    # -- listener groups -------------------------------------------------------------
    async def claim(
        self,
        group: GroupRef,
        start: object | None,
        member: str,
        limit: int,
        wait: float,
        visibility: float,
        acked: Sequence[str] = (),
    ) -> list[Delivery]:
        deadline = time.monotonic() + wait
        acking = [int(event_id) for event_id in acked]
        claim = functools.partial(
            self._claim, group=group, start=start, member=member, limit=limit, visibility=visibility
        )
        place = (group.api, group.key)
        while True:
            appended = self._appended.setdefault(group.api, asyncio.Event())
            wakes = self._wakes.get(group.api, 0)
            next_expiry = None
            if acking or self._quiet.get(place) != wakes:
                head = await self._head(group.api)
                work = functools.partial(claim, reader=group.reader, head=head, acked=acking)
                claimed, next_expiry = await self.store.quick_write(work)
                acking = []  # committed with this claim
                if claimed:
                    self._quiet.pop(place, None)
                    return claimed
                if next_expiry is None:
                    self._quiet[place] = wakes
                else:
                    self._quiet.pop(place, None)
            # else nothing was committed, replayed or claimed since the group found nothing: a
            # member idle between events costs no transaction when its wait runs out.
            until = deadline if next_expiry is None else min(deadline, time.monotonic() + next_expiry)
            if not await _wait(appended, until - time.monotonic()) and time.monotonic() >= deadline:
                return []

    def _claim(
        self,
        tx: Tx,
        group: GroupRef,
        start: object | None,
        member: str,
        limit: int,
        visibility: float,
        reader: Reader,
        head: int,
        acked: Sequence[int],
    ) -> tuple[list[Delivery], float | None]:
        now = time.time()
        _delete_claims(tx, group, acked)
        tx.execute(
            "INSERT INTO bus_groups (api, group_key, cursor) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (group.api, group.key, int(start) if isinstance(start, int) else 0),
        )
        expired = tx.fetchall(
            "SELECT e.*, c.attempts FROM bus_claims c JOIN bus_events e ON e.api = c.api AND e.seq = c.seq"
            " WHERE c.api = ? AND c.group_key = ? AND c.deadline <= ? ORDER BY c.seq LIMIT ?",
            (group.api, group.key, now, limit),
        )
        for row in expired:
            tx.execute(
                "UPDATE bus_claims SET member = ?, deadline = ?, attempts = attempts + 1"
                " WHERE api = ? AND group_key = ? AND seq = ?",
                (member, now + visibility, group.api, group.key, row["seq"]),
            )
        if expired:
            return [Delivery(_event(r), int(r["attempts"]) + 1) for r in expired], None
        cursor_row = tx.fetchone(
            "SELECT cursor FROM bus_groups WHERE api = ? AND group_key = ?", (group.api, group.key)
        )
        cursor = int(cursor_row["cursor"]) if cursor_row else 0
        rows = _select(tx, group.api, cursor, group.types, reader, limit) if head > cursor else []
        if rows:
            seqs = [row["seq"] for row in rows]
            # One statement for the batch: per-row round trips into SQLite cost more than the rows.
            tx.execute(
                "INSERT INTO bus_claims (api, group_key, seq, member, deadline, attempts)"
                f" SELECT api, ?, seq, ?, ?, 1 FROM bus_events WHERE api = ? AND seq IN ({_marks(seqs)})",
                (group.key, member, now + visibility, group.api, *seqs),
            )
        new_cursor = int(rows[-1]["seq"]) if rows else head
        if new_cursor > cursor:
            tx.execute(
                "UPDATE bus_groups SET cursor = ? WHERE api = ? AND group_key = ?",
                (new_cursor, group.api, group.key),
            )
        if rows:
            return [Delivery(_event(r), 1) for r in rows], None
        soonest = tx.fetchone(
            "SELECT MIN(deadline) AS deadline FROM bus_claims WHERE api = ? AND group_key = ?",
            (group.api, group.key),
        )
        expiry = soonest["deadline"] if soonest else None
        return [], None if expiry is None else max(0.0, float(expiry) - now)

    async def ack(self, group: GroupRef, event_ids: Sequence[str]) -> None:
        if event_ids:
            seqs = [int(event_id) for event_id in event_ids]
            await self.store.quick_write(functools.partial(_delete_claims, group=group, seqs=seqs))

    async def retry_later(self, group: GroupRef, event_id: str, seconds: float) -> None:
        await self.store.quick_write(
            lambda tx: tx.execute(
                "UPDATE bus_claims SET deadline = ? WHERE api = ? AND group_key = ? AND seq = ?",
                (time.time() + seconds, group.api, group.key, int(event_id)),
            )
        )

    async def bury(self, group: GroupRef, delivery: Delivery, reason: str) -> None:
        seq = int(delivery.event.id)

        def bury(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO bus_dead_letters (api, group_key, seq, attempts, reason, dead_time_ns)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (group.api, group.key, seq, delivery.attempts, reason, time.time_ns()),
            )
            tx.execute(
                "DELETE FROM bus_claims WHERE api = ? AND group_key = ? AND seq = ?",
                (group.api, group.key, seq),
            )

        await self.store.write(bury)

    async def dead_letters(self, group: GroupRef, limit: int) -> list[DeadLetter]:
        rows = await self.store.read(
            lambda tx: tx.fetchall(
                "SELECT e.*, d.attempts, d.reason, d.dead_time_ns FROM bus_dead_letters d"
                " JOIN bus_events e ON e.api = d.api AND e.seq = d.seq"
                " WHERE d.api = ? AND d.group_key = ? ORDER BY d.seq LIMIT ?",
                (group.api, group.key, limit),
            )
        )
        return [DeadLetter(_event(r), int(r["attempts"]), r["reason"], int(r["dead_time_ns"])) for r in rows]

    async def groups(self, api: str) -> list[GroupState]:
        return await self.store.read(functools.partial(_group_states, api=api))

    async def replay(self, group: GroupRef, event_ids: Sequence[str]) -> int:
        seqs = [int(i) for i in event_ids if ID_RE.fullmatch(i)]

        def replay(tx: Tx) -> int:
            count = 0
            for seq in seqs:
                if tx.execute(
                    "DELETE FROM bus_dead_letters WHERE api = ? AND group_key = ? AND seq = ?",
                    (group.api, group.key, seq),
                ):
                    # Due at once: the next claim of any member takes it.
                    tx.execute(
                        "INSERT INTO bus_claims (api, group_key, seq, member, deadline, attempts)"
                        " VALUES (?, ?, ?, '', 0, 0)",
                        (group.api, group.key, seq),
                    )
                    count += 1
            return count

        replayed = await self.store.write(replay)
        if replayed:
            self._wake(group.api)
        return replayed

    async def aclose(self) -> None:
        for task in list(self._trims):
            with contextlib.suppress(Exception):
                await task


def _select(
    tx: Tx, api: str, after: int, types: Sequence[str], reader: Reader, limit: int, columns: str = "*"
) -> list[Row]:
    sql = f"SELECT {columns} FROM bus_events WHERE api = ? AND seq > ?"
    params: list[object] = [api, after]
    if types:
        sql += f" AND type IN ({_marks(types)})"
        params.extend(types)
    if reader.scopes is not None:
        sql += f" AND scope IN ({_marks(list(reader.scopes))})"
        params.extend(sorted(reader.scopes))
    if reader.not_from is not None:
        sql += " AND source <> ?"
        params.append(reader.not_from)
    sql += " ORDER BY seq LIMIT ?"
    params.append(limit)
    return tx.fetchall(sql, params)


def _delete_claims(tx: Tx, group: GroupRef, seqs: Sequence[int]) -> None:
    """Acknowledge `seqs`: the group's member handled them."""
    if seqs:
        tx.execute(
            f"DELETE FROM bus_claims WHERE api = ? AND group_key = ? AND seq IN ({_marks(seqs)})",
            (group.api, group.key, *seqs),
        )


def _group_states(tx: Tx, api: str) -> list[GroupState]:
    states = []
    for row in tx.fetchall(
        "SELECT group_key, cursor FROM bus_groups WHERE api = ? ORDER BY group_key", (api,)
    ):
        group = GroupRef.from_key(api, row["group_key"])
        if group is None:
            continue
        cursor = int(row["cursor"])
        waiting = _select(tx, api, cursor, group.types, group.reader, LAG_COUNT_LIMIT, columns="time_ns")
        counts = tx.fetchone(
            "SELECT (SELECT COUNT(*) FROM bus_claims WHERE api = ? AND group_key = ?) AS pending,"
            " (SELECT COUNT(*) FROM bus_dead_letters WHERE api = ? AND group_key = ?) AS dead",
            (api, group.key, api, group.key),
        )
        assert counts is not None
        states.append(
            GroupState(
                group,
                str(cursor) if cursor else "",
                len(waiting),
                int(waiting[0]["time_ns"]) if waiting else None,
                int(counts["pending"]),
                int(counts["dead"]),
            )
        )
    return states


def _marks(values: Sequence[object]) -> str:
    """The placeholders of an IN list of `values`."""
    return ",".join("?" * len(values))


def _event(row: Row) -> events_pb2.Event:
    return to_event(str(row["seq"]), record_of(row))


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` was set within `seconds`."""
    if seconds <= 0:
        return event.is_set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
            return True
    return False
