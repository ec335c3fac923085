"""A front door for a distributed mesh: one address, each call forwarded to the service's process.

Clients and `grpcurl` that want one address for the whole mesh talk to the
gateway; it forwards every call, bytes as they are, with its metadata,
deadline, status and trailers (so `google.rpc.BadRequest` details arrive
intact), to the process serving that call's service. The authoritative
process still answers; the gateway decides nothing. It serves health and
reflection for the routed services itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping

import grpc

from brewmesh.server import Server, ServiceBinding

# Metadata the transport sets per hop; forwarding it would confuse the next hop.
HOP_HEADERS = frozenset({"grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent", "te"})


class _Router(grpc.GenericRpcHandler):
    def __init__(self, routes: Mapping[str, str]) -> None:
        self._channels = {service: grpc.aio.insecure_channel(address) for service, address in routes.items()}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        service = details.method.lstrip("/").partition("/")[0]
        channel = self._channels.get(service)
        if channel is None:
            return None
        return grpc.stream_stream_rpc_method_handler(_forwarder(channel, details.method))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


# Without (de)serializers, grpc hands on the bytes as they are, both ways.
Forward = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[bytes, bytes]], AsyncIterator[bytes]]


def _forwarder(channel: grpc.aio.Channel, method: str) -> Forward:
    call_upstream: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(method)

    async def forward(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        metadata = [(k, v) for k, v in context.invocation_metadata() or () if k not in HOP_HEADERS]
        call = call_upstream(metadata=metadata, timeout=context.time_remaining())
        pump = asyncio.ensure_future(_pump(requests, call))
        try:
            async for response in call:
                yield response
            trailers = await call.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), error.details() or "", tuple(error.trailing_metadata() or ()))
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            if not call.done():
                call.cancel()
        if trailers:
            context.set_trailing_metadata(tuple(trailers))

    return forward


async def _pump(requests: AsyncIterator[bytes], call: grpc.aio.StreamStreamCall[bytes, bytes]) -> None:
    async for request in requests:
        await call.write(request)
    await call.done_writing()


class Gateway:
    """One grpc.aio server forwarding each routed service to its address."""

    def __init__(self, routes: Mapping[str, str], address: str = "127.0.0.1:0") -> None:
        self.routes = dict(routes)
        self._router = router = _Router(self.routes)
        added: list[bool] = []

        def add_router(server: grpc.aio.Server) -> None:
            if not added:  # one router for every routed service
                server.add_generic_rpc_handlers((router,))
                added.append(True)

        # Health and reflection name every routed service; the router handles the calls.
        self.server = Server([ServiceBinding(s, add_router) for s in sorted(self.routes)], address)

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> int:
        return await self.server.start()

    async def stop(self, grace: float = 1.0) -> None:
        await self.server.stop(grace)
        await self._router.close()
