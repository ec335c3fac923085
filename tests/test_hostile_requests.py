"""Hostile requests to every RPC get a canonical code and a bounded error, and hurt nobody else.

Hypothesis builds request bodies from the service descriptors (see
tests/hostile_requests.py) for every method the mesh serves, sent as raw
bytes with the admin key, a partner key and no key. Meanwhile a bystander
reads a recipe in a loop: its p99 stays under 50 ms and the servers stay
SERVING. `BREWMESH_FUZZ_REQUESTS` sets how many requests in all (2,000 by
default; 20,000 or more for a long run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from brewmesh.client import MeshClient, connect
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from tests.conftest import DistributedMesh, MeshUnderTest, PartnerClient, create_partner
from tests.fleet import register_machines, run_request
from tests.hostile_requests import (
    MACHINE,
    RECIPE,
    Latencies,
    Outcome,
    Rpc,
    request_bodies,
    rpc_methods,
    send,
    timed,
)
from tests.test_recipes_support import create_recipe, formatter, l10n, put_formatter

REQUESTS = int(os.environ.get("BREWMESH_FUZZ_REQUESTS", "2000"))
BYSTANDER_P99_SECONDS = 0.05
BYSTANDER_PACE_SECONDS = 0.005
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
BYSTANDER = "recipes/bystander-cafe:espresso"
NS = "my-coffee-company"


async def served_services(channel: grpc.aio.Channel) -> list[str]:
    """What the mesh lists through server reflection: brewmesh's services and health."""
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await call.read()
    await call.done_writing()
    names = [service.name for service in reply.list_services_response.service]
    return [name for name in names if name.startswith("brewmesh.") or name == HEALTH]


@dataclass
class Fuzzing:
    """Where and how requests are sent, and what came back."""

    loop: asyncio.AbstractEventLoop
    channel: grpc.aio.Channel
    keys: list[str | None]
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(method, status code) of every request sent."""

    def send(self, rpc: Rpc, body: bytes, key: str | None) -> Outcome:
        outcome = asyncio.run_coroutine_threadsafe(send(self.channel, rpc, body, key), self.loop).result(60)
        self.codes[rpc.path, outcome.code.name] += 1
        return outcome


def fuzz(fuzzing: Fuzzing, rpcs: Sequence[Rpc]) -> list[str]:
    """Hypothesis, in a thread of its own, sends each RPC its share of the requests."""
    per_rpc = max(10, REQUESTS // len(rpcs))
    found = (fuzz_one(fuzzing, rpc, per_rpc) for rpc in rpcs)
    return [failure for failure in found if failure]


def fuzz_one(fuzzing: Fuzzing, rpc: Rpc, examples: int) -> str:
    """`examples` requests to `rpc`; what was wrong with the smallest failing one ('' if none)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(body=request_bodies(rpc), key=st.sampled_from(fuzzing.keys))
    def attempt(body: bytes, key: str | None) -> None:
        outcome = fuzzing.send(rpc, body, key)
        assert not outcome.problems(), f"{rpc.path}: {outcome.problems()}"

    try:
        attempt()
    except AssertionError as failure:
        return "\n".join([str(failure), *getattr(failure, "__notes__", [])])
    return ""


async def bystander(client: MeshClient, addresses: list[str], done: asyncio.Event) -> Latencies:
    """GetRecipe in a loop until `done`, checking now and then that every server is SERVING."""
    latencies = Latencies([])
    request = rpb.GetRecipeRequest(name=BYSTANDER)
    while not done.is_set():
        latencies.seconds.append(await timed(lambda: client.recipes.GetRecipe(request, timeout=5)))
        if len(latencies.seconds) % 50 == 0:
            await assert_serving(addresses)
        # Paced, so the bystander does not crowd out what it measures.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), BYSTANDER_PACE_SECONDS)
    return latencies


async def assert_serving(addresses: list[str]) -> None:
    for address in addresses:
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, address


async def seed(client: MeshClient) -> None:
    """What the hints name: a recipe with values, a formatter, a machine and a run on it.

    The machine's endpoint is a closed loopback port: its run fails, and exists.
    """
    await client.recipes.CreateRecipe(create_recipe(NS, "lungo"))
    await client.recipes.PutRecipeL10n(
        l10n("en", "", RECIPE, search_title="Lungo", search_description="Long")
    )
    await client.formatters.PutVolumeFormatter(put_formatter(formatter("en")))
    await register_machines(client, NS, {"m1": ("vending", "127.0.0.1:1", ("takeout_requested",))})
    await client.runner.Run(run_request("r1", MACHINE, RECIPE))


def server_addresses(mesh: MeshUnderTest) -> list[str]:
    """The address clients use and, distributed, each service process behind it."""
    behind = [p.address for p in mesh.services.processes] if isinstance(mesh, DistributedMesh) else []
    return [f"127.0.0.1:{mesh.port}", *behind]


@pytest.mark.timeout(max(300, REQUESTS // 10))
async def test_hostile_requests_get_canonical_codes_and_bounded_errors_while_a_bystander_is_served(
    mesh: MeshUnderTest, admin: MeshClient, partner: PartnerClient
) -> None:
    cafe = await create_partner(mesh, admin, "bystander-cafe")
    await cafe.client.recipes.CreateRecipe(create_recipe("bystander-cafe", "espresso"))
    await seed(partner.client)
    address = f"127.0.0.1:{mesh.port}"
    async with grpc.aio.insecure_channel(address) as channel, connect(address) as reader:
        rpcs = rpc_methods(await served_services(channel))
        assert len(rpcs) >= 30 and any(rpc.server_streaming for rpc in rpcs)
        done = asyncio.Event()
        watching = asyncio.create_task(bystander(reader, server_addresses(mesh), done))
        fuzzing = Fuzzing(asyncio.get_running_loop(), channel, [mesh.admin_key, partner.key, None])
        try:
            failures = await asyncio.to_thread(fuzz, fuzzing, rpcs)
        finally:
            done.set()
            latencies = await watching
    await cafe.client.channel.close()
    assert not failures, "\n\n".join(failures)
    # The requests reached past decoding: some succeeded, some were refused field by field.
    codes = {code for _, code in fuzzing.codes}
    assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED"} <= codes, codes
    assert {path for path, _ in fuzzing.codes} == {rpc.path for rpc in rpcs}
    await assert_serving(server_addresses(mesh))
    assert len(latencies.seconds) >= 100, "the bystander hardly ran"
    assert latencies.p99() < BYSTANDER_P99_SECONDS, f"bystander p99 {latencies.p99() * 1000:.1f} ms"
