"""Prometheus metrics at --metrics-port: a call moves the counters it should.

Scraped over HTTP from the endpoint of a running mesh (in this process, and a
`brewmesh serve` process on PostgreSQL and Redis), as Prometheus does.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.client import connect
from brewmesh.mesh import Mesh
from brewmesh.partners.v1 import partners_pb2, partners_pb2_grpc
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.settings import Settings
from tests.conftest import DistributedBackends, free_port, free_ports, start_mesh_process
from tests.fleet import create_recipe

RECIPES = "brewmesh.recipes.v1.RecipeService"
PARTNERS = "brewmesh.partners.v1.PartnerService"


@pytest.fixture
async def measured(tmp_path: Path) -> AsyncIterator[Mesh]:
    mesh = await Mesh.start(Settings(data_dir=tmp_path / "data", metrics_port=free_port()))
    yield mesh
    await mesh.stop(grace=0)


async def scrape(mesh: Mesh) -> str:
    assert mesh.metrics_endpoint is not None
    url = f"http://127.0.0.1:{mesh.metrics_endpoint.port}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    return await asyncio.to_thread(get)  # the endpoint reads the bus on this loop: do not block it


def value(text: str, name: str, **labels: str) -> float:
    """The sample of `name` whose labels include `labels` (0 if there is none yet)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


async def test_a_refused_call_is_counted_with_its_code_and_timed(measured: Mesh) -> None:
    before = await scrape(measured)
    async with connect(f"127.0.0.1:{measured.port}") as client:
        with pytest.raises(grpc.aio.AioRpcError):
            await client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name="recipes/nobody:nothing"))
    after = await scrape(measured)
    labels = {"grpc_service": RECIPES, "grpc_method": "GetRecipe"}
    counted = value(after, "grpc_server_handled_total", grpc_code="NOT_FOUND", **labels)
    assert counted == value(before, "grpc_server_handled_total", grpc_code="NOT_FOUND", **labels) + 1
    assert value(after, "grpc_server_handling_seconds_count", **labels) >= 1


async def test_events_fired_and_listener_groups_are_measured(measured: Mesh) -> None:
    async with connect(f"127.0.0.1:{measured.port}", key=measured.admin_key) as admin:
        await create_recipe(admin, "common", "measured")
        stream = admin.bus.Subscribe(bus_pb.SubscribeRequest(api=RECIPES, listener_name="dashboard"))
        await stream.read()
        stream.cancel()
        after = await scrape(measured)
    assert value(after, "brewmesh_events_fired_total", api=RECIPES, type="recipe_created") >= 1
    assert value(after, "brewmesh_events_delivered_total", api=RECIPES, group="common/dashboard") >= 1
    assert re.search(r'brewmesh_listener_lag_events\{[^}]*listener="dashboard"[^}]*\} \d', after)


async def test_a_run_moves_the_run_counters(measured: Mesh) -> None:
    text = await scrape(measured)
    assert "brewmesh_runs_started_total" in text and "grpc_server_open_streams" in text


def test_a_service_process_serves_its_metrics(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    """`brewmesh serve partners --metrics-port` on PostgreSQL and Redis: a call moves its counter."""
    metrics_port, port = free_ports(2)
    command = ("serve", "partners", *distributed_backends.args(), "--metrics-port", str(metrics_port))
    process = start_mesh_process(tmp_path / "partners", command=command, port=port)
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with grpc.insecure_channel(process.address) as channel:
            stub = partners_pb2_grpc.PartnerServiceStub(channel)
            metadata = (("authorization", f"Bearer {process.admin_key}"),)
            stub.ListPartners(partners_pb2.ListPartnersRequest(), metadata=metadata, timeout=10)
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        process.stop()
    labels = {"grpc_service": PARTNERS, "grpc_method": "ListPartners", "grpc_code": "OK"}
    assert value(text, "grpc_server_handled_total", **labels) == 1
