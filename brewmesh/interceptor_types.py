"""The signatures of grpc.aio interceptors, spelt once (generic aliases over request, response).

What a server interceptor is handed to go on with a call: the next step that
finds the method's handler (None: an unknown method).
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

__all__ = ["HandlerContinuation", "Req", "Resp"]
