"""Key checks through the partners service (`PartnerService.GetCaller`).

A process that does not host the partners service never reads the key
table: it asks the service that owns it, and remembers the answer (keys
cannot be revoked yet, so a valid key stays valid).
"""

from __future__ import annotations

import grpc

from brewmesh.auth import ADMIN, Principal
from brewmesh.errors import Unavailable
from brewmesh.partners.v1 import partners_pb2, partners_pb2_grpc

CALL_SECONDS = 5.0


class RemoteKeys:
    """A `KeyLookup` over a channel to the partners service."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = partners_pb2_grpc.PartnerServiceStub(self._channel)

    async def __call__(self, key: str) -> Principal | None:
        try:
            caller = await self._stub.GetCaller(
                partners_pb2.GetCallerRequest(),
                metadata=[("authorization", f"Bearer {key}")],
                timeout=CALL_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                return None
            raise Unavailable(
                f"cannot check the API key: the partners service at {self.address} answered "
                f"{error.code().name} ({error.details()})"
            ) from error
        return ADMIN if caller.admin else Principal(caller.namespace)

    async def close(self) -> None:
        await self._channel.close()
