"""A server stream behaves the same to its client whichever way its handler is written.

grpc.aio takes a stream as an async generator (brewmesh's own servicers) or as
a coroutine calling `context.write` (health's Watch); brewmesh's layers turn
the second into the first (brewmesh.written_streams) and write it out again.
Against a real brewmesh Server on a free port, with the call observer
outermost as in the mesh: every message arrives in order, a domain error
after them reaches the client as its status, and a client that goes away
ends the handler (its cleanup runs).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from brewmesh.bus.v1 import event_bus_pb2, events_pb2
from brewmesh.call_observer import CallObserverInterceptor
from brewmesh.errors import NotFound
from brewmesh.metrics import Metrics
from brewmesh.server import Server, ServiceBinding

BUS = "brewmesh.bus.v1.EventBus"
SUBSCRIBE = f"/{BUS}/Subscribe"
Handler = Callable[..., Any]


class Streams:
    """Subscribe, answered with `count` events and then NOT_FOUND, or held open for ever."""

    def __init__(self, count: int, then_hold: bool) -> None:
        self.count = count
        self.then_hold = then_hold
        self.ended = asyncio.Event()

    async def written(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            for i in range(self.count):
                await context.write(events_pb2.Event(id=str(i)))
            await self._finish()
        finally:
            self.ended.set()

    async def yielded(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[events_pb2.Event]:
        try:
            for i in range(self.count):
                yield events_pb2.Event(id=str(i))
            await self._finish()
        finally:
            self.ended.set()

    async def _finish(self) -> None:
        if self.then_hold:
            await asyncio.Event().wait()
        raise NotFound("listener group 'audit' does not exist: create it by subscribing with it")


async def _serve(handler: Handler) -> AsyncIterator[grpc.aio.Channel]:
    method = grpc.unary_stream_rpc_method_handler(
        handler, event_bus_pb2.SubscribeRequest.FromString, events_pb2.Event.SerializeToString
    )

    def add(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(BUS, {"Subscribe": method})])

    observer = CallObserverInterceptor(Metrics(), lambda metadata: "anonymous")
    server = Server([ServiceBinding(BUS, add)], interceptors=[observer])
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


def _subscribe(channel: grpc.aio.Channel) -> Any:
    call = channel.unary_stream(
        SUBSCRIBE, event_bus_pb2.SubscribeRequest.SerializeToString, events_pb2.Event.FromString
    )
    return call(event_bus_pb2.SubscribeRequest(api=BUS))


@pytest.mark.parametrize("form", ["written", "yielded"])
async def test_every_message_arrives_then_the_handlers_error_as_its_status(form: str) -> None:
    streams = Streams(count=50, then_hold=False)
    async for channel in _serve(getattr(streams, form)):
        received: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for event in _subscribe(channel):
                received.append(event.id)
    assert received == [str(i) for i in range(50)]
    assert ended.value.code() == grpc.StatusCode.NOT_FOUND
    assert "create it by subscribing" in (ended.value.details() or "")


@pytest.mark.parametrize("form", ["written", "yielded"])
async def test_a_client_that_goes_away_ends_the_handler_and_leaves_nothing_pending(
    form: str, caplog: pytest.LogCaptureFixture
) -> None:
    streams = Streams(count=3, then_hold=True)
    async for channel in _serve(getattr(streams, form)):
        stream = _subscribe(channel)
        assert [(await stream.read()).id for _ in range(3)] == ["0", "1", "2"]
        stream.cancel()
        await asyncio.wait_for(streams.ended.wait(), 10)
    gc.collect()  # a task left pending is reported as it is collected: "Task was destroyed but ..."
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
