"""Errors stay small and quick whatever the request: values quoted cut short, at most 100
violations (the message counts the rest), trailers far under what a default client accepts."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_status import rpc_status

from brewmesh.client import MeshClient, field_violations
from brewmesh.errors import MAX_MESSAGE_BYTES, MAX_VIOLATIONS, InvalidArgument, Violations, quote, to_status
from brewmesh.recipes.v1 import layouts_pb2 as lpb
from brewmesh.recipes.v1 import recipes_pb2 as rpb
from tests.conftest import PartnerClient
from tests.hostile_requests import TRAILER_LIMIT, trailer_bytes
from tests.test_recipes_support import create_recipe, fails, l10n

LONG_NAME = "recipes/" + "a" * 9000
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def test_a_9000_character_name_gets_a_short_error_a_default_client_receives(
    anonymous: MeshClient,
) -> None:
    # INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: the trailers fit what the client accepts.
    error = await fails(anonymous.recipes.GetRecipe(rpb.GetRecipeRequest(name=LONG_NAME)), INVALID)
    assert trailer_bytes(error.details() or "", error.trailing_metadata() or ()) < TRAILER_LIMIT
    [violation] = field_violations(error)
    assert violation.field == "name"
    assert "(9000 characters)" in violation.description and "a" * 61 not in violation.description


async def test_a_build_with_30000_empty_layouts_is_refused_by_its_count_at_once(
    partner: PartnerClient, anonymous: MeshClient
) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "espresso"))
    build = rpb.BuildRecipeRequest(
        recipe=create_recipe("my-coffee-company", "lungo"), layouts=[lpb.CreateLayoutRequest()] * 30_000
    )
    done = asyncio.Event()
    bystander = asyncio.create_task(slowest_read(anonymous, done))
    started = time.monotonic()
    errors = await asyncio.gather(
        *(fails(partner.client.recipes.BuildRecipe(build), INVALID) for _ in range(4))
    )
    elapsed = time.monotonic() - started
    done.set()
    for error in errors:
        violations = field_violations(error)
        assert [v.field for v in violations] == ["layouts"]
        assert "at most 5" in violations[0].description
    assert elapsed < 2, f"four builds took {elapsed:.2f} s"
    assert await bystander < 0.2, "a bystander's read waited behind the builds"


async def slowest_read(client: MeshClient, done: asyncio.Event) -> float:
    """The longest a GetRecipe took, reading until `done` (at least once)."""
    request = rpb.GetRecipeRequest(name="recipes/my-coffee-company:espresso")
    slowest = 0.0
    while True:
        started = time.perf_counter()
        await client.recipes.GetRecipe(request, timeout=5)
        slowest = max(slowest, time.perf_counter() - started)
        if done.is_set():
            return slowest


async def test_a_hundred_bad_keys_get_bounded_violations_and_a_count(partner: PartnerClient) -> None:
    await partner.client.recipes.CreateRecipe(create_recipe("my-coffee-company", "lungo"))
    values = {f"Bad Key {i} " + "x" * 200: "" for i in range(100)}
    put = l10n("en", "", "recipes/my-coffee-company:lungo", **values)
    error = await fails(partner.client.recipes.PutRecipeL10n(put), INVALID)
    assert trailer_bytes(error.details() or "", error.trailing_metadata() or ()) < TRAILER_LIMIT
    listed = field_violations(error)
    assert 0 < len(listed) < 200  # two violations a key; the details hold what fits
    assert "200 violations" in (error.details() or "")
    assert rpc_status.from_call(error) is not None  # details and message agree


def test_every_bound_holds_however_many_violations_a_check_reports() -> None:
    v = Violations()
    for i in range(30_000):
        v.add(f"layouts[{i}].layout_id" + "é" * 500, f"{quote('☕' * 9000)} is not a valid id")
    error = InvalidArgument(v.items, v.omitted)
    assert len(error.violations) <= MAX_VIOLATIONS
    assert len(error.message.encode()) <= MAX_MESSAGE_BYTES
    assert "30000 violations" in error.message
    status = to_status(error)
    assert trailer_bytes(status.details, status.trailing_metadata) < TRAILER_LIMIT
    assert quote("a\x00\n") == "'a\\x00\\n'"
