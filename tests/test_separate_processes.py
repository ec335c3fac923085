"""The mesh as one process per service on one machine (`brewmesh serve`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brewmesh.client import connect
from brewmesh.partners.v1 import partners_pb2
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from tests.conftest import (
    DistributedBackends,
    MeshProcess,
    separate_services,
    start_extra_instance,
    start_machine_process,
)
from tests.fleet import create_recipe, names, read_to_end, register_machines, run_request

NS = "my-coffee-company"


async def test_a_run_crosses_three_service_processes(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    machine = start_machine_process("legacy", brew_seconds=0.2)
    try:
        with separate_services(tmp_path, distributed_backends) as services:
            partners, recipes, runner = services.partners, services.recipes, services.runner
            await assert_serves_only(
                recipes.address, "brewmesh.recipes.v1.RecipeService", "brewmesh.partners.v1.PartnerService"
            )

            async with connect(partners.address, key=partners.admin_key) as admin:
                created = await admin.partners.CreatePartner(
                    partners_pb2.CreatePartnerRequest(
                        namespace=NS, partner=partners_pb2.Partner(display_name="My Coffee")
                    )
                )
            async with connect(partners.address, key=created.api_key) as registry:
                handles: tuple[str, ...] = ("order_canceled",)
                await register_machines(registry, NS, {"old-1": ("legacy", machine.address, handles)})
            async with connect(recipes.address, key=created.api_key) as catalogue:
                recipe = await create_recipe(
                    catalogue, NS, "lungo"
                )  # the partner's key works on every process
            async with connect(runner.address, key=created.api_key) as runs:
                machine_name = f"partners/{NS}/coffeeMachines/old-1"
                run = await runs.runner.Run(run_request("sep-1", machine_name, recipe))
                events = await read_to_end(runs.runner.Watch(run_pb.WatchRequest(run=run.name)))
        assert names(events)[0] == "run_requested" and names(events)[-1] == "finished"
        assert run.volume_ml == 300  # the recipe's default, fetched from the recipes process
    finally:
        machine.stop()
    assert all(p.process.returncode == 0 for p in services.processes)


async def assert_serves_only(address: str, served: str, elsewhere: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest(service=served))).status == 1
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await health.Check(health_pb2.HealthCheckRequest(service=elsewhere))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_two_runner_instances_record_each_machine_event_once(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    machine = start_machine_process("vending", brew_seconds=1.0)
    services_running = separate_services(tmp_path, distributed_backends)
    services = services_running.__enter__()
    mesh = services.runner
    second: MeshProcess | None = None
    try:
        async with connect(services.partners.address, key=services.partners.admin_key) as admin:
            created = await admin.partners.CreatePartner(
                partners_pb2.CreatePartnerRequest(
                    namespace=NS, partner=partners_pb2.Partner(display_name="My Coffee")
                )
            )
        async with connect(services.partners.address, key=created.api_key) as registry:
            await register_machines(
                registry, NS, {"v-1": ("vending", machine.address, ("takeout_requested",))}
            )
        async with connect(services.recipes.address, key=created.api_key) as catalogue:
            recipe = await create_recipe(catalogue, NS, "lungo")
        async with connect(mesh.address, key=created.api_key) as partner:
            run = await partner.runner.Run(run_request("twice", f"partners/{NS}/coffeeMachines/v-1", recipe))
            # A second runner starts while the run is live: it picks the run up too.
            second = start_extra_instance(tmp_path, "runner", services, distributed_backends)
            await partner.runner.Signal(run_pb.SignalRequest(run=run.name, event="takeout_requested"))
            events = await read_to_end(partner.runner.Watch(run_pb.WatchRequest(run=run.name)))
        async with connect(second.address, key=created.api_key) as other:
            seen_there = await read_to_end(other.runner.Watch(run_pb.WatchRequest(run=run.name)))
    finally:
        if second:
            second.stop()
        services_running.__exit__(None, None, None)
        machine.stop()
    # Each event once (the caller's takeout may land before or after the brew ends).
    assert sorted(names(events)) == sorted([
        "run_requested", "started", "brewing_started", "takeout_requested",
        "brewing_finished", "context_set", "takeout_ready", "finished",
    ])  # fmt: skip
    assert names(events)[-1] == "finished"
    assert [e.sequence for e in events] == list(range(1, 9))
    assert names(seen_there) == names(events)


async def test_a_change_made_on_one_recipes_instance_reaches_the_other(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    services_running = separate_services(tmp_path, distributed_backends)
    services = services_running.__enter__()
    first = services.recipes
    second = start_extra_instance(tmp_path, "recipes", services, distributed_backends)
    try:
        key = services.partners.admin_key
        async with connect(first.address, key=key) as one, connect(second.address) as two:
            name = await create_recipe(one, "common", "espresso", volume_ml=40)
            seen = await two.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name=name))
            assert seen.product_properties.default_volume_ml == 40  # now cached on the second instance
            change = recipes_pb2.Recipe(
                name=name, product_properties=recipes_pb2.ProductProperties(default_volume_ml=60)
            )
            mask = field_mask_pb2.FieldMask(paths=["product_properties.default_volume_ml"])
            await one.recipes.UpdateRecipe(recipes_pb2.UpdateRecipeRequest(recipe=change, update_mask=mask))
            volumes = []
            for _ in range(50):  # the other instance learns of it from the bus within its poll interval
                got = await two.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name=name))
                volumes.append(got.product_properties.default_volume_ml)
                if volumes[-1] == 60:
                    break
                await asyncio.sleep(0.1)
    finally:
        second.stop()
        services_running.__exit__(None, None, None)
    assert volumes[-1] == 60 and len(volumes) < 40
