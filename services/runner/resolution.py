"""Resolving a run's machine and recipe over gRPC, through their services.

The runner never reads the partner registry's or the recipes' storage: it
asks PartnerService and RecipeService, wherever they run, and remembers the
answers until their events say they changed (`coffee_machines_put`,
`recipe_updated`, `recipe_deleted`). A change made in this process is seen
at once; one made by another process within the bus poll interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from brewmesh.call_observer import NOT_OBSERVED, ClientObservers
from brewmesh.client import MeshClient, connect
from brewmesh.errors import FailedPrecondition, NotFound, Unavailable
from brewmesh.keyed_channel import authorization
from brewmesh.partners.v1 import partners_pb2
from brewmesh.read_cache import ReadCache
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.services.runner.program_runs import MachineTarget, Program
from brewmesh.struct_values import from_struct

MAX_CACHED = 10_000
PARTNERS_API = partners_pb2.DESCRIPTOR.services_by_name["PartnerService"].full_name
RECIPES_API = recipes_pb2.DESCRIPTOR.services_by_name["RecipeService"].full_name
CHANGES = (
    f"{PARTNERS_API}.coffee_machines_put",
    f"{RECIPES_API}.recipe_updated",
    f"{RECIPES_API}.recipe_deleted",
)


class Resolver:
    """Looks up machines and recipes; `address_of` names where each service is.

    With `remember`, lookups are cached until a CHANGES event says otherwise.
    That is exact only when those events are observed at commit, in this
    process (the embedded mesh); across processes an event arrives a few
    milliseconds after the write returned, and a run started in between
    would use the old machine or recipe, so there every run looks up afresh.
    """

    def __init__(
        self,
        address_of: Callable[[str], str],
        remember: bool = True,
        credentials_for: Callable[[str], grpc.ChannelCredentials | None] = lambda service: None,
        observers: ClientObservers = NOT_OBSERVED,
    ) -> None:
        """`credentials_for`: how to call each service (TLS credentials; None: plaintext);
        `observers`: for every call (metrics, traces)."""
        self._observers = observers
        self._address_of = address_of
        self._remember = remember
        self._credentials_for = credentials_for
        self._clients: dict[str, MeshClient] = {}
        self._machines: ReadCache[str, MachineTarget] = ReadCache(MAX_CACHED)
        self._recipes: ReadCache[str, tuple[Program, int]] = ReadCache(MAX_CACHED)

    def on_change(self, payload: Message) -> None:
        """Forget what one of the CHANGES events says has changed."""
        if isinstance(payload, partners_pb2.CoffeeMachinesPutEvent):
            fleet = f"{payload.parent}/coffeeMachines/"
            self._machines.forget_where(lambda name: name.startswith(fleet))
        elif isinstance(payload, recipes_pb2.RecipeUpdatedEvent):
            self._recipes.forget(payload.recipe.name)
        elif isinstance(payload, recipes_pb2.RecipeDeletedEvent):
            self._recipes.forget(payload.name)

    def _client(self, service: str) -> MeshClient:
        address = self._address_of(service)
        if address not in self._clients:
            self._clients[address] = connect(
                address,
                credentials=self._credentials_for(service),
                interceptors=self._observers.interceptors,
                counted_by=self._observers.metrics,
            )
        return self._clients[address]

    async def run_inputs(
        self, machine: str, recipe: str, timeout: float, caller_key: str | None
    ) -> tuple[MachineTarget, tuple[Program, int]]:
        """A run's machine and recipe: both remembered (no task, no loop turn), or looked up at once."""
        if self._remember:
            target, program = self._machines.peek(machine), self._recipes.peek(recipe)
            if target is not None and program is not None:
                return target, program
        return await asyncio.gather(self.machine(machine, timeout, caller_key), self.recipe(recipe, timeout))

    async def machine(self, name: str, timeout: float, caller_key: str | None) -> MachineTarget:
        """The machine as its partner declared it, caller token included: read with the key of
        the run's caller (its partner, or the admin), the only callers who may see the token."""
        if not self._remember:
            return await self._load_machine(name, timeout, caller_key)
        return await self._machines.get(name, lambda: self._load_machine(name, timeout, caller_key))

    async def recipe(self, name: str, timeout: float) -> tuple[Program, int]:
        """The recipe's program and default volume."""
        if not self._remember:
            return await self._load_recipe(name, timeout)
        return await self._recipes.get(name, lambda: self._load_recipe(name, timeout))

    async def _load_machine(self, name: str, timeout: float, caller_key: str | None) -> MachineTarget:
        request = partners_pb2.GetCoffeeMachineRequest(name=name, view=partners_pb2.COFFEE_MACHINE_VIEW_FULL)
        found = await _call(
            self._client("partners").partners.GetCoffeeMachine,
            request,
            timeout,
            "partner registry",
            (authorization(caller_key),) if caller_key else (),
        )
        return MachineTarget(
            endpoint=found.program_api.endpoint,
            tls=found.program_api.tls,
            api_type=found.api_type,
            handled_events=tuple(found.handled_events),
            caller_token=found.program_api.caller_token,
        )

    async def _load_recipe(self, name: str, timeout: float) -> tuple[Program, int]:
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


async def _call(
    method: Any, request: Any, timeout: float, what: str, metadata: tuple[tuple[str, str], ...] = ()
) -> Any:
    try:
        return await method(request, timeout=timeout, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(error.details() or "not found") from error
        raise Unavailable(f"the {what} did not answer ({error.code().name}): try again") from error
