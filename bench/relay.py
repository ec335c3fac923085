"""A bare grpc.aio relay for ProgramRunner Run and Watch: the floor for any Python proxy.

    python -m bench.relay --port PORT --upstream HOST:PORT

It forwards `Run` (unary) and `Watch` (server stream) to one upstream
ProgramRunner as raw bytes: no (de)serialisation, no interceptor, no
storage, no auth, one channel. The caller's metadata and deadline go along;
an upstream error comes back with its code and details. Serves
grpc.health.v1 too, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from bench.echo_server import wait_for_signal

SERVICE = "brewmesh.runner.v1.ProgramRunner"
RUN = f"/{SERVICE}/Run"
WATCH = f"/{SERVICE}/Watch"
# Connection-level metadata the transport sets itself.
_NOT_FORWARDED = {"user-agent", "te", "content-type", "grpc-accept-encoding", "grpc-timeout"}


# No serialisers: the relay sees requests and responses as bytes.
Context = grpc.aio.ServicerContext[bytes, bytes]


def _forwarded(context: Context) -> tuple[tuple[str, str | bytes], ...]:
    metadata = context.invocation_metadata() or ()
    return tuple((k, v) for k, v in metadata if k not in _NOT_FORWARDED and not k.startswith(":"))


class Relay:
    def __init__(self, upstream: str) -> None:
        self.channel = grpc.aio.insecure_channel(upstream)
        # No serialisers: bytes in, bytes out.
        self._run: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(RUN)
        self._watch: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = self.channel.unary_stream(WATCH)

    async def run(self, request: bytes, context: Context) -> bytes:
        try:
            reply: bytes = await self._run(
                request, timeout=context.time_remaining(), metadata=_forwarded(context)
            )
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), error.details() or "")
            raise  # abort raises; this is for the type checker
        return reply

    async def watch(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        call = self._watch(request, timeout=context.time_remaining(), metadata=_forwarded(context))
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), error.details() or "")
        finally:
            call.cancel()  # the caller went away: stop the upstream stream too

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Run": grpc.unary_unary_rpc_method_handler(self.run),
                "Watch": grpc.unary_stream_rpc_method_handler(self.watch),
            },
        )


async def serve(port: int, upstream: str) -> None:
    relay = Relay(upstream)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((relay.handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        await wait_for_signal()
    finally:
        await server.stop(0)
        await relay.channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the ProgramRunner to relay to")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
