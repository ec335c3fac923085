"""Follows each live run's machine stream and records what the machine emits.

A dropped stream is resumed from the last machine sequence recorded, with
backoff, for a bounded time; after that the run fails with a reason, so no
caller ever waits on a machine that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc

from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.services.runner import run_store
from brewmesh.services.runner.machine_link import MachineLink
from brewmesh.services.runner.program_runs import ProgramRun, RunKey, State
from brewmesh.services.runner.recorder import RunRecorder
from brewmesh.storage import Store

log = logging.getLogger(__name__)

MACHINE_CALL_SECONDS = 5.0


class Follower:
    def __init__(self, store: Store, link: MachineLink, recorder: RunRecorder, resume_seconds: float) -> None:
        self.store = store
        self.link = link
        self.recorder = recorder
        self.resume_seconds = resume_seconds
        self._tasks: dict[RunKey, asyncio.Task[None]] = {}

    def follow(self, key: RunKey, started: bool = False, known: ProgramRun | None = None) -> None:
        """Follow a live run; `started`: the machine already accepted its Run; `known`: the run
        as just read (else it is read first)."""
        if key in self._tasks:
            return
        following = self._follow(key, started, known)
        task = asyncio.get_running_loop().create_task(following, name=f"follow {key}")
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, key: RunKey, started: bool, known: ProgramRun | None) -> None:
        lost_since: float | None = None
        backoff = 0.05
        last_cursor = -1
        while True:
            run = (
                known if known is not None else await self.store.lookup(lambda tx: run_store.get_run(tx, key))
            )
            known = None
            if run.state.terminal:
                return
            if run.machine_cursor != last_cursor:  # the machine made progress: a fresh window
                lost_since, backoff, last_cursor = None, 0.05, run.machine_cursor
            try:
                if not started and run.state == State.PENDING and run.machine_cursor == 0:
                    # Idempotent on the machine: recovers a Run lost in a runner crash.
                    await self.link.run(run, MACHINE_CALL_SECONDS)
                started = True
                if lost_since is not None:
                    # A machine that takes the connection and answers nothing (a frozen process)
                    # must not hold the run past the window: a small call first, within what is left.
                    await self.link.get_run(
                        run, max(0.05, lost_since + self.resume_seconds - time.monotonic())
                    )
                if await self._tail(run):
                    return
                problem = "the machine ended the run's event stream before the run was over"
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    await self.recorder.fail(key, f"{machine_of(run)} no longer knows this run")
                    return
                problem = f"{error.code().name}: {error.details()}"
            except Exception as error:
                log.exception("following run %s failed", key)
                problem = f"{type(error).__name__}: {error}"
            now = time.monotonic()
            if lost_since is None:
                # The loss begins now. What the stream recorded before it dropped is progress made
                # before the loss: read it, so the next round does not take it for a fresh start
                # (and the window does not begin again after one more attempt).
                lost_since = now
                run = known = await self.store.lookup(lambda tx: run_store.get_run(tx, key))
                last_cursor = run.machine_cursor
            if now - lost_since >= self.resume_seconds:
                reason = f"lost contact with {machine_of(run)} for {self.resume_seconds:g} s ({problem})"
                await self.recorder.fail(key, reason)
                return
            await asyncio.sleep(min(backoff, lost_since + self.resume_seconds - now))  # never past the window
            backoff = min(backoff * 2, 1.0)

    async def _tail(self, run: ProgramRun) -> bool:
        """Record the machine's events from where we left off; True once the run is over.

        Events that arrive while a batch is being written are written together
        in the next transaction (group commit), so a fast machine costs one
        commit per batch, not per event.
        """
        arrived: asyncio.Queue[pb.ProgramEvent | None] = asyncio.Queue()
        reader = asyncio.get_running_loop().create_task(self._read(run, arrived))
        try:
            while True:
                batch = [await arrived.get()]
                while not arrived.empty():
                    batch.append(arrived.get_nowait())
                events = [e for e in batch if e is not None]
                if events and await self.recorder.record_machine_events(run.key, events):
                    return True
                if len(events) < len(batch):  # the stream ended: raise its error, if any
                    await reader
                    return False
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader

    async def _read(self, run: ProgramRun, arrived: asyncio.Queue[pb.ProgramEvent | None]) -> None:
        try:
            async for event in self.link.watch(run, run.machine_cursor):
                arrived.put_nowait(event)
        finally:
            arrived.put_nowait(None)


def machine_of(run: ProgramRun) -> str:
    """The run's machine as a failure reason names it: its name and where it was reached."""
    return f"machine '{run.request.machine}' at {run.target.endpoint}"
