"""The PostgreSQL store (psycopg 3): SERIALIZABLE transactions, retried when they lose a race.

Transactions are plain functions of a `Tx`, so they run on worker threads
with a connection each. Every write runs SERIALIZABLE: read-then-write
sequences (find-then-insert, next sequence number) are then as correct as
under SQLite's single writer, and a transaction that lost a race is rolled
back and run again. The portable SQL's `?` parameters become psycopg's `%s`
here, the one place that knows the dialect.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.rows import dict_row

from brewmesh.errors import Unavailable
from brewmesh.storage import Callbacks, Conflict, Params, Row, Transaction, run_after_commit

log = logging.getLogger(__name__)

T = TypeVar("T")
ATTEMPTS = 30
UNIQUE_ATTEMPTS = 5
CONNECT_SECONDS = 10
# Any constant: the advisory lock that makes migrations one at a time across processes.
MIGRATION_LOCK = 0x6272_6577
RETRIED = (errors.SerializationFailure, errors.DeadlockDetected)


@functools.lru_cache(maxsize=1024)
def to_psycopg(sql: str) -> str:
    """Portable SQL (`?` parameters) in psycopg's paramstyle."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PostgresTx:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection
        self.callbacks: Callbacks = []

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._connection.execute(to_psycopg(sql), params).rowcount

    def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._connection.execute(to_psycopg(sql), params).fetchone()
        return row

    def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self._connection.execute(to_psycopg(sql), params).fetchall())

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def version(self) -> None:
        return None  # concurrent writers: no token could vouch for what another has not yet committed


class PostgresBackend:
    """A pool of `connections` worker threads, each with its own connection."""

    serial_writes = False

    def __init__(self, url: str, connections: int = 8) -> None:
        self.url = url
        self._executor = ThreadPoolExecutor(connections, thread_name_prefix="postgres")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[psycopg.Connection[Any]] = []

    async def handle(self, transaction: Transaction[T]) -> T:
        loop = asyncio.get_running_loop()
        # Shielded: a started write runs to its end, so after-commit callbacks are never skipped.
        future = loop.run_in_executor(self._executor, self._run, transaction)
        result, callbacks = await (asyncio.shield(future) if transaction.writes else future)
        run_after_commit(callbacks)
        return result

    def _run(self, transaction: Transaction[T]) -> tuple[T, Callbacks]:
        begin = "BEGIN ISOLATION LEVEL " + (
            "SERIALIZABLE" if transaction.writes else "REPEATABLE READ READ ONLY"
        )
        for attempt in range(1, ATTEMPTS + 1):
            connection = self._connection()
            try:
                return self._attempt(connection, begin, transaction)
            except RETRIED:
                if attempt == ATTEMPTS:
                    raise
                # Back off a little, at random, so racing writers do not collide again.
                time.sleep(random.uniform(0, 0.002 * attempt))
            except errors.UniqueViolation as error:
                # A concurrent writer took the key: run again, so code that looks first
                # sees it (and answers ALREADY_EXISTS); a blind insert that still clashes conflicts.
                if attempt >= UNIQUE_ATTEMPTS:
                    raise Conflict(str(error)) from error
            except psycopg.OperationalError as error:
                self._drop_connection()
                raise Unavailable(f"the PostgreSQL store is unavailable: {error}".strip()) from error
        raise AssertionError("unreachable")

    @staticmethod
    def _attempt(
        connection: psycopg.Connection[Any], begin: str, transaction: Transaction[T]
    ) -> tuple[T, Callbacks]:
        if transaction.exclusive:
            # Locked before BEGIN: the transaction's snapshot must see what the lock's last holder did.
            connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            connection.execute(begin)
            tx = _PostgresTx(connection)
            try:
                result = transaction.fn(tx)
            except BaseException:
                if not connection.closed:
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            if transaction.exclusive and not connection.closed:
                connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        return result, tx.callbacks

    def _connection(self) -> psycopg.Connection[Any]:
        connection: psycopg.Connection[Any] | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            try:
                connection = psycopg.connect(
                    self.url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_SECONDS
                )
            except psycopg.OperationalError as error:
                raise Unavailable(f"cannot connect to the PostgreSQL store: {error}".strip()) from error
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
