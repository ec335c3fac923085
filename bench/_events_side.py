"""The child processes of the event-bus benchmark (bench.events), one mode each.

    python -m bench._events_side MODE [OPTIONS]

Every mode talks to bench.events in JSON lines: commands on stdin, one JSON
object per line on stdout (logs go to stderr). Each stops when its stdin
closes (bench.events is gone), on SIGTERM or SIGINT, and each started
through bench._guard also dies with its parent. Modes:

- `mesh`: a process of the mesh, `Mesh.start` as `brewmesh up` (or with
  some components only), on the embedded log or Redis; says `ready` with
  its address and admin key. Commands: `warm` (fire a warm-up event every
  20 ms until the next command), `fire N C` (N `recipe_updated` events in
  C concurrent loops, one small `store.quick_write` transaction each, as a service
  fires), `fill N` (N events in transactions of 1000: a quick way to a big
  log), `count` (events in the log).
- `listen`: a listener group (`Bus.listen(..., listener_name="bench")`)
  over Redis, with a Bus of its own, as another service's process has.
- `subscribe`: a listener group through gRPC `EventBus.Subscribe`
  (`listener_name="bench"`, new events only) against a mesh process;
  `--batches`: through `EventBus.SubscribeBatches`, several events a message.
  Both listeners say `ready` at their first event; `reset T0_NS` starts
  recording events fired since then (not the warm-up ones); `wait N
  SECONDS` reports once N have arrived (or the time is up).
- `load`: UpdateRecipe calls with a field mask, closed loop (`--rate 0`:
  `--concurrency` calls in flight) or paced at `--rate` calls per second;
  reports once done.
- `idle`: many streams that then stay idle (`watch`: ProgramRunner.Watch of
  running runs; `subscribe`: plain EventBus.Subscribe from the oldest
  event; `group`: the same with a listener name each), opened in waves;
  says `ready` once every stream has its first message, then holds them
  until its stdin closes (any line: how many are still open).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from bench._harness import percentile
from brewmesh import event_backend
from brewmesh.apis import ApiRegistry
from brewmesh.backends import open_store
from brewmesh.bus.v1 import event_bus_pb2, event_bus_pb2_grpc, events_pb2
from brewmesh.client import MeshClient, connect
from brewmesh.event_backend import PUBLIC
from brewmesh.events import Bus, BusSettings, ReceivedEvent, unless_stopped
from brewmesh.keyed_channel import authorization
from brewmesh.mesh import Mesh, all_components
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.runner.v1 import program_runner_pb2 as runner_pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from brewmesh.settings import Settings
from brewmesh.storage import Tx

T = TypeVar("T")

RECIPE_API = recipes_pb2.DESCRIPTOR.services_by_name["RecipeService"].full_name
EVENT = "recipe_updated"
NAMESPACE = "bench-co"
WARM_PREFIX = f"recipes/{NAMESPACE}:warm-"
FIRED_PREFIX = f"recipes/{NAMESPACE}:event-"
VOLUME_MASK = "product_properties.default_volume_ml"
LISTENER = "bench"
WARM_EVERY_SECONDS = 0.02
FILL_BATCH = 1000
CALL_SECONDS = 10.0
READY_SECONDS = 90.0


def emit(message: dict[str, Any]) -> None:
    """One JSON line on stdout: how a child reports."""
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def recipe_name(i: int) -> str:
    return f"recipes/{NAMESPACE}:r{i}"


def updated_event(name: str, volume: int) -> recipes_pb2.RecipeUpdatedEvent:
    """The payload of a `recipe_updated` event, as the recipes service fires it."""
    return recipes_pb2.RecipeUpdatedEvent(
        recipe=recipes_pb2.Recipe(
            name=name,
            product_properties=recipes_pb2.ProductProperties(default_volume_ml=volume),
            execution_properties=recipes_pb2.ExecutionProperties(program_id="lungo"),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=[VOLUME_MASK]),
    )


def update_request(i: int, recipes: int) -> recipes_pb2.UpdateRecipeRequest:
    """The i-th UpdateRecipe of the load: recipes in turn, a volume that changes."""
    return recipes_pb2.UpdateRecipeRequest(
        recipe=recipes_pb2.Recipe(
            name=recipe_name(i % recipes),
            product_properties=recipes_pb2.ProductProperties(default_volume_ml=100 + (i // recipes) % 200),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=[VOLUME_MASK]),
    )


class Commands:
    """stdin as lines; `stop` is set on its EOF, SIGTERM or SIGINT."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self._reader = asyncio.StreamReader()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop.set)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self._reader), sys.stdin)

    async def next(self) -> list[str] | None:
        """The next command's words, or None once stdin closed or a stop signal came."""
        line = await unless_stopped(self._reader.readline(), self.stop)
        if not line:
            self.stop.set()
            return None
        return line.decode().split()


# -- mesh: a firing process ---------------------------------------------------------------------


def pick_components(names: str) -> list[Any]:
    components = all_components()
    if names == "all":
        return components
    wanted = set(names.split(","))
    return [c for c in components if c.name in wanted]


async def mesh_mode(args: argparse.Namespace) -> None:
    # `brewmesh up` logs at INFO: so does this process, to cost what it costs.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = Commands()
    await commands.open()
    chosen = Settings(
        data_dir=Path(args.data_dir),
        port=args.port,
        store=args.store_url or None,
        bus=args.bus_url or None,
        cpus=args.cpus or None,
    )
    mesh = await Mesh.start(chosen, pick_components(args.components))
    gc.freeze()  # as `brewmesh up` does once started
    bus = mesh.runtime.bus
    address = f"127.0.0.1:{mesh.port}"
    emit({"ready": True, "address": address, "admin_key": mesh.admin_key, "pid": os.getpid()})
    warming: asyncio.Task[None] | None = None
    try:
        while (words := await commands.next()) is not None:
            if warming is not None:
                warming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warming
                warming = None
            if not words:
                continue
            if words[0] == "warm":
                warming = asyncio.create_task(warm(bus))
            elif words[0] == "fire":
                emit(await fire(bus, int(words[1]), int(words[2])))
            elif words[0] == "fill":
                emit(await fill(bus, int(words[1])))
            elif words[0] == "count":
                emit({"logged": await logged(bus)})
            else:
                emit({"error": f"unknown command {words[0]!r}"})
    finally:
        if warming is not None:
            warming.cancel()
        await mesh.stop(grace=0)


def fire_one(bus: Bus, tx: Tx, payload: recipes_pb2.RecipeUpdatedEvent) -> None:
    bus.fire(tx, RECIPE_API, EVENT, payload, PUBLIC)


async def warm(bus: Bus) -> None:
    for i in range(1_000_000):
        payload = updated_event(f"{WARM_PREFIX}{i}", 100)
        await bus.store.quick_write(functools.partial(fire_one, bus, payload=payload))
        await asyncio.sleep(WARM_EVERY_SECONDS)


async def fire(bus: Bus, count: int, concurrency: int) -> dict[str, Any]:
    """`count` events, `concurrency` loops at once, each awaiting its transaction before the next."""
    ids = iter(range(count))  # shared: each loop takes the next id
    fired = 0

    async def loop() -> None:
        nonlocal fired
        for i in ids:
            payload = updated_event(f"{FIRED_PREFIX}{i}", 100 + i % 200)
            await bus.store.quick_write(functools.partial(fire_one, bus, payload=payload))
            fired += 1

    start_ns, clock, cpu = time.time_ns(), time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return {
        "fired": fired,
        "fire_start_ns": start_ns,
        "fire_seconds": time.perf_counter() - clock,
        "cpu_seconds": time.process_time() - cpu,
    }


async def fill(bus: Bus, count: int) -> dict[str, Any]:
    """`count` events straight into the log, FILL_BATCH per transaction."""
    clock = time.perf_counter()

    def batch(tx: Tx, first: int, size: int) -> None:
        for i in range(first, first + size):
            fire_one(bus, tx, updated_event(f"{WARM_PREFIX}fill-{i}", 100 + i % 200))

    for first in range(0, count, FILL_BATCH):
        await bus.store.write(functools.partial(batch, first=first, size=min(FILL_BATCH, count - first)))
        await asyncio.sleep(0)  # let calls in flight through between batches
    return {"filled": count, "seconds": time.perf_counter() - clock, "logged": await logged(bus)}


async def logged(bus: Bus) -> int:
    """Events of the recipes API in the embedded log."""
    row = await bus.store.read(
        lambda tx: tx.fetchone("SELECT COUNT(*) AS n FROM bus_events WHERE api = ?", (RECIPE_API,))
    )
    return int(row["n"]) if row else 0


# -- listeners: a group in another process ------------------------------------------------------


@dataclass
class Recorder:
    """What a listener received: fire and delivery time of each event fired since `reset`."""

    ready: bool = False
    since_ns: int | None = None
    fire_ns: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    duplicates: int = 0
    first_delivery: float = 0.0
    last_delivery: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def got(self, event_id: str, name: str, fired_ns: int) -> None:
        now = time.time()
        if not self.ready:
            self.ready = True
            emit({"ready": True})
        if self.since_ns is None or fired_ns < self.since_ns or name.startswith(WARM_PREFIX):
            return
        if event_id in self.fire_ns:
            self.duplicates += 1
            return
        self.fire_ns[event_id] = fired_ns
        self.latencies.append(now - fired_ns / 1e9)
        if not self.first_delivery:
            self.first_delivery = now
        self.last_delivery = now
        self.changed.set()

    def reset(self, since_ns: int) -> None:
        self.since_ns = since_ns
        self.fire_ns.clear()
        self.latencies.clear()
        self.duplicates = 0
        self.first_delivery = self.last_delivery = 0.0

    async def wait(self, count: int, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while len(self.fire_ns) < count and (left := deadline - time.monotonic()) > 0:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        ordered = sorted(self.latencies)
        fired = list(self.fire_ns.values())
        return {
            "delivered": len(ordered),
            "duplicates": self.duplicates,
            "first_delivery": self.first_delivery,
            "last_delivery": self.last_delivery,
            "first_fire": min(fired) / 1e9 if fired else 0.0,
            "last_fire": max(fired) / 1e9 if fired else 0.0,
            "p50_ms": 1e3 * percentile(ordered, 50) if ordered else None,
            "p99_ms": 1e3 * percentile(ordered, 99) if ordered else None,
            "max_ms": 1e3 * ordered[-1] if ordered else None,
        }


async def serve_recorder(recorder: Recorder, commands: Commands) -> None:
    """Answer `reset` and `wait` until stdin closes."""
    cpu = time.process_time()
    while (words := await commands.next()) is not None:
        if words and words[0] == "reset":
            recorder.reset(int(words[1]))
            cpu = time.process_time()
            emit({"reset": True})
        elif words and words[0] == "wait":
            report = await recorder.wait(int(words[1]), float(words[2]))
            emit({**report, "cpu_seconds": time.process_time() - cpu})


async def listen_mode(args: argparse.Namespace) -> None:
    """A listener group over Redis, with a Bus and a store of its own (as another service has)."""
    from brewmesh.backends.redis_bus import RedisEventBackend

    logging.basicConfig(level=logging.WARNING)
    commands = Commands()
    await commands.open()
    recorder = Recorder()
    with tempfile.TemporaryDirectory(prefix="bench-listener-") as data:
        store = open_store(None, Path(data))
        await store.migrate(list(event_backend.MIGRATIONS))
        settings = BusSettings()
        backend = RedisEventBackend(args.redis_url, store, [], settings.retention)
        await backend.start()
        bus = Bus(backend, store, ApiRegistry(), "bench-listener", settings)

        async def handler(received: ReceivedEvent) -> None:
            payload = received.payload
            assert isinstance(payload, recipes_pb2.RecipeUpdatedEvent)
            fired = received.time.replace(tzinfo=UTC).timestamp()
            recorder.got(received.id, payload.recipe.name, int(fired * 1e9))

        for _ in range(args.members):  # members of one group: they share its events
            bus.listen(f"{RECIPE_API}.{EVENT}", handler, listener_name=LISTENER).add_done_callback(report_end)
        try:
            await serve_recorder(recorder, commands)
        finally:
            await bus.close()
            await store.close()


async def subscribe_mode(args: argparse.Namespace) -> None:
    """A listener group through EventBus.Subscribe (or SubscribeBatches), new events only."""
    logging.basicConfig(level=logging.WARNING)
    commands = Commands()
    await commands.open()
    recorder = Recorder()
    request = event_bus_pb2.SubscribeRequest(
        api=RECIPE_API, event_types=[EVENT], listener_name=LISTENER, new_only=True
    )

    def got(event: events_pb2.Event) -> None:
        payload = recipes_pb2.RecipeUpdatedEvent()
        event.payload.Unpack(payload)
        recorder.got(event.id, payload.recipe.name, event.time.ToNanoseconds())

    async def follow(mesh: MeshClient) -> None:
        if not args.batches:
            async for event in mesh.bus.Subscribe(request):
                got(event)
            return
        async for batch in mesh.bus.SubscribeBatches(
            event_bus_pb2.SubscribeBatchesRequest(subscription=request)
        ):
            for event in batch.events:
                got(event)

    async with connect(args.address, args.key) as mesh:
        # Several calls of one channel, members of one group: gRPC has one write in flight per
        # stream, so a group read through one stream gets one event per turn of the server's loop.
        streams = [asyncio.create_task(follow(mesh)) for _ in range(args.members)]
        for stream in streams:
            stream.add_done_callback(report_end)
        try:
            await serve_recorder(recorder, commands)
        finally:
            for stream in streams:
                stream.cancel()
            for stream in streams:
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await stream


def report_end(task: asyncio.Task[None]) -> None:
    """A listener's stream must not end: say why it did (bench.events stops waiting on it)."""
    if not task.cancelled():
        error = task.exception()
        emit({"error": f"the stream ended: {error!r}" if error else "the stream ended"})


# -- load: UpdateRecipe over gRPC ---------------------------------------------------------------


@dataclass
class LoadResult:
    ok: int = 0
    """Calls answered OK, warm-up included: each fired one event."""
    requests: int = 0
    """Calls answered OK inside the measured window."""
    errors: int = 0
    skipped: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)


async def load_mode(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    clients = [connect(args.address, args.key) for _ in range(args.channels)]
    result = LoadResult()
    counter = iter(range(1 << 62))
    try:
        for client in clients:  # every channel connected before the clock starts
            await client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name=recipe_name(0)), timeout=10)
        emit({"started": True})
        began = time.monotonic()
        window_start = began + args.warmup
        window_end = window_start + args.duration
        start_ns = time.time_ns()

        async def call(k: int) -> None:
            stub = clients[k % len(clients)].recipes
            sent = time.monotonic()
            try:
                await stub.UpdateRecipe(update_request(k, args.recipes), timeout=CALL_SECONDS)
            except grpc.aio.AioRpcError as error:
                result.errors += 1
                result.first_error = result.first_error or f"{error.code().name}: {error.details()}"
                return
            ended = time.monotonic()
            result.ok += 1
            if window_start <= ended < window_end:
                result.requests += 1
                result.latencies.append(ended - sent)

        async def closed_loop() -> None:
            while time.monotonic() < window_end:
                await call(next(counter))

        async def paced() -> None:
            interval, k, in_flight = 1.0 / args.rate, 0, set[asyncio.Task[None]]()
            while (now := time.monotonic()) < window_end:
                while began + k * interval <= now:
                    if len(in_flight) < args.concurrency:
                        task = asyncio.create_task(call(next(counter)))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    else:
                        result.skipped += 1
                    k += 1
                await asyncio.sleep(max(0.0, began + k * interval - time.monotonic()))
            await asyncio.gather(*in_flight)

        cpu = time.process_time()
        if args.rate > 0:
            await paced()
        else:
            await asyncio.gather(*(closed_loop() for _ in range(args.concurrency)))
        ordered = sorted(result.latencies)
        emit(
            {
                "ok": result.ok,
                "requests": result.requests,
                "errors": result.errors,
                "skipped": result.skipped,
                "first_error": result.first_error,
                "p50_ms": 1e3 * percentile(ordered, 50) if ordered else None,
                "p99_ms": 1e3 * percentile(ordered, 99) if ordered else None,
                "start_ns": start_ns,
                "end_ns": time.time_ns(),
                "client_cpu": time.process_time() - cpu,
            }
        )
    finally:
        for client in clients:
            await client.channel.close(None)


# -- idle streams -------------------------------------------------------------------------------


def open_idle(channel: grpc.aio.Channel, kind: str, index: int, run: str, key: str) -> Any:
    """Idle stream `index`: a Watch of `run`, a plain Subscribe from the oldest event, or a
    Subscribe with a listener name (a group of its own) from the oldest event."""
    metadata = (authorization(key),)
    if kind == "watch":
        watch = program_runner_pb2_grpc.ProgramRunnerStub(channel).Watch
        return watch(runner_pb.WatchRequest(run=run), metadata=metadata)
    listener = f"idle-{index}" if kind == "group" else ""
    subscribe = event_bus_pb2_grpc.EventBusStub(channel).Subscribe
    return subscribe(
        event_bus_pb2.SubscribeRequest(api=RECIPE_API, listener_name=listener), metadata=metadata
    )


async def idle_mode(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    commands = Commands()
    await commands.open()
    # A connection each (grpc shares one between equal channels otherwise), as many clients would have.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(args.address, options=options) for _ in range(args.channels)]
    first = asyncio.Semaphore(0)
    received = started = 0
    failures: list[str] = []
    runs = args.runs.split(",") if args.runs else [""]

    async def hold(index: int) -> None:
        nonlocal received, started
        got_first = False
        try:
            channel, run = channels[index % len(channels)], runs[index % len(runs)]
            stream = open_idle(channel, args.kind, index, run, args.key)
            async for _ in stream:
                received += 1
                if not got_first:
                    got_first = True
                    started += 1
                    first.release()
        except grpc.aio.AioRpcError as error:
            failures.append(f"{error.code().name}: {error.details()} ({error.debug_error_string()})")
        finally:
            if not got_first:
                first.release()  # the wave goes on; `failed` says it

    tasks: list[asyncio.Task[None]] = []
    try:
        clock = time.perf_counter()
        try:
            async with asyncio.timeout(READY_SECONDS):
                # In waves: a burst of thousands of calls at once overflows the server's queue of
                # calls not yet taken by the application (grpc.server.max_pending_requests_hard_limit,
                # 3000 by default) and those beyond it are CANCELLED.
                for wave in range(0, args.streams, args.wave):
                    size = min(args.wave, args.streams - wave)
                    tasks += [asyncio.create_task(hold(i)) for i in range(wave, wave + size)]
                    for _ in range(size):
                        await first.acquire()
        except TimeoutError:
            emit(
                {
                    "error": f"after {READY_SECONDS:g} s only {started} of {args.streams} streams had their"
                    f" first message; {len(failures)} failed"
                    + (f", the first with {failures[0]}" if failures else "")
                }
            )
            return
        seconds = time.perf_counter() - clock
        emit({"ready": started, "failed": len(failures), "seconds": seconds, "messages": received})
        while await commands.next() is not None:
            emit({"open": sum(not t.done() for t in tasks), "messages": received, "failed": len(failures)})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close(None)


# -- command line -------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench._events_side", description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    mesh = modes.add_parser("mesh")
    mesh.add_argument("--data-dir", required=True)
    mesh.add_argument("--port", type=int, default=0)
    mesh.add_argument("--components", default="all", help="all, or e.g. partners,recipes")
    mesh.add_argument("--bus-url", default="")
    mesh.add_argument("--store-url", default="")
    mesh.add_argument("--cpus", default="", help="the mesh's --cpus (default: any CPU)")
    listen = modes.add_parser("listen")
    listen.add_argument("--redis-url", required=True)
    for name in ("subscribe", "load", "idle"):
        mode = modes.add_parser(name)
        mode.add_argument("--address", required=True)
        mode.add_argument("--key", required=True)
    for grouped in (listen, modes.choices["subscribe"]):  # Subscribe calls share one channel
        grouped.add_argument("--members", type=int, default=1, help="members of the group in this process")
    modes.choices["subscribe"].add_argument(
        "--batches", action="store_true", help="read through SubscribeBatches, not Subscribe"
    )
    load = modes.choices["load"]
    load.add_argument("--recipes", type=int, default=32)
    load.add_argument("--concurrency", type=int, default=32, help="calls in flight (at most, if paced)")
    load.add_argument("--channels", type=int, default=4)
    load.add_argument("--warmup", type=float, default=1.0)
    load.add_argument("--duration", type=float, default=5.0)
    load.add_argument("--rate", type=float, default=0.0, help="calls per second (0: closed loop)")
    idle = modes.choices["idle"]
    idle.add_argument("--kind", choices=("watch", "subscribe", "group"), required=True)
    idle.add_argument("--streams", type=int, required=True)
    idle.add_argument("--channels", type=int, default=50)
    idle.add_argument("--wave", type=int, default=500, help="streams opened at once")
    idle.add_argument("--runs", default="", help="run names, comma-separated (watch)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    modes: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, None]]] = {
        "mesh": mesh_mode,
        "listen": listen_mode,
        "subscribe": subscribe_mode,
        "load": load_mode,
        "idle": idle_mode,
    }
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(modes[args.mode](args))


if __name__ == "__main__":
    main()
