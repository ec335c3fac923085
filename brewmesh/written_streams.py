"""A server stream written with `context.write` (health's Watch), as a generator of its messages.

grpc.aio takes a server-streaming handler in either form, but interceptors
that wrap streams (OpenTelemetry's among them) iterate the handler: given a
coroutine they fail the call with UNKNOWN ("'async for' requires an object
with __aiter__"). Innermost, the stream becomes a generator for every layer
outside; the outermost layer writes it out again (brewmesh.call_observer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

Behaviour = Callable[..., Any]


class _Writer:
    """The call's context, but `write` hands each message to the generator (one at a time:
    the handler waits while the one before is still unsent, as with a real write)."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], written: asyncio.Queue[Any]) -> None:
        self._context = context
        self._written = written

    async def write(self, message: Any) -> None:
        await self._written.put(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def as_generator(behaviour: Behaviour) -> Callable[..., AsyncIterator[Any]]:
    """`behaviour(request, context)`, a coroutine calling `context.write`, as an async generator."""

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        written: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        handler = asyncio.ensure_future(behaviour(request, _Writer(context, written)))
        message: asyncio.Future[Any] | None = None
        try:
            while True:
                message = asyncio.ensure_future(written.get())
                await asyncio.wait((message, handler), return_when=asyncio.FIRST_COMPLETED)
                if message.done():
                    yield message.result()
                    continue
                message.cancel()  # before the queue is drained: it must not take what is left
                handler.result()  # the handler's own error, if it failed
                while not written.empty():
                    yield written.get_nowait()
                return
        finally:
            # Both, whether the stream ended or its client went away (cancelled mid-wait): a
            # task left pending is an error in the log when it is collected.
            for task in (message, handler):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):  # raised above
                        await task

    return stream
