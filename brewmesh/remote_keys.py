"""Key checks through the partners service (`PartnerService.GetCaller`).

A process that does not host the partners service never reads the key
table: it asks the service that owns it, and its Authenticator remembers
the answer until the key expires or `partner_key_rotated` says the
partner's key changed.
"""

from __future__ import annotations

from datetime import UTC

import grpc

from brewmesh.auth import ADMIN, KeyGrant, Principal
from brewmesh.call_observer import NOT_OBSERVED, ClientObservers
from brewmesh.client import channel
from brewmesh.errors import Unavailable
from brewmesh.keyed_channel import authorization
from brewmesh.partners.v1 import partners_pb2, partners_pb2_grpc

CALL_SECONDS = 5.0


class RemoteKeys:
    """A `KeyLookup` over a channel to the partners service."""

    def __init__(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None = None,
        observers: ClientObservers = NOT_OBSERVED,
    ) -> None:
        """`credentials`: TLS to the partners service; None: plaintext.
        `observers`: the process's own (its key checks are counted and traced like any call)."""
        self.address = address
        self._channel = channel(
            address,
            credentials=credentials,
            interceptors=observers.interceptors,
            deadline_seconds=CALL_SECONDS,
            counted_by=observers.metrics,
        )
        self._stub = partners_pb2_grpc.PartnerServiceStub(self._channel)

    async def __call__(self, key: str) -> KeyGrant | None:
        try:
            caller = await self._stub.GetCaller(
                partners_pb2.GetCallerRequest(),
                metadata=[authorization(key)],
                timeout=CALL_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                return None
            raise Unavailable(
                f"cannot check the API key: the partners service at {self.address} answered "
                f"{error.code().name} ({error.details()})"
            ) from error
        principal = ADMIN if caller.admin else Principal(caller.namespace)
        expires = caller.key_expire_time.ToDatetime(UTC) if caller.HasField("key_expire_time") else None
        return KeyGrant(principal, expires)

    async def close(self) -> None:
        await self._channel.close()
