"""A run starts from the machine and recipe as they are now, not as they were.

The runner remembers machines and recipes between runs; these journeys
check that a change (new program, new endpoint, deleted recipe) is honoured
by the very next run in the embedded mesh, and soon after across processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from brewmesh.client import MeshClient, connect
from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.partners.v1 import partners_pb2
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.sdk import Machine
from tests.conftest import DistributedBackends, PartnerClient, separate_services
from tests.fleet import create_recipe, register_machines, run_request

NS = "my-coffee-company"
MACHINE = f"partners/{NS}/coffeeMachines/m1"
VENDING = REFERENCE_MACHINES["vending"]


@pytest.fixture
async def two_machines() -> AsyncIterator[tuple[str, str]]:
    """Two vending machines in this process: the fleet's endpoint can move between them."""
    machines: list[Machine] = [VENDING.build(0.05), VENDING.build(0.05)]
    endpoints = [f"127.0.0.1:{await m.start('127.0.0.1:0')}" for m in machines]
    yield endpoints[0], endpoints[1]
    for machine in machines:
        await machine.stop(grace=0)


async def declare(client: MeshClient, endpoint: str) -> None:
    await register_machines(client, NS, {"m1": ("vending", endpoint, VENDING.handles)})


async def set_program(client: MeshClient, recipe: str, program_id: str) -> None:
    change = recipes_pb2.Recipe(
        name=recipe, execution_properties=recipes_pb2.ExecutionProperties(program_id=program_id)
    )
    mask = field_mask_pb2.FieldMask(paths=["execution_properties.program_id"])
    await client.recipes.UpdateRecipe(recipes_pb2.UpdateRecipeRequest(recipe=change, update_mask=mask))


async def test_the_next_run_uses_the_recipes_new_program(
    partner: PartnerClient, two_machines: tuple[str, str]
) -> None:
    client = partner.client
    await declare(client, two_machines[0])
    recipe = await create_recipe(client, NS, "lungo")
    first = await client.runner.Run(run_request("before", MACHINE, recipe))
    await set_program(client, recipe, "ristretto")
    second = await client.runner.Run(run_request("after", MACHINE, recipe))
    assert (first.program.program_id, second.program.program_id) == ("lungo", "ristretto")


async def test_the_next_run_goes_to_the_machines_new_endpoint(
    partner: PartnerClient, two_machines: tuple[str, str]
) -> None:
    client = partner.client
    recipe = await create_recipe(client, NS, "lungo")
    await declare(client, two_machines[0])
    await client.runner.Run(run_request("at-first", MACHINE, recipe))
    await declare(client, two_machines[1])
    await client.runner.Run(run_request("at-second", MACHINE, recipe))
    assert await _run_ids_on(two_machines[0]) == {"at-first"}
    assert await _run_ids_on(two_machines[1]) == {"at-second"}


async def test_a_deleted_recipe_cannot_be_run(partner: PartnerClient, two_machines: tuple[str, str]) -> None:
    client = partner.client
    await declare(client, two_machines[0])
    recipe = await create_recipe(client, NS, "lungo")
    await client.runner.Run(run_request("while-there", MACHINE, recipe))
    await client.recipes.DeleteRecipe(recipes_pb2.DeleteRecipeRequest(name=recipe))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await client.runner.Run(run_request("once-gone", MACHINE, recipe))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_runner_process_sees_a_change_made_by_the_recipes_process(
    tmp_path: Path, two_machines: tuple[str, str], distributed_backends: DistributedBackends
) -> None:
    with separate_services(tmp_path, distributed_backends) as services:
        async with (
            connect(services.partners.address, key=services.partners.admin_key) as admin,
            connect(services.recipes.address, key=services.partners.admin_key) as catalogue,
            connect(services.runner.address, key=services.partners.admin_key) as runs,
        ):
            partner = partners_pb2.Partner(display_name="My Coffee")
            await admin.partners.CreatePartner(
                partners_pb2.CreatePartnerRequest(namespace=NS, partner=partner)
            )
            await declare(admin, two_machines[0])
            recipe = await create_recipe(catalogue, NS, "lungo")
            await runs.runner.Run(run_request("cross-before", MACHINE, recipe))
            await set_program(catalogue, recipe, "ristretto")
            programs = [await _program_of_next_run(runs, recipe, i) for i in range(40)]
    # Another process hears of the change through the bus: soon, if not at once.
    assert programs[-1] == "ristretto", programs


async def _program_of_next_run(runs: MeshClient, recipe: str, i: int) -> str:
    run = await runs.runner.Run(run_request(f"cross-{i}", MACHINE, recipe))
    if run.program.program_id != "ristretto":
        await asyncio.sleep(0.1)
    return str(run.program.program_id)


async def _run_ids_on(endpoint: str) -> set[str]:
    """The runs a machine itself knows of (asked directly, not through the runner)."""
    async with connect(endpoint) as machine:
        found = set()
        for run_id in ("at-first", "at-second"):
            try:
                await machine.runner.GetRun(run_pb.GetRunRequest(name=f"programRuns/{run_id}"))
                found.add(run_id)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
        return found
