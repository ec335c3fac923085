"""A grpc.aio channel whose every call carries `authorization: Bearer <key>`.

The header is added as each call is made (a layer: brewmesh.layered_channel),
not by an interceptor; interceptors of the channel itself (tracing) still
run, and see the header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from brewmesh.layered_channel import LayeredChannel

METADATA_POSITION = 2
"""Where a client-streaming call takes `metadata` when given by position (after the requests
and the timeout); unary-request calls take it by keyword only."""


def authorization(key: str) -> tuple[str, str]:
    """The metadata entry that presents `key` to a brewmesh server."""
    return ("authorization", f"Bearer {key}")


class _WithKey:
    """A multi-callable of any of the four kinds, the key added to each call's metadata."""

    def __init__(self, call: Callable[..., Any], header: tuple[str, str]) -> None:
        self._call = call
        self._header = header

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) > METADATA_POSITION:
            given = args[METADATA_POSITION]
            args = (*args[:METADATA_POSITION], (*(given or ()), self._header), *args[METADATA_POSITION + 1 :])
        else:
            kwargs["metadata"] = (*(kwargs.get("metadata") or ()), self._header)
        return self._call(*args, **kwargs)


class KeyedChannel(LayeredChannel):
    """`channel`, each of whose calls presents `key` (after the caller's own metadata)."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        header = authorization(key)
        super().__init__(channel, lambda call, method, kind: _WithKey(call, header))
