"""The event bus: authoritative firing, Subscribe, listener groups, listen()."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from brewmesh.apis import EventRefused
from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.bus.v1 import events_pb2
from brewmesh.client import MeshClient, connect, field_violations
from brewmesh.event_backend import PUBLIC
from brewmesh.events import ReceivedEvent
from brewmesh.mesh import Mesh
from brewmesh.partners.v1 import partners_pb2
from brewmesh.services.partners.component import component as partners_component
from brewmesh.settings import Settings
from brewmesh.storage import Tx
from tests.conftest import create_partner, embedded_only
from tests.event_streams import STREAM_RPCS, events_of
from tests.test_recipes_support import logged_events

T = TypeVar("T")

PARTNERS = "brewmesh.partners.v1.PartnerService"
RECIPES = "brewmesh.recipes.v1.RecipeService"


def partner_created(namespace: str) -> partners_pb2.PartnerCreatedEvent:
    return partners_pb2.PartnerCreatedEvent(
        partner=partners_pb2.Partner(name=f"partners/{namespace}", display_name=namespace)
    )


async def take(stream: AsyncIterable[T], count: int) -> list[T]:
    got: list[T] = []
    async for event in stream:
        got.append(event)
        if len(got) == count:
            break
    return got


@embedded_only
async def test_fire_refuses_an_event_not_declared_for_the_api(mesh: Mesh) -> None:
    with pytest.raises(EventRefused, match="declares no event 'partner_exploded'"):
        await mesh.runtime.bus.fire_now(PARTNERS, "partner_exploded", partner_created("x"), PUBLIC)


async def test_fire_refuses_an_api_this_process_does_not_serve(tmp_path: Path) -> None:
    only_partners = await Mesh.start(Settings(data_dir=tmp_path / "d"), components=[partners_component()])
    try:
        with pytest.raises(
            EventRefused, match=r"not authoritative for API 'brewmesh\.recipes\.v1\.RecipeService'"
        ):
            await only_partners.runtime.bus.fire_now(RECIPES, "recipe_deleted", partner_created("x"), PUBLIC)
    finally:
        await only_partners.stop(grace=0)


@embedded_only
async def test_fire_refuses_missing_required_fields_and_wrong_payloads(mesh: Mesh) -> None:
    with pytest.raises(EventRefused, match="lacks required fields: partner"):
        await mesh.runtime.bus.fire_now(
            PARTNERS, "partner_created", partners_pb2.PartnerCreatedEvent(), PUBLIC
        )
    with pytest.raises(EventRefused, match=r"carries brewmesh\.partners\.v1\.PartnerCreatedEvent"):
        await mesh.runtime.bus.fire_now(
            PARTNERS, "partner_created", partners_pb2.Partner(name="partners/x"), PUBLIC
        )
    assert await logged_events(mesh, PARTNERS) == []


async def test_subscriber_sees_events_in_order_and_resumes_after_an_id(mesh: Mesh, admin: MeshClient) -> None:
    for name in ("alpha-co", "beta-co", "gamma-co"):
        await create_partner(mesh, admin, name)
    first = await take(admin.bus.Subscribe(bus_pb.SubscribeRequest(api=PARTNERS)), 2)
    assert [e.type for e in first] == ["partner_created"] * 2
    payload = partners_pb2.PartnerCreatedEvent()
    first[0].payload.Unpack(payload)
    assert payload.partner.namespace == "alpha-co"
    rest = await take(admin.bus.Subscribe(bus_pb.SubscribeRequest(api=PARTNERS, after_id=first[-1].id)), 1)
    rest[0].payload.Unpack(payload)
    assert payload.partner.namespace == "gamma-co"
    assert rest[0].id not in {e.id for e in first}  # ids are opaque: only resumption order counts


async def test_subscriber_receives_events_fired_after_it_subscribed(mesh: Mesh, admin: MeshClient) -> None:
    await create_partner(mesh, admin, "early-co")
    stream = admin.bus.Subscribe(bus_pb.SubscribeRequest(api=PARTNERS, new_only=True))
    waiting = asyncio.create_task(take(stream, 1))
    # Subscribed once the stream is open, which the client cannot see: create until it hears (no sleep).
    created = 0
    async with asyncio.timeout(15):
        while not waiting.done():
            await create_partner(mesh, admin, f"late-co-{created}")
            created += 1
            await asyncio.wait([waiting], timeout=0.5)
    [event] = waiting.result()
    payload = partners_pb2.PartnerCreatedEvent()
    event.payload.Unpack(payload)
    assert payload.partner.namespace.startswith("late-co-")  # never the event from before it subscribed
    assert "partners" in event.source.rpartition("/")[2].split("+")


@contextlib.asynccontextmanager
async def in_process_mesh(
    request: pytest.FixtureRequest, tmp_path: Path, **settings: float
) -> AsyncIterator[Mesh]:
    engines: dict[str, str] = {}
    if request.param != "sqlite":
        engines = {
            "store": request.getfixturevalue("pg_database"),
            "bus": request.getfixturevalue("fresh_redis_url"),
        }
    running = await Mesh.start(Settings(data_dir=tmp_path / "data", **engines, **settings))  # type: ignore[arg-type]
    try:
        yield running
    finally:
        await running.stop(grace=0)


@pytest.fixture(params=["sqlite", "postgresql+redis"])
async def firing_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Mesh]:
    """A mesh in this process (its bus at hand) on each store and bus."""
    async with in_process_mesh(request, tmp_path) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql+redis"])
async def prompt_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Mesh]:
    """The same, handing unacknowledged events out again after 1 s (not 30)."""
    async with in_process_mesh(request, tmp_path, event_visibility_seconds=1.0) as running:
        yield running


async def test_an_event_fired_in_a_rolled_back_transaction_is_never_seen(firing_mesh: Mesh) -> None:
    bus = firing_mesh.runtime.bus

    def doomed(tx: Tx) -> None:
        bus.fire(tx, PARTNERS, "partner_created", partner_created("doomed-co"), PUBLIC)
        raise RuntimeError("the change this event was about failed")

    await bus.fire_now(PARTNERS, "partner_created", partner_created("first-co"), PUBLIC)
    with pytest.raises(RuntimeError):
        await bus.store.write(doomed)
    await bus.fire_now(PARTNERS, "partner_created", partner_created("second-co"), PUBLIC)
    async with connect(f"127.0.0.1:{firing_mesh.port}", key=firing_mesh.admin_key) as admin:
        async with asyncio.timeout(15):
            events = await take(admin.bus.Subscribe(bus_pb.SubscribeRequest(api=PARTNERS)), 2)
    seen = [partners_pb2.PartnerCreatedEvent.FromString(e.payload.value).partner.name for e in events]
    assert seen == ["partners/first-co", "partners/second-co"]


async def test_an_event_says_what_when_and_where_it_was_fired(firing_mesh: Mesh) -> None:
    bus = firing_mesh.runtime.bus
    before_ns = time.time_ns()
    await bus.fire_now(PARTNERS, "partner_created", partner_created("dated-co"), PUBLIC)
    after_ns = time.time_ns()
    async with connect(f"127.0.0.1:{firing_mesh.port}", key=firing_mesh.admin_key) as admin:
        async with asyncio.timeout(15):
            [event] = await take(admin.bus.Subscribe(bus_pb.SubscribeRequest(api=PARTNERS)), 1)
    assert (event.api, event.type, event.source) == (PARTNERS, "partner_created", bus.source)
    assert event.payload.type_url == "type.googleapis.com/brewmesh.partners.v1.PartnerCreatedEvent"
    assert event.payload.Is(partners_pb2.PartnerCreatedEvent.DESCRIPTOR)
    assert partners_pb2.PartnerCreatedEvent.FromString(event.payload.value) == partner_created("dated-co")
    assert before_ns <= event.time.ToNanoseconds() <= after_ns
    assert 0 <= event.time.nanos < 1_000_000_000  # a normalised Timestamp


@pytest.mark.parametrize("rpc", STREAM_RPCS)
async def test_named_listeners_share_each_event_once(mesh: Mesh, admin: MeshClient, rpc: str) -> None:
    for i in range(6):
        await create_partner(mesh, admin, f"shared-{i}")
    request = bus_pb.SubscribeRequest(api=PARTNERS, listener_name="billing")
    got: list[events_pb2.Event] = []

    async def drain(stream: AsyncIterable[events_pb2.Event]) -> None:
        async for event in stream:
            got.append(event)
            if len(got) >= 6:
                return

    # Members take batches: whichever holds an event, the group as a whole sees each event once.
    members = [asyncio.ensure_future(drain(events_of(admin, request, rpc, max_batch_size=2))) for _ in "12"]
    await asyncio.wait(members, timeout=10)
    ids = [e.id for e in got]
    assert len(ids) == 6 and len(set(ids)) == 6
    for member in members:
        member.cancel()
    # A different listener name is another group: it gets every event again.
    audit = await take(events_of(admin, bus_pb.SubscribeRequest(api=PARTNERS, listener_name="audit"), rpc), 6)
    assert sorted(e.id for e in audit) == sorted(ids)


async def test_subscribe_batches_streams_the_same_events_several_to_a_message(
    mesh: Mesh, admin: MeshClient
) -> None:
    for i in range(7):
        await create_partner(mesh, admin, f"batched-{i}")
    request = bus_pb.SubscribeRequest(api=PARTNERS)
    one_by_one = await take(admin.bus.Subscribe(request), 7)
    batched = bus_pb.SubscribeBatchesRequest(subscription=request, max_batch_size=3)
    async with asyncio.timeout(15):
        batches = await take(admin.bus.SubscribeBatches(batched), 3)
    # All seven were in the log: they come three, three and one to a message.
    assert [len(b.events) for b in batches] == [3, 3, 1]
    assert [e for b in batches for e in b.events] == one_by_one
    resumed = bus_pb.SubscribeRequest(api=PARTNERS, after_id=batches[0].events[-1].id)
    async with asyncio.timeout(15):
        [rest] = await take(
            admin.bus.SubscribeBatches(bus_pb.SubscribeBatchesRequest(subscription=resumed)), 1
        )
    assert list(rest.events) == one_by_one[3:]  # the default batch takes every ready event


async def test_a_batch_stays_within_what_a_default_client_accepts(firing_mesh: Mesh) -> None:
    bus = firing_mesh.runtime.bus
    big = [partner_created(f"big-{i}") for i in range(3)]
    for payload in big:
        payload.partner.display_name = "x" * 1_500_000  # three together are over a client's 4 MiB
        await bus.fire_now(PARTNERS, "partner_created", payload, PUBLIC)
    request = bus_pb.SubscribeBatchesRequest(subscription=bus_pb.SubscribeRequest(api=PARTNERS))
    async with connect(f"127.0.0.1:{firing_mesh.port}", key=firing_mesh.admin_key) as admin:
        async with asyncio.timeout(30):
            batches = await take(admin.bus.SubscribeBatches(request), 3)
    assert [len(b.events) for b in batches] == [1, 1, 1]
    assert [partners_pb2.PartnerCreatedEvent.FromString(b.events[0].payload.value) for b in batches] == big


async def test_subscribe_batches_rejects_bad_requests_field_by_field(admin: MeshClient) -> None:
    cases = {
        "no subscription": (bus_pb.SubscribeBatchesRequest(), {"subscription"}),
        "bad subscription and size": (
            bus_pb.SubscribeBatchesRequest(
                subscription=bus_pb.SubscribeRequest(api=PARTNERS, event_types=["nope"], listener_name="a b"),
                max_batch_size=1001,
            ),
            {"subscription.event_types[0]", "subscription.listener_name", "max_batch_size"},
        ),
        "negative size": (
            bus_pb.SubscribeBatchesRequest(
                subscription=bus_pb.SubscribeRequest(api="acme.Nothing"), max_batch_size=-1
            ),
            {"subscription.api", "max_batch_size"},
        ),
    }
    for case, (request, fields) in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await take(admin.bus.SubscribeBatches(request), 1)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert {v.field for v in field_violations(error.value)} == fields, case


@pytest.mark.parametrize("rpc", STREAM_RPCS)
async def test_with_explicit_ack_what_a_member_did_not_acknowledge_is_delivered_again(
    prompt_mesh: Mesh, rpc: str
) -> None:
    bus, address, key = prompt_mesh.runtime.bus, f"127.0.0.1:{prompt_mesh.port}", prompt_mesh.admin_key
    for i in range(4):
        await bus.fire_now(PARTNERS, "partner_created", partner_created(f"acked-{i}"), PUBLIC)
    request = bus_pb.SubscribeRequest(api=PARTNERS, listener_name="billing", explicit_ack=True)

    def acknowledge(events: list[events_pb2.Event]) -> bus_pb.AcknowledgeEventsRequest:
        return bus_pb.AcknowledgeEventsRequest(
            api=PARTNERS, listener_name="billing", event_ids=[e.id for e in events]
        )

    async with connect(address, key=key) as member, asyncio.timeout(15):
        first = await take(events_of(member, request, rpc, max_batch_size=2), 4)
        await member.bus.AcknowledgeEvents(acknowledge(first[:2]))
    # That member is gone, two events sent to it and never acknowledged.
    async with connect(address, key=key) as admin:
        assert await _pending(admin) == 2
        async with asyncio.timeout(15):
            again = await take(events_of(admin, request, rpc), 2)  # after the visibility timeout
        assert [e.id for e in again] == [e.id for e in first[2:]]
        await admin.bus.AcknowledgeEvents(acknowledge(again))
        await admin.bus.AcknowledgeEvents(acknowledge(again))  # safe to retry
        assert await _pending(admin) == 0


@pytest.fixture(params=["sqlite", "postgresql+redis"])
async def impatient_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Mesh]:
    """Unacknowledged events go out again after 0.3 s, and are dead letters after 2 deliveries."""
    async with in_process_mesh(
        request, tmp_path, event_visibility_seconds=0.3, event_max_deliveries=2
    ) as running:
        yield running


async def test_an_event_never_acknowledged_becomes_a_dead_letter(impatient_mesh: Mesh) -> None:
    bus = impatient_mesh.runtime.bus
    await bus.fire_now(PARTNERS, "partner_created", partner_created("unhandled-co"), PUBLIC)
    request = bus_pb.SubscribeRequest(api=PARTNERS, listener_name="billing", explicit_ack=True)
    dead = bus_pb.ListDeadLettersRequest(api=PARTNERS, listener_name="billing")
    buried = _LogLine("it is in the dead letters")  # what the operator is told, once it is so
    logging.getLogger("brewmesh.events").addHandler(buried)
    try:
        async with connect(f"127.0.0.1:{impatient_mesh.port}", key=impatient_mesh.admin_key) as admin:
            async with asyncio.timeout(15):
                deliveries = await take(admin.bus.Subscribe(request), 2)  # never acknowledged
                await buried.seen.wait()  # the third claim buries it, once the second delivery's time ran out
            letters = (await admin.bus.ListDeadLetters(dead)).dead_letters
    finally:
        logging.getLogger("brewmesh.events").removeHandler(buried)
    assert deliveries[0].id == deliveries[1].id  # the same event, delivered again
    [letter] = letters
    assert (letter.event.id, letter.attempts) == (deliveries[0].id, 2)


class _LogLine(logging.Handler):
    """Sets `seen` once a record containing `text` is logged (in this thread: the event loop's)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def _pending(client: MeshClient) -> int:
    listed = await client.bus.ListListenerGroups(bus_pb.ListListenerGroupsRequest(api=PARTNERS))
    [group] = [g for g in listed.listener_groups if g.listener_name == "billing"]
    return group.pending_events


async def test_acknowledging_needs_a_group_and_event_ids(admin: MeshClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await admin.bus.AcknowledgeEvents(bus_pb.AcknowledgeEventsRequest())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in field_violations(error.value)} == {"api", "listener_name", "event_ids"}
    bad_id = bus_pb.AcknowledgeEventsRequest(api=PARTNERS, listener_name="billing", event_ids=["", "x" * 200])
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await admin.bus.AcknowledgeEvents(bad_id)
    assert {v.field for v in field_violations(error.value)} == {"event_ids[0]", "event_ids[1]"}
    unnamed = bus_pb.SubscribeRequest(api=PARTNERS, explicit_ack=True)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await take(admin.bus.Subscribe(unnamed), 1)
    assert [v.field for v in field_violations(error.value)] == ["explicit_ack"]


async def test_subscribe_needs_a_key(anonymous: MeshClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await take(anonymous.bus.Subscribe(bus_pb.SubscribeRequest(api=PARTNERS)), 1)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_subscribe_rejects_unknown_api_and_events(admin: MeshClient) -> None:
    request = bus_pb.SubscribeRequest(api=PARTNERS, event_types=["nope"], after_id="x", new_only=True)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await take(admin.bus.Subscribe(request), 1)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in field_violations(error.value)} == {"event_types[0]", "after_id", "new_only"}
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await take(admin.bus.Subscribe(bus_pb.SubscribeRequest(api="acme.Nothing")), 1)
    assert [v.field for v in field_violations(unknown.value)] == ["api"]


@embedded_only  # served_here is about the answering process
async def test_list_apis_shows_declared_events(anonymous: MeshClient) -> None:
    apis = {a.name: a for a in (await anonymous.bus.ListApis(bus_pb.ListApisRequest())).apis}
    partners = apis[PARTNERS]
    assert partners.served_here
    assert {e.type for e in partners.events} == {
        "partner_created",
        "coffee_machines_put",
        "machine_status_changed",
        "partner_key_rotated",
    }


@embedded_only
async def test_listen_retries_a_failing_handler_until_it_succeeds(mesh: Mesh, admin: MeshClient) -> None:
    calls: list[str] = []
    done = asyncio.Event()

    async def flaky(event: ReceivedEvent) -> None:
        calls.append(event.id)
        if len(calls) < 3:
            raise RuntimeError("downstream is down")
        assert isinstance(event.payload, partners_pb2.PartnerCreatedEvent)
        done.set()

    mesh.runtime.bus.listen(f"{PARTNERS}.partner_created", flaky, listener_name="welcome-mail")
    await asyncio.sleep(0.1)
    await create_partner(mesh, admin, "retry-co")
    await asyncio.wait_for(done.wait(), 10)
    assert len(calls) == 3 and len(set(calls)) == 1


async def test_listener_group_resumes_after_restart(tmp_path: Path) -> None:
    data = tmp_path / "restart"
    first = await Mesh.start(Settings(data_dir=data))
    seen: list[str] = []

    async def record(event: ReceivedEvent) -> None:
        assert isinstance(event.payload, partners_pb2.PartnerCreatedEvent)
        seen.append(event.payload.partner.name)

    first.runtime.bus.listen(f"{PARTNERS}.partner_created", record, listener_name="crm")
    await asyncio.sleep(0.1)
    await first.runtime.bus.fire_now(PARTNERS, "partner_created", partner_created("before-stop"), PUBLIC)
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.05)
    await first.stop(grace=0)
    # Fired while no member of the group is running.
    second = await Mesh.start(Settings(data_dir=data))
    try:
        await second.runtime.bus.fire_now(PARTNERS, "partner_created", partner_created("while-away"), PUBLIC)
        second.runtime.bus.listen(f"{PARTNERS}.partner_created", record, listener_name="crm")
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await second.stop(grace=0)
    assert seen == ["partners/before-stop", "partners/while-away"]
