"""Prometheus metrics at --metrics-port: a call moves the counters it should.

Scraped over HTTP from the endpoint of a running mesh (in this process, and a
`brewmesh serve` process on PostgreSQL and Redis), as Prometheus does.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.client import connect
from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.mesh import Mesh
from brewmesh.partners.v1 import partners_pb2
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.settings import Settings
from tests.conftest import DistributedBackends, create_partner, free_port, free_ports, separate_services
from tests.fleet import create_recipe, names, read_to_end, register_machines, run_request
from tests.test_coffee_machines import wait_for_status

RECIPES = "brewmesh.recipes.v1.RecipeService"
PARTNERS = "brewmesh.partners.v1.PartnerService"
NS = "my-coffee-company"
MACHINE = f"partners/{NS}/coffeeMachines/m1"


@pytest.fixture
async def measured(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Mesh]:
    mesh = await Mesh.start(Settings(data_dir=tmp_path / "data", metrics_port=free_port()))
    # Registering the collector must not read the bus (on the loop's own thread, that read stalls).
    assert not [r for r in caplog.records if r.name == "brewmesh.metrics"], caplog.text
    yield mesh
    await mesh.stop(grace=0)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def scrape_until(url: str, holds: Callable[[str], bool], timeout: float = 10.0) -> str:
    """Scrape `url` until `holds` is true of the text.

    A call is counted when the server has sent its status, which may be just
    after the client has its answer: wait for the count, do not race it.
    """
    deadline = time.monotonic() + timeout
    text = fetch(url)
    while not holds(text) and time.monotonic() < deadline:
        text = fetch(url)
    return text


def url_of(mesh: Mesh) -> str:
    assert mesh.metrics_endpoint is not None
    return f"http://127.0.0.1:{mesh.metrics_endpoint.port}/metrics"


async def scrape(mesh: Mesh, holds: Callable[[str], bool] = lambda _: True) -> str:
    # The endpoint reads the bus on this loop: scrape from a thread, do not block it.
    return await asyncio.to_thread(scrape_until, url_of(mesh), holds)


def value(text: str, name: str, **labels: str) -> float:
    """The sample of `name` whose labels include `labels` (0 if there is none yet)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


async def test_a_refused_call_is_counted_with_its_code_and_timed(measured: Mesh) -> None:
    before = await scrape(measured)
    async with connect(f"127.0.0.1:{measured.port}") as client:
        with pytest.raises(grpc.aio.AioRpcError):
            await client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/nobody:nothing"))
    labels = {"grpc_service": RECIPES, "grpc_method": "GetRecipe"}
    was = value(before, "grpc_server_handled_total", grpc_code="NOT_FOUND", **labels)
    after = await scrape(
        measured, lambda text: value(text, "grpc_server_handled_total", grpc_code="NOT_FOUND", **labels) > was
    )
    assert value(after, "grpc_server_handled_total", grpc_code="NOT_FOUND", **labels) == was + 1
    assert value(after, "grpc_server_handling_seconds_count", **labels) >= 1


async def test_events_fired_and_listener_groups_are_measured(measured: Mesh) -> None:
    async with connect(f"127.0.0.1:{measured.port}", key=measured.admin_key) as admin:
        await create_recipe(admin, "common", "measured")
        stream = admin.bus.Subscribe(bus_pb.SubscribeRequest(api=RECIPES, listener_name="dashboard"))
        await stream.read()
        subscribe = {"grpc_service": "brewmesh.bus.v1.EventBus", "grpc_method": "Subscribe"}
        delivered = {"api": RECIPES, "group": "common/dashboard"}
        after = await scrape(
            measured, lambda text: value(text, "brewmesh_events_delivered_total", **delivered) > 0
        )
        assert value(after, "grpc_server_open_streams", **subscribe) == 1  # the stream is still open
        stream.cancel()
        closed = await scrape(
            measured, lambda text: value(text, "grpc_server_open_streams", **subscribe) == 0
        )
    assert value(closed, "grpc_server_open_streams", **subscribe) == 0
    assert value(after, "brewmesh_events_fired_total", api=RECIPES, type="recipe_created") >= 1
    assert value(after, "brewmesh_events_delivered_total", api=RECIPES, group="common/dashboard") >= 1
    assert re.search(r'brewmesh_listener_lag_events\{[^}]*listener="dashboard"[^}]*\} \d', after)


async def test_a_run_moves_the_run_counters(measured: Mesh) -> None:
    reference = REFERENCE_MACHINES["legacy"]
    machine = reference.build(0.05)
    endpoint = f"127.0.0.1:{await machine.start('127.0.0.1:0')}"
    try:
        async with connect(f"127.0.0.1:{measured.port}", key=measured.admin_key) as admin:
            partner = await create_partner(measured, admin, NS)
            async with partner.client as client:
                await register_machines(client, NS, {"m1": ("legacy", endpoint, reference.handles)})
                recipe = await create_recipe(client, NS, "lungo")
                await wait_for_status(client, MACHINE, partners_pb2.SERVING_STATUS_SERVING)
                run = await client.runner.Run(run_request("measured", MACHINE, recipe))
                events = await read_to_end(client.runner.Watch(run_pb.WatchRequest(run=run.name)))
    finally:
        await machine.stop(grace=0)
    assert names(events)[-1] == "finished"
    ended = {"state": "FINISHED"}
    text = await scrape(measured, lambda text: value(text, "brewmesh_runs_ended_total", **ended) > 0)
    assert value(text, "brewmesh_runs_started_total") == 1
    assert value(text, "brewmesh_runs_ended_total", **ended) == 1
    assert value(text, "brewmesh_machine_up", machine=f"{NS}/m1") == 1  # its health check said SERVING
    # The runner's own calls to the machine, counted on the client side, with their kind.
    runner = "brewmesh.runner.v1.ProgramRunner"
    machine_run = {"grpc_service": runner, "grpc_method": "Run", "grpc_type": "unary"}
    assert value(text, "grpc_client_handled_total", grpc_code="OK", **machine_run) == 1
    machine_watch = {"grpc_service": runner, "grpc_method": "Watch", "grpc_type": "server_stream"}
    text = await scrape(measured, lambda text: value(text, "grpc_client_handled_total", **machine_watch) > 0)
    assert value(text, "grpc_client_handling_seconds_count", **machine_watch) >= 1


async def test_a_failed_call_the_mesh_makes_is_counted_with_its_code(measured: Mesh) -> None:
    """The runner asks the recipe service for a run's recipe: its NOT_FOUND is counted and timed."""
    async with connect(f"127.0.0.1:{measured.port}", key=measured.admin_key) as admin:
        partner = await create_partner(measured, admin, NS)
    async with partner.client as client:
        await register_machines(client, NS, {"m1": ("legacy", "127.0.0.1:1", ())})
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.runner.Run(run_request("unknown-recipe", MACHINE, f"recipes/{NS}:nothing"))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    lookup = {"grpc_service": RECIPES, "grpc_method": "GetRecipe", "grpc_type": "unary"}
    text = await scrape(
        measured, lambda text: value(text, "grpc_client_handled_total", grpc_code="NOT_FOUND", **lookup) > 0
    )
    assert value(text, "grpc_client_handled_total", grpc_code="NOT_FOUND", **lookup) == 1
    assert value(text, "grpc_client_handling_seconds_count", **lookup) == 1


async def test_service_processes_on_postgresql_and_redis_serve_their_metrics(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    """Distributed: each `brewmesh serve` process counts its own calls, the calls it makes and its events."""
    ports = dict(zip(("partners", "recipes", "runner"), free_ports(3), strict=True))
    args_of = {name: ["--metrics-port", str(port)] for name, port in ports.items()}
    urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
    with separate_services(tmp_path, distributed_backends, args_of) as services:
        async with connect(services.partners.address, key=services.partners.admin_key) as admin:
            partner = await admin.partners.CreatePartner(
                partners_pb2.CreatePartnerRequest(
                    namespace=NS, partner=partners_pb2.Partner(display_name="M")
                )
            )
        async with connect(services.recipes.address, key=partner.api_key) as catalogue:
            await create_recipe(catalogue, NS, "measured")
        async with connect(services.runner.address, key=partner.api_key) as listener:
            subscribe = bus_pb.SubscribeRequest(api=RECIPES, listener_name="dashboard")
            stream = listener.bus.Subscribe(subscribe)
            await stream.read()
            stream.cancel()

        def scrape_each() -> dict[str, str]:
            created = {"grpc_service": RECIPES, "grpc_method": "CreateRecipe", "grpc_code": "OK"}
            delivered = {"api": RECIPES, "group": f"{NS}/dashboard"}
            return {
                "partners": fetch(urls["partners"]),
                "recipes": scrape_until(
                    urls["recipes"], lambda t: counted(t, "grpc_server_handled", **created)
                ),
                "runner": scrape_until(urls["runner"], lambda t: value(t, DELIVERED, **delivered) > 0),
            }

        texts = await asyncio.to_thread(scrape_each)
    partners, recipes, runner = texts["partners"], texts["recipes"], texts["runner"]
    assert value(partners, "grpc_server_handled_total", grpc_method="CreatePartner", grpc_code="OK") == 1
    assert value(recipes, "brewmesh_events_fired_total", api=RECIPES, type="recipe_created") == 1
    # The recipes process asked the partners process who the key belongs to: a client call it counts.
    assert value(recipes, "grpc_client_handled_total", grpc_service=PARTNERS, grpc_code="OK") >= 1
    assert value(runner, DELIVERED, api=RECIPES, group=f"{NS}/dashboard") == 1
    assert re.search(
        rf'brewmesh_listener_lag_events\{{[^}}]*listener="dashboard",namespace="{NS}"\}} \d', runner
    )


DELIVERED = "brewmesh_events_delivered_total"


def counted(text: str, name: str, **labels: str) -> bool:
    return value(text, f"{name}_total", **labels) > 0
