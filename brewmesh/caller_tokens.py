"""Caller tokens: the per-machine secret by which a partner machine knows the mesh's runner.

A partner declares a token for a machine (`ProgramApi.caller_token` in
`PutCoffeeMachines`) and starts the machine with the same token (the SDK's
`Machine(caller_token=...)`; `brewmesh machine` reads $BREWMESH_CALLER_TOKEN).
The runner sends it with every ProgramRunner call to that machine as
`authorization: Bearer <token>`, and only over TLS; the machine refuses a
ProgramRunner call without it with UNAUTHENTICATED (its health and
reflection stay open: the registry health-checks machines).
"""

from __future__ import annotations

import hmac
import re
from typing import Any, TypeVar

import grpc

from brewmesh.auth import bearer_key
from brewmesh.errors import Unauthenticated
from brewmesh.interceptor_types import HandlerContinuation

TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")
TOKEN_RULE = "16 to 256 letters, digits or '.', '_', '~', '+', '/', '=', '-'"
ENV = "BREWMESH_CALLER_TOKEN"


def is_valid(token: str) -> bool:
    return TOKEN_RE.fullmatch(token) is not None


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class CallerCheck(grpc.aio.ServerInterceptor):
    """Lets through calls to `service` only from a caller presenting `token`; other services stay open."""

    def __init__(self, service: str, token: str) -> None:
        if not is_valid(token):
            raise ValueError(f"a caller token is {TOKEN_RULE}")
        self._prefix = f"/{service}/"
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: HandlerContinuation[_Req, _Resp],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        if details.method.startswith(self._prefix) and not self._presented(details):
            return _refusal(details.method)
        return await continuation(details)

    def _presented(self, details: grpc.HandlerCallDetails) -> bool:
        try:
            token = bearer_key(details.invocation_metadata or ())
        except Unauthenticated:
            return False
        return token is not None and hmac.compare_digest(token.encode(), self._token)


def _refusal(method: str) -> grpc.RpcMethodHandler[Any, Any]:
    """Stands in for `method`'s handler, whatever its request and response types."""
    message = (
        f"{method} is served only to the mesh's runner: it sends the caller token declared"
        " for this machine (ProgramApi.caller_token) as 'authorization: Bearer <token>'"
    )

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # Requests are not deserialised: the call is refused whatever it carries.
    return grpc.unary_unary_rpc_method_handler(refuse)
