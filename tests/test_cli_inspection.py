"""`brewmesh events tail|lag`, `brewmesh runs get|watch` and `--version`, run as a user runs them.

Each command is the real `brewmesh` executable in its own process, against a
mesh in each configuration. The embedded mesh serves on this test's event
loop, so the commands run as asyncio subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.recipes.v1 import recipes_pb2
from tests.conftest import BIN, MeshUnderTest, PartnerClient
from tests.fleet import create_recipe

RECIPES = "brewmesh.recipes.v1.RecipeService"
WAIT_SECONDS = 30.0


async def brewmesh(*args: str, key: str = "") -> asyncio.subprocess.Process:
    env = {**os.environ, "BREWMESH_KEY": key}
    return await asyncio.create_subprocess_exec(
        str(BIN / "brewmesh"), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def finished(*args: str, key: str = "") -> tuple[int, str, str]:
    process = await brewmesh(*args, key=key)
    async with asyncio.timeout(WAIT_SECONDS):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def address(mesh: MeshUnderTest) -> str:
    return f"127.0.0.1:{mesh.port}"


async def test_version_names_the_installed_package() -> None:
    code, out, _ = await finished("--version")
    assert code == 0 and out.startswith("brewmesh ") and out.split()[1][0].isdigit()


async def test_events_tail_prints_new_events_with_their_payload_as_json(
    mesh: MeshUnderTest, partner: PartnerClient
) -> None:
    tail = await brewmesh(
        "events", "tail", "--address", address(mesh), "--api", RECIPES, "--type", "recipe_created",
        "--new", "--json", key=partner.key,
    )  # fmt: skip
    try:
        assert tail.stdout is not None
        async with asyncio.timeout(WAIT_SECONDS):
            # Subscribed once a group-less stream is open: create until the tail prints (no sleep).
            created = 0
            line = b""
            while not line:
                await create_recipe(partner.client, partner.namespace, f"tailed-{created}")
                created += 1
                try:
                    line = await asyncio.wait_for(tail.stdout.readline(), 1.0)
                except TimeoutError:
                    continue
        event = json.loads(line)
    finally:
        tail.terminate()
        await tail.wait()
    assert event["api"] == RECIPES and event["type"] == "recipe_created"
    assert event["payload"]["recipe"]["name"].startswith(f"recipes/{partner.namespace}:tailed-")
    assert event["id"]


async def test_events_lag_lists_the_callers_groups(mesh: MeshUnderTest, partner: PartnerClient) -> None:
    await create_recipe(partner.client, partner.namespace, "lagging")
    stream = partner.client.bus.Subscribe(
        bus_pb.SubscribeRequest(api=RECIPES, listener_name="nightly-report")
    )
    await stream.read()
    stream.cancel()
    code, out, err = await finished("events", "lag", "--address", address(mesh), "--json", key=partner.key)
    assert code == 0, err
    groups = [json.loads(line) for line in out.splitlines()]
    assert [(g["namespace"], g["listenerName"]) for g in groups] == [(partner.namespace, "nightly-report")]
    code, table, _ = await finished("events", "lag", "--address", address(mesh), key=partner.key)
    assert code == 0 and table.splitlines()[0].split()[:3] == ["API", "GROUP", "TYPES"]
    assert f"{partner.namespace}/nightly-report" in table


async def test_a_refused_command_exits_1_with_the_status_code(
    mesh: MeshUnderTest, partner: PartnerClient
) -> None:
    code, _, err = await finished("runs", "get", "no-such-run", "--address", address(mesh), key=partner.key)
    assert code == 1 and "NOT_FOUND" in err and "Traceback" not in err
    code, _, err = await finished("events", "lag", "--address", address(mesh), key="not-a-key")
    assert code == 1 and "UNAUTHENTICATED" in err


async def test_tail_refuses_an_unknown_api_in_one_line(mesh: MeshUnderTest, partner: PartnerClient) -> None:
    code, _, err = await finished(
        "events", "tail", "--address", address(mesh), "--api", "brewmesh.nope.v1.Nope", key=partner.key
    )
    assert code != 0 and "is not an API of this mesh" in err and len(err.strip().splitlines()) == 1


async def test_events_tail_after_an_id_starts_with_the_next_event(
    mesh: MeshUnderTest, partner: PartnerClient
) -> None:
    first = await create_recipe(partner.client, partner.namespace, "first")
    second = await create_recipe(partner.client, partner.namespace, "second")
    stream = partner.client.bus.Subscribe(
        bus_pb.SubscribeRequest(api=RECIPES, event_types=["recipe_created"])
    )
    async with asyncio.timeout(WAIT_SECONDS):
        async for event in stream:
            if recipes_pb2.RecipeCreatedEvent.FromString(event.payload.value).recipe.name == first:
                break
    stream.cancel()
    tail = await brewmesh(
        "events", "tail", "--address", address(mesh), "--api", RECIPES, "--after", event.id, "--json",
        key=partner.key,
    )  # fmt: skip
    try:
        assert tail.stdout is not None
        async with asyncio.timeout(WAIT_SECONDS):
            line = await tail.stdout.readline()
    finally:
        tail.terminate()
        await tail.wait()
    printed = json.loads(line)
    assert printed["type"] == "recipe_created" and printed["payload"]["recipe"]["name"] == second
