"""The Lightbus half of the event-bus benchmark: N events fired, and their fire-to-delivery time.

    build/lightbus-venv/bin/python bench/lightbus_side.py --redis-url redis://127.0.0.1:PORT/0 --events 2000

It runs inside the venv that `bench.lightbus_env.ensure_lightbus_venv` makes
(Lightbus 1.1.2 needs aioredis 1.x, which cannot live beside brewmesh's
redis client), so it never imports brewmesh, nor anything else of `bench`
(which needs grpc). The default mode orchestrates two child processes of
this same script, each with its own event loop and GIL, as Lightbus is
deployed:

- the *firer*, the authoritative process: it registers an API with one
  event, `ping(id, fired_at)`, publishes its schema, fires a few warm-up
  events (connections open on first use), says it is ready, and on "go"
  fires N events with `await bus.<api>.ping.fire_async(...)`,
  `--concurrency` at a time (default 1: each fire awaited before the next,
  as a caller would), `fired_at` being `time.time()` at the fire;
- the *listener*: one named listener (one consumer group), started once
  the schema is published (so incoming validation runs, as in production)
  and ready only once its consumer group exists (so every fired event is
  delivered). Its handler records `time.time() - fired_at` for each event.

The orchestrator prints one JSON object on stdout: `fired_per_s` (N /
firing wall time), `delivered_per_s` (N / (last delivery - first fire)),
`p50_ms` and `p99_ms` (fire to delivery), `events`, `lightbus` (the
installed version) and a few details. The whole run is bounded by
`--timeout`: past it the children are stopped, what they measured so far is
printed and the exit status is 1. The children always stop: SIGTERM (on
which each reports what it has), then SIGKILL; each also stops by itself
when its stdin closes (the orchestrator is gone) or its own deadline
passes. A run uses its own API name (hence its own stream), service name
and consumer group, and deletes its stream and schema afterwards; nothing
else in Redis is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

# Installed only in build/lightbus-venv (untyped, and absent where mypy runs).
import aioredis  # type: ignore[import-not-found]
import lightbus  # type: ignore[import-not-found]
from lightbus.utilities.features import Feature  # type: ignore[import-not-found]

T = TypeVar("T")

EVENT = "ping"
LISTENER = "bench"
# A child's own deadline is the run's plus this: the orchestrator ends it first.
CHILD_GRACE_SECONDS = 15.0
STOP_SECONDS = 5.0
# Children talk in JSON lines of a few hundred bytes; this is ample.
LINE_LIMIT = 1 << 20


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a sorted sequence: the rule of bench._harness.

    (Copied, not imported: bench._harness needs grpc, which this venv lacks.)
    """
    if not ordered:
        return math.nan
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def emit(message: dict[str, Any]) -> None:
    """One JSON line on stdout: how a child reports to the orchestrator.

    If the orchestrator is gone (a closed pipe), the report goes nowhere
    and the child carries on closing its bus.
    """
    try:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Also spares the interpreter's own flush at exit the same error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def stream_name(api_name: str) -> str:
    """The Redis stream Lightbus uses for the API's events (its default `stream_use: per_api`)."""
    return f"{api_name}.*:stream"


def bus_config(args: argparse.Namespace, process_name: str) -> dict[str, Any]:
    """Every transport on the given Redis; Lightbus's defaults otherwise.

    The event transport's `batch_size` (its XREADGROUP COUNT) is Lightbus's
    default, 10, unless `--batch-size` says otherwise.
    """
    redis = {"redis": {"url": args.redis_url}}
    events = {"redis": {"url": args.redis_url, "batch_size": args.batch_size}}
    return {
        "service_name": args.service,
        "process_name": process_name,
        "bus": {"log_level": "warning", "schema": {"transport": redis}},
        "apis": {"default": {"event_transport": events, "rpc_transport": redis, "result_transport": redis}},
    }


def quiet_lightbus() -> None:
    """Let only warnings and errors of Lightbus through, to stderr.

    It logs each event sent and received at INFO; `lightbus run` would
    apply the config's `log_level`, but we run it from our own script.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    for name in ("lightbus", "aioredis"):
        log = logging.getLogger(name)
        log.setLevel(logging.WARNING)
        log.addHandler(handler)


async def stdin_reader() -> asyncio.StreamReader:
    """Our stdin as a stream: "go" comes that way, and its EOF means the orchestrator is gone."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


class Stop:
    """Why a child stops early: SIGTERM or SIGINT, its stdin's EOF, or its own deadline.

    Any of them sets one event; `unless` runs a step only until it is set,
    so the child still reports what it measured and closes its bus.
    """

    def __init__(self, seconds: float) -> None:
        self.event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.event.set)
        self._deadline = loop.call_later(seconds, self.event.set)
        self._eof_watch: asyncio.Task[None] | None = None

    def on_eof(self, stdin: asyncio.StreamReader) -> None:
        """Stop when stdin closes (nothing else is read from it after this)."""

        async def watch() -> None:
            await stdin.read()
            self.event.set()

        self._eof_watch = asyncio.ensure_future(watch())

    async def unless(self, step: Awaitable[T]) -> T | None:
        """The step's result, or None if a stop came first (the step is then cancelled)."""

        async def run() -> T:  # a task of our own, even for a gather()'s future
            return await step

        task = asyncio.ensure_future(run())
        stopped = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return None if task.cancelled() else task.result()

    def close(self) -> None:
        self._deadline.cancel()
        if self._eof_watch is not None:
            self._eof_watch.cancel()


def bench_api(api_name: str) -> Any:
    """An instance of an API class named `api_name` with one event, `ping(id: int, fired_at: float)`.

    Made with type() since the name changes per run (it names the stream);
    typed parameters, so that the schema validates them as in real use.
    """
    event = lightbus.Event(parameters=(lightbus.Parameter("id", int), lightbus.Parameter("fired_at", float)))
    meta = type("Meta", (), {"name": api_name})
    api_class = type("BenchApi", (lightbus.Api,), {"Meta": meta, EVENT: event})
    return api_class()


async def close_bus(bus: Any, *, worker: bool) -> None:
    """Stop the worker (the listener's) and close the client, bounded: a stuck close must not hang us.

    A failure here is told on stderr but changes nothing: the figures are out.
    """
    try:
        async with asyncio.timeout(STOP_SECONDS):
            if worker:
                await bus.client.stop_worker()
            await bus.client.close_async()
    except Exception as error:
        print(f"{'listener' if worker else 'firer'}: closing the bus: {error!r}", file=sys.stderr)


# The firer: the authoritative process of the API.


async def fire(args: argparse.Namespace) -> int:
    """Publish the schema, warm up, report ready; on "go" fire the events and report the timing."""
    quiet_lightbus()
    stop = Stop(args.timeout + CHILD_GRACE_SECONDS)
    stdin = await stdin_reader()
    bus = lightbus.create(config=bus_config(args, "firer"), plugins=[])
    bus.client.register_api(bench_api(args.api))
    node = functools.reduce(getattr, [*args.api.split("."), EVENT], bus)
    fired = 0

    async def warm_up() -> bool:
        # Loads the bus's schemas and stores ours, which the listener validates against.
        await bus.client.lazy_load_now()
        # The listener's group starts at the stream's end later: it never sees these.
        for i in range(args.warmup):
            await node.fire_async(id=-1 - i, fired_at=time.time())
        return True

    async def worker(ids: Any) -> None:
        nonlocal fired
        for i in ids:
            await node.fire_async(id=i, fired_at=time.time())
            fired += 1

    try:
        if not await stop.unless(warm_up()):
            return 3
        emit({"ready": True})
        if (await stop.unless(stdin.readline()) or b"").strip() != b"go":
            return 3
        stop.on_eof(stdin)
        ids = iter(range(args.events))  # shared: each worker takes the next id
        start, clock = time.time(), time.perf_counter()
        await stop.unless(asyncio.gather(*(worker(ids) for _ in range(args.concurrency))))
        emit({"fired": fired, "fire_start": start, "fire_seconds": time.perf_counter() - clock})
        return 0 if fired == args.events else 3
    finally:
        stop.close()
        await close_bus(bus, worker=False)


# The listener: one named listener, so one consumer group.


async def group_exists(redis_url: str, stream: str, group: str) -> bool:
    """Whether the consumer group is on the stream yet: Lightbus creates it after the worker starts."""
    redis = await aioredis.create_redis(redis_url)
    try:
        groups = await redis.xinfo_groups(stream)
    except aioredis.ReplyError:  # no such stream yet
        return False
    finally:
        redis.close()
        await redis.wait_closed()
    return any(g[b"name"] == group.encode() for g in groups)


async def listen(args: argparse.Namespace) -> int:
    """Listen until every event of the run arrived (or a stop came), then report a summary line."""
    quiet_lightbus()
    stop = Stop(args.timeout + CHILD_GRACE_SECONDS)
    stop.on_eof(await stdin_reader())
    # Only the events feature: no RPC consumer for Lightbus's internal APIs.
    bus = lightbus.create(config=bus_config(args, "listener"), features=[Feature.EVENTS], plugins=[])
    latencies: list[float] = []
    seen: set[int] = set()
    duplicates = 0
    first = last = math.nan
    complete = asyncio.Event()

    # Async on purpose: Lightbus runs a plain function in a new thread pool for each event.
    async def on_ping(event: Any, id: int, fired_at: float) -> None:
        nonlocal duplicates, first, last
        now = time.time()
        if id in seen:  # redelivered (reclaimed after the acknowledgement timeout)
            duplicates += 1
            return
        seen.add(id)
        latencies.append(now - fired_at)
        if math.isnan(first):
            first = now
        last = now

    # Runs once the listener returned and the event was acknowledged (one XACK per event).
    async def after_execution(**_: Any) -> None:
        if len(seen) >= args.events:
            complete.set()

    bus.client.listen_for_event(args.api, EVENT, on_ping, listener_name=LISTENER)
    bus.client.after_event_execution(after_execution)

    async def start() -> bool:
        await bus.client.start_worker()
        group = f"{args.service}-{LISTENER}"
        while True:  # Redis is polled: nothing in Lightbus says when the group is made
            if await group_exists(args.redis_url, stream_name(args.api), group):
                return True
            await asyncio.sleep(0.02)

    try:
        if await stop.unless(start()):
            emit({"ready": True})
            await stop.unless(complete.wait())
    finally:
        stop.close()
        ordered = sorted(latencies)
        emit(
            {
                "delivered": len(seen),
                "duplicates": duplicates,
                "first_delivery": None if math.isnan(first) else first,
                "last_delivery": None if math.isnan(last) else last,
                # None rather than NaN when nothing came: the report stays strict JSON.
                "p50_ms": percentile(ordered, 50) * 1000 if ordered else None,
                "p99_ms": percentile(ordered, 99) * 1000 if ordered else None,
                "max_ms": ordered[-1] * 1000 if ordered else None,
            }
        )
        await close_bus(bus, worker=True)
    return 0 if complete.is_set() else 3


# The orchestrator.


class ChildFailed(Exception):
    pass


class Child:
    """A child process of this script, spoken to in lines on its stdin and stdout (stderr is ours)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process

    @classmethod
    async def start(cls, mode: str, args: argparse.Namespace) -> Child:
        options = ("redis_url", "events", "timeout", "concurrency", "batch_size", "warmup", "api", "service")
        command = [sys.executable, str(Path(__file__).resolve()), f"--mode={mode}"]
        command += [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in options]
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT
        )
        return cls(mode, process)

    async def read(self, key: str) -> dict[str, Any]:
        """The child's next report that has `key`; a child that ends without one has failed."""
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:  # not a report: pass it on
                sys.stderr.write(f"{self.name}: {line.decode(errors='replace')}")
                continue
            if isinstance(message, dict) and key in message:
                return message
        code = await self.process.wait()
        raise ChildFailed(f"the {self.name} process ended (exit {code}) without reporting {key!r}")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    async def report_on_stop(self, key: str) -> dict[str, Any]:
        """SIGTERM the child and take the report it gives on stopping (empty if none comes)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_SECONDS):
                return await self.read(key)
        return {}

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_SECONDS: the child is gone when this returns."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()


async def delete_run_keys(args: argparse.Namespace) -> None:
    """Remove this run's stream and schema, the keys named after its API: nothing else.

    (Lightbus also stores the schemas of its internal APIs, `schema:internal.*`
    with a 60 s TTL, shared by every Lightbus process: left alone.)
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(STOP_SECONDS):
            redis = await aioredis.create_redis(args.redis_url)
            try:
                await redis.delete(stream_name(args.api), f"schema:{args.api}")
                await redis.srem("schemas", args.api)
            finally:
                redis.close()
                await redis.wait_closed()


def figures(args: argparse.Namespace, fired: dict[str, Any], heard: dict[str, Any]) -> dict[str, Any]:
    """The published figures from the firer's timing and the listener's summary (either may be partial)."""
    count = fired.get("fired", 0)
    delivered = heard.get("delivered", 0)
    fire_seconds = fired.get("fire_seconds")
    fire_start = fired.get("fire_start")
    last = heard.get("last_delivery")
    return {
        "fired_per_s": count / fire_seconds if count and fire_seconds else None,
        "delivered_per_s": delivered / (last - fire_start) if delivered and fire_start and last else None,
        "p50_ms": heard.get("p50_ms"),
        "p99_ms": heard.get("p99_ms"),
        "max_ms": heard.get("max_ms"),
        "events": args.events,
        "fired": count,
        "delivered": delivered,
        "duplicates": heard.get("duplicates", 0),
        "complete": count == delivered == args.events,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "lightbus": metadata.version("lightbus"),
    }


async def orchestrate(args: argparse.Namespace) -> int:
    """Start the firer, then the listener; say "go"; collect both reports; stop both, whatever happens."""
    # SIGTERM as Ctrl-C: cancel this task, so that the children are stopped below.
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    firer: Child | None = None
    listener: Child | None = None
    fired: dict[str, Any] = {}
    heard: dict[str, Any] = {}
    error = ""
    try:
        async with asyncio.timeout(args.timeout):
            firer = await Child.start("fire", args)
            await firer.read("ready")  # its schema is published, its connections open
            listener = await Child.start("listen", args)
            await listener.read("ready")  # its consumer group exists
            firer.send("go")
            fired = await firer.read("fired")
            heard = await listener.read("delivered")
    except TimeoutError:
        error = f"timed out after {args.timeout:g} s"
    except ChildFailed as failure:
        error = str(failure)
    except asyncio.CancelledError:
        error = "interrupted"
    finally:
        # Either child reports what it has when stopped early.
        if firer is not None and not fired:
            fired = await firer.report_on_stop("fired")
        if listener is not None and not heard:
            heard = await listener.report_on_stop("delivered")
        await asyncio.gather(*(child.stop() for child in (firer, listener) if child is not None))
        await delete_run_keys(args)
    result = figures(args, fired, heard)
    if error:
        result["error"] = error
    print(json.dumps(result), flush=True)
    return 0 if result["complete"] and not error else 1


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The Lightbus half of the event-bus benchmark.")
    parser.add_argument("--redis-url", required=True, help="e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--events", type=int, default=2000, help="events to fire (default 2000)")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound for the whole run, s (120)")
    parser.add_argument("--concurrency", type=int, default=1, help="fires in flight at once (default 1)")
    parser.add_argument("--batch-size", type=int, default=10, help="event transport batch_size (10)")
    parser.add_argument("--warmup", type=int, default=20, help="events fired before the listener starts")
    # The children's side of the command line.
    run_id = secrets.token_hex(4)
    parser.add_argument("--mode", choices=("run", "fire", "listen"), default="run", help=argparse.SUPPRESS)
    parser.add_argument("--api", default=f"bench.run{run_id}", help=argparse.SUPPRESS)
    parser.add_argument("--service", default=f"bench-{run_id}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.events, args.concurrency, args.batch_size) < 1 or args.warmup < 0 or args.timeout <= 0:
        parser.error("--events, --concurrency, --batch-size and --timeout must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    modes = {"run": orchestrate, "fire": fire, "listen": listen}
    try:
        return asyncio.run(modes[args.mode](args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
