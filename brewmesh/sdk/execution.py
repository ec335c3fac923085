"""Running one program: its handler in a background task, callbacks for signals.

The SDK owns the run's lifecycle around the partner's code: it records
`started` before the handler begins, `finished` when the handler returns
without ending the run, and `failed` (with the reason) when the handler or a
callback raises. Once the run ended, whatever of the program still runs is
cancelled: nothing a program does can change a run after its end.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from brewmesh.sdk.program import Callback, ContextEvent, Program
from brewmesh.sdk.runs import MACHINE, RunEnded, RunRecord, state_name

log = logging.getLogger(__name__)

RunHandler = Callable[[Program], Awaitable[None]]

SHUTDOWN_REASON = "the machine shut down while the program was running"


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Execution:
    """One run's program: the handler task and the callbacks' tasks."""

    def __init__(self, run: RunRecord, program: Program, handler: RunHandler) -> None:
        self.run = run
        self.program = program
        self._handler = handler
        self._task: asyncio.Task[None] | None = None
        self._callback_tasks: set[asyncio.Task[None]] = set()
        run.execution = self
        run.on_end.append(self._ended)

    def start(self) -> None:
        self.run.record("started", MACHINE)
        log.info("run %s started: %s (%s)", self.run.name, self.program.program_id, self.run.api_type)
        self._task = asyncio.create_task(self._drive(), name=f"program {self.run.name}")

    def dispatch(self, event: ContextEvent) -> asyncio.Task[None] | None:
        """Call the program's callbacks for a signalled event; None if it has none."""
        callbacks = self.program.context.callbacks(event.name)
        if not callbacks:
            return None
        # A task of its own, so a caller that gives up on Signal does not
        # cut a callback in half; tasks start in the order signals arrive.
        task = asyncio.create_task(self._call(callbacks, event), name=f"{event.name} on {self.run.name}")
        self._callback_tasks.add(task)
        task.add_done_callback(self._callback_tasks.discard)
        return task

    async def abort(self, reason: str) -> None:
        """End a run that is still going as failed, and wait for its tasks to stop."""
        if not self.run.terminal:
            self.run.record("failed", MACHINE, {"reason": reason})
        tasks = [t for t in (self._task, *self._callback_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drive(self) -> None:
        try:
            await self._handler(self.program)
        except asyncio.CancelledError:
            if self.run.terminal:
                return  # ended by a callback or by shutdown: the cancel was ours
            raise
        except RunEnded as error:
            log.warning("run %s: the program went on after the run ended: %s", self.run.name, error)
            return
        except Exception as error:
            log.exception("run %s: the program raised", self.run.name)
            self._fail(f"the program raised {describe(error)}")
            return
        if not self.run.terminal:
            self.run.record("finished", MACHINE)

    async def _call(self, callbacks: list[Callback], event: ContextEvent) -> None:
        for callback in callbacks:
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except RunEnded as error:
                log.warning("run %s: handling '%s' after the run ended: %s", self.run.name, event.name, error)
                return
            except Exception as error:
                log.exception("run %s: handling '%s' raised", self.run.name, event.name)
                self._fail(f"handling '{event.name}' raised {describe(error)}")
                return

    def _fail(self, reason: str) -> None:
        if not self.run.terminal:
            self.run.record("failed", MACHINE, {"reason": reason})

    def _ended(self, run: RunRecord) -> None:
        log.info("run %s %s", run.name, state_name(run.state))
        current = asyncio.current_task()
        for task in (self._task, *self._callback_tasks):
            if task is not None and task is not current:
                task.cancel()
