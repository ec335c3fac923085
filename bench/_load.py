"""Closed-loop unary load from client processes, for a fixed time after a warm-up.

Each client process runs `concurrency` coroutines over `channels` channels;
each coroutine sends its next request as soon as the previous one answered.
Only calls that complete inside the measured window count. The parent
starts the window for every process at once (once all are connected), so
it reads the servers' CPU time over the same window.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench._harness import ServerProcess, cpu_meter
from bench.echo_server import METHOD as ECHO_METHOD
from brewmesh.client import channel, connect
from brewmesh.recipes.v1 import formatters_pb2, recipes_pb2

ECHO = "echo"
FORMAT_VOLUME = "format"
GET_RECIPE = "get"
TARGETS = (ECHO, FORMAT_VOLUME, GET_RECIPE)
START_SECONDS = 60.0
Call = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class LoadSpec:
    address: str
    key: str
    target: str
    request: bytes
    concurrency: int
    channels: int
    warmup: float
    duration: float


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    client_cpu: float = 0.0
    first_error: str = ""


GONE = LoadResult(errors=1, first_error="a client process failed or sent no result")


@dataclass
class Measured:
    """All client processes of one load, and the servers' CPU over the window."""

    spec: LoadSpec
    processes: int
    results: list[LoadResult]
    server_cpu: dict[str, float]

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.results)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results)

    @property
    def rps(self) -> float:
        return self.requests / self.spec.duration

    @property
    def latencies(self) -> list[float]:
        return sorted(x for r in self.results for x in r.latencies)

    @property
    def client_cpu(self) -> float:
        return sum(r.client_cpu for r in self.results)

    @property
    def first_error(self) -> str:
        return next((r.first_error for r in self.results if r.first_error), "")


def _calls(spec: LoadSpec) -> tuple[list[Call], Any, list[grpc.aio.Channel]]:
    """One call per channel for the target, the request to send, and the channels to close."""
    if spec.target == ECHO:
        # The same channel as the mesh client (with its key interceptor), so the
        # client does the same work per call on both sides.
        channels = [channel(spec.address, spec.key) for _ in range(spec.channels)]
        return [c.unary_unary(ECHO_METHOD) for c in channels], spec.request, channels
    clients = [connect(spec.address, spec.key) for _ in range(spec.channels)]
    calls: list[Call]
    if spec.target == FORMAT_VOLUME:
        request: Any = formatters_pb2.FormatVolumeRequest.FromString(spec.request)
        calls = [c.formatters.FormatVolume for c in clients]
    elif spec.target == GET_RECIPE:
        request = recipes_pb2.GetRecipeRequest.FromString(spec.request)
        calls = [c.recipes.GetRecipe for c in clients]
    else:
        raise ValueError(f"unknown target {spec.target!r}")
    return calls, request, [c.channel for c in clients]


async def _load(spec: LoadSpec, ready: Any, start: Any) -> LoadResult:
    calls, request, channels = _calls(spec)
    result = LoadResult()
    try:
        for call in calls:  # connect every channel before the clock starts
            await call(request, timeout=10)
        # Every process starts its window together with the parent's CPU meter.
        ready.put(True)
        if not await asyncio.to_thread(start.wait, START_SECONDS):
            raise TimeoutError("the parent never said start")
        began = time.monotonic()
        window_start, window_end = began + spec.warmup, began + spec.warmup + spec.duration

        async def worker(call: Call) -> None:
            while True:
                sent = time.monotonic()
                if sent >= window_end:
                    return
                try:
                    await call(request, timeout=10)
                except grpc.aio.AioRpcError as error:
                    ended = time.monotonic()
                    if window_start <= ended < window_end:
                        result.errors += 1
                        result.first_error = result.first_error or f"{error.code().name}: {error.details()}"
                    continue
                ended = time.monotonic()
                if window_start <= ended < window_end:
                    result.requests += 1
                    result.latencies.append(ended - sent)

        async def cpu_window() -> None:
            await asyncio.sleep(max(0.0, window_start - time.monotonic()))
            cpu_start = time.process_time()
            await asyncio.sleep(max(0.0, window_end - time.monotonic()))
            result.client_cpu = time.process_time() - cpu_start

        workers = [worker(calls[i % len(calls)]) for i in range(spec.concurrency)]
        await asyncio.gather(cpu_window(), *workers)
    finally:
        for ch in channels:
            await ch.close(None)
    return result


def run_client(specs: Sequence[LoadSpec], ready: Any, starts: Sequence[Any], results: Any) -> None:
    """Entry point of one client process: one result (or its error) per spec, in order, to `results`."""
    for spec, start in zip(specs, starts, strict=True):
        try:
            outcome = asyncio.run(_load(spec, ready, start))
        except BaseException as error:
            outcome = LoadResult(errors=1, first_error=f"client process failed: {error!r}")
            outcome.first_error += "\n" + traceback.format_exc(limit=5)
            results.put(outcome)
            return
        results.put(outcome)


def measure(loads: Sequence[tuple[LoadSpec, Sequence[ServerProcess]]], processes: int) -> Iterator[Measured]:
    """Run each load, in order, from the same `processes` client processes.

    Yields each load's figures as it ends, with the CPU time its servers used
    over the same window. A client process that fails ends the series (its
    error is in the last figures yielded).
    """
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    starts = [context.Event() for _ in loads]
    specs = [spec for spec, _ in loads]
    clients = [
        context.Process(
            target=run_client, args=(specs, ready, starts, results), daemon=True, name=f"bench-client-{i}"
        )
        for i in range(processes)
    ]
    try:
        for client in clients:
            client.start()
        for (spec, servers), start in zip(loads, starts, strict=True):
            if not _all_ready(ready, clients):
                yield Measured(spec, processes, [*_collect(results, processes, 5), GONE], {})
                return
            start.set()
            time.sleep(spec.warmup)
            with cpu_meter(servers) as server_cpu:
                time.sleep(spec.duration)
            collected = _collect(results, processes, 30)
            if len(collected) < processes:
                yield Measured(spec, processes, [*collected, GONE], server_cpu)
                return
            yield Measured(spec, processes, collected, server_cpu)
        for client in clients:
            client.join(10)
    finally:
        for client in clients:
            if client.is_alive():
                client.terminate()
                client.join(5)


def _all_ready(ready: Any, clients: Sequence[Any]) -> bool:
    """Wait until every client process is connected; False if one died or it takes too long."""
    deadline, waiting = time.monotonic() + START_SECONDS, len(clients)
    while waiting:
        try:
            ready.get(timeout=0.2)
            waiting -= 1
        except queue.Empty:
            if time.monotonic() > deadline or any(c.exitcode is not None for c in clients):
                return False
    return True


def _collect(results: Any, count: int, timeout: float) -> list[LoadResult]:
    collected: list[LoadResult] = []
    deadline = time.monotonic() + timeout
    for _ in range(count):
        try:
            collected.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            break
    return collected
