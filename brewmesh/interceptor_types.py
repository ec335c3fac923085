"""The signatures of grpc.aio interceptors, spelt once (generic aliases over request, response).

What an interceptor is handed to go on with a call: on the server, the next
step that finds the method's handler (None: an unknown method); on a client,
the next step of a unary or a server-streaming call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

import grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")

HandlerContinuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]]"
)
UnaryContinuation: TypeAlias = (
    "Callable[[grpc.aio.ClientCallDetails, Req], Awaitable[grpc.aio.UnaryUnaryCall[Req, Resp]]]"
)
StreamContinuation: TypeAlias = (
    "Callable[[grpc.aio.ClientCallDetails, Req], Awaitable[grpc.aio.UnaryStreamCall[Req, Resp]]]"
)

__all__ = ["HandlerContinuation", "Req", "Resp", "StreamContinuation", "UnaryContinuation"]
