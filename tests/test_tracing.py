"""One run is one trace: from the caller's Run, through the runner's look-ups at partners and
recipes, to the machine's Run, and into the events the run fires.

In this process, so the SDK's in-memory exporter sees every span: one mesh
hosting partners, recipes and runner (embedded), or a mesh for each on its
own port, on PostgreSQL and Redis (distributed); and a café machine built on
the SDK. Every one traces into the same exporter, as each would export to one
collector.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.bus.v1 import events_pb2
from brewmesh.client import connect
from brewmesh.machines import cafe
from brewmesh.mesh import Mesh
from brewmesh.partners.v1 import partners_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.runtime import Component
from brewmesh.services.partners.component import component as partners_component
from brewmesh.services.recipes.component import component as recipes_component
from brewmesh.services.runner.component import component as runner_component
from brewmesh.settings import Settings
from brewmesh.tracing import Tracing
from tests.fleet import create_recipe, read_until, register_machines, run_request

NS = "traced-coffee"
MACHINE = f"partners/{NS}/coffeeMachines/cafe-1"
RUNNER_API = "brewmesh.runner.v1.ProgramRunner"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(params=["embedded", "distributed"])
async def traced_mesh(
    request: pytest.FixtureRequest, tmp_path: Path, exporter: InMemorySpanExporter
) -> AsyncIterator[tuple[Tracing, dict[str, str], str]]:
    """(tracing, address of each service and of the machine, admin key), every part traced.

    Embedded: one mesh hosts the three services. Distributed: a mesh for each,
    on PostgreSQL and Redis.
    """
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = Tracing(provider)
    async with AsyncExitStack() as stack:

        async def start(name: str, components: list[Component] | None, **options: str) -> Mesh:
            settings = Settings(data_dir=tmp_path / name, **options)  # type: ignore[arg-type]
            mesh = await Mesh.start(settings, components, traced)
            stack.push_async_callback(mesh.stop, 0)
            return mesh

        if request.param == "embedded":
            mesh = await start("mesh", None)
            at = dict.fromkeys(("partners", "recipes", "runner"), f"127.0.0.1:{mesh.port}")
            admin_key = mesh.admin_key
        else:
            engines = {
                "store": request.getfixturevalue("pg_database"),
                "bus": request.getfixturevalue("fresh_redis_url"),
            }
            partners = await start("partners", [partners_component()], **engines)
            at = {"partners": f"127.0.0.1:{partners.port}"}
            recipes = await start("recipes", [recipes_component()], partners=at["partners"], **engines)
            at["recipes"] = f"127.0.0.1:{recipes.port}"
            runner = await start("runner", [runner_component()], **at, **engines)
            at["runner"] = f"127.0.0.1:{runner.port}"
            admin_key = partners.admin_key
        machine = cafe.build(0.2)
        await machine.start(tracing=traced)
        stack.push_async_callback(machine.stop, 0)
        at["machine"] = f"127.0.0.1:{machine.port}"
        yield traced, at, admin_key


def spans_of(exporter: InMemorySpanExporter, method: str, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.endswith(method) and s.kind == kind]


async def test_a_run_is_one_trace_across_the_runner_its_lookups_and_the_machine(
    traced_mesh: tuple[Tracing, dict[str, str], str], exporter: InMemorySpanExporter
) -> None:
    traced, at, admin_key = traced_mesh
    interceptors = traced.client_interceptors()
    async with connect(at["partners"], admin_key) as admin:
        created = await admin.partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(namespace=NS, partner=partners_pb2.Partner(display_name=NS))
        )
    key = created.api_key
    async with (
        connect(at["partners"], key) as partners,
        connect(at["recipes"], key) as recipes,
        connect(at["runner"], key, interceptors=interceptors) as runner,
    ):
        await register_machines(partners, NS, {"cafe-1": ("cafe", at["machine"], ())})
        recipe = await create_recipe(recipes, NS, "lungo")
        events = runner.bus.Subscribe(bus_pb.SubscribeRequest(api=RUNNER_API, event_types=["program_event"]))
        with traced.tracer("a partner's till").start_as_current_span("order 42") as order:
            run = await runner.runner.Run(run_request("order-42", MACHINE, recipe))
        trace_id = order.get_span_context().trace_id
        await read_until(runner.runner.Watch(run_pb.WatchRequest(run=run.name)), "finished")
        fired = await _first_event(events)

    hops = {
        "runner serves Run": spans_of(exporter, f"{RUNNER_API}/Run", SpanKind.SERVER),
        "partners serves GetCoffeeMachine": spans_of(
            exporter, "PartnerService/GetCoffeeMachine", SpanKind.SERVER
        ),
        "recipes serves GetRecipe": spans_of(exporter, "RecipeService/GetRecipe", SpanKind.SERVER),
        "the runner calls the machine": spans_of(exporter, f"{RUNNER_API}/Run", SpanKind.CLIENT),
    }
    for hop, spans in hops.items():
        assert any(s.context.trace_id == trace_id for s in spans), f"{hop}: no span in the run's trace"
    # The machine's own server span: a second ProgramRunner/Run server span in the same trace.
    run_servers = [s for s in hops["runner serves Run"] if s.context.trace_id == trace_id]
    assert len(run_servers) == 2, "the runner's and the machine's Run, each a server span"
    assert f"{trace_id:032x}" in fired.traceparent  # the run's events carry its trace


async def test_health_watch_streams_with_tracing_on(
    traced_mesh: tuple[Tracing, dict[str, str], str], exporter: InMemorySpanExporter
) -> None:
    """grpc clients' health checking and load balancers Watch a server's health: tracing must
    not turn that stream into an error (it did: UNKNOWN, "'async for' requires ... __aiter__")."""
    traced, at, _ = traced_mesh
    watches_ended = _SpansEnded("grpc.health.v1.Health/Watch", len(at))
    assert isinstance(traced.provider, TracerProvider)  # the SDK's, as the fixture made it
    traced.provider.add_span_processor(watches_ended)
    for part, address in at.items():
        async with grpc.aio.insecure_channel(address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            first = await asyncio.wait_for(watch.read(), 10)
            assert first.status == health_pb2.HealthCheckResponse.SERVING, part
            watch.cancel()
    await asyncio.wait_for(watches_ended.all.wait(), 10)  # each stream traced, its span ended with it


class _SpansEnded(SpanProcessor):
    """Sets `all` once `count` server spans named `name` have ended."""

    def __init__(self, name: str, count: int) -> None:
        self.all = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._name, self._left = name, count

    def on_end(self, span: ReadableSpan) -> None:
        if span.name.endswith(self._name) and span.kind == SpanKind.SERVER:
            self._left -= 1
            if self._left == 0:
                self._loop.call_soon_threadsafe(self.all.set)


async def _first_event(stream: Any) -> events_pb2.Event:
    """The first event of a Subscribe stream, which is then cancelled."""
    async for event in stream:
        stream.cancel()
        assert isinstance(event, events_pb2.Event)
        return event
    raise AssertionError("the stream ended before an event")
