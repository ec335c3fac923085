"""Resolving a run's machine and recipe over gRPC, through their services.

The runner never reads the partner registry's or the recipes' storage: it
asks PartnerService and RecipeService, wherever they run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from brewmesh.client import MeshClient, connect
from brewmesh.errors import FailedPrecondition, NotFound, Unavailable
from brewmesh.partners.v1 import partners_pb2
from brewmesh.recipes.v1 import recipes_pb2
from services.runner.program_runs import MachineTarget, Program
from services.runner.run_protos import from_struct


class Resolver:
    """Looks up machines and recipes; `address_of` names where each service is."""

    def __init__(self, address_of: Callable[[str], str]) -> None:
        self._address_of = address_of
        self._clients: dict[str, MeshClient] = {}

    def _client(self, service: str) -> MeshClient:
        address = self._address_of(service)
        if address not in self._clients:
            self._clients[address] = connect(address)
        return self._clients[address]

    async def machine(self, name: str, timeout: float) -> MachineTarget:
        request = partners_pb2.GetCoffeeMachineRequest(name=name)
        found = await _call(
            self._client("partners").partners.GetCoffeeMachine, request, timeout, "partner registry"
        )
        return MachineTarget(
            endpoint=found.program_api.endpoint,
            tls=found.program_api.tls,
            api_type=found.api_type,
            handled_events=tuple(found.handled_events),
        )

    async def recipe(self, name: str, timeout: float) -> tuple[Program, int]:
        request = recipes_pb2.GetRecipeRequest(name=name)
        found = await _call(self._client("recipes").recipes.GetRecipe, request, timeout, "recipe service")
        execution = found.execution_properties
        if not execution.program_id:
            raise FailedPrecondition(f"recipe '{name}' has no program to run: set its execution_properties")
        program = Program(execution.program_id, from_struct(execution.parameters))
        return program, found.product_properties.default_volume_ml

    async def close(self) -> None:
        for client in self._clients.values():
            await client.channel.close(None)
        self._clients.clear()


async def _call(method: Any, request: Any, timeout: float, what: str) -> Any:
    try:
        return await method(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(error.details() or "not found") from error
        raise Unavailable(f"the {what} did not answer ({error.code().name}): try again") from error
