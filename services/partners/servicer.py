"""PartnerService over gRPC: translates protos to the partners domain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import timestamp_pb2

from brewmesh.errors import Violations
from brewmesh.event_backend import PUBLIC
from brewmesh.pagination import check_page
from brewmesh.partners.v1 import partners_pb2, partners_pb2_grpc
from brewmesh.runtime import Runtime
from services.partners import partners
from services.partners.fleet_rpcs import API, Context, FleetRpcs
from services.partners.partners import Partner


def partner_proto(partner: Partner) -> partners_pb2.Partner:
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(partner.create_time)
    return partners_pb2.Partner(
        name=partner.name, namespace=partner.namespace, display_name=partner.display_name, create_time=created
    )


class PartnerServicer(FleetRpcs, partners_pb2_grpc.PartnerServiceServicer):
    """PartnerService: partners and keys here, fleets in FleetRpcs."""

    def __init__(self, rt: Runtime, on_fleet_put: Callable[[], None]) -> None:
        self.rt = rt
        self.on_fleet_put = on_fleet_put

    async def CreatePartner(  # noqa: N802
        self, request: partners_pb2.CreatePartnerRequest, context: Context
    ) -> partners_pb2.CreatePartnerResponse:
        await self.rt.auth.require_admin(context)
        partners.validate_new_partner(request.namespace, request.partner.display_name)

        def create(tx: Any) -> tuple[Partner, str]:
            partner, key = partners.insert_partner(tx, request.namespace, request.partner.display_name)
            event = partners_pb2.PartnerCreatedEvent(partner=partner_proto(partner))
            self.rt.bus.fire(tx, API, "partner_created", event, PUBLIC)  # ListPartners is open
            return partner, key

        partner, key = await self.rt.store.write(create)
        return partners_pb2.CreatePartnerResponse(partner=partner_proto(partner), api_key=key)

    async def GetCaller(  # noqa: N802
        self, request: partners_pb2.GetCallerRequest, context: Context
    ) -> partners_pb2.Caller:
        principal = await self.rt.auth.require_any(context)
        return partners_pb2.Caller(namespace=str(principal.namespace), admin=principal.is_admin)

    async def GetPartner(  # noqa: N802
        self, request: partners_pb2.GetPartnerRequest, context: Context
    ) -> partners_pb2.Partner:
        v = Violations()
        namespace = partners.parse_partner_name(v, "name", request.name)
        v.raise_if_any()
        assert namespace is not None
        return partner_proto(await self.rt.store.lookup(lambda tx: partners.get_partner(tx, namespace)))

    async def ListPartners(  # noqa: N802
        self, request: partners_pb2.ListPartnersRequest, context: Context
    ) -> partners_pb2.ListPartnersResponse:
        v = Violations()
        page = check_page(v, self.rt.page_tokens, request.page_size, request.page_token, "partners")
        v.raise_if_any()
        found = await self.rt.store.read(lambda tx: partners.list_partners(tx, page.after, page.limit))
        shown, token = page.finish(found, lambda partner: partner.namespace, self.rt.page_tokens)
        return partners_pb2.ListPartnersResponse(
            partners=[partner_proto(p) for p in shown], next_page_token=token
        )
