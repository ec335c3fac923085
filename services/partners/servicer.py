"""PartnerService over gRPC: translates protos to the partners domain."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from brewmesh.errors import Violations
from brewmesh.event_backend import PUBLIC
from brewmesh.pagination import read_page
from brewmesh.partners.v1 import partners_pb2, partners_pb2_grpc
from brewmesh.runtime import Runtime
from brewmesh.services.partners import partners
from brewmesh.services.partners.fleet_rpcs import API, Context, FleetRpcs
from brewmesh.services.partners.partners import Partner
from brewmesh.storage import Tx


def partner_proto(partner: Partner) -> partners_pb2.Partner:
    return partners_pb2.Partner(
        name=partner.name,
        namespace=partner.namespace,
        display_name=partner.display_name,
        create_time=_time(partner.create_time),
    )


def _time(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class PartnerServicer(FleetRpcs, partners_pb2_grpc.PartnerServiceServicer):
    """PartnerService: partners and keys here, fleets in FleetRpcs."""

    def __init__(self, rt: Runtime, on_fleet_put: Callable[[], None]) -> None:
        self.rt = rt
        self.on_fleet_put = on_fleet_put

    async def CreatePartner(  # noqa: N802
        self,
        request: partners_pb2.CreatePartnerRequest,
        context: Context[partners_pb2.CreatePartnerRequest, partners_pb2.CreatePartnerResponse],
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

    async def RotatePartnerKey(  # noqa: N802
        self,
        request: partners_pb2.RotatePartnerKeyRequest,
        context: Context[partners_pb2.RotatePartnerKeyRequest, partners_pb2.RotatePartnerKeyResponse],
    ) -> partners_pb2.RotatePartnerKeyResponse:
        v = Violations()
        namespace = partners.parse_partner_name(v, "name", request.name)
        v.raise_if_any()
        assert namespace is not None
        await self.rt.auth.require_writer(context, namespace)
        given = request.old_key_grace_period
        grace = partners.check_key_grace(v, "old_key_grace_period", given.seconds, given.nanos)
        v.raise_if_any()
        assert grace is not None

        def rotate(tx: Tx) -> tuple[Partner, str, datetime]:
            partner, key, expire = partners.rotate_key(tx, namespace, grace)
            event = partners_pb2.PartnerKeyRotatedEvent(
                partner=partner.name, old_key_expire_time=_time(expire)
            )
            self.rt.bus.fire(
                tx, API, "partner_key_rotated", event, namespace
            )  # the partner's and the admin's
            return partner, key, expire

        partner, key, expire = await self.rt.store.write(rotate)
        return partners_pb2.RotatePartnerKeyResponse(
            partner=partner_proto(partner), api_key=key, old_key_expire_time=_time(expire)
        )

    async def GetCaller(  # noqa: N802
        self,
        request: partners_pb2.GetCallerRequest,
        context: Context[partners_pb2.GetCallerRequest, partners_pb2.Caller],
    ) -> partners_pb2.Caller:
        grant = await self.rt.auth.require_grant(context)
        principal = grant.principal
        caller = partners_pb2.Caller(namespace=str(principal.namespace), admin=principal.is_admin)
        if grant.expire_time is not None:
            caller.key_expire_time.CopyFrom(_time(grant.expire_time))
        return caller

    async def GetPartner(  # noqa: N802
        self,
        request: partners_pb2.GetPartnerRequest,
        context: Context[partners_pb2.GetPartnerRequest, partners_pb2.Partner],
    ) -> partners_pb2.Partner:
        v = Violations()
        namespace = partners.parse_partner_name(v, "name", request.name)
        v.raise_if_any()
        assert namespace is not None
        return partner_proto(await self.rt.store.lookup(lambda tx: partners.get_partner(tx, namespace)))

    async def ListPartners(  # noqa: N802
        self,
        request: partners_pb2.ListPartnersRequest,
        context: Context[partners_pb2.ListPartnersRequest, partners_pb2.ListPartnersResponse],
    ) -> partners_pb2.ListPartnersResponse:
        v = Violations()
        shown, token = await read_page(
            v, self.rt.store, self.rt.page_tokens, request, "partners", partners.list_partners,
            lambda partner: partner.namespace,
        )  # fmt: skip
        return partners_pb2.ListPartnersResponse(
            partners=[partner_proto(p) for p in shown], next_page_token=token
        )
