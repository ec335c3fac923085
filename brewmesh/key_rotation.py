"""A rotated partner key stops working in every process of the mesh, not only where it was rotated.

Each process remembers the keys it checked (`Authenticator`); when
`partner_key_rotated` reaches it (at commit in the process that rotated the
key, through the bus in the others) it forgets that partner's keys, so the
next call with one is checked afresh against the key table.
"""

from __future__ import annotations

from google.protobuf.message import Message

from brewmesh.auth import Authenticator
from brewmesh.events import Bus
from brewmesh.partners.v1 import partners_pb2

PARTNERS_API = partners_pb2.DESCRIPTOR.services_by_name["PartnerService"].full_name
KEY_ROTATED = f"{PARTNERS_API}.partner_key_rotated"
PARTNER_PREFIX = "partners/"


def forget_rotated_keys(bus: Bus, auth: Authenticator) -> None:
    """From now on, forget a partner's remembered keys whenever its key is rotated."""

    def forget(payload: Message) -> None:
        assert isinstance(payload, partners_pb2.PartnerKeyRotatedEvent)
        auth.forget(payload.partner.removeprefix(PARTNER_PREFIX))

    bus.observe(KEY_ROTATED, forget)
