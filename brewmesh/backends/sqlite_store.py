"""The SQLite store: one file, WAL, one writer thread and a few reader threads.

Database work never stalls the event loop, except lookups and small writes
by key, which cost less on the loop than the hand-off to a thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from brewmesh.storage import (
    Callbacks,
    Conflict,
    Params,
    Row,
    StoreUnusable,
    Transaction,
    Tx,
    run_after_commit,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
BEGIN_WRITE = "BEGIN IMMEDIATE"
# A checkpoint fsyncs, which slows the commits around it: do it after this
# many write transactions (SQLite's own default is every ~1000 pages), or
# after this long with anything unwritten.
CHECKPOINT_WRITES = 1000
CHECKPOINT_SECONDS = 10.0
RESTART_FRAMES = 8192
"""A WAL this long (32 MiB of 4 KiB pages) is started over from its top by the checkpoint:
see `_checkpoint`."""
WAL_LIMIT_BYTES = 64 << 20
"""A WAL started over is cut back to this size (SQLite's journal_size_limit)."""
LOCK_WAIT_MS = 10_000
YIELD_EVERY_SECONDS = 0.001
"""Small writes on the loop (which never suspend) give the loop a turn at least this often: a
tight loop of them holds everything else up this long at most (see `_share_the_loop`)."""
UNIQUE_ERRORS = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})


class _SqliteTx:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.callbacks: Callbacks = []

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._connection.execute(sql, params).rowcount

    def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._connection.execute(sql, params).fetchone()
        return row

    def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self._connection.execute(sql, params).fetchall())

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def version(self) -> tuple[int, int]:
        # data_version changes once another connection (of any process) committed; this
        # connection's own commits leave it as is. The connections live as long as the backend.
        row = self._connection.execute("PRAGMA data_version").fetchone()
        return id(self._connection), int(row[0])


@dataclass(frozen=True)
class _QueuedWrite(Generic[T]):
    fn: Callable[[Tx], T]
    future: asyncio.Future[T]


_Outcome = tuple[_QueuedWrite[Any], object, BaseException | None, Callbacks]
"""A queued write, its result or error, and its after-commit callbacks."""


class SqliteBackend:
    """SQLite in WAL mode: one writer thread, `readers` reader threads."""

    serial_writes = True

    def __init__(
        self,
        path: Path,
        readers: int = 4,
        checkpoint_writes: int = CHECKPOINT_WRITES,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        self.path = path
        self._checkpoint_writes = checkpoint_writes
        self._restart_frames = restart_frames
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writes_since_checkpoint = 0
        self._checkpoint_due = threading.Event()
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()
        self._loop_reads: sqlite3.Connection | None = None
        self._loop_writes: sqlite3.Connection | None = None
        self._writes_queued = 0
        self._restart_due = False
        self._yielded_at = 0.0  # time.monotonic() as a small write on the loop last gave it a turn
        self._queued: collections.deque[_QueuedWrite[Any]] = collections.deque()

    async def handle(self, transaction: Transaction[T]) -> T:
        if not transaction.writes:
            if transaction.small:
                return self._lookup(transaction.fn)
            loop = asyncio.get_running_loop()
            result, _ = await loop.run_in_executor(self._readers, self._run, transaction.fn, "BEGIN", None)
            return result
        if transaction.small and not transaction.exclusive:
            return await self._quick_write(transaction.fn)
        return await self._write(transaction.fn)

    def _connection(self) -> sqlite3.Connection:
        """This worker thread's connection."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return connection

    def _connect(self, lock_wait_ms: int = LOCK_WAIT_MS) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # The first read: a file that is no database fails here.
            connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as error:
            raise StoreUnusable(str(error)) from error
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA busy_timeout={lock_wait_ms}")
        # Checkpoints (which fsync) run on their own thread, not inside a commit.
        connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        with self._lock:
            self._connections.append(connection)
        return connection

    def _run(
        self, fn: Callable[[Tx], T], begin: str, connection: sqlite3.Connection | None
    ) -> tuple[T, Callbacks]:
        connection = connection or self._connection()
        connection.execute(begin)
        return self._finish(connection, fn, wrote=begin == BEGIN_WRITE)

    def _finish(
        self, connection: sqlite3.Connection, fn: Callable[[Tx], T], wrote: bool
    ) -> tuple[T, Callbacks]:
        """Run `fn` in the transaction begun on `connection`, then commit (or roll back)."""
        tx = _SqliteTx(connection)
        try:
            result = fn(tx)
        except sqlite3.IntegrityError as error:
            connection.execute("ROLLBACK")
            if error.sqlite_errorname in UNIQUE_ERRORS:
                raise Conflict(str(error)) from error
            raise
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        if wrote:
            self._count_write()
        return result, tx.callbacks

    def _count_write(self) -> None:
        self._writes_since_checkpoint += 1  # a hint: a lost update across threads is harmless
        if self._writes_since_checkpoint >= self._checkpoint_writes:
            self._checkpoint_due.set()

    def _lookup(self, fn: Callable[[Tx], T]) -> T:
        """A primary-key read on the event loop's own connection.

        Handing a read to a worker thread costs tens of microseconds of
        wake-ups; a lookup by key costs a few. WAL readers never wait on a
        lock, so this cannot stall the loop.
        """
        if self._loop_reads is None:
            self._loop_reads = self._connect()
        result, _ = self._run(fn, "BEGIN", self._loop_reads)
        return result

    async def _write(self, fn: Callable[[Tx], T]) -> T:
        """Queue a write; the writer thread commits every queued write at once (group commit).

        Each write runs in a savepoint of the shared transaction, so it still
        commits or rolls back whole on its own; one COMMIT (and one wake-up of
        the loop) serves them all. Callbacks run once committed, whether or
        not the caller is still waiting.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queued.append(_QueuedWrite(fn, future))
        self._writes_queued += 1
        self._writer.submit(self._commit_queued, loop)
        return await asyncio.shield(future)

    def _commit_queued(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread: run what is queued in one transaction, then report back."""
        batch: list[_QueuedWrite[Any]] = []
        while self._queued:
            batch.append(self._queued.popleft())
        if not batch:
            return  # an earlier call took this one's write
        try:
            connection = self._connection()
        except BaseException as error:  # no database to write to: each caller hears why
            failed: list[_Outcome] = [(write, None, error, []) for write in batch]
            loop.call_soon_threadsafe(self._report, failed)
            return
        outcomes: list[_Outcome] = []
        try:
            connection.execute(BEGIN_WRITE)
            for write in batch:
                outcomes.append((write, *self._run_savepoint(connection, write.fn)))
            connection.execute("COMMIT")
        except BaseException as error:  # the commit (or BEGIN) failed: nothing of the batch is kept
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            outcomes = [(write, None, error, []) for write in batch]
        self._count_write()
        loop.call_soon_threadsafe(self._report, outcomes)

    @staticmethod
    def _run_savepoint(
        connection: sqlite3.Connection, fn: Callable[[Tx], object]
    ) -> tuple[object, BaseException | None, Callbacks]:
        tx = _SqliteTx(connection)
        connection.execute("SAVEPOINT queued_write")
        try:
            result = fn(tx)
        except BaseException as error:
            connection.execute("ROLLBACK TO queued_write")
            connection.execute("RELEASE queued_write")
            if isinstance(error, sqlite3.IntegrityError) and error.sqlite_errorname in UNIQUE_ERRORS:
                return None, Conflict(str(error)), []
            return None, error, []
        connection.execute("RELEASE queued_write")
        return result, None, tx.callbacks

    def _report(self, outcomes: list[_Outcome]) -> None:
        """On the loop: callbacks of what committed, in commit order; then each caller's answer."""
        for write, result, error, callbacks in outcomes:
            self._writes_queued -= 1
            run_after_commit(callbacks)
            if write.future.cancelled():
                continue
            if error is None:
                write.future.set_result(result)
            else:
                write.future.set_exception(error)

    async def _quick_write(self, fn: Callable[[Tx], T]) -> T:
        """A small write at once on the event loop when it can be.

        Handing a small write to the writer thread costs more in wake-ups
        than the write itself (commits do not fsync: WAL, synchronous=NORMAL,
        checkpoints on their own thread). When no write is queued (nor a WAL
        restart: see `_checkpoint`) and the database is not locked by another
        process, it runs here; otherwise
        it queues like any write. It never waits for a lock on the loop.
        """
        if self._writes_queued == 0 and not self._restart_due:
            if self._loop_writes is None:
                self._loop_writes = self._connect(lock_wait_ms=0)
            if self._begin_without_waiting(self._loop_writes):
                result, callbacks = self._finish(self._loop_writes, fn, wrote=True)
                run_after_commit(callbacks)
                await self._share_the_loop()
                return result
        return await self._write(fn)

    async def _share_the_loop(self) -> None:
        """Give the loop a turn if no small write has in YIELD_EVERY_SECONDS.

        Such a write never suspends: without a turn, a tight loop of them would
        starve what their commits woke (the relay, readers) and every other call.
        A turn after each, though, costs about as much as the write itself
        (bench.events, a firing loop beside a Subscribe stream: 1 ms between
        turns took the firer's CPU per fire from about 90 us to 50-70 us).
        """
        if time.monotonic() - self._yielded_at >= YIELD_EVERY_SECONDS:
            await asyncio.sleep(0)
            self._yielded_at = time.monotonic()

    @staticmethod
    def _begin_without_waiting(connection: sqlite3.Connection) -> bool:
        """BEGIN IMMEDIATE unless another connection holds the write lock right now."""
        try:
            connection.execute(BEGIN_WRITE)
            return True
        except sqlite3.OperationalError:  # locked (by another process): the caller queues
            return False

    def _checkpoints(self) -> None:
        """Copy the WAL into the database file now and then, off the write path.

        A checkpoint inside a commit (SQLite's default) stalls that write for
        the fsync; here it stalls nothing on the loop.
        """
        while True:
            self._checkpoint_due.wait(CHECKPOINT_SECONDS)
            if self._closing.is_set():
                return
            self._checkpoint_due.clear()
            if self._writes_since_checkpoint:
                self._writes_since_checkpoint = 0
                self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database; now and then, start the WAL over.

        A passive checkpoint copies what was committed when it began, and the
        WAL starts over only when a write begins with all of it copied. Under
        a steady stream of writes that never happens (each checkpoint ends
        with newer writes behind it), and the WAL would grow without bound,
        each commit appending to an ever longer file. So once it is long, the
        writer thread copies the little the passive checkpoint left while no
        write runs (`_restart`), and the next write starts the WAL from its top.
        """
        try:
            _, frames, _ = self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            log.exception("WAL checkpoint failed; trying again after the next write")
            return
        if frames >= self._restart_frames and not self._restart_due:
            # Writes on the loop queue for the writer thread from now on, behind the restart: a
            # checkpoint that had to win the write lock from them by polling could wait for
            # hundreds of milliseconds, the WAL growing all the while.
            self._restart_due = True
            try:
                self._writer.submit(self._restart)
            except RuntimeError:  # closing: the last connection's close checkpoints the rest
                self._restart_due = False

    def _restart(self) -> None:
        """On the writer thread, between writes: finish the checkpoint so the WAL starts over."""
        try:
            self._connection().execute("PRAGMA wal_checkpoint(RESTART)")
        except sqlite3.Error:
            log.exception("WAL restart failed; trying again at the next checkpoint")
        finally:
            self._restart_due = False

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._closing.set()
        self._checkpoint_due.set()
        self._checkpointer.join()  # closing the last connection checkpoints what is left
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
