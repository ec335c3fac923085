"""Request helpers shared by the recipes servicers: checked values, paging queries."""

from __future__ import annotations

from typing import TypeAlias, TypeVar

import grpc

from brewmesh.errors import Violations

T = TypeVar("T")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Context: TypeAlias = grpc.aio.ServicerContext[_Req, _Resp]
"""A servicer method's context: `Context[Request, Response]`."""


def checked(v: Violations, value: T | None) -> T:
    """`value` once every check passed; INVALID_ARGUMENT listing every violation otherwise."""
    v.raise_if_any()
    if value is None:  # a bug in a check, not the client's fault: INTERNAL
        raise AssertionError("a check returned None without reporting a violation")
    return value
