"""Storage behind a seam one method wide: a backend handles a transaction.

Domain repositories write `fn(tx) -> result` functions in portable SQL
(`?` parameters; types TEXT, INTEGER, BIGINT, DOUBLE PRECISION, BYTEA;
`INSERT ... ON CONFLICT`; no dialect functions) and run them through `Store`:
each call is one transaction, committed whole or rolled back whole, correct
under concurrent writers (a backend retries a transaction that lost a race,
so `fn` must have no effect outside `tx` but `after_commit`). A unique key
taken by a concurrent writer raises `Conflict`.

Backends (SQLite, PostgreSQL) live in `brewmesh.backends`; nothing else
imports a driver.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
Params = Sequence[Any]
Callbacks = list[Callable[[], None]]

log = logging.getLogger(__name__)


def run_after_commit(callbacks: Callbacks) -> None:
    """Run each after-commit callback; one that fails is logged and the rest still run.

    The change is committed whatever a callback does: raising would tell the
    caller it failed, and skip what the other callbacks do (waking the relay,
    keeping caches in step), or leave queued writers unanswered.
    """
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("an after-commit callback failed (the change is committed)")


class Row(Protocol):
    """A result row: columns by name."""

    def __getitem__(self, column: str, /) -> Any: ...


class Tx(Protocol):
    """One transaction: portable SQL with `?` parameters."""

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the event loop once the transaction committed."""
        ...

    def version(self) -> Hashable | None:
        """A token for the store as this transaction sees it (None: the backend cannot tell).

        Two transactions get the same token only if every change committed
        between them was committed by a transaction that got the token too:
        what those transactions remember of the store is still true.
        """
        ...


class Conflict(Exception):
    """A write lost to a concurrent one: a unique key it inserts exists now."""


class StoreUnusable(Exception):
    """The store's file or database cannot be opened, or holds no store (raised by its backend)."""


@dataclass(frozen=True)
class Transaction(Generic[T]):
    """What a backend is asked to run.

    `writes`: it changes data. `small`: a few rows by key, so a backend may
    run it without leaving the event loop. `exclusive`: no other writer may
    run beside it, in any process (schema migrations).
    """

    fn: Callable[[Tx], T]
    writes: bool = False
    small: bool = False
    exclusive: bool = False


class StoreBackend(Protocol):
    """The seam: run one transaction, and close."""

    serial_writes: bool
    """Write transactions run one at a time, across processes (SQLite's database lock): what a
    write reads no concurrent writer can change before it commits."""

    async def handle(self, transaction: Transaction[T]) -> T:
        """Run `transaction.fn` in one transaction; run its after-commit callbacks once committed."""
        ...

    async def aclose(self) -> None: ...


class Store:
    """What services use: reads, lookups and writes over one backend."""

    def __init__(self, backend: StoreBackend, description: str) -> None:
        self.backend = backend
        self.serial_writes = backend.serial_writes
        self.description = description
        """Where the data is, for people (a path, or a URL without its password)."""

    async def read(self, fn: Callable[[Tx], T]) -> T:
        return await self.backend.handle(Transaction(_in_this_context(fn)))

    async def lookup(self, fn: Callable[[Tx], T]) -> T:
        """A read of a few rows by primary key."""
        return await self.backend.handle(Transaction(_in_this_context(fn), small=True))

    async def write(self, fn: Callable[[Tx], T]) -> T:
        return await self.backend.handle(Transaction(_in_this_context(fn), writes=True))

    async def quick_write(self, fn: Callable[[Tx], T]) -> T:
        """A write of a few rows by key."""
        return await self.backend.handle(Transaction(_in_this_context(fn), writes=True, small=True))

    async def migrate(self, migrations: Sequence[Migration]) -> None:
        await self.backend.handle(
            Transaction(lambda tx: apply_migrations(tx, migrations), writes=True, exclusive=True)
        )

    async def close(self) -> None:
        await self.backend.aclose()


def _in_this_context(fn: Callable[[Tx], T]) -> Callable[[Tx], T]:
    """`fn`, run in the caller's context variables wherever the backend runs it.

    A backend may run it on a worker thread, where `run_in_executor` would
    leave the caller's context behind, and with it the trace an event fired
    in `fn` must carry.
    """
    context = contextvars.copy_context()
    return lambda tx: context.run(fn, tx)


@dataclass(frozen=True)
class Migration:
    """One schema step of a component; applied once, in version order."""

    component: str
    version: int
    statements: tuple[str, ...]


def apply_migrations(tx: Tx, migrations: Sequence[Migration]) -> None:
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " component TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (component, version))"
    )
    done = {
        (r["component"], r["version"])
        for r in tx.fetchall("SELECT component, version FROM schema_migrations")
    }
    for migration in sorted(migrations, key=lambda m: (m.component, m.version)):
        if (migration.component, migration.version) in done:
            continue
        for statement in migration.statements:
            tx.execute(statement)
        tx.execute(
            "INSERT INTO schema_migrations (component, version) VALUES (?, ?)",
            (migration.component, migration.version),
        )
