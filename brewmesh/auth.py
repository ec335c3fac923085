"""Who is calling: the platform admin, a partner, or nobody.

Calls carry `authorization: Bearer <key>`. The admin key comes from
BREWMESH_ADMIN_KEY or is generated once and kept in the data directory.
Partner keys are random and stored only as SHA-256 hashes (a fast hash is
enough for 256-bit random keys; there is nothing to brute-force).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc

from brewmesh.errors import PermissionDenied, Unauthenticated
from brewmesh.interceptor_types import HandlerContinuation
from brewmesh.names import COMMON_NAMESPACE
from brewmesh.secret_files import read_or_create

ADMIN_KEY_FILE = "admin.key"
KEY_PREFIX = "bmk_"

PUBLIC_SCOPE = ""
"""The scope of the public catalogue: readable by every caller."""

HOW_TO_AUTHENTICATE = "send metadata 'authorization: Bearer <key>' with the admin key or your partner API key"


@dataclass(frozen=True)
class Principal:
    """The caller. `namespace` is what it may write: its own, or `common` for the admin."""

    namespace: str | None
    is_admin: bool = False

    @property
    def authenticated(self) -> bool:
        return self.namespace is not None

    def readable_scopes(self) -> frozenset[str] | None:
        """The namespaces whose private resources (runs, fleets) and events this caller may read,
        beside the public catalogue (""); None: all of them (the admin)."""
        if self.is_admin:
            return None
        return frozenset({PUBLIC_SCOPE, self.namespace}) if self.namespace else frozenset({PUBLIC_SCOPE})

    def may_read(self, namespace: str) -> bool:
        scopes = self.readable_scopes()
        return scopes is None or namespace in scopes

    def describe(self) -> str:
        if self.is_admin:
            return "the platform admin"
        return f"partner '{self.namespace}'" if self.namespace else "an anonymous caller"


ANONYMOUS = Principal(None)
ADMIN = Principal(COMMON_NAMESPACE, is_admin=True)


@dataclass(frozen=True)
class KeyGrant:
    """What a valid key grants: its principal, until `expire_time` (None: until it is rotated)."""

    principal: Principal
    expire_time: datetime | None = None

    def valid_at(self, moment: datetime) -> bool:
        return self.expire_time is None or moment < self.expire_time


KeyLookup = Callable[[str], Awaitable["KeyGrant | None"]]
"""Maps an API key to what it grants (None: no such key, or no longer valid): the partners
service's key table, read in process or through `PartnerService.GetCaller`."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def load_admin_key(data_dir: Path, create: bool = True, given: str | None = None) -> tuple[str, bool]:
    """The admin key (`given` in the settings, else kept in `data_dir`), and whether it was
    generated just now (print it once).

    Without `create` (a process that does not own the key table), a missing
    key is "": that process asks the partners service about every key.
    """
    if given:
        return given, False
    if not create:
        path = data_dir / ADMIN_KEY_FILE
        return (path.read_text().strip(), False) if path.exists() else ("", False)
    return read_or_create(data_dir / ADMIN_KEY_FILE, new_api_key)


class Authenticator:
    """Resolves the caller of an RPC and checks what it may do."""

    def __init__(self, admin_key: str | None, lookup: KeyLookup) -> None:
        # Without an admin key of its own, a process asks the partners service about that key too.
        self._admin_hash = hash_key(admin_key) if admin_key else None
        self._lookup = lookup
        # Keys that proved valid (never bad ones, so it cannot be flooded), each until it expires
        # or a rotation of its partner's key is heard of (`forget`).
        self._known: dict[str, KeyGrant] = {}
        # Counts `forget`s: a lookup that was under way meanwhile may have read a replaced key.
        self._forgotten = 0

    async def principal(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        return await self.resolve(context.invocation_metadata() or ())

    async def resolve(self, metadata: Iterable[tuple[str, str | bytes]]) -> Principal:
        """The principal for call metadata; UNAUTHENTICATED for a malformed or unknown key."""
        return (await self.resolve_grant(metadata)).principal

    async def require_grant(self, context: grpc.aio.ServicerContext[Any, Any]) -> KeyGrant:
        """What the call's key grants (and until when); UNAUTHENTICATED without a key."""
        grant = await self.resolve_grant(context.invocation_metadata() or ())
        if not grant.principal.authenticated:
            raise Unauthenticated(f"this call needs a key: {HOW_TO_AUTHENTICATE}")
        return grant

    async def resolve_grant(self, metadata: Iterable[tuple[str, str | bytes]]) -> KeyGrant:
        key = bearer_key(metadata)
        if key is None:
            return KeyGrant(ANONYMOUS)
        now = datetime.now(UTC)
        known = self._known.get(key)
        if known is not None and known.valid_at(now):
            return known
        forgotten = self._forgotten
        if self._admin_hash is not None and hmac.compare_digest(hash_key(key), self._admin_hash):
            grant: KeyGrant | None = KeyGrant(ADMIN)
        else:
            grant = await self._lookup(key)
        if grant is None or not grant.valid_at(now):
            self._known.pop(key, None)
            raise Unauthenticated(f"the API key is not valid: {HOW_TO_AUTHENTICATE}")
        if forgotten == self._forgotten:
            self._known[key] = grant
        return grant

    def forget(self, namespace: str) -> None:
        """Check the keys of `namespace` afresh from now on: its key was rotated."""
        self._forgotten += 1
        for key in [k for k, grant in self._known.items() if grant.principal.namespace == namespace]:
            del self._known[key]

    def caller_name(self, metadata: Iterable[tuple[str, str | bytes]]) -> str:
        """Who made a call, from keys already checked (for logs: never asks anyone, never fails)."""
        try:
            key = bearer_key(metadata)
        except Unauthenticated:
            return "malformed-key"
        if key is None:
            return "anonymous"
        known = self._known.get(key)
        if known is None:
            return "unknown-key"
        return "admin" if known.principal.is_admin else str(known.principal.namespace)

    async def require_any(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        principal = await self.principal(context)
        if not principal.authenticated:
            raise Unauthenticated(f"this call needs a key: {HOW_TO_AUTHENTICATE}")
        return principal

    async def require_admin(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        principal = await self.require_any(context)
        if not principal.is_admin:
            raise PermissionDenied(f"only the platform admin may do this; you are {principal.describe()}")
        return principal

    async def require_writer(self, context: grpc.aio.ServicerContext[Any, Any], namespace: str) -> Principal:
        """The caller, if it may write into `namespace` (its own; the admin: any)."""
        principal = await self.require_any(context)
        check_namespace_access(principal, namespace)
        return principal


def check_namespace_access(principal: Principal, namespace: str) -> None:
    if principal.is_admin or principal.namespace == namespace:
        return
    raise PermissionDenied(
        f"{principal.describe()} may write only in namespace '{principal.namespace}', not in '{namespace}'"
    )


def bearer_key(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer":
                raise Unauthenticated(f"malformed authorization metadata: {HOW_TO_AUTHENTICATE}")
            if not token.strip():
                raise Unauthenticated(
                    f"the authorization metadata has no key after 'Bearer': {HOW_TO_AUTHENTICATE}"
                )
            return token.strip()
    return None


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class KeyCheckInterceptor(grpc.aio.ServerInterceptor):
    """Refuses any call that presents a bad key, even to an open read.

    A client with a wrong key should learn it at once, not when it first
    writes.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: HandlerContinuation[_Req, _Resp],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        try:
            await self._authenticator.resolve(handler_call_details.invocation_metadata or ())
        except Unauthenticated as error:
            return _refusal(error.message)
        return await continuation(handler_call_details)


@functools.lru_cache(maxsize=16)
def _refusal(message: str) -> grpc.RpcMethodHandler[Any, Any]:
    """One handler per message (there are a few): interceptors outside may cache by handler.

    It stands in for any method's handler, whatever its request and response types.
    """

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # Requests are not deserialised: the call is refused whatever it carries.
    return grpc.unary_unary_rpc_method_handler(refuse)
