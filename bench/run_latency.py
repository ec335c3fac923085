"""Program runs through the mesh runner against the floor of a Python proxy (issue 3).

    .venv/bin/python -m bench.run_latency [--runs 600] [--watchers 100] [--events 1000]

Starts, each in its own process on a free 127.0.0.1 port: `brewmesh up`, a
machine written with the partner SDK that brews instantly (bench.machine),
and a bare grpc.aio relay forwarding Run and Watch to that machine
(bench.relay). Registers the machine with a partner, creates a recipe, then:

1. Run-to-finished latency, one run at a time (Run, then Watch until the
   stream ends), interleaving (a) directly against the machine, (b) through
   the mesh runner, (c) through the bare relay. Target: p50 and p99 of (b)
   at most 1.5 times (c).
2. Event deliveries per second to many concurrent watchers of one run: all
   watchers connect and receive the run's first events, then the caller
   signals `go` and the machine emits a burst of events; deliveries of the
   events after `go` over the time from the signal to the last watcher's end.
   Through the runner (live: it records each event, then fans it out) and
   from a bare grpc.aio server streaming the same ProgramEvent messages
   (bench.stream_server). Target: runner at least 0.7 of bare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench import _harness as h
from bench.machine import BURST, GO, INSTANT
from bench.stream_server import save_events
from brewmesh.client import channel, connect
from brewmesh.partners.v1 import partners_pb2
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc

LATENCY_TARGET = 1.5
FANOUT_TARGET = 0.7
NAMESPACE = "bench-co"
PARENT = f"partners/{NAMESPACE}"
INSTANT_MACHINE = f"{PARENT}/coffeeMachines/m-instant"
BURST_MACHINE = f"{PARENT}/coffeeMachines/m-burst"
RECIPE = f"recipes/{NAMESPACE}:espresso"
PROGRAM_ID = "espresso"
VOLUME_ML = 40
CALL_SECONDS = 10.0
LATENCY_BUDGET_SECONDS = 30.0
FANOUT_SECONDS = 60.0
WATCH_CHANNELS = 4
TERMINAL = {pb.ProgramRun.STATE_FINISHED, pb.ProgramRun.STATE_CANCELED, pb.ProgramRun.STATE_FAILED}

DIRECT, RUNNER, RELAY = (
    "(a) direct to the machine",
    "(b) through the mesh runner",
    "(c) through the bare relay",
)
RUNNER_LIVE, BARE_LIVE = "live, through the mesh runner", "live, bare grpc.aio server"
RUNNER_CATCH_UP, BARE_CATCH_UP = "catch-up, through the mesh runner", "catch-up, bare grpc.aio server"


@dataclass(frozen=True)
class Options:
    runs: int
    warmup_runs: int
    watchers: int
    events: int
    store: str


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_latency", description=__doc__.split("\n", 1)[0]
    )
    # 600: with fewer, the p99 is the 2nd or 3rd slowest run and swings with any hiccup.
    parser.add_argument("--runs", type=int, default=600, help="measured runs per path (600)")
    parser.add_argument("--warmup-runs", type=int, default=20, help="warm-up runs per path (20)")
    parser.add_argument("--watchers", type=int, default=100, help="concurrent watchers of one run (100)")
    parser.add_argument("--events", type=int, default=1000, help="events the machine emits after go (1000)")
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the mesh's store: SQLite in its data directory, or a PostgreSQL this benchmark starts",
    )
    args = parser.parse_args(argv)
    if not (1 <= args.runs <= 1000 and 0 <= args.warmup_runs <= 100):
        parser.error("--runs 1..1000 and --warmup-runs 0..100: the benchmark stays bounded")
    if not (1 <= args.watchers <= 500 and 1 <= args.events <= 10_000):
        parser.error("--watchers 1..500 and --events 1..10000: the benchmark stays bounded")
    return Options(args.runs, args.warmup_runs, args.watchers, args.events, args.store)


# -- set-up ---------------------------------------------------------------------------------------


async def set_up(mesh: str, admin_key: str, machine: str) -> str:
    """A partner with the machine registered (twice: instant and burst) and a recipe; its key."""
    async with connect(mesh, admin_key) as admin:
        created = await admin.partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(
                namespace=NAMESPACE, partner=partners_pb2.Partner(display_name="Benchmark Coffee")
            ),
            timeout=CALL_SECONDS,
        )
    key: str = created.api_key
    async with connect(mesh, key) as partner:
        endpoint = partners_pb2.ProgramApi(endpoint=machine)
        await partner.partners.PutCoffeeMachines(
            partners_pb2.PutCoffeeMachinesRequest(
                parent=PARENT,
                coffee_machines=[
                    partners_pb2.CoffeeMachine(name=INSTANT_MACHINE, api_type=INSTANT, program_api=endpoint),
                    partners_pb2.CoffeeMachine(
                        name=BURST_MACHINE, api_type=BURST, program_api=endpoint, handled_events=[GO]
                    ),
                ],
            ),
            timeout=CALL_SECONDS,
        )
        await partner.recipes.CreateRecipe(
            recipes_pb2.CreateRecipeRequest(
                namespace=NAMESPACE,
                id_component="espresso",
                recipe=recipes_pb2.Recipe(
                    product_properties=recipes_pb2.ProductProperties(default_volume_ml=VOLUME_ML),
                    execution_properties=recipes_pb2.ExecutionProperties(program_id=PROGRAM_ID),
                ),
            ),
            timeout=CALL_SECONDS,
        )
    return key


# -- 1. run-to-finished latency -------------------------------------------------------------------


@dataclass
class LatencyPath:
    label: str
    tag: str
    stub: Any
    request: Callable[[str], pb.RunRequest]
    samples: list[float] = field(default_factory=list)
    failures: int = 0
    first_failure: str = ""


def machine_request(run_id: str) -> pb.RunRequest:
    """What a caller of the machine's own ProgramRunner sends (what the runner sends it)."""
    return pb.RunRequest(
        run_id=run_id,
        machine=INSTANT_MACHINE,
        recipe=RECIPE,
        volume_ml=VOLUME_ML,
        program=pb.Program(program_id=PROGRAM_ID),
        api_type=INSTANT,
    )


def runner_request(run_id: str) -> pb.RunRequest:
    return pb.RunRequest(run_id=run_id, machine=INSTANT_MACHINE, recipe=RECIPE, volume_ml=VOLUME_ML)


async def run_to_finished(stub: Any, request: pb.RunRequest) -> tuple[float, str]:
    """Seconds from Run to the end of Watch, and what went wrong ('' if it finished)."""
    began = time.perf_counter()
    await stub.Run(request, timeout=CALL_SECONDS)
    last: pb.ProgramEvent | None = None
    async for event in stub.Watch(pb.WatchRequest(run=f"programRuns/{request.run_id}"), timeout=CALL_SECONDS):
        last = event
    elapsed = time.perf_counter() - began
    if last is None or last.state != pb.ProgramRun.STATE_FINISHED:
        return elapsed, f"run ended with {last.event if last else 'no event'}"
    return elapsed, ""


async def measure_latency(paths: list[LatencyPath], options: Options) -> None:
    deadline = time.monotonic() + LATENCY_BUDGET_SECONDS
    for i in range(options.warmup_runs + options.runs):
        if time.monotonic() > deadline:
            print(f"  latency: time budget of {LATENCY_BUDGET_SECONDS:g} s spent after {i} runs per path")
            return
        for path in paths:  # interleaved, so drifts of the machine's load hit every path alike
            tag = "w" if i < options.warmup_runs else "m"
            run_id = f"{tag}{i}-{path.tag}"
            try:
                elapsed, problem = await run_to_finished(path.stub, path.request(run_id))
            except grpc.aio.AioRpcError as error:
                elapsed, problem = 0.0, f"{error.code().name}: {error.details()}"
            if i < options.warmup_runs:
                continue
            if problem:
                path.failures += 1
                path.first_failure = path.first_failure or problem
            else:
                path.samples.append(elapsed)


def report_latency(paths: list[LatencyPath]) -> bool:
    print()
    header = f"{'run-to-finished latency':<30} {'runs':>5} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
    header += f"{'max ms':>8} {'mean ms':>8} {'failed':>6}"
    print(header)
    print("-" * len(header))
    figures: dict[str, tuple[float, float]] = {}
    for path in paths:
        ordered = sorted(path.samples)
        p50, p99 = h.percentile(ordered, 50), h.percentile(ordered, 99)
        figures[path.label] = (p50, p99)
        mean = statistics.fmean(ordered) if ordered else float("nan")
        print(
            f"{path.label:<30} {len(ordered):>5} {1e3 * p50:>7.2f} {1e3 * h.percentile(ordered, 90):>7.2f} "
            f"{1e3 * p99:>7.2f} {1e3 * max(ordered, default=float('nan')):>8.2f} {1e3 * mean:>8.2f} "
            f"{path.failures:>6}"
        )
        if path.first_failure:
            print(f"    first failure: {path.first_failure}")
    print("p50/p90/p99: nearest-rank percentiles; the three paths run interleaved, one run at a time.")
    (r50, r99), (c50, c99) = figures[RUNNER], figures[RELAY]
    ok = r50 <= LATENCY_TARGET * c50 and r99 <= LATENCY_TARGET * c99 and not any(p.failures for p in paths)
    print(
        f"(b)/(c): p50 {r50 / c50:.2f}x, p99 {r99 / c99:.2f}x; target <= {LATENCY_TARGET}x: "
        + ("pass" if ok else "MISS")
    )
    return ok


# -- 2. event deliveries to many watchers ---------------------------------------------------------


@dataclass
class Fanout:
    label: str
    server: str
    watchers: int
    deliveries: int = 0
    seconds: float = float("nan")
    per_watcher: list[int] = field(default_factory=list)
    events: list[pb.ProgramEvent] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else float("nan")

    @property
    def server_us_per_delivery(self) -> float:
        used = self.cpu.get(self.server)
        return 1e6 * used / self.deliveries if used is not None and self.deliveries else float("nan")

    @property
    def client_busy(self) -> float:
        """Share of one core this (client) process used over the window."""
        return self.cpu.get(CLIENT, 0.0) / self.seconds if self.seconds > 0 else float("nan")


CLIENT = "client (this process)"


async def fan_out(
    result: Fanout,
    stubs: list[Any],
    run: str,
    before_go: int,
    go: Callable[[], Awaitable[object]] | None,
    meter: list[h.ServerProcess],
) -> Fanout:
    """Watch streams of `run` catch up to sequence `before_go`, then `go()`; count what follows.

    With `go` None (catch-up of an ended run) every event counts, from the moment
    the watchers are started.
    """
    ready = asyncio.Semaphore(0)
    ends: list[float] = []

    async def watch(index: int) -> int:
        counted, caught_up = 0, before_go == 0
        if caught_up:
            ready.release()
        stream = stubs[index % len(stubs)].Watch(pb.WatchRequest(run=run), timeout=FANOUT_SECONDS)
        async for event in stream:
            if index == 0:
                result.events.append(event)
            if event.sequence > before_go:
                counted += 1
            elif event.sequence == before_go and not caught_up:
                caught_up = True
                ready.release()
        ends.append(time.perf_counter())
        return counted

    tasks: list[asyncio.Task[int]] = []
    try:
        async with asyncio.timeout(FANOUT_SECONDS):
            cpu_before, client_before = h.cpu_snapshot(meter), time.process_time()
            began = time.perf_counter()
            tasks = [asyncio.create_task(watch(i)) for i in range(result.watchers)]
            if go is not None:
                for _ in tasks:
                    await ready.acquire()
                # The window starts at `go`.
                cpu_before, client_before = h.cpu_snapshot(meter), time.process_time()
                began = time.perf_counter()
                await go()
            counts = await asyncio.gather(*tasks)
            result.cpu = h.cpu_since(cpu_before, meter)
            result.cpu[CLIENT] = time.process_time() - client_before
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result.per_watcher = list(counts)
    result.deliveries = sum(counts)
    result.seconds = max(ends) - began
    return result


async def wait_quiet_run(runner: Any, run: str) -> int:
    """The run's last sequence once it is running and nothing more arrives (the burst waits for go)."""
    last, stable_since = -1, time.monotonic()
    async with asyncio.timeout(CALL_SECONDS):
        while True:
            got = await runner.GetRun(pb.GetRunRequest(name=run), timeout=CALL_SECONDS)
            if got.state in TERMINAL:
                raise RuntimeError(f"the burst run ended before go: {got.failure_reason or got.state}")
            if got.last_sequence != last or got.state != pb.ProgramRun.STATE_RUNNING:
                last, stable_since = got.last_sequence, time.monotonic()
            elif time.monotonic() - stable_since > 0.3:
                return last
            await asyncio.sleep(0.05)


async def fanout_through_runner(
    mesh: h.ServerProcess, machine: h.ServerProcess, key: str, watchers: int
) -> tuple[Fanout, Fanout, int]:
    """Live fan-out of a burst run, then catch-up of the same (ended) run; and the sequence before go."""
    clients = [connect(mesh.address, key) for _ in range(WATCH_CHANNELS)]
    try:
        runner = clients[0].runner
        run_id = "fanout-1"
        await runner.Run(
            pb.RunRequest(run_id=run_id, machine=BURST_MACHINE, recipe=RECIPE, volume_ml=VOLUME_ML),
            timeout=CALL_SECONDS,
        )
        run = f"programRuns/{run_id}"
        before_go = await wait_quiet_run(runner, run)

        async def go() -> None:
            reply = await runner.Signal(pb.SignalRequest(run=run, event=GO), timeout=CALL_SECONDS)
            if not reply.forwarded:
                raise RuntimeError("the runner did not forward 'go' to the machine")

        stubs = [c.runner for c in clients]
        live = await fan_out(
            Fanout(RUNNER_LIVE, "mesh", watchers), stubs, run, before_go, go, [mesh, machine]
        )
        catch_up = await fan_out(Fanout(RUNNER_CATCH_UP, "mesh", watchers), stubs, run, 0, None, [mesh])
        return live, catch_up, before_go
    finally:
        for c in clients:
            await c.channel.close(None)


async def fanout_bare(
    server: h.ServerProcess, key: str, run: str, before_go: int, watchers: int
) -> tuple[Fanout, Fanout]:
    """The same two measures against the bare server (after `go`, new streams get every event at once)."""
    channels = [channel(server.address, key) for _ in range(WATCH_CHANNELS)]
    try:
        stubs = [program_runner_pb2_grpc.ProgramRunnerStub(c) for c in channels]

        async def go() -> None:
            await stubs[0].Signal(pb.SignalRequest(run=run, event=GO), timeout=CALL_SECONDS)

        live = await fan_out(Fanout(BARE_LIVE, server.name, watchers), stubs, run, before_go, go, [server])
        catch_up = await fan_out(Fanout(BARE_CATCH_UP, server.name, watchers), stubs, run, 0, None, [server])
        return live, catch_up
    finally:
        for c in channels:
            await c.close(None)


def _spread(values: list[int]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def report_fanout(live: tuple[Fanout, Fanout], catch_up: tuple[Fanout, Fanout]) -> bool:
    print()
    header = (
        f"{'deliveries to concurrent watchers':<36} {'watchers':>8} {'msgs each':>9} {'B/msg':>5} "
        f"{'seconds':>7} {'deliveries/s':>12} {'srv µs/deliv':>12} {'client CPU':>10}"
    )
    print(header)
    print("-" * len(header))
    for f in (*live, *catch_up):
        size = sum(e.ByteSize() for e in f.events) / len(f.events) if f.events else float("nan")
        print(
            f"{f.label:<36} {f.watchers:>8} {_spread(f.per_watcher):>9} {size:>5.0f} {f.seconds:>7.3f} "
            f"{f.rate:>12.0f} {f.server_us_per_delivery:>12.1f} {100 * f.client_busy:>9.0f}%"
        )
    ok = True
    for (runner, bare), what in ((live, "live"), (catch_up, "catch-up")):
        same = runner.events == bare.events and runner.per_watcher == bare.per_watcher
        ratio = runner.rate / bare.rate
        # A burst too short for the CPU clock's tick can measure 0: say so rather than divide by it.
        cpu_ratio = (
            f"{bare.server_us_per_delivery / runner.server_us_per_delivery:.2f}"
            if bare.server_us_per_delivery and runner.server_us_per_delivery
            else "n/a (too short to measure)"
        )
        if what == "live":
            ok = ratio >= FANOUT_TARGET and same
            verdict = f"target >= {FANOUT_TARGET}: " + ("pass" if ok else "MISS")
        else:
            verdict = "(information)"
        print(
            f"{what}: runner/bare {ratio:.2f} {verdict}; "
            f"by server CPU per delivery (bare/runner) {cpu_ratio}"
            + ("" if same else "  (the two sides did NOT stream the same messages!)")
        )
    print(
        "live: every watcher has received the run's first events, then the caller signals `go` and the "
        "machine emits its burst; deliveries = events after `go` received by all watchers together; "
        "seconds = from sending `go` to the end of the last watcher's stream. catch-up: the same watchers "
        "read the whole ended run at once. Both sides stream the very same ProgramEvent messages (the bare "
        "server replays the runner's record). srv µs/deliv: the server process's CPU per delivery (mesh: "
        "without the machine's); client CPU: this process, share of one core."
    )
    bound = [f.label for f in (*live, *catch_up) if f.client_busy > 0.9]
    if bound:
        print(
            f"note: the client used about a core or more in: {'; '.join(bound)}. Those rates are bounded by "
            "the client, not the server (on the bare side that flatters the runner's ratio); the server "
            "CPU ratio is the fairer comparison there."
        )
    return ok


# -- main -----------------------------------------------------------------------------------------


async def measure(options: Options, servers: h.Servers, tmp: Path, store_url: str | None) -> bool:
    admin_key = h.new_key()
    mesh_port, machine_port, relay_port = h.free_port(), h.free_port(), h.free_port()
    machine = servers.start(
        "machine",
        h.python_module("bench.machine", "--port", str(machine_port), "--burst-events", str(options.events)),
        machine_port,
    )
    relay = servers.start(
        "relay",
        h.python_module("bench.relay", "--port", str(relay_port), "--upstream", machine.address),
        relay_port,
    )
    mesh = servers.start(
        "mesh",
        h.brewmesh_command(
            "up",
            "--port",
            str(mesh_port),
            "--data-dir",
            str(tmp / "data"),
            *(["--store", store_url] if store_url else []),
        ),
        mesh_port,
        env={"BREWMESH_ADMIN_KEY": admin_key},
    )
    print(
        f"servers: `brewmesh up` ({options.store} store) pid {mesh.pid} on {mesh.address};"
        f" machine (SDK) pid {machine.pid} on "
        f"{machine.address}; relay pid {relay.pid} on {relay.address}"
    )
    key = await set_up(mesh.address, admin_key, machine.address)

    mesh_client = connect(mesh.address, key)
    direct_channel, relay_channel = channel(machine.address), channel(relay.address)
    try:
        paths = [
            LatencyPath(
                DIRECT, "a", program_runner_pb2_grpc.ProgramRunnerStub(direct_channel), machine_request
            ),
            LatencyPath(RUNNER, "b", mesh_client.runner, runner_request),
            LatencyPath(
                RELAY, "c", program_runner_pb2_grpc.ProgramRunnerStub(relay_channel), machine_request
            ),
        ]
        print(
            f"  latency: {options.warmup_runs} warm-up + {options.runs} measured runs per path, "
            "one at a time ...",
            flush=True,
        )
        await measure_latency(paths, options)
    finally:
        await mesh_client.channel.close(None)
        await direct_channel.close(None)
        await relay_channel.close(None)
    latency_ok = report_latency(paths)

    print(
        f"\n  fan-out: {options.watchers} watchers, {options.events} events after go, through the runner ...",
        flush=True,
    )
    runner_live, runner_catch_up, before_go = await fanout_through_runner(
        mesh, machine, key, options.watchers
    )
    events_file = tmp / "events.bin"
    save_events(events_file, runner_catch_up.events, before_go)
    bare_port = h.free_port()
    bare = servers.start(
        "bare-stream",
        h.python_module("bench.stream_server", "--port", str(bare_port), "--events", str(events_file)),
        bare_port,
    )
    print("  fan-out: the same messages from the bare server ...", flush=True)
    bare_live, bare_catch_up = await fanout_bare(
        bare, key, runner_catch_up.events[0].run, before_go, options.watchers
    )
    fanout_ok = report_fanout((runner_live, bare_live), (runner_catch_up, bare_catch_up))
    return latency_ok and fanout_ok


def run(options: Options) -> bool:
    print(f"run_latency: {h.machine_summary()}; {h.load_summary()}")
    with (
        tempfile.TemporaryDirectory(prefix="brewmesh-bench-") as tmp,
        h.Servers(Path(tmp)) as servers,
        contextlib.ExitStack() as engines,
    ):
        store_url = None
        if options.store == "postgresql":
            from tests.engines import start_postgres

            store_url = engines.enter_context(start_postgres(Path(tmp))).create_database("bench")
        ok = asyncio.run(measure(options, servers, Path(tmp), store_url))
    print("result:", "every target met" if ok else "target MISSED")
    return ok


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)
    h.run_benchmark(lambda: run(options))


if __name__ == "__main__":
    main()
