"""Events survive crashes: a killed firer, a killed group member, a handler that always fails.

Distributed: PostgreSQL, Redis and the three services as processes; listener
group members are processes of their own (tests/listener_member.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis
from google.protobuf import field_mask_pb2

from brewmesh.bus.v1 import event_bus_pb2 as bus_pb
from brewmesh.bus.v1 import events_pb2
from brewmesh.client import MeshClient, connect
from brewmesh.event_backend import PLATFORM
from brewmesh.recipes.v1 import recipes_pb2
from tests.conftest import (
    ROOT,
    DistributedBackends,
    MeshProcess,
    SeparateServices,
    free_port,
    launch_mesh_process,
    separate_services,
    start_mesh_process,
    wait_until_serving,
)
from tests.fleet import create_recipe
from tests.test_metrics import fetch, value

RECIPES = "brewmesh.recipes.v1.RecipeService"
CREATED = f"{RECIPES}.recipe_created"
WAIT_SECONDS = 20.0


async def _set_volume(client: MeshClient, recipe: str, volume_ml: int) -> None:
    change = recipes_pb2.Recipe(
        name=recipe, product_properties=recipes_pb2.ProductProperties(default_volume_ml=volume_ml)
    )
    mask = field_mask_pb2.FieldMask(paths=["product_properties.default_volume_ml"])
    await client.recipes.UpdateRecipe(recipes_pb2.UpdateRecipeRequest(recipe=change, update_mask=mask))


async def _events_until(client: MeshClient, count: int) -> list[events_pb2.Event]:
    """The first `count` events of the recipes API, from the oldest kept."""
    got: list[events_pb2.Event] = []

    async def read() -> None:
        async for event in client.bus.Subscribe(bus_pb.SubscribeRequest(api=RECIPES)):
            got.append(event)
            if len(got) == count:
                return

    await asyncio.wait_for(read(), WAIT_SECONDS)
    return got


def _volumes(events: list[events_pb2.Event]) -> list[tuple[str, int]]:
    seen = []
    for event in events:
        updated = recipes_pb2.RecipeUpdatedEvent()
        if event.payload.Unpack(updated):
            seen.append((event.type, updated.recipe.product_properties.default_volume_ml))
        else:
            seen.append((event.type, 0))
    return seen


def _restart(process: MeshProcess, backends: DistributedBackends, partners: str) -> MeshProcess:
    command = ("serve", "recipes", "--partners", partners, *backends.args())
    again = launch_mesh_process(process.data_dir, process.port, command, {})
    wait_until_serving(again)
    return again


async def test_a_write_whose_relay_a_kill_9_cut_short_is_delivered_once_after_a_restart(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    with separate_services(tmp_path, distributed_backends) as services:
        key = services.partners.admin_key
        async with connect(services.recipes.address, key=key) as recipes:
            recipe = await create_recipe(recipes, "common", "espresso", volume_ml=40)
            engine = redis.Redis.from_url(distributed_backends.bus_url)
            # Writes to Redis wait (the relay among them) while the write commits; then the kill.
            await engine.client_pause(30_000, all=False)  # CLIENT PAUSE 30000 WRITE
            try:
                await _set_volume(recipes, recipe, 50)
                services.recipes.kill()
            finally:
                await engine.client_unpause()
                await engine.aclose()
        restarted = _restart(services.recipes, distributed_backends, services.partners.address)
        try:
            async with connect(restarted.address, key=key) as recipes:
                await _set_volume(recipes, recipe, 60)  # a later event, so a duplicate would show before it
            async with connect(services.runner.address, key=key) as listener:
                events = await _events_until(listener, 3)
        finally:
            restarted.stop()
    assert _volumes(events) == [("recipe_created", 0), ("recipe_updated", 50), ("recipe_updated", 60)]


async def test_the_embedded_log_keeps_an_event_through_a_kill_9(tmp_path: Path) -> None:
    first = start_mesh_process(tmp_path / "data")
    async with connect(first.address, key=first.admin_key) as client:
        recipe = await create_recipe(client, "common", "espresso", volume_ml=40)
        await _set_volume(client, recipe, 50)
    first.kill()
    again = start_mesh_process(tmp_path / "data")
    try:
        async with connect(again.address, key=again.admin_key) as client:
            events = await _events_until(client, 2)
    finally:
        again.stop()
    assert _volumes(events) == [("recipe_created", 0), ("recipe_updated", 50)]


@dataclass
class Member:
    """A listener group member process and what it printed."""

    process: subprocess.Popen[str]
    lines: asyncio.Queue[str]
    reader: asyncio.Task[None]

    async def next_line(self) -> str:
        return await asyncio.wait_for(self.lines.get(), WAIT_SECONDS)

    async def wait_for(self, line: str) -> None:
        """Until the member prints `line`; a traceback before it means the member failed."""
        while (seen := await self.next_line()) != line:
            assert not seen.startswith("Traceback"), seen

    async def wait_until(self, matches: Callable[[str], bool]) -> str:
        """The next line that `matches` (the member also logs its retries, with tracebacks)."""
        while not matches(seen := await self.next_line()):
            pass
        return seen

    async def next_delivery(self) -> str:
        """The next `got <id>` line."""
        return await self.wait_until(lambda seen: seen.startswith("got "))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=20)


@contextmanager
def _member_processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=20)


async def _start_member(
    started: list[subprocess.Popen[str]], base: Path, bus_url: str, mode: str, **settings: float
) -> Member:
    args = [sys.executable, "-m", "tests.listener_member", "--bus", bus_url, "--data-dir", str(base)]
    args += ["--event", CREATED, "--listener", "billing", "--mode", mode]
    for name, setting in settings.items():
        args += [f"--{name.replace('_', '-')}", str(setting)]
    # Popen returns at once; the member's output is read on a thread.
    process = subprocess.Popen(  # noqa: ASYNC220
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    started.append(process)
    lines: asyncio.Queue[str] = asyncio.Queue()

    async def read() -> None:
        assert process.stdout is not None
        while line := await asyncio.to_thread(process.stdout.readline):
            await lines.put(line.strip())

    member = Member(process, lines, asyncio.create_task(read()))
    await member.wait_for("ready")
    return member


async def _create(services: SeparateServices, name: str) -> None:
    async with connect(services.recipes.address, key=services.partners.admin_key) as recipes:
        await create_recipe(recipes, "common", name)


async def test_a_killed_members_events_go_to_another_member_after_the_visibility_timeout(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    bus = distributed_backends.bus_url
    metrics_port = free_port()
    runner_metrics = {"runner": ["--metrics-port", str(metrics_port)]}
    with (
        separate_services(tmp_path, distributed_backends, runner_metrics) as services,
        _member_processes() as started,
    ):
        stuck = await _start_member(started, tmp_path / "a", bus, "hang", visibility=2.0)
        await _create(services, "lungo")
        took = await stuck.next_delivery()
        stuck.kill()  # -9 while handling: the event stays pending under the dead member
        other = await _start_member(started, tmp_path / "b", bus, "ok", visibility=2.0)
        taken_over = await other.next_delivery()
    assert took.startswith("got ") and taken_over == took


async def test_an_event_a_handler_always_fails_on_is_dead_lettered_and_can_be_replayed(
    tmp_path: Path, distributed_backends: DistributedBackends
) -> None:
    bus = distributed_backends.bus_url
    metrics_port = free_port()
    runner_metrics = {"runner": ["--metrics-port", str(metrics_port)]}
    with (
        separate_services(tmp_path, distributed_backends, runner_metrics) as services,
        _member_processes() as started,
    ):
        failing = await _start_member(started, tmp_path / "f", bus, "fail", visibility=0.3, max_deliveries=3)
        await _create(services, "lungo")
        attempts = [await failing.next_delivery() for _ in range(3)]
        assert len(set(attempts)) == 1  # the same event, three times
        event_id = attempts[0].removeprefix("got ")
        await failing.wait_until(lambda line: "it is in the dead letters" in line)  # the member gave up
        async with connect(services.runner.address, key=services.partners.admin_key) as admin:
            listed = await admin.bus.ListDeadLetters(
                bus_pb.ListDeadLettersRequest(
                    api=RECIPES, listener_name="billing", event_types=["recipe_created"]
                )
            )
            dead = list(listed.dead_letters)
            assert [(d.event.id, d.attempts) for d in dead] == [(event_id, 3)]
            assert "this handler always fails" in dead[0].reason
            # What an operator's dashboard shows of it: the group's dead letters, from Redis.
            group = {"api": RECIPES, "namespace": PLATFORM, "listener": "billing"}
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            scraped = await asyncio.to_thread(fetch, url)
            assert value(scraped, "brewmesh_listener_dead_letters", **group) == 1
            replay = bus_pb.ReplayDeadLettersRequest(
                api=RECIPES, listener_name="billing", event_types=["recipe_created"], event_ids=[event_id]
            )
            assert (await admin.bus.ReplayDeadLetters(replay)).replayed_count == 1
            assert await failing.next_delivery() == f"got {event_id}"  # delivered again after the replay
