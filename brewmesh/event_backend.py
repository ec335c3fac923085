"""The seam between the bus and where events live (the embedded log, Redis Streams).

Either way an event is first staged in the firing service's own store, in
the transaction of the change it reports (an outbox), with a sequence number
per API taken under that transaction's lock: events of one API commit in
sequence order, so a reader or relay that follows the sequence never skips
one. The embedded backend keeps the outbox as the log itself (`bus_events`);
the Redis backend stages events in `bus_outbox`, relays them to one stream
per API and deletes what it relayed.

Each event carries a `scope`: the namespace of the resource it is about, or
"" for the public catalogue. Readers see an event by the rule of the RPCs
(`Principal.may_read`): admin everything, a partner its own and the public.
Event ids are opaque strings; only the backend that made one parses it.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from google.protobuf import any_pb2

from brewmesh.auth import ADMIN, PUBLIC_SCOPE, Principal
from brewmesh.bus.v1 import events_pb2
from brewmesh.names import COMMON_NAMESPACE
from brewmesh.storage import Migration, Row, Tx

MIGRATIONS = (
    Migration(
        "bus",
        1,
        (
            "CREATE TABLE bus_heads (api TEXT PRIMARY KEY, last_seq BIGINT NOT NULL)",
            "CREATE TABLE bus_events ("
            " api TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL, scope TEXT NOT NULL,"
            " payload BYTEA NOT NULL, time_ns BIGINT NOT NULL, source TEXT NOT NULL,"
            " PRIMARY KEY (api, seq))",
            "CREATE INDEX bus_events_by_type ON bus_events (api, type, seq)",
            "CREATE TABLE bus_groups ("
            " api TEXT NOT NULL, group_key TEXT NOT NULL, cursor BIGINT NOT NULL,"
            " PRIMARY KEY (api, group_key))",
            "CREATE TABLE bus_claims ("
            " api TEXT NOT NULL, group_key TEXT NOT NULL, seq BIGINT NOT NULL, member TEXT NOT NULL,"
            " deadline DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL,"
            " PRIMARY KEY (api, group_key, seq))",
            "CREATE INDEX bus_claims_by_deadline ON bus_claims (api, group_key, deadline)",
            "CREATE TABLE bus_dead_letters ("
            " api TEXT NOT NULL, group_key TEXT NOT NULL, seq BIGINT NOT NULL, attempts INTEGER NOT NULL,"
            " reason TEXT NOT NULL, dead_time_ns BIGINT NOT NULL,"
            " PRIMARY KEY (api, group_key, seq))",
        ),
    ),
    Migration(
        "bus",
        2,
        ("ALTER TABLE bus_events ADD COLUMN trace TEXT NOT NULL DEFAULT ''",),
    ),
    Migration(
        "bus",
        3,
        (
            "CREATE TABLE bus_outbox ("
            " api TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL, scope TEXT NOT NULL,"
            " payload BYTEA NOT NULL, time_ns BIGINT NOT NULL, source TEXT NOT NULL, trace TEXT NOT NULL,"
            " PRIMARY KEY (api, seq))",
        ),
    ),
)

PUBLIC = PUBLIC_SCOPE
"""The scope of catalogue events: visible to every caller."""
PLATFORM = COMMON_NAMESPACE
"""The namespace of the mesh's own listener groups (`Bus.listen`): the platform's, so the
admin can list and replay their dead letters through EventBus."""


class EventRecord(NamedTuple):
    """An event as staged: everything but its id.

    A named tuple, not a dataclass: one is made for every event fired and
    every one read back, and a tuple is made in a third of the time.
    """

    api: str
    type: str
    scope: str
    payload: bytes
    time_ns: int
    source: str
    trace: str = ""
    """The W3C `traceparent` of the operation that fired it ("" outside a trace)."""


@dataclass(frozen=True)
class Reader:
    """Whose events a read may return: every scope (None), or these; and none fired by
    `not_from` (a process's own source, when it wants only what others fired)."""

    scopes: frozenset[str] | None
    not_from: str | None = None

    def sees(self, scope: str, source: str) -> bool:
        return (self.scopes is None or scope in self.scopes) and source != self.not_from


EVERYTHING = Reader(None)


def reader_for(principal: Principal) -> Reader:
    """What `principal` may read: the one rule of the RPCs (`Principal.readable_scopes`)."""
    return Reader(principal.readable_scopes())


def namespace_reader(namespace: str) -> Reader:
    """What the owner of `namespace` may read (the platform's namespace: everything)."""
    return reader_for(ADMIN if namespace == COMMON_NAMESPACE else Principal(namespace))


@dataclass(frozen=True)
class GroupRef:
    """A listener group: its API, owner namespace, listener name and the event types it takes.

    Groups of different namespaces never share events, whatever their names.
    """

    api: str
    namespace: str
    listener: str
    types: tuple[str, ...]
    reader: Reader = EVERYTHING
    """What the group's namespace may see (follows from the namespace; not part of the key)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.listener}|{','.join(sorted(self.types))}"

    @classmethod
    def from_key(cls, api: str, key: str) -> GroupRef | None:
        """The group a stored `key` names (None if it is not a group key), seeing what its
        namespace may see."""
        namespace, slash, rest = key.partition("/")
        listener, bar, types = rest.partition("|")
        if not (slash and bar and namespace and listener):
            return None
        return cls(
            api, namespace, listener, tuple(t for t in types.split(",") if t), namespace_reader(namespace)
        )


@dataclass(frozen=True)
class GroupState:
    """How far a listener group is: what `EventBus.ListListenerGroups` and the metrics show."""

    group: GroupRef
    position: str
    """The id of the newest event handed to the group ("" if none yet)."""
    lag_events: int
    """Events the group will be given that it has not been yet (counted up to LAG_COUNT_LIMIT)."""
    oldest_waiting_ns: int | None
    """When the oldest of those was fired (None: the group is caught up)."""
    pending: int
    """Events handed to a member and not yet acknowledged."""
    dead_letters: int


LAG_COUNT_LIMIT = 10_000
"""Lag is counted event by event (only those the group would be given), up to this many."""
NANOS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class Delivery:
    """An event handed to one member of a group; `attempts` counts this one."""

    event: events_pb2.Event
    attempts: int


@dataclass(frozen=True)
class DeadLetter:
    """An event a group gave up on after `attempts` deliveries."""

    event: events_pb2.Event
    attempts: int
    reason: str
    dead_time_ns: int


class EventBackend(Protocol):
    """Where events go after their transaction commits, and how they are read back."""

    crosses_processes: bool
    """Whether events fired by other processes arrive here (else every event is fired in this one)."""

    def stage(self, tx: Tx, record: EventRecord) -> None:
        """Stage the event in `tx`: it exists if and only if `tx` commits."""
        ...

    def parse_id(self, event_id: str) -> object | None:
        """The position after an event id of this backend, or None if it is not one."""
        ...

    async def head(self, api: str) -> object:
        """The position after the newest event of `api`."""
        ...

    async def read(
        self, api: str, after: object | None, types: Sequence[str], reader: Reader, limit: int, wait: float
    ) -> tuple[list[events_pb2.Event], object]:
        """Events after `after` (None: the oldest kept) visible to `reader`, waiting up to
        `wait` seconds for one; and the position to read from next."""
        ...

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
        """Up to `limit` events for one member of `group` (created at `start` if new): those
        other members left unacknowledged for `visibility` seconds first, then new ones.

        `acked`: events the member handled since its last claim, acknowledged first (as by
        `ack`, in the same round trip or transaction as the claim: a member that keeps up
        with its group would otherwise pay two for every batch).
        """
        ...

    async def ack(self, group: GroupRef, event_ids: Sequence[str]) -> None:
        """Acknowledge events the group's member handled (a member's last, as it stops)."""
        ...

    async def retry_later(self, group: GroupRef, event_id: str, seconds: float) -> None:
        """Hand a claimed event out again after `seconds`."""
        ...

    async def bury(self, group: GroupRef, delivery: Delivery, reason: str) -> None:
        """Move a claimed event to the group's dead letters (and acknowledge it)."""
        ...

    async def dead_letters(self, group: GroupRef, limit: int) -> list[DeadLetter]: ...

    async def groups(self, api: str) -> list[GroupState]:
        """Every listener group of `api`, with its position, lag, pending and dead letters."""
        ...

    async def replay(self, group: GroupRef, event_ids: Sequence[str]) -> int:
        """Deliver these dead letters to the group again; how many there were."""
        ...

    async def aclose(self) -> None: ...


# -- the outbox: portable SQL in the firing service's store ------------------------------


LOG_TABLE = "bus_events"
"""The embedded log: every event kept (to retention), read by type."""
OUTBOX_TABLE = "bus_outbox"
"""The Redis bus's outbox: events until relayed, read in sequence only (no index by type, one
page fewer written by every fire)."""
EVENT_COLUMNS = "api, seq, type, scope, payload, time_ns, source, trace"
_HEAD = (
    # Both tables: one sequence per API whichever bus fired it (a store may change bus).
    f"SELECT (SELECT MAX(seq) FROM {OUTBOX_TABLE} WHERE api = ?) AS outboxed,"
    f" (SELECT MAX(seq) FROM {LOG_TABLE} WHERE api = ?) AS logged,"
    " (SELECT last_seq FROM bus_heads WHERE api = ?) AS counted"
)


class Outbox:
    """Stages events in the firing service's store (in `table`), each the next of its API's sequence.

    Taking the next number is the costly part of a fire. On a store whose
    write transactions run one at a time (`Store.serial_writes`: SQLite's
    database lock, across processes), the next number is read from the
    tables, where the fire's row is written anyway; `bus_heads` then only
    holds a floor for an API whose rows were all deleted (kept by
    `forget`). The outbox remembers the last number it took with the
    transaction's `version()`: while a later transaction gets the same
    token, nothing but this outbox's own fires changed the head, and the
    number is taken without reading it. (A fire rolled back after taking
    its number leaves a gap, which readers and the relay pass over.)
    Elsewhere (PostgreSQL) concurrent fires of one API must take
    their numbers in turn, so `bus_heads` holds the counter, its row lock
    ordering them: the outbox remembers the last number it took and claims
    the next with a guarded UPDATE; when another writer took numbers
    meanwhile (another process, or a rolled-back fire) the guard matches no
    row and an upsert says where the sequence is.
    """

    def __init__(self, table: str, serial_writes: bool) -> None:
        assert table in (LOG_TABLE, OUTBOX_TABLE)
        self._serial = serial_writes
        self._last: dict[str, int] = {}
        self._taken: dict[str, tuple[Hashable, int]] = {}
        self._insert = f"INSERT INTO {table} ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        self._insert_unless_taken = self._insert + " ON CONFLICT (api, seq) DO NOTHING"

    def insert(self, tx: Tx, record: EventRecord) -> int:
        """Stage `record` as the next event of its API; its sequence number."""
        if not self._serial:
            seq = self._next_counted(tx, record.api)
            tx.execute(self._insert, self._row(seq, record))
            return seq
        version = tx.version()
        guess = self._next_taken(record.api, version)
        if guess is not None and tx.execute(self._insert_unless_taken, self._row(guess, record)):
            seq = guess
        else:  # unknown, or another Outbox on this store took that number meanwhile: read the head
            seq = self.head(tx, record.api) + 1
            tx.execute(self._insert, self._row(seq, record))
        if version is not None:
            self._taken[record.api] = (version, seq)
        return seq

    def _next_taken(self, api: str, version: Hashable | None) -> int | None:
        """The number after the last this outbox took, if the store is as it left it (see the class)."""
        taken = self._taken.get(api)
        if version is None or taken is None or taken[0] != version:
            return None
        return taken[1] + 1

    @staticmethod
    def _row(seq: int, record: EventRecord) -> tuple[object, ...]:
        return (
            record.api,
            seq,
            record.type,
            record.scope,
            record.payload,
            record.time_ns,
            record.source,
            record.trace,
        )

    def head(self, tx: Tx, api: str) -> int:
        """The last sequence number `api` took (0: none yet)."""
        row = tx.fetchone(_HEAD, (api, api, api))
        assert row is not None
        return max(int(row["outboxed"] or 0), int(row["logged"] or 0), int(row["counted"] or 0))

    def forget(self, tx: Tx, api: str, upto: int) -> None:
        """Before deleting rows of `api` up to `upto`: keep the sequence from going back."""
        if self._serial:  # elsewhere bus_heads counts every number taken
            self.continue_after(tx, api, upto)

    def continue_after(self, tx: Tx, api: str, seq: int) -> None:
        """Number `api`'s next events after `seq` at least."""
        self._taken.pop(api, None)
        tx.execute(
            "INSERT INTO bus_heads (api, last_seq) VALUES (?, ?) ON CONFLICT (api)"
            " DO UPDATE SET last_seq = excluded.last_seq WHERE bus_heads.last_seq < excluded.last_seq",
            (api, seq),
        )

    def _next_counted(self, tx: Tx, api: str) -> int:
        last = self._last.get(api)
        if last is not None and tx.execute(
            "UPDATE bus_heads SET last_seq = ? WHERE api = ? AND last_seq = ?", (last + 1, api, last)
        ):
            seq = last + 1
        else:
            row = tx.fetchone(
                "INSERT INTO bus_heads (api, last_seq) VALUES (?, 1)"
                " ON CONFLICT (api) DO UPDATE SET last_seq = bus_heads.last_seq + 1 RETURNING last_seq",
                (api,),
            )
            assert row is not None
            seq = int(row["last_seq"])
        # A guess for the next fire, whether or not this one commits: a wrong guess only costs the upsert.
        self._last[api] = seq
        return seq


def to_event(event_id: str, record: EventRecord) -> events_pb2.Event:
    event = events_pb2.Event(
        id=event_id, api=record.api, type=record.type, source=record.source, traceparent=record.trace
    )
    # Filled in place: building an Any and a Timestamp first, then copying them in, doubles the
    # cost, and this runs for every event delivered.
    event.payload.ParseFromString(record.payload)
    event.time.seconds, event.time.nanos = divmod(record.time_ns, NANOS_PER_SECOND)
    return event


def record_of(row: Row) -> EventRecord:
    return EventRecord(
        row["api"],
        row["type"],
        row["scope"],
        bytes(row["payload"]),
        int(row["time_ns"]),
        row["source"],
        row["trace"],
    )


def new_record(
    api: str, event_type: str, scope: str, payload: any_pb2.Any, source: str, trace: str = ""
) -> EventRecord:
    return EventRecord(api, event_type, scope, payload.SerializeToString(), time.time_ns(), source, trace)
