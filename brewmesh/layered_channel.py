"""A grpc.aio channel whose calls pass through a layer of ours (a key added, a call counted).

A layer wraps each multi-callable as a stub asks the channel for it; it is
not an interceptor. grpc.aio runs an intercepted call as a task of its own,
which the caller's await then waits on, and passes each message of an
intercepted stream through one more generator. For a client reading a
stream of events that cost a quarter of its throughput (and made its pace
uneven: 9,000 to 19,000 events a second from one run to the next, against
19,000 to 24,000 without), and for the runner two more loop turns on the
way of every run to its machine. Interceptors of the channel itself
(tracing) still run, inside the layers.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, cast

import grpc

CallKind = Literal["unary", "server_stream", "client_stream", "bidi_stream"]
"""What a call streams, as the `grpc_type` label of gRPC metrics names it."""
MultiCallable = Callable[..., Any]
Layer = Callable[[MultiCallable, str, CallKind], MultiCallable]
"""(the channel's multi-callable, its method `/package.Service/Method`, its kind) -> the one
stubs get, called as the channel's would be."""
Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


class LayeredChannel(grpc.aio.Channel):
    """`channel`, each of whose multi-callables `layer` wraps; everything else is `channel`'s own.

    The generated stubs pass `_registered_method` too: handed on as given."""

    def __init__(self, channel: grpc.aio.Channel, layer: Layer) -> None:
        self._channel = channel
        self._layer = layer

    async def __aenter__(self) -> LayeredChannel:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._channel.close()

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def unary_unary(
        self, method: str, request_serializer: Serializer = None, response_deserializer: Deserializer = None,
        **registered: Any,
    ) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:  # fmt: skip
        call = self._channel.unary_unary(method, request_serializer, response_deserializer, **registered)
        return cast("grpc.aio.UnaryUnaryMultiCallable[Any, Any]", self._layer(call, method, "unary"))

    def unary_stream(
        self, method: str, request_serializer: Serializer = None, response_deserializer: Deserializer = None,
        **registered: Any,
    ) -> grpc.aio.UnaryStreamMultiCallable[Any, Any]:  # fmt: skip
        call = self._channel.unary_stream(method, request_serializer, response_deserializer, **registered)
        return cast("grpc.aio.UnaryStreamMultiCallable[Any, Any]", self._layer(call, method, "server_stream"))

    def stream_unary(
        self, method: str, request_serializer: Serializer = None, response_deserializer: Deserializer = None,
        **registered: Any,
    ) -> grpc.aio.StreamUnaryMultiCallable[Any, Any]:  # fmt: skip
        call = self._channel.stream_unary(method, request_serializer, response_deserializer, **registered)
        return cast("grpc.aio.StreamUnaryMultiCallable[Any, Any]", self._layer(call, method, "client_stream"))

    def stream_stream(
        self, method: str, request_serializer: Serializer = None, response_deserializer: Deserializer = None,
        **registered: Any,
    ) -> grpc.aio.StreamStreamMultiCallable[Any, Any]:  # fmt: skip
        call = self._channel.stream_stream(method, request_serializer, response_deserializer, **registered)
        return cast("grpc.aio.StreamStreamMultiCallable[Any, Any]", self._layer(call, method, "bidi_stream"))
