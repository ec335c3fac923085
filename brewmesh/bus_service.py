"""The EventBus gRPC service: any client can listen to any API's events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from brewmesh.apis import ApiRegistry
from brewmesh.bus.v1 import event_bus_pb2, event_bus_pb2_grpc, events_pb2
from brewmesh.errors import Violations
from brewmesh.event_log import Group
from brewmesh.events import Bus
from brewmesh.server import ServiceBinding, Shutdown
from brewmesh.storage import Migration

LISTENER_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
SERVICE_NAME = event_bus_pb2.DESCRIPTOR.services_by_name["EventBus"].full_name

Context: TypeAlias = grpc.aio.ServicerContext


class EventBusServicer(event_bus_pb2_grpc.EventBusServicer):
    def __init__(self, bus: Bus, registry: ApiRegistry, auth: Any, shutdown: Shutdown) -> None:
        self.bus = bus
        self.registry = registry
        self.auth = auth
        self.shutdown = shutdown

    async def Subscribe(  # noqa: N802 (gRPC method name)
        self, request: event_bus_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[events_pb2.Event]:
        await self.auth.require_any(context)
        after = await self._check(request)
        types = tuple(request.event_types)
        if request.listener_name:
            group = Group(request.api, request.listener_name, types)
            events = self.bus.follow_group(group, after, self.shutdown.event)
        else:
            events = self.bus.follow(request.api, types, after, self.shutdown.event)
        async for event in events:
            yield event
        if self.shutdown.started:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down: resume with after_id")

    async def _check(self, request: event_bus_pb2.SubscribeRequest) -> int:
        v = Violations()
        events = self.registry.declared.get(request.api)
        if not request.api:
            v.add("api", "is required: the full name of a service, e.g. 'brewmesh.recipes.v1.RecipeService'")
        elif events is None:
            v.add(
                "api", f"'{request.api}' is not an API of this mesh: one of {sorted(self.registry.declared)}"
            )
        for i, event_type in enumerate(request.event_types):
            if events is not None and event_type not in events:
                v.add(
                    f"event_types[{i}]",
                    f"'{event_type}' is not declared for {request.api}: one of {sorted(events)}",
                )
        if request.listener_name and not LISTENER_RE.fullmatch(request.listener_name):
            v.add("listener_name", "use 1 to 100 letters, digits, '-', '_' or '.'")
        after = 0
        if request.after_id:
            if request.new_only:
                v.add("new_only", "cannot be combined with after_id: choose one starting point")
            if not request.after_id.isdigit():
                v.add(
                    "after_id",
                    f"'{request.after_id}' is not an event id: pass the id of an event you received",
                )
            else:
                after = int(request.after_id)
        v.raise_if_any()
        if request.new_only:
            after = await self.bus.log.last_id(request.api)
        return after

    async def ListApis(  # noqa: N802
        self, request: event_bus_pb2.ListApisRequest, context: Context
    ) -> event_bus_pb2.ListApisResponse:
        apis = [
            event_bus_pb2.Api(
                name=name,
                events=[
                    events_pb2.EventDeclaration(type=s.type, payload=s.payload, description=s.description)
                    for s in specs.values()
                ],
                served_here=name in self.registry.served,
            )
            for name, specs in sorted(self.registry.declared.items())
            if specs
        ]
        return event_bus_pb2.ListApisResponse(apis=apis)


def binding(bus: Bus, registry: ApiRegistry, auth: Any, shutdown: Shutdown) -> ServiceBinding:
    servicer = EventBusServicer(bus, registry, auth, shutdown)
    return ServiceBinding(
        SERVICE_NAME, lambda server: event_bus_pb2_grpc.add_EventBusServicer_to_server(servicer, server)
    )


MIGRATIONS: tuple[Migration, ...] = ()
