"""PartnerService's fleet RPCs: declare, get and list coffee machines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeAlias, TypeVar

import grpc

from brewmesh.counts import capped
from brewmesh.errors import Violations
from brewmesh.pagination import read_page
from brewmesh.partners.v1 import partners_pb2
from brewmesh.runtime import Runtime
from brewmesh.services.partners import machines, partners
from brewmesh.services.partners.machines import CoffeeMachine, MachineSpec
from brewmesh.storage import Tx

API = partners_pb2.DESCRIPTOR.services_by_name["PartnerService"].full_name
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Context: TypeAlias = grpc.aio.ServicerContext[_Req, _Resp]
"""A servicer method's context: `Context[Request, Response]`."""


def machine_proto(machine: CoffeeMachine, full: bool = False) -> partners_pb2.CoffeeMachine:
    """The machine as clients see it; its caller token only if `full` (the FULL view)."""
    program_api = partners_pb2.ProgramApi(
        endpoint=machine.endpoint,
        tls=machine.tls,
        caller_token=machine.caller_token if full else "",
        caller_token_set=bool(machine.caller_token),
    )
    proto = partners_pb2.CoffeeMachine(
        name=machine.name,
        api_type=machine.api_type,
        program_api=program_api,
        handled_events=machine.handled_events,
        serving_status=partners_pb2.ServingStatus.ValueType(int(machine.serving_status)),
    )
    if machine.status_time:
        proto.status_time.FromDatetime(machine.status_time)
    return proto


def machine_spec(proto: partners_pb2.CoffeeMachine) -> MachineSpec:
    return MachineSpec(
        machine_id=proto.name.rpartition("/")[2],
        api_type=proto.api_type,
        endpoint=proto.program_api.endpoint,
        tls=proto.program_api.tls,
        caller_token=proto.program_api.caller_token,
        handled_events=tuple(capped(proto.handled_events, machines.MAX_HANDLED_EVENTS)),
    )


def status_changed_event(
    machine: CoffeeMachine, status: machines.ServingStatus
) -> partners_pb2.MachineStatusChangedEvent:
    return partners_pb2.MachineStatusChangedEvent(
        machine=machine.name,
        previous_status=partners_pb2.ServingStatus.ValueType(int(machine.serving_status)),
        serving_status=partners_pb2.ServingStatus.ValueType(int(status)),
    )


def _checked_fleet(
    namespace: str, request: partners_pb2.PutCoffeeMachinesRequest
) -> list[tuple[str, MachineSpec]]:
    """The fleet as `(name as sent, spec)` pairs; INVALID_ARGUMENT listing what is wrong."""
    v = Violations()
    named = [(m.name, machine_spec(m)) for m in capped(request.coffee_machines, machines.MAX_FLEET)]
    machines.check_fleet(v, namespace, named)
    v.raise_if_any()
    return named


class FleetRpcs:
    """The machine-fleet RPCs of PartnerService (mixed into its servicer)."""

    rt: Runtime
    on_fleet_put: Callable[[], None]

    async def PutCoffeeMachines(  # noqa: N802
        self,
        request: partners_pb2.PutCoffeeMachinesRequest,
        context: Context[partners_pb2.PutCoffeeMachinesRequest, partners_pb2.PutCoffeeMachinesResponse],
    ) -> partners_pb2.PutCoffeeMachinesResponse:
        v = Violations()
        namespace = partners.parse_partner_name(v, "parent", request.parent)
        v.raise_if_any()
        assert namespace is not None
        await self.rt.auth.require_writer(context, namespace)
        # A fleet of a thousand machines takes tens of ms to check: off the event loop.
        named = await asyncio.to_thread(_checked_fleet, namespace, request)

        def put(tx: Tx) -> list[CoffeeMachine]:
            fleet = machines.put_fleet(tx, namespace, [spec for _, spec in named])
            event = partners_pb2.CoffeeMachinesPutEvent(
                parent=request.parent, coffee_machines=[machine_proto(m) for m in fleet]
            )
            self.rt.bus.fire(tx, API, "coffee_machines_put", event, namespace)
            return fleet

        fleet = await self.rt.store.write(put)
        self.on_fleet_put()
        return partners_pb2.PutCoffeeMachinesResponse(coffee_machines=[machine_proto(m) for m in fleet])

    async def GetCoffeeMachine(  # noqa: N802
        self,
        request: partners_pb2.GetCoffeeMachineRequest,
        context: Context[partners_pb2.GetCoffeeMachineRequest, partners_pb2.CoffeeMachine],
    ) -> partners_pb2.CoffeeMachine:
        v = Violations()
        parsed = machines.parse_machine_name(v, "name", request.name)
        v.raise_if_any()
        assert parsed is not None
        full = request.view == partners_pb2.COFFEE_MACHINE_VIEW_FULL
        if full:  # the caller token is the partner's secret
            await self.rt.auth.require_writer(context, parsed[0])
        machine = await self.rt.store.lookup(lambda tx: machines.get_machine(tx, *parsed))
        return machine_proto(machine, full)

    async def ListCoffeeMachines(  # noqa: N802
        self,
        request: partners_pb2.ListCoffeeMachinesRequest,
        context: Context[partners_pb2.ListCoffeeMachinesRequest, partners_pb2.ListCoffeeMachinesResponse],
    ) -> partners_pb2.ListCoffeeMachinesResponse:
        v = Violations()
        namespace = partners.parse_partner_name(v, "parent", request.parent)
        query = f"machines|{request.parent}"

        def read(tx: Tx, after: str, limit: int) -> list[CoffeeMachine]:
            assert namespace is not None  # else the request had a violation and was refused
            partners.get_partner(tx, namespace)
            return machines.list_machines(tx, namespace, after, limit)

        shown, token = await read_page(
            v, self.rt.store, self.rt.page_tokens, request, query, read, lambda m: m.machine_id
        )
        return partners_pb2.ListCoffeeMachinesResponse(
            coffee_machines=[machine_proto(m) for m in shown], next_page_token=token
        )
