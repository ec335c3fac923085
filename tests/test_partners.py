"""Partners: created by the admin only, keys shown once, readable by anyone."""

from __future__ import annotations

import grpc
import pytest

from brewmesh.client import MeshClient, connect, field_violations
from brewmesh.mesh import Mesh
from brewmesh.partners.v1 import partners_pb2 as pb
from tests.conftest import PartnerClient, create_partner, embedded_only


def create_request(namespace: str, display_name: str = "A partner") -> pb.CreatePartnerRequest:
    return pb.CreatePartnerRequest(namespace=namespace, partner=pb.Partner(display_name=display_name))


async def test_admin_creates_partner_and_gets_its_key_once(admin: MeshClient) -> None:
    created = await admin.partners.CreatePartner(create_request("my-coffee-company", "My Coffee Company"))
    assert created.partner.name == "partners/my-coffee-company"
    assert created.partner.display_name == "My Coffee Company"
    assert created.api_key.startswith("bmk_") and len(created.api_key) > 30
    fetched = await admin.partners.GetPartner(pb.GetPartnerRequest(name="partners/my-coffee-company"))
    assert fetched.display_name == "My Coffee Company"
    assert created.api_key not in str(fetched)


@embedded_only
async def test_partner_key_is_stored_only_as_a_hash(mesh: Mesh, partner: PartnerClient) -> None:
    raw = (mesh.runtime.data_dir / "brewmesh.db").read_bytes()
    assert partner.key.encode() not in raw


async def test_creating_a_partner_needs_the_admin(anonymous: MeshClient, partner: PartnerClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await anonymous.partners.CreatePartner(create_request("someone"))
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in (missing.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as as_partner:
        await partner.client.partners.CreatePartner(create_request("someone"))
    assert as_partner.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_wrong_key_is_unauthenticated_even_for_open_reads(mesh: Mesh) -> None:
    async with connect(f"127.0.0.1:{mesh.port}", key="bmk_not-a-real-key") as forged:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await forged.partners.ListPartners(pb.ListPartnersRequest())
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_duplicate_namespace_already_exists(admin: MeshClient, partner: PartnerClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await admin.partners.CreatePartner(create_request(partner.namespace))
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_invalid_partner_lists_every_violation(admin: MeshClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await admin.partners.CreatePartner(
            pb.CreatePartnerRequest(namespace="My Company!", partner=pb.Partner())
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in field_violations(error.value)}
    assert fields == {"namespace", "partner.display_name"}


async def test_common_namespace_is_the_platforms(admin: MeshClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await admin.partners.CreatePartner(create_request("common"))
    assert [v.field for v in field_violations(error.value)] == ["namespace"]


async def test_unknown_partner_is_not_found(anonymous: MeshClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await anonymous.partners.GetPartner(pb.GetPartnerRequest(name="partners/nobody-here"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "partners/nobody-here" in (error.value.details() or "")


async def test_list_partners_pages_through_all(mesh: Mesh, admin: MeshClient) -> None:
    names = [f"partner-{i:02d}" for i in range(7)]
    for name in names:
        await create_partner(mesh, admin, name)
    seen: list[str] = []
    token = ""
    while True:
        page = await admin.partners.ListPartners(pb.ListPartnersRequest(page_size=3, page_token=token))
        assert len(page.partners) <= 3
        seen += [p.namespace for p in page.partners]
        token = page.next_page_token
        if not token:
            break
    assert seen == names


async def test_list_partners_refuses_bad_paging(admin: MeshClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await admin.partners.ListPartners(pb.ListPartnersRequest(page_size=-1, page_token="forgéd.tokén"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in field_violations(error.value)} == {"page_size", "page_token"}
