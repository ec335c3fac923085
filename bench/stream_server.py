"""A bare grpc.aio ProgramRunner that streams recorded ProgramEvent messages to every Watch.

    python -m bench.stream_server --port PORT --events FILE

FILE (written by `save_events`) holds a run's events and how many of them
come before the caller's `go`. Every Watch gets the events before `go` at
once, waits for a `Signal` (any event), then gets the rest: the same
messages, in the same order and of the same size, as the mesh runner
streamed for that run. No storage, no auth, no interceptor: the floor for a
Python server fanning one run out to many watchers. Serves grpc.health.v1;
stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from bench.echo_server import wait_for_signal
from brewmesh.errors import Unimplemented
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc

_LENGTH = struct.Struct(">I")


def save_events(path: Path, events: Sequence[pb.ProgramEvent], before_go: int) -> None:
    """Write `events`, the first `before_go` of which are sent before the go signal."""
    chunks = [_LENGTH.pack(before_go)]
    for event in events:
        data = event.SerializeToString()
        chunks += [_LENGTH.pack(len(data)), data]
    path.write_bytes(b"".join(chunks))


def load_events(path: Path) -> tuple[list[pb.ProgramEvent], int]:
    data = path.read_bytes()
    (before_go,) = _LENGTH.unpack_from(data, 0)
    offset, events = _LENGTH.size, []
    while offset < len(data):
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        events.append(pb.ProgramEvent.FromString(data[offset : offset + size]))
        offset += size
    return events, before_go


class StreamingRunner(program_runner_pb2_grpc.ProgramRunnerServicer):
    def __init__(self, events: list[pb.ProgramEvent], before_go: int) -> None:
        self.events = events
        self.before_go = before_go
        self.go = asyncio.Event()

    async def Watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.ProgramEvent]:  # noqa: N802
        for event in self.events[: self.before_go]:
            yield event
        await self.go.wait()
        for event in self.events[self.before_go :]:
            yield event

    async def Run(self, request: pb.RunRequest, context: Any) -> pb.ProgramRun:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server only replays one run's events")
        raise AssertionError("abort raises")

    async def ListRuns(self, request: pb.ListRunsRequest, context: Any) -> pb.ListRunsResponse:  # noqa: N802
        raise Unimplemented("the benchmark machine lists no runs")

    async def GetRun(self, request: pb.GetRunRequest, context: Any) -> pb.ProgramRun:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server only replays one run's events")
        raise AssertionError("abort raises")

    async def Signal(self, request: pb.SignalRequest, context: Any) -> pb.SignalResponse:  # noqa: N802
        self.go.set()
        return pb.SignalResponse(sequence=self.before_go + 1, forwarded=True, handled=True)


async def serve(port: int, events_file: Path) -> None:
    events, before_go = load_events(events_file)
    server = grpc.aio.server()
    program_runner_pb2_grpc.add_ProgramRunnerServicer_to_server(StreamingRunner(events, before_go), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await wait_for_signal()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.events))


if __name__ == "__main__":
    main()
