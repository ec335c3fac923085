"""The Redis Streams bus: one stream per API, listener groups as consumer groups.

Events are staged in the firing service's store (the outbox, same
transaction as the change) and relayed here in sequence order by a Lua
script that also records the last relayed sequence of the API, atomically:
a relay killed after XADD but before it deleted its outbox rows skips them
the next time, so nothing is lost and nothing published twice. Readers
block in Redis (XREAD / XREADGROUP BLOCK); a member's unacknowledged events
are taken over by another (XAUTOCLAIM) once idle for the visibility
timeout; a group's dead letters and replays are streams of its own, read in
the same XREADGROUP as the API's stream. Streams are capped (MAXLEN ~).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import struct
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from brewmesh.bus.v1 import events_pb2
from brewmesh.errors import Unavailable
from brewmesh.event_backend import (
    EVENT_COLUMNS,
    LAG_COUNT_LIMIT,
    LOG_TABLE,
    OUTBOX_TABLE,
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

log = logging.getLogger(__name__)

ID_RE = re.compile(r"(?P<ms>[0-9]{1,15})-(?P<seq>[0-9]{1,15})")
PREFIX = "brewmesh:"
RELAY_BATCH = 500
PRUNE_EVERY = 1000
FRESH_LIMIT = 4 * RELAY_BATCH
RELAY_GATHER_SECONDS = 0.002
SWEEP_SECONDS = 1.0
"""How often, at most, the relay looks in the outbox of an API this process fired nothing of
lately (for what another instance, or a crash, left unrelayed)."""
PRUNE_WHEN_QUIET_SECONDS = 1.0
PRUNE_AT_STOP_SECONDS = 2.0
RELAY_RETRY_SECONDS = 1.0
BLOCK_SLICE_SECONDS = 2.0
# Above the longest blocking read: redis-py's default (5 s) would cut a blocked XREAD short.
SOCKET_SECONDS = 10.0

# KEYS: stream, relayed marker. ARGV[1]: maxlen; ARGV[2]: the batch, a frame per event (see
# `relay_frame`): one argument for the whole batch, because packing each argument is most of
# what relaying an event costs the firing process (Redis has the CPU to spare for unpacking).
RELAY_SCRIPT = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local batch = ARGV[2]
local at = 1
while at <= #batch do
  local seq, head_length, payload_length, head_at = struct.unpack('>I8I4I4', batch, at)
  local payload_at = head_at + head_length
  at = payload_at + payload_length
  if seq > last then
    local head = string.sub(batch, head_at, payload_at - 1)
    local payload = string.sub(batch, payload_at, at - 1)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'h', head, 'payload', payload)
    last = seq
  end
end
redis.call('SET', KEYS[2], tostring(last))
return last
"""
_FRAME = struct.Struct(">QII")
"""A relayed event's frame: its sequence number, then the lengths of its head and payload,
which follow."""
HEAD_FIELD = b"h"
"""An entry's type, scope, source, time (ns) and traceparent, NUL-separated (none holds a NUL:
each is a checked name, a host:pid/service, digits or hex)."""


def entry_head(record: EventRecord) -> bytes:
    """What an entry's `h` field holds for `record`."""
    return f"{record.type}\0{record.scope}\0{record.source}\0{record.time_ns}\0{record.trace}".encode()


def relay_frame(seq: int, record: EventRecord) -> bytes:
    """`record`, as the relay script reads it from a batch."""
    head = entry_head(record)
    return _FRAME.pack(seq, len(head), len(record.payload)) + head + record.payload


def _source_head(source: str | None) -> bytes | None:
    """What an entry's head holds from its source on, for `_fired_by` (None: no source)."""
    return None if source is None else b"\0" + source.encode() + b"\0"


def _fired_by(flat: Sequence[bytes], source_head: bytes) -> bool:
    """Whether an entry (its fields as XREAD sends them: name, value, ...) is of the source
    `source_head` names, read from its head as is: a process passing over its own events (as
    observers do, told of them at commit) need not parse them."""
    if len(flat) < 2 or flat[0] != HEAD_FIELD:  # the relay writes the head first
        return False
    head = flat[1]
    type_end = head.find(b"\0")
    return head.startswith(source_head, head.find(b"\0", type_end + 1))


def _as_sent(response: Any, **options: Any) -> Any:
    """A reply as the parser read it: XREAD's entries as flat field lists, not a dict each."""
    return response


def _streams_entries(reply: Any) -> list[Any]:
    """Each stream's entries in an XREAD reply as sent: a map of stream to entries in RESP3
    (redis-py's default), a list of [stream, entries] pairs in RESP2 (`?protocol=2` in the bus
    URL); no reply at all when a blocking read found nothing."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        return list(reply.values())
    return [entries for _, entries in reply]


def _entry_record(api: str, fields: Mapping[bytes, bytes]) -> EventRecord:
    """The event an entry of `api`'s stream holds, in either layout: `h`, or one field each
    as entries relayed before it (and dead letters) have them."""
    head = fields.get(HEAD_FIELD)
    if head is not None:
        event_type, scope, source, time_ns, trace = head.decode().split("\0")
        return EventRecord(api, event_type, scope, fields[b"payload"], int(time_ns), source, trace)
    return EventRecord(
        api,
        fields[b"type"].decode(),
        fields.get(b"scope", b"").decode(),
        fields[b"payload"],
        int(fields[b"time_ns"]),
        fields[b"source"].decode(),
        fields.get(b"trace", b"").decode(),
    )


def stream_key(api: str) -> str:
    return f"{PREFIX}events:{api}"


def relayed_key(api: str) -> str:
    return f"{PREFIX}relayed:{api}"


def dead_key(group: GroupRef) -> str:
    return f"{PREFIX}dead:{group.api}:{group.key}"


def replay_key(group: GroupRef) -> str:
    return f"{PREFIX}replay:{group.api}:{group.key}"


P = ParamSpec("P")
R = TypeVar("R")


def _unavailable_when_redis_fails(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """A Redis that cannot be reached is UNAVAILABLE to callers (and retried by listeners)."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as error:
            raise Unavailable(f"the Redis bus did not answer ({type(error).__name__}: {error})") from error

    return guarded


class RedisEventBackend:
    """Events on Redis Streams; the outbox relay for the APIs this process serves."""

    crosses_processes = True

    def __init__(self, url: str, store: Store, served: Sequence[str], retention: int) -> None:
        self.store = store
        self._outbox = Outbox(OUTBOX_TABLE, store.serial_writes)
        self.retention = retention
        self._served = tuple(served)
        # Typed loosely: redis-py's reply types are unions of every decoding mode.
        self._redis: Any = redis.Redis.from_url(url, decode_responses=False, socket_timeout=SOCKET_SECONDS)
        # read() takes XREAD's reply as sent, and passes over most entries unparsed (redis-py
        # would make a dict of each).
        self._redis.set_response_callback("XREAD", _as_sent)
        self._relay_script = self._redis.register_script(RELAY_SCRIPT)
        self._relay_due = asyncio.Event()
        self._relay_task: asyncio.Task[None] | None = None
        self._groups_made: set[tuple[str, str]] = set()
        # Replayed events are delivered with their original id; acking them acks their replay entry.
        self._replayed: dict[tuple[str, str], bytes] = {}
        self._relayed: dict[str, int] = {}
        self._fresh: dict[str, dict[int, EventRecord]] = {}
        self._swept: dict[str, float] = {}
        self._unpruned = 0
        self._last_reclaim: dict[str, float] = {}

    @_unavailable_when_redis_fails
    async def start(self) -> None:
        """Check the connection, learn how far each API was relayed, then relay what is left."""
        for api in self._served:
            marker = await self._redis.get(relayed_key(api))
            self._relayed[api] = int(marker or 0)
            await self.store.write(functools.partial(self._catch_up, api=api, relayed=self._relayed[api]))
        self._relay_task = asyncio.get_running_loop().create_task(self._relay_forever())
        self._relay_due.set()

    def _catch_up(self, tx: Tx, api: str, relayed: int) -> None:
        """A store behind Redis's marker (restored from an older backup, or new beside a Redis
        that relayed for another): its next events would take numbers the relay has passed, and
        be skipped as relayed. They are numbered after the marker instead."""
        head = self._outbox.head(tx, api)
        if head < relayed:
            self._outbox.continue_after(tx, api, relayed)
            tx.after_commit(
                functools.partial(
                    log.warning,
                    "the store's events of %s end at %d but Redis relayed up to %d: is the store"
                    " older than the bus? New events are numbered from %d",
                    api,
                    head,
                    relayed,
                    relayed + 1,
                )
            )

    # -- writing: outbox, then relay ---------------------------------------------------
    def stage(self, tx: Tx, record: EventRecord) -> None:
        seq = self._outbox.insert(tx, record)
        tx.after_commit(functools.partial(self._committed, record.api, seq, record))

    def _committed(self, api: str, seq: int, record: EventRecord) -> None:
        # Kept in memory so the relay need not read back what was just written; the
        # outbox remains the truth (after a crash, or for another process's events).
        fresh = self._fresh.setdefault(api, {})
        if len(fresh) < FRESH_LIMIT:  # else Redis is behind: the outbox holds them
            fresh[seq] = record
        self._relay_due.set()

    async def _relay_forever(self) -> None:
        while True:
            await self._wait_for_commits()
            # Let the commits of the next moment join this batch: one script call for many events.
            await asyncio.sleep(RELAY_GATHER_SECONDS)
            try:
                while await self._relay_once():
                    pass
            except (RedisError, OSError) as error:
                log.warning(
                    "relaying events to Redis failed (%s); retrying in %.0f s", error, RELAY_RETRY_SECONDS
                )
                await asyncio.sleep(RELAY_RETRY_SECONDS)
                self._relay_due.set()
            except Exception:
                log.exception("relaying events to Redis failed; retrying")
                await asyncio.sleep(RELAY_RETRY_SECONDS)
                self._relay_due.set()

    async def _wait_for_commits(self) -> None:
        """Until an event committed; meanwhile, once quiet, delete what was relayed."""
        if not self._unpruned:
            await self._relay_due.wait()
        else:
            try:
                async with asyncio.timeout(PRUNE_WHEN_QUIET_SECONDS):
                    await self._relay_due.wait()
            except TimeoutError:
                await self._prune()
                await self._relay_due.wait()
        self._relay_due.clear()

    async def _relay_once(self) -> bool:
        """Relay one batch of each API's outbox; whether there may be more.

        Rows are deleted in bulk later (`_prune`): Redis's marker, not the
        outbox, says what was relayed, so deleting is housekeeping, off the
        path of every event.
        """
        more = False
        for api in self._served:
            batch = await self._next_batch(api)
            if not batch:
                continue
            frames = b"".join([relay_frame(seq, r) for seq, r in batch])
            last = await self._relay_script(
                keys=[stream_key(api), relayed_key(api)], args=[self.retention, frames]
            )
            self._relayed[api] = max(int(last), batch[-1][0])
            self._unpruned += len(batch)
            more = more or len(batch) == RELAY_BATCH
        if self._unpruned >= PRUNE_EVERY:
            await self._prune()
        return more

    async def _next_batch(self, api: str) -> list[tuple[int, EventRecord]]:
        """The next events of `api` in sequence from the last relayed: from memory when this
        process committed all of them, else from the outbox."""
        after = self._relayed.get(api, 0)
        fresh = self._fresh.get(api, {})
        for seq in [s for s in fresh if s <= after]:
            del fresh[seq]
        if not fresh:
            # Nothing of ours to relay: a look in the outbox now and then, not on every round
            # (each round follows a commit of some API: reading every idle API's outbox on each
            # would cost a lookup per served API per event).
            now = time.monotonic()
            if now < self._swept.get(api, -SWEEP_SECONDS) + SWEEP_SECONDS:
                return []
            self._swept[api] = now
        batch: list[tuple[int, EventRecord]] = []
        while (record := fresh.get(after + len(batch) + 1)) is not None and len(batch) < RELAY_BATCH:
            batch.append((after + len(batch) + 1, record))
        if (batch and len(batch) == len(fresh)) or len(batch) == RELAY_BATCH:
            return batch
        # A gap (another process's event, or one left by a crash): the outbox has them all.
        # By key, from the newest relayed on: a lookup, no hand-off to a reader thread.
        rows = await self.store.lookup(_outbox_reader(api, after))
        return [(int(row["seq"]), record_of(row)) for row in rows]

    async def _prune(self) -> None:
        relayed = dict(self._relayed)
        self._unpruned = 0

        def prune(tx: Tx) -> None:
            for api, last in relayed.items():
                self._outbox.forget(tx, api, last)
                for table in (OUTBOX_TABLE, LOG_TABLE):
                    tx.execute(f"DELETE FROM {table} WHERE api = ? AND seq <= ?", (api, last))

        await self.store.write(prune)

    # -- reading ---------------------------------------------------------------------
    def parse_id(self, event_id: str) -> object | None:
        return event_id if ID_RE.fullmatch(event_id) else None

    @_unavailable_when_redis_fails
    async def head(self, api: str) -> object:
        newest = await self._redis.xrevrange(stream_key(api), count=1)
        return newest[0][0].decode() if newest else "0-0"

    @_unavailable_when_redis_fails
    async def read(
        self, api: str, after: object | None, types: Sequence[str], reader: Reader, limit: int, wait: float
    ) -> tuple[list[events_pb2.Event], object]:
        cursor = str(after) if after is not None else "0-0"
        block = max(1, int(min(wait, BLOCK_SLICE_SECONDS) * 1000)) if wait > 0 else None
        reply = await self._redis.xread({stream_key(api): cursor}, count=limit, block=block)
        events: list[events_pb2.Event] = []
        passed_over = _source_head(reader.not_from)
        for entries in _streams_entries(reply):
            for entry_id, flat in entries:
                if passed_over is not None and _fired_by(flat, passed_over):
                    continue
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                record = _entry_record(api, fields)  # parsed once: for the check and the event
                if _wanted(record, types, reader):
                    events.append(to_event(entry_id.decode(), record))
            if entries:
                cursor = entries[-1][0].decode()
        return events, cursor

    # -- listener groups -------------------------------------------------------------
    async def _ensure_group(self, group: GroupRef, start: object | None) -> None:
        if (group.api, group.key) in self._groups_made:
            return
        for key, at in (
            (stream_key(group.api), str(start) if start is not None else "0"),
            (replay_key(group), "0"),
        ):
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists, and keeps its place
                await self._redis.xgroup_create(key, group.key, id=at, mkstream=True)
        self._groups_made.add((group.api, group.key))

    @_unavailable_when_redis_fails
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
        await self._ensure_group(group, start)
        visibility_ms = max(1, int(visibility * 1000))
        now = time.monotonic()
        if now >= self._last_reclaim.get(group.key, 0.0) + visibility / 2:
            # Idle entries can only appear a visibility timeout after delivery: look twice per timeout.
            self._last_reclaim[group.key] = now
            await self._ack(group, acked)
            acked = ()
            reclaimed = await self._reclaim(group, member, limit, visibility_ms)
            if reclaimed:
                return reclaimed
        block = max(1, int(min(wait, visibility, BLOCK_SLICE_SECONDS) * 1000))
        streams = {stream_key(group.api): ">", replay_key(group): ">"}
        if acked:  # one round trip: the acknowledgements, then the blocking read
            async with self._redis.pipeline(transaction=False) as pipe:
                replays = self._queue_acks(pipe, group, acked)
                pipe.xreadgroup(group.key, member, streams, count=limit, block=block)
                reply = (await pipe.execute())[-1]
            self._forget(replays)
        else:
            reply = await self._redis.xreadgroup(group.key, member, streams, count=limit, block=block)
        deliveries: list[Delivery] = []
        unwanted: list[bytes] = []
        for key, entries in reply or ():
            replayed = key.decode() == replay_key(group)
            for entry_id, fields in entries:
                if replayed:
                    deliveries.append(self._replayed_delivery(group, entry_id, fields))
                elif _wanted(record := _entry_record(group.api, fields), group.types, group.reader):
                    deliveries.append(Delivery(to_event(entry_id.decode(), record), 1))
                else:
                    unwanted.append(entry_id)
        if unwanted:
            await self._redis.xack(stream_key(group.api), group.key, *unwanted)
        return deliveries

    async def _reclaim(self, group: GroupRef, member: str, limit: int, visibility_ms: int) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for key in (stream_key(group.api), replay_key(group)):
            reply = await self._redis.xautoclaim(key, group.key, member, visibility_ms, "0-0", count=limit)
            entries = [e for e in reply[1] if e and e[1]]
            if not entries:
                continue
            counts = await self._delivery_counts(key, group, member, entries)
            for entry_id, fields in entries:
                if key == replay_key(group):
                    replayed = self._replayed_delivery(group, entry_id, fields)
                    deliveries.append(Delivery(replayed.event, counts.get(entry_id, 1)))
                else:
                    deliveries.append(
                        Delivery(_event(group.api, entry_id.decode(), fields), counts.get(entry_id, 1))
                    )
        return deliveries

    async def _delivery_counts(
        self, key: str, group: GroupRef, member: str, entries: Sequence[Any]
    ) -> dict[bytes, int]:
        first, last = entries[0][0], entries[-1][0]
        pending = await self._redis.xpending_range(key, group.key, first, last, len(entries), member)
        return {p["message_id"]: int(p["times_delivered"]) for p in pending}

    def _replayed_delivery(self, group: GroupRef, entry_id: bytes, fields: Mapping[bytes, bytes]) -> Delivery:
        original = fields[b"id"].decode()
        self._replayed[(group.key, original)] = entry_id
        return Delivery(_event(group.api, original, fields), 1)

    @_unavailable_when_redis_fails
    async def ack(self, group: GroupRef, event_ids: Sequence[str]) -> None:
        await self._ack(group, event_ids)

    async def _ack(self, group: GroupRef, event_ids: Sequence[str]) -> None:
        if event_ids:
            async with self._redis.pipeline(transaction=False) as pipe:
                replays = self._queue_acks(pipe, group, event_ids)
                await pipe.execute()
            self._forget(replays)

    def _queue_acks(self, pipe: Any, group: GroupRef, event_ids: Sequence[str]) -> list[tuple[str, str]]:
        """XACK `event_ids` in `pipe`; a replayed one's replay entry is acknowledged and deleted.
        The replayed ones: forgotten once `pipe` ran (if it fails, a retry acknowledges them again)."""
        replayed = [(group.key, i) for i in event_ids if (group.key, i) in self._replayed]
        plain = [i for i in event_ids if (group.key, i) not in self._replayed]
        if plain:
            pipe.xack(stream_key(group.api), group.key, *plain)
        if replayed:
            entries = [self._replayed[key] for key in replayed]
            pipe.xack(replay_key(group), group.key, *entries)
            pipe.xdel(replay_key(group), *entries)
        return replayed

    def _forget(self, replayed: Sequence[tuple[str, str]]) -> None:
        for key in replayed:
            self._replayed.pop(key, None)

    async def retry_later(self, group: GroupRef, event_id: str, seconds: float) -> None:
        # Pending entries are taken over once idle for the visibility timeout; leaving it
        # pending is the retry. (XCLAIM with IDLE could shorten it; the timeout is the bound.)
        return None

    @_unavailable_when_redis_fails
    async def bury(self, group: GroupRef, delivery: Delivery, reason: str) -> None:
        event = delivery.event
        fields = {
            "id": event.id,
            "type": event.type,
            "payload": event.payload.SerializeToString(),
            "time_ns": str(event.time.ToNanoseconds()),
            "source": event.source,
            "trace": event.traceparent,  # a replay still joins the trace of the change that fired it
            "attempts": str(delivery.attempts),
            "reason": reason[:1000],
            "dead_time_ns": str(time.time_ns()),
        }
        await self._redis.xadd(dead_key(group), fields, maxlen=self.retention, approximate=True)
        await self.ack(group, [event.id])

    @_unavailable_when_redis_fails
    async def groups(self, api: str) -> list[GroupState]:
        try:
            infos = await self._redis.xinfo_groups(stream_key(api))
        except ResponseError:  # no such stream: nothing fired, no group yet
            return []
        states = []
        for info in sorted(infos, key=lambda i: i["name"]):
            group = GroupRef.from_key(api, info["name"].decode())
            if group is not None:
                states.append(await self._group_state(group, info))
        return states

    async def _group_state(self, group: GroupRef, info: Mapping[str, Any]) -> GroupState:
        position = info["last-delivered-id"].decode()
        # Counted entry by entry: Redis's own `lag` counts every entry, other namespaces' too.
        entries = await self._redis.xrange(stream_key(group.api), f"({position}", "+", count=LAG_COUNT_LIMIT)
        records = (_entry_record(group.api, fields) for _, fields in entries)
        waiting = [record for record in records if _wanted(record, group.types, group.reader)]
        pending = int(info["pending"])
        with contextlib.suppress(ResponseError):  # no replay stream yet
            replays = await self._redis.xinfo_groups(replay_key(group))
            pending += sum(int(r["pending"]) for r in replays if r["name"].decode() == group.key)
        return GroupState(
            group,
            "" if position == "0-0" else position,
            len(waiting),
            waiting[0].time_ns if waiting else None,
            pending,
            int(await self._redis.xlen(dead_key(group))),
        )

    async def dead_letters(self, group: GroupRef, limit: int) -> list[DeadLetter]:
        entries = await self._redis.xrange(dead_key(group), count=limit)
        return [
            DeadLetter(
                _event(group.api, fields[b"id"].decode(), fields),
                int(fields[b"attempts"]),
                fields[b"reason"].decode(),
                int(fields[b"dead_time_ns"]),
            )
            for _, fields in entries
        ]

    @_unavailable_when_redis_fails
    async def replay(self, group: GroupRef, event_ids: Sequence[str]) -> int:
        wanted = set(event_ids)
        await self._ensure_group(group, None)
        count = 0
        for entry_id, fields in await self._redis.xrange(dead_key(group)):
            if fields[b"id"].decode() in wanted:
                await self._redis.xadd(replay_key(group), {k: v for k, v in fields.items()})
                await self._redis.xdel(dead_key(group), entry_id)
                count += 1
        return count

    async def aclose(self) -> None:
        if self._relay_task is not None:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
        try:
            async with asyncio.timeout(PRUNE_AT_STOP_SECONDS):  # a stop must not wait on a lost Redis
                await self._prune_at_stop()
        except Exception:  # housekeeping: the next prune deletes them
            log.warning("could not delete relayed events from the outbox at stop", exc_info=True)
        await self._redis.aclose()

    async def _prune_at_stop(self) -> None:
        """Delete what Redis says was relayed (the relay may have stopped between its script's
        answer and noting it), so a restart's relay does not read it again."""
        for api in self._served:
            marker = int(await self._redis.get(relayed_key(api)) or 0)
            self._relayed[api] = max(self._relayed.get(api, 0), marker)
        await self._prune()


def _outbox_reader(api: str, after: int) -> Callable[[Tx], list[Row]]:
    def read(tx: Tx) -> list[Row]:
        # The log's table too: the outbox before migration 3 of the bus (an upgraded store's
        # unrelayed events), or a log kept while the bus was embedded.
        return tx.fetchall(
            f"SELECT {EVENT_COLUMNS} FROM {OUTBOX_TABLE} WHERE api = ? AND seq > ?"
            f" UNION ALL SELECT {EVENT_COLUMNS} FROM {LOG_TABLE} WHERE api = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (api, after, api, after, RELAY_BATCH),
        )

    return read


def _wanted(record: EventRecord, types: Sequence[str], reader: Reader) -> bool:
    if types and record.type not in types:
        return False
    return reader.sees(record.scope, record.source)


def _event(api: str, event_id: str, fields: Mapping[bytes, bytes]) -> events_pb2.Event:
    return to_event(event_id, _entry_record(api, fields))
