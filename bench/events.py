"""The event bus against Lightbus 1.1.2 on the same Redis: throughput, delivery time, idle cost.

    .venv/bin/python -m bench.events [--quick] [--events 10000] [--concurrency 1] [--members 4]

Starts its own redis-server on a free port (tests.engines.start_redis) and,
each in its own process (bench._events_side, through bench._guard), the
processes of every part, and stops all of them at the end:

(a) Events fired by the authoritative process directly (a mesh process
    hosting partners and recipes; `--concurrency` loops, each awaiting one
    `store.write` transaction firing one `recipe_updated` event before the
    next, as a service fires), delivered to ONE listener group in another
    process: on Redis `--members` (4) `Bus.listen(..., listener_name="bench")`
    over its own RedisEventBackend; on the embedded log `--members` gRPC
    `EventBus.SubscribeBatches` calls with that `listener_name`, on one
    channel to the firing process (the way to read a group's events from
    another process at its rate: each message carries the events that were
    ready together). The members share the group's events, each handled
    once. For information, the embedded log once more with `Subscribe`, one
    event a message: gRPC has one write in flight per stream, so one stream
    gets at most one event per turn of the server's loop, and every event
    costs the firing process a gRPC write. Lightbus refuses a second
    listener of one name in a process: its side has one. fired/s = events /
    firing time; delivered/s = events / (last delivery - first fire);
    fire->delivery from the event's time (stamped as it is fired, in the
    same wall clock). The reference: bench/lightbus_side.py, the same
    number of events, one named listener, on the same Redis (its own db).
    Three rounds, each running Lightbus, then the Redis bus, then the
    embedded one (SubscribeBatches, then Subscribe), so that a slow moment
    of the machine weighs on all alike; each figure is the median of its
    rounds, and each round's delivered/s is printed too.
    Targets: Redis >= 10x Lightbus's delivered/s; embedded >= 5x.
(b) Events fired by UpdateRecipe RPCs with a field mask (a mesh process
    with every component, as `brewmesh up`; a client process over gRPC),
    the listener group in a third process through Subscribe. The max write
    rate (closed loop), then a load paced at 80 % of it: p99 fire->delivery
    (target <= 50 ms) and whether delivery keeps up (every event delivered,
    none later than 1 s). Embedded log; Redis with the store on SQLite.
(c) UpdateRecipe throughput (closed loop) of two mesh processes (embedded
    log), measured alternately: a fresh one, and one whose log was filled to
    100k events of the recipes API (fired directly in its store, 1000 per
    transaction). Target: within 10 %.
(d) CPU time of one mesh process (embedded log) holding 5,000 idle
    ProgramRunner.Watch streams on running runs (a machine of bench.machine
    that waits for `go`) over 10 s, from /proc. Target: < 0.02 cores. Also
    reported: the same process without watchers; with 5,000 idle plain
    EventBus.Subscribe streams (same target); and, for information, with
    5,000 idle Subscribe streams each with a listener_name of its own, over
    35 s (an idle group member claims again every 30 s). The streams open in
    waves of 500: a burst of thousands of calls overflows grpc's queue of
    calls the server has not yet taken (3,000) and the rest are CANCELLED.

`--parts` runs some parts only (e.g. `--parts ab`); `--concurrency` sets the
firing loops of (a) on both sides; `--members` the members of (a)'s group;
`--server-cpus LIST` runs every mesh process with `--cpus LIST` (default:
where the kernel puts it, as `brewmesh up` does). Lightbus's processes
always run unpinned: with its firer pinned to one core the same way,
Lightbus delivered half as many events a second (680 against
1,300-1,500), which would flatter the ratio.

`--quick` makes every part small (a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _harness as h
from bench._events_side import NAMESPACE, recipe_name, update_request
from bench.lightbus_env import SIDE_SCRIPT, ensure_lightbus_venv
from bench.run_latency import BURST_MACHINE, RECIPE, VOLUME_ML
from bench.run_latency import set_up as set_up_runs
from brewmesh.client import connect
from brewmesh.cpu_affinity import CPU_LIST_RULE, parse_cpus
from brewmesh.events import WAIT_SECONDS
from brewmesh.partners.v1 import partners_pb2
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.runner.v1 import program_runner_pb2 as runner_pb

REDIS_TARGET = 10.0
EMBEDDED_TARGET = 5.0
P99_TARGET_MS = 50.0
KEEP_UP_MS = 1000.0
FILL_TARGET = 0.10
IDLE_TARGET_CORES = 0.02
FILLED_LOG = 100_000
CALL_SECONDS = 10.0
CHILD_READY_SECONDS = 60.0
STOP_SECONDS = 10.0
LINE_LIMIT = 1 << 20
RECIPES = 32
LOAD_CONCURRENCY = 32
PACED_MAX_IN_FLIGHT = 256
MEMBERS = 4


@dataclass(frozen=True)
class Options:
    quick: bool
    events: int
    concurrency: int
    duration: float
    paced_duration: float
    rounds: int
    fill: int
    watchers: int
    runs: int
    idle_seconds: float
    parts: str = "abcd"
    server_cpus: str = ""
    """The mesh's --cpus in every part ("": any CPU). Lightbus runs where the kernel puts it: with
    its firer pinned so, it delivered half as many events a second."""
    members: int = MEMBERS
    """Members of the one listener group in (a)'s listener process, on brewmesh's sides (Lightbus
    refuses a second listener of one name in a process: it has one)."""

    @property
    def settle_seconds(self) -> float:
        """A pause before a quiet window (after a fill, after streams opened)."""
        return 0.5 if self.quick else 2.0

    @property
    def group_seconds(self) -> float:
        return self.idle_seconds if self.quick else WAIT_SECONDS + 5

    @property
    def lightbus_timeout(self) -> float:
        return 60.0 + self.events / 100


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="every part small: a smoke run (< 1 min)")
    parser.add_argument("--events", type=int, help="events fired in (a), each side (10000; quick 1000)")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="firing loops in (a), each side (1: each fire awaited)"
    )
    parser.add_argument("--parts", default="abcd", help="which parts to run, e.g. 'ab' (default: all)")
    parser.add_argument(
        "--server-cpus",
        default="",
        metavar="LIST",
        help="run each mesh process with --cpus LIST (default: any CPU; Lightbus always runs unpinned)",
    )
    parser.add_argument(
        "--members",
        type=int,
        default=MEMBERS,
        help=f"members of the listener group in (a)'s listener process, brewmesh's sides ({MEMBERS})",
    )
    args = parser.parse_args(argv)
    events = args.events or (1000 if args.quick else 10_000)
    if not (100 <= events <= 100_000 and 1 <= args.concurrency <= 64 and 1 <= args.members <= 16):
        parser.error(
            "--events 100..100000, --concurrency 1..64 and --members 1..16: the benchmark stays bounded"
        )
    if not args.parts or set(args.parts) - set("abcd"):
        parser.error("--parts: some of the letters a, b, c, d")
    if args.server_cpus and parse_cpus(args.server_cpus) is None:
        parser.error(f"--server-cpus: {CPU_LIST_RULE}")
    cpus, members = args.server_cpus, args.members
    if args.quick:
        return Options(
            True, events, args.concurrency, 1.0, 1.5, 1, 10_000, 500, 10, 1.0, args.parts, cpus, members
        )
    return Options(
        False, events, args.concurrency, 4.0, 8.0, 3, FILLED_LOG, 5000, 100, 10.0, args.parts, cpus, members
    )


# -- child processes ------------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    pass


@dataclass
class Child:
    """A child process speaking JSON lines (bench._events_side, or lightbus_side.py)."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return h.cpu_seconds(self.pid) or 0.0

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def read(self, key: str, seconds: float = CHILD_READY_SECONDS) -> dict[str, Any]:
        """The next JSON line carrying `key` (other lines are ignored; an `error` line fails)."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(seconds):
                while line := await self.process.stdout.readline():
                    with contextlib.suppress(ValueError):
                        message = json.loads(line)
                        if isinstance(message, dict) and key in message:
                            return message
                        if isinstance(message, dict) and "error" in message:
                            raise ChildFailed(f"{self.name}: {message['error']}\n{self.log_tail()}")
        except TimeoutError:
            raise ChildFailed(f"{self.name} said no {key!r} in {seconds:g} s:\n{self.log_tail()}") from None
        code = await self.process.wait()
        raise ChildFailed(f"{self.name} exited ({code}) without {key!r}:\n{self.log_tail()}")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    async def ask(self, line: str, key: str, seconds: float = CHILD_READY_SECONDS) -> dict[str, Any]:
        self.send(line)
        return await self.read(key, seconds)

    async def stop(self) -> None:
        """Close its stdin (it stops by itself), then SIGTERM, then SIGKILL: gone when this returns."""
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        for signal_it in (None, self.process.terminate, self.process.kill):
            if signal_it is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal_it()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_SECONDS)
                return
            except TimeoutError:
                continue


@dataclass
class Children:
    """Starts children; stops every one of them (newest first) on exit."""

    log_dir: Path
    started: list[Child] = field(default_factory=list)

    async def start(self, name: str, command: Sequence[str]) -> Child:
        log_path = self.log_dir / f"{name}.log"
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(h.REPO), environment.get("PYTHONPATH", "")) if p
        )
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench._guard",
                str(os.getpid()),
                *command,
                cwd=h.REPO,
                env=environment,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                limit=LINE_LIMIT,
            )
        child = Child(name, process, log_path)
        self.started.append(child)
        return child

    async def side(self, name: str, *args: str) -> Child:
        return await self.start(name, [sys.executable, "-m", "bench._events_side", *args])

    async def stop(self, child: Child) -> None:
        await child.stop()
        if child in self.started:
            self.started.remove(child)

    async def stop_all(self) -> None:
        while self.started:
            await self.started.pop().stop()


@contextlib.asynccontextmanager
async def children(log_dir: Path) -> AsyncIterator[Children]:
    started = Children(log_dir)
    try:
        yield started
    finally:
        await asyncio.shield(started.stop_all())


@dataclass(frozen=True)
class MeshProcess:
    child: Child
    address: str
    admin_key: str


async def start_mesh(
    kids: Children, name: str, data_dir: Path, components: str = "all", bus_url: str = "", cpus: str = ""
) -> MeshProcess:
    args = ["mesh", "--data-dir", str(data_dir), "--components", components]
    if bus_url:
        args += ["--bus-url", bus_url]
    if cpus:
        args += ["--cpus", cpus]
    child = await kids.side(name, *args)
    ready = await child.read("ready")
    return MeshProcess(child, ready["address"], ready["admin_key"])


# -- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    part: str
    figure: str
    value: str
    target: str = ""
    reference: str = ""
    met: bool | None = None
    """None: no target (information)."""


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}{unit}"


def print_table(rows: Sequence[Row]) -> None:
    headers = ("part", "figure", "value", "target", "reference (Lightbus 1.1.2)", "verdict")
    cells = [
        (
            r.part,
            r.figure,
            r.value,
            r.target,
            r.reference,
            "" if r.met is None else ("met" if r.met else "MISSED"),
        )
        for r in rows
    ]
    widths = [max(len(headers[i]), *(len(c[i]) for c in cells)) for i in range(len(headers))]
    line = "  ".join(f"{headers[i]:<{widths[i]}}" for i in range(len(headers)))
    print()
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(f"{c[i]:<{widths[i]}}" if i < 2 else f"{c[i]:>{widths[i]}}" for i in range(len(c))))


# -- (a) firing directly --------------------------------------------------------------------------


@dataclass
class Flow:
    """Events fired in one process and delivered to a listener group in another."""

    fired: int
    fired_per_s: float
    delivered: int
    delivered_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    duplicates: int = 0
    firer_cpu: float = 0.0
    listener_cpu: float = 0.0


async def lightbus_reference(kids: Children, redis_url: str, options: Options) -> dict[str, Any]:
    python = await asyncio.to_thread(ensure_lightbus_venv, h.REPO)
    command = [str(python), str(SIDE_SCRIPT), "--redis-url", redis_url, "--events", str(options.events)]
    command += ["--concurrency", str(options.concurrency), "--timeout", str(options.lightbus_timeout)]
    child = await kids.start("lightbus", command)
    try:
        result = await child.read("delivered_per_s", options.lightbus_timeout + 30)
    finally:
        await kids.stop(child)
    if not result.get("complete"):
        raise ChildFailed(f"Lightbus did not deliver every event: {result}\n{child.log_tail()}")
    return result


async def fire_directly(
    kids: Children, tmp: Path, options: Options, redis_url: str, round_: int, batches: bool = True
) -> Flow:
    """Part (a) on one bus: Redis when `redis_url`, else the embedded log, its listener reading
    through SubscribeBatches (or, `batches` false, Subscribe)."""
    tag = f"{'redis' if redis_url else 'embedded' if batches else 'subscribe'}-{round_}"
    mesh = await start_mesh(
        kids, f"a-{tag}-firer", tmp / f"a-{tag}", "partners,recipes", redis_url, options.server_cpus
    )
    members = ("--members", str(options.members))
    if redis_url:
        listener = await kids.side(f"a-{tag}-listener", "listen", "--redis-url", redis_url, *members)
    else:
        listener = await kids.side(
            f"a-{tag}-listener",
            "subscribe",
            "--address",
            mesh.address,
            "--key",
            mesh.admin_key,
            *members,
            *(["--batches"] if batches else []),
        )
    try:
        mesh.child.send("warm")  # until the listener has its group and its first event
        await listener.read("ready")
        await listener.ask(f"reset {time.time_ns()}", "reset")
        bound = 60.0 + options.events / 100
        fired = await mesh.child.ask(f"fire {options.events} {options.concurrency}", "fired", bound)
        heard = await listener.ask(f"wait {options.events} {bound}", "delivered", bound + 10)
    finally:
        await kids.stop(listener)
        await kids.stop(mesh.child)
    start = fired["fire_start_ns"] / 1e9
    last = heard["last_delivery"]
    return Flow(
        fired["fired"],
        fired["fired"] / fired["fire_seconds"],
        heard["delivered"],
        heard["delivered"] / (last - start) if heard["delivered"] and last > start else float("nan"),
        heard["p50_ms"],
        heard["p99_ms"],
        heard["max_ms"],
        heard["duplicates"],
        fired["cpu_seconds"] / fired["fire_seconds"],
        heard["cpu_seconds"] / (last - start) if last > start else float("nan"),
    )


def median_flow(flows: Sequence[Flow]) -> Flow:
    """Each figure's median over the rounds (counts: the least, so a lost event shows)."""

    def mid(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None and not math.isnan(v)]
        return statistics.median(known) if known else None

    def of(name: str) -> float | None:
        return mid([getattr(f, name) for f in flows])

    return Flow(
        min(f.fired for f in flows),
        of("fired_per_s") or float("nan"),
        min(f.delivered for f in flows),
        of("delivered_per_s") or float("nan"),
        of("p50_ms"),
        of("p99_ms"),
        of("max_ms"),
        max(f.duplicates for f in flows),
        of("firer_cpu") or float("nan"),
        of("listener_cpu") or float("nan"),
    )


def lightbus_flow(result: dict[str, Any]) -> Flow:
    fired, delivered = float(result["fired_per_s"]), float(result["delivered_per_s"])
    return Flow(0, fired, 0, delivered, result["p50_ms"], result["p99_ms"], None)


def per_round(flows: Sequence[Flow]) -> str:
    return " / ".join(fmt(f.delivered_per_s) for f in flows)


def rows_a(lightbus_runs: Sequence[Flow], flow_runs: dict[str, list[Flow]], options: Options) -> list[Row]:
    lightbus = median_flow(lightbus_runs)
    lb_delivered = lightbus.delivered_per_s
    lb_rates = f"{fmt(lightbus.fired_per_s)} / {fmt(lb_delivered)}"
    lb_times = f"{fmt(lightbus.p50_ms, 1)} / {fmt(lightbus.p99_ms, 1)}"
    rounds = f"median of {len(lightbus_runs)} rounds" if len(lightbus_runs) > 1 else "1 round"
    rows = [
        Row(
            "(a) Lightbus",
            f"fired/s, delivered/s ({options.events} events, {options.concurrency} loop(s), 1 listener;"
            f" {rounds})",
            lb_rates,
        ),
        Row("(a) Lightbus", "fire->delivery p50 / p99 ms", lb_times),
        Row("(a) Lightbus", "delivered/s in each round", per_round(lightbus_runs)),
    ]
    for tag, label, target in (
        ("redis", "(a) Redis bus", REDIS_TARGET),
        ("embedded", "(a) embedded", EMBEDDED_TARGET),
        ("subscribe", "(a) embedded, Subscribe", None),
    ):
        runs = flow_runs[tag]
        flow = median_flow(runs)
        complete = all(f.delivered == f.fired == options.events for f in runs)
        rows += [
            Row(
                label,
                f"fired/s, delivered/s ({options.members} member(s))"
                f"{'' if complete else ' (NOT every event delivered!)'}",
                f"{fmt(flow.fired_per_s)} / {fmt(flow.delivered_per_s)}",
                "",
                lb_rates,
            ),
            Row(
                label,
                "fire->delivery p50 / p99 ms",
                f"{fmt(flow.p50_ms, 1)} / {fmt(flow.p99_ms, 1)}",
                "",
                lb_times,
            ),
            Row(
                label,
                "firer / listener CPU, cores",
                f"{fmt(flow.firer_cpu, 2)} / {fmt(flow.listener_cpu, 2)}",
            ),
            Row(label, "delivered/s in each round", per_round(runs), "", per_round(lightbus_runs)),
            Row(
                label,
                "delivered/s vs Lightbus (medians)",
                f"{flow.delivered_per_s / lb_delivered:.2f}x",
                "" if target is None else f">= {target:g}x",
                fmt(lb_delivered),
                None if target is None else complete and flow.delivered_per_s >= target * lb_delivered,
            ),
        ]
    return rows


# -- (b) UpdateRecipe to a listener group ---------------------------------------------------------


async def set_up_recipes(address: str, admin_key: str) -> str:
    """A partner with RECIPES recipes; its key."""
    async with connect(address, admin_key) as admin:
        created = await admin.partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(
                namespace=NAMESPACE, partner=partners_pb2.Partner(display_name="Benchmark Coffee")
            ),
            timeout=CALL_SECONDS,
        )
    key: str = created.api_key
    async with connect(address, key) as partner:
        for i in range(RECIPES):
            await partner.recipes.CreateRecipe(
                recipes_pb2.CreateRecipeRequest(
                    namespace=NAMESPACE,
                    id_component=recipe_name(i).rpartition(":")[2],
                    recipe=recipes_pb2.Recipe(
                        product_properties=recipes_pb2.ProductProperties(default_volume_ml=100),
                        execution_properties=recipes_pb2.ExecutionProperties(program_id="lungo"),
                    ),
                ),
                timeout=CALL_SECONDS,
            )
    return key


@dataclass(frozen=True)
class Load:
    ok: int
    requests: int
    errors: int
    skipped: int
    first_error: str
    p50_ms: float | None
    p99_ms: float | None
    end: float
    seconds: float
    mesh_cpu: float
    """CPU seconds the mesh used while the calls ran (warm-up included)."""
    mesh_cores: float
    client_cores: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def run_load(
    kids: Children, name: str, mesh: MeshProcess, key: str, seconds: float, warmup: float, rate: float = 0.0
) -> Load:
    """UpdateRecipe from a client process: closed loop (rate 0) or paced; with the mesh's CPU over it."""
    concurrency = PACED_MAX_IN_FLIGHT if rate else LOAD_CONCURRENCY
    args = ["load", "--address", mesh.address, "--key", key, "--recipes", str(RECIPES)]
    args += ["--concurrency", str(concurrency), "--warmup", str(warmup), "--duration", str(seconds)]
    args += ["--rate", str(rate)]
    child = await kids.side(name, *args)
    try:
        await child.read("started")  # connected: the calls begin
        cpu_before, clock = mesh.child.cpu_seconds(), time.perf_counter()
        result = await child.read("ok", warmup + seconds + 60)
        mesh_cpu, wall = mesh.child.cpu_seconds() - cpu_before, time.perf_counter() - clock
    finally:
        await kids.stop(child)
    return Load(
        result["ok"],
        result["requests"],
        result["errors"],
        result["skipped"],
        result["first_error"],
        result["p50_ms"],
        result["p99_ms"],
        result["end_ns"] / 1e9,
        seconds,
        mesh_cpu,
        mesh_cpu / wall,
        result["client_cpu"] / (warmup + seconds),
    )


@dataclass(frozen=True)
class Delivery:
    load: Load
    delivered: int
    duplicates: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    drain_ms: float
    listener_cores: float

    @property
    def keeps_up(self) -> bool:
        return self.delivered == self.load.ok and (self.max_ms or 0.0) <= KEEP_UP_MS


async def load_and_deliver(
    kids: Children,
    name: str,
    mesh: MeshProcess,
    key: str,
    listener: Child,
    seconds: float,
    warmup: float,
    rate: float = 0.0,
) -> Delivery:
    await listener.ask(f"reset {time.time_ns()}", "reset")
    load = await run_load(kids, name, mesh, key, seconds, warmup, rate)
    heard = await listener.ask(f"wait {load.ok} 30", "delivered", 40)
    return Delivery(
        load,
        heard["delivered"],
        heard["duplicates"],
        heard["p50_ms"],
        heard["p99_ms"],
        heard["max_ms"],
        1e3 * (heard["last_delivery"] - load.end) if heard["delivered"] else float("nan"),
        heard["cpu_seconds"] / (warmup + seconds),
    )


async def warm_listener(address: str, key: str, listener: Child) -> None:
    """UpdateRecipe calls until the listener has its group and its first event."""
    reading = asyncio.ensure_future(listener.read("ready"))
    async with connect(address, key) as client:
        for i in range(int(CHILD_READY_SECONDS / 0.02)):
            await client.recipes.UpdateRecipe(update_request(i, RECIPES), timeout=CALL_SECONDS)
            done, _ = await asyncio.wait({reading}, timeout=0.02)
            if done:
                break
    await reading


async def updates_delivered(
    kids: Children, tmp: Path, options: Options, redis_url: str
) -> tuple[Delivery, Delivery]:
    """Part (b) on one bus: the max write rate, then 80 % of it."""
    tag = "redis" if redis_url else "embedded"
    mesh = await start_mesh(kids, f"b-{tag}-mesh", tmp / f"b-{tag}", "all", redis_url, options.server_cpus)
    key = await set_up_recipes(mesh.address, mesh.admin_key)
    listener = await kids.side(
        f"b-{tag}-listener", "subscribe", "--address", mesh.address, "--key", mesh.admin_key
    )
    try:
        await warm_listener(mesh.address, key, listener)
        at_max = await load_and_deliver(
            kids, f"b-{tag}-max", mesh, key, listener, options.duration, 1.0 if not options.quick else 0.5
        )
        paced = await load_and_deliver(
            kids, f"b-{tag}-80", mesh, key, listener, options.paced_duration, 0.0, 0.8 * at_max.load.rate
        )
    finally:
        await kids.stop(listener)
        await kids.stop(mesh.child)
    return at_max, paced


def load_problem(load: Load) -> str:
    if load.errors:
        return f" ({load.errors} errors: {load.first_error})"
    if load.skipped:
        return f" ({load.skipped} calls not sent: the client fell behind)"
    return ""


def cpu_split(delivery: Delivery) -> str:
    """Cores each process used, and the mesh's CPU per UpdateRecipe answered."""
    load = delivery.load
    per_call = 1e6 * load.mesh_cpu / load.ok if load.ok else math.nan
    return (
        f"{fmt(load.mesh_cores, 2)} / {fmt(load.client_cores, 2)} / {fmt(delivery.listener_cores, 2)}"
        f" ({fmt(per_call)} µs mesh CPU per call)"
    )


def rows_b(results: dict[str, tuple[Delivery, Delivery]]) -> list[Row]:
    rows: list[Row] = []
    for tag, label in (("embedded", "(b) embedded"), ("redis", "(b) Redis+SQLite")):
        at_max, paced = results[tag]
        rows += [
            Row(
                label,
                "max UpdateRecipe/s (closed loop, 32 in flight)" + load_problem(at_max.load),
                fmt(at_max.load.rate),
            ),
            Row(label, "  at max: mesh / client / listener CPU, cores", cpu_split(at_max)),
            Row(
                label,
                "  at max: delivered, fire->delivery p99 / max ms",
                f"{at_max.delivered}/{at_max.load.ok}, {fmt(at_max.p99_ms, 1)} / {fmt(at_max.max_ms, 1)}",
            ),
            Row(
                label,
                "at 80 %: UpdateRecipe/s paced, RPC p50 / p99 ms" + load_problem(paced.load),
                f"{fmt(paced.load.rate)}, {fmt(paced.load.p50_ms, 1)} / {fmt(paced.load.p99_ms, 1)}",
            ),
            Row(label, "  at 80 %: mesh / client / listener CPU, cores", cpu_split(paced)),
            Row(
                label,
                "at 80 %: fire->delivery p50 / p99 ms",
                f"{fmt(paced.p50_ms, 1)} / {fmt(paced.p99_ms, 1)}",
                f"p99 <= {P99_TARGET_MS:g}",
                "",
                paced.p99_ms is not None and paced.p99_ms <= P99_TARGET_MS,
            ),
            Row(
                label,
                "at 80 %: delivery keeps up (delivered, max ms, last after load end)",
                f"{paced.delivered}/{paced.load.ok}, {fmt(paced.max_ms, 1)}, {fmt(paced.drain_ms, 1)} ms",
                f"all, max <= {KEEP_UP_MS:g} ms",
                "",
                paced.keeps_up and not paced.load.errors,
            ),
        ]
    return rows


# -- (c) throughput before and after a big log ----------------------------------------------------


async def big_log(kids: Children, tmp: Path, options: Options) -> tuple[list[Load], list[Load], int, float]:
    """Two meshes side by side, one fresh, one with its log filled; loads alternating between them.

    Alternating (AB, BA, AB, ...) spreads any drift of this machine over both: measuring one
    mesh before and after its fill would count a drift as the log's effect.
    """
    fresh_mesh = await start_mesh(kids, "c-fresh-mesh", tmp / "c-fresh", cpus=options.server_cpus)
    full_mesh = await start_mesh(kids, "c-full-mesh", tmp / "c-full", cpus=options.server_cpus)
    try:
        fresh_key = await set_up_recipes(fresh_mesh.address, fresh_mesh.admin_key)
        full_key = await set_up_recipes(full_mesh.address, full_mesh.admin_key)
        logged = (await full_mesh.child.ask("count", "logged"))["logged"]
        filled = await full_mesh.child.ask(f"fill {max(0, options.fill - logged)}", "filled", 300)
        await asyncio.sleep(options.settle_seconds)  # the WAL checkpoint after the fill
        warmup = 0.5 if options.quick else 1.0
        fresh: list[Load] = []
        full: list[Load] = []
        for i in range(options.rounds):
            order = [(fresh_mesh, fresh_key, fresh), (full_mesh, full_key, full)]
            for mesh, key, loads in order if i % 2 == 0 else reversed(order):
                name = f"c-{'fresh' if loads is fresh else 'full'}-{i}"
                loads.append(await run_load(kids, name, mesh, key, options.duration, warmup))
    finally:
        await kids.stop(full_mesh.child)
        await kids.stop(fresh_mesh.child)
    return fresh, full, int(filled["logged"]), float(filled["seconds"])


def rows_c(
    fresh: list[Load], after: list[Load], logged: int, fill_seconds: float, options: Options
) -> list[Row]:
    before_rate = statistics.median(load.rate for load in fresh)
    after_rate = statistics.median(load.rate for load in after)
    ratio = after_rate / before_rate
    rounds = f"median of {options.rounds} x {options.duration:g} s, alternating"
    problems = "".join(load_problem(load) for load in (*fresh, *after))
    return [
        Row("(c) embedded", f"UpdateRecipe/s on a fresh mesh ({rounds}){problems}", fmt(before_rate)),
        Row(
            "(c) embedded",
            f"UpdateRecipe/s with {logged:,} events logged (filled in {fill_seconds:.1f} s)",
            fmt(after_rate),
        ),
        Row(
            "(c) embedded",
            "after / fresh",
            f"{ratio:.3f}",
            f">= {1 - FILL_TARGET:.2f}",
            "",
            ratio >= 1 - FILL_TARGET and not problems,
        ),
    ]


# -- (d) idle watchers ----------------------------------------------------------------------------


async def start_runs(address: str, key: str, runs: int) -> list[str]:
    """`runs` runs on the machine that waits for `go`: all running, none ending."""
    names = [f"programRuns/idle-{i}" for i in range(runs)]
    async with connect(address, key) as client:
        gate = asyncio.Semaphore(8)

        async def run(i: int) -> None:
            async with gate:
                await client.runner.Run(
                    runner_pb.RunRequest(
                        run_id=f"idle-{i}", machine=BURST_MACHINE, recipe=RECIPE, volume_ml=VOLUME_ML
                    ),
                    timeout=CALL_SECONDS,
                )

        await asyncio.gather(*(run(i) for i in range(runs)))
        async with asyncio.timeout(CHILD_READY_SECONDS):
            for name in names:
                while True:
                    got = await client.runner.GetRun(runner_pb.GetRunRequest(name=name), timeout=CALL_SECONDS)
                    if got.state == runner_pb.ProgramRun.STATE_RUNNING:
                        break
                    if got.state != runner_pb.ProgramRun.STATE_PENDING:
                        raise RuntimeError(f"{name} is {runner_pb.ProgramRun.State.Name(got.state)}")
                    await asyncio.sleep(0.05)
    return names


@dataclass(frozen=True)
class Idle:
    label: str
    streams: int
    cores: float
    open_after: int
    setup_seconds: float
    seconds: float


async def idle_cpu(child: Child, seconds: float) -> float:
    before = child.cpu_seconds()
    clock = time.perf_counter()
    await asyncio.sleep(seconds)
    return (child.cpu_seconds() - before) / (time.perf_counter() - clock)


async def idle_streams(
    kids: Children, mesh: MeshProcess, key: str, kind: str, runs: Sequence[str], options: Options
) -> Idle:
    """The mesh's CPU while `options.watchers` streams of `kind` (watch, subscribe, group) stay idle."""
    streams = options.watchers
    # A group member claims anew every WAIT_SECONDS (30 s) when idle: a window as long.
    seconds = options.group_seconds if kind == "group" else options.idle_seconds
    args = ["idle", "--address", mesh.address, "--key", key, "--kind", kind, "--streams", str(streams)]
    if runs:
        args += ["--runs", ",".join(runs)]
    child = await kids.side(f"d-{kind}", *args)
    try:
        ready = await child.read("ready", 180)
        await asyncio.sleep(options.settle_seconds)
        cores = await idle_cpu(mesh.child, seconds)
        still = await child.ask("status", "open")
    finally:
        await kids.stop(child)
    return Idle(kind, streams, cores, int(still["open"]), float(ready["seconds"]), seconds)


async def idle_watchers(kids: Children, tmp: Path, options: Options) -> tuple[float, list[Idle]]:
    with h.Servers(tmp) as servers:
        port = h.free_port()
        machine = await asyncio.to_thread(
            servers.start, "d-machine", h.python_module("bench.machine", "--port", str(port)), port
        )
        mesh = await start_mesh(kids, "d-mesh", tmp / "d-embedded", cpus=options.server_cpus)
        try:
            key = await set_up_runs(mesh.address, mesh.admin_key, machine.address)
            runs = await start_runs(mesh.address, key, options.runs)
            await asyncio.sleep(options.settle_seconds)
            baseline = await idle_cpu(mesh.child, options.idle_seconds)
            measured = [
                await idle_streams(kids, mesh, key, "watch", runs, options),
                await idle_streams(kids, mesh, key, "subscribe", (), options),
                await idle_streams(kids, mesh, key, "group", (), options),
            ]
        finally:
            await kids.stop(mesh.child)
    return baseline, measured


def rows_d(baseline: float, measured: list[Idle], options: Options) -> list[Row]:
    rows = [
        Row(
            "(d) embedded",
            f"mesh CPU, cores, {options.runs} running runs, no watcher (over {options.idle_seconds:g} s)",
            fmt(baseline, 4),
        )
    ]
    for idle in measured:
        what = {
            "watch": f"{idle.streams:,} idle ProgramRunner.Watch on {options.runs} runs",
            "subscribe": f"{idle.streams:,} idle plain EventBus.Subscribe",
            "group": f"{idle.streams:,} idle EventBus.Subscribe with a listener_name each",
        }[idle.label]
        all_open = idle.open_after == idle.streams
        rows.append(
            Row(
                "(d) embedded",
                f"mesh CPU, cores, {what} (over {idle.seconds:g} s; opened in {idle.setup_seconds:.1f} s)"
                + ("" if all_open else f" (only {idle.open_after} still open!)"),
                fmt(idle.cores, 4),
                "(information)" if idle.label == "group" else f"< {IDLE_TARGET_CORES:g}",
                "",
                None if idle.label == "group" else idle.cores < IDLE_TARGET_CORES and all_open,
            )
        )
    return rows


# -- main -----------------------------------------------------------------------------------------


STARTED = time.perf_counter()


def progress(what: str) -> None:
    print(f"  [{time.perf_counter() - STARTED:4.0f} s] {what}", flush=True)


async def measure(options: Options, tmp: Path, redis_base_url: str) -> list[Row]:
    def db(n: int) -> str:  # each part on a Redis database of its own: nothing left over in between
        return redis_base_url.rsplit("/", 1)[0] + f"/{n}"

    rows: list[Row] = []
    async with children(tmp) as kids:
        if "a" in options.parts:
            # Rounds alternate the three, so a slow moment of the machine weighs on each alike.
            lightbus_runs: list[Flow] = []
            flow_runs: dict[str, list[Flow]] = {"redis": [], "embedded": [], "subscribe": []}
            for r in range(options.rounds):
                lightbus_db, redis_db = db(10 + r), db(13 + r)  # fresh ones each round
                progress(f"(a) round {r + 1}: Lightbus 1.1.2, {options.events} events ...")
                lightbus_runs.append(lightbus_flow(await lightbus_reference(kids, lightbus_db, options)))
                for tag, url, batches in (
                    ("redis", redis_db, True),
                    ("embedded", "", True),
                    ("subscribe", "", False),
                ):
                    progress(f"(a) round {r + 1}: {tag}, {options.events} events fired directly ...")
                    flow_runs[tag].append(await fire_directly(kids, tmp, options, url, r, batches))
            rows += rows_a(lightbus_runs, flow_runs, options)
        if "b" in options.parts:
            deliveries: dict[str, tuple[Delivery, Delivery]] = {}
            for tag, url in (("embedded", ""), ("redis", db(2))):
                progress(f"(b) {tag}: UpdateRecipe at the max rate, then at 80 % ...")
                deliveries[tag] = await updates_delivered(kids, tmp, options, url)
            rows += rows_b(deliveries)
        if "c" in options.parts:
            progress(f"(c) UpdateRecipe on a fresh mesh, then with {options.fill:,} events logged ...")
            rows += rows_c(*(await big_log(kids, tmp, options)), options)
        if "d" in options.parts:
            progress(f"(d) {options.watchers:,} idle streams ...")
            rows += rows_d(*(await idle_watchers(kids, tmp, options)), options)
    return rows


def run(options: Options) -> bool:
    from tests.engines import start_redis  # test code, reused: a real redis-server on a free port

    print(f"events: {h.machine_summary()}; {h.load_summary()}" + ("; --quick" if options.quick else ""))
    if options.server_cpus:
        print(
            f"  every mesh process runs with --cpus {options.server_cpus}; Lightbus's firer on the same CPUs"
        )
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="brewmesh-bench-") as tmp, start_redis(Path(tmp)) as redis:
        redis_url = redis.url(password=redis.password)
        print(f"  redis-server on {redis.host}:{redis.port}", flush=True)
        rows = asyncio.run(measure(options, Path(tmp), redis_url))
    print_table(rows)
    print(
        "fired/s: events / firing time; delivered/s: events / (last delivery - first fire); fire->delivery: "
        "from the event's time (stamped at fire) to its handler, nearest-rank percentiles; CPU from /proc."
    )
    print()
    for row in rows:
        if row.met is not None:
            print(
                f"{'met   ' if row.met else 'MISSED'}  {row.part}: {row.figure.strip()} = {row.value} "
                f"(target {row.target})"
            )
    ok = all(row.met for row in rows if row.met is not None)
    print(f"result: {'every target met' if ok else 'target MISSED'} ({time.perf_counter() - clock:.0f} s)")
    return ok


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)
    h.run_benchmark(lambda: run(options))


if __name__ == "__main__":
    main()
