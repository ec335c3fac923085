"""Helpers for program-run tests: register machines, create recipes, read streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Any

from google.protobuf import struct_pb2

from brewmesh.client import MeshClient
from brewmesh.partners.v1 import partners_pb2
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb


async def register_machines(
    client: MeshClient, namespace: str, machines: dict[str, tuple[str, str, tuple[str, ...]]]
) -> None:
    """Declare `machine_id -> (api_type, endpoint, handled events)` as the partner's fleet."""
    fleet = [
        partners_pb2.CoffeeMachine(
            name=f"partners/{namespace}/coffeeMachines/{machine_id}",
            api_type=api_type,
            program_api=partners_pb2.ProgramApi(endpoint=endpoint),
            handled_events=handles,
        )
        for machine_id, (api_type, endpoint, handles) in machines.items()
    ]
    await client.partners.PutCoffeeMachines(
        partners_pb2.PutCoffeeMachinesRequest(parent=f"partners/{namespace}", coffee_machines=fleet)
    )


async def create_recipe(
    client: MeshClient, namespace: str, id_component: str, volume_ml: int = 300, **parameters: Any
) -> str:
    params = struct_pb2.Struct()
    params.update(parameters)
    recipe = recipes_pb2.Recipe(
        product_properties=recipes_pb2.ProductProperties(default_volume_ml=volume_ml),
        execution_properties=recipes_pb2.ExecutionProperties(program_id="lungo", parameters=params),
    )
    created = await client.recipes.CreateRecipe(
        recipes_pb2.CreateRecipeRequest(namespace=namespace, id_component=id_component, recipe=recipe)
    )
    return str(created.name)


def run_request(run_id: str, machine: str, recipe: str, volume_ml: int = 0) -> run_pb.RunRequest:
    return run_pb.RunRequest(run_id=run_id, machine=machine, recipe=recipe, volume_ml=volume_ml)


async def read_until(
    stream: AsyncIterable[run_pb.ProgramEvent], event: str, timeout: float = 15
) -> list[run_pb.ProgramEvent]:
    """Events up to and including the first named `event`."""

    async def read() -> list[run_pb.ProgramEvent]:
        seen = []
        async for item in stream:
            seen.append(item)
            if item.event == event:
                return seen
        raise AssertionError(f"stream ended before '{event}': {[e.event for e in seen]}")

    return await asyncio.wait_for(read(), timeout)


async def read_to_end(
    stream: AsyncIterable[run_pb.ProgramEvent], timeout: float = 15
) -> list[run_pb.ProgramEvent]:
    async def read() -> list[run_pb.ProgramEvent]:
        return [item async for item in stream]

    return await asyncio.wait_for(read(), timeout)


def names(events: list[run_pb.ProgramEvent]) -> list[str]:
    return [e.event for e in events]
