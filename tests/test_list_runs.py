"""ProgramRunner.ListRuns: a partner pages through its own runs, by machine or state; the admin
lists every run; `brewmesh runs list|get|watch` show them."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

import grpc
import pytest

from brewmesh.client import MeshClient
from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.sdk import Machine
from tests.conftest import BIN, MeshUnderTest, PartnerClient, free_port
from tests.fleet import create_recipe, read_until, register_machines, run_request

RUNNING = run_pb.ProgramRun.STATE_RUNNING
FAILED = run_pb.ProgramRun.STATE_FAILED


async def _fleet(partner: PartnerClient, machines: list[Machine]) -> tuple[str, str, str]:
    """A vending machine (runs wait for takeout: RUNNING), one that is gone (runs FAILED), a recipe."""
    vending = REFERENCE_MACHINES["vending"].build(0.1)
    port = await vending.start("127.0.0.1:0")
    machines.append(vending)
    declared = {
        "vending-1": ("vending", f"127.0.0.1:{port}", REFERENCE_MACHINES["vending"].handles),
        "gone-1": ("vending", f"127.0.0.1:{free_port()}", ()),
    }
    await register_machines(partner.client, partner.namespace, declared)
    fleet = f"partners/{partner.namespace}/coffeeMachines"
    return (
        f"{fleet}/vending-1",
        f"{fleet}/gone-1",
        await create_recipe(partner.client, partner.namespace, "lungo"),
    )


async def _run(client: MeshClient, run_id: str, machine: str, recipe: str, until: str) -> None:
    run = await client.runner.Run(run_request(run_id, machine, recipe))
    await read_until(client.runner.Watch(run_pb.WatchRequest(run=run.name)), until)


@pytest.fixture
async def runs(partner: PartnerClient, other_partner: PartnerClient) -> AsyncIterator[tuple[str, str]]:
    """The partner's runs a, b (brewing on vending-1) and c (failed on gone-1); the rival's r."""
    machines: list[Machine] = []
    vending, gone, recipe = await _fleet(partner, machines)
    rival_vending, _, rival_recipe = await _fleet(other_partner, machines)
    await asyncio.gather(
        _run(partner.client, "a", vending, recipe, "brewing_finished"),
        _run(partner.client, "b", vending, recipe, "brewing_finished"),
        _run(partner.client, "c", gone, recipe, "failed"),
        _run(other_partner.client, "r", rival_vending, rival_recipe, "brewing_finished"),
    )
    yield vending, gone
    for machine in machines:
        await machine.stop(grace=0)


async def _all(client: MeshClient, **fields: object) -> list[str]:
    names, token = [], ""
    while True:
        page = await client.runner.ListRuns(run_pb.ListRunsRequest(page_token=token, **fields))  # type: ignore[arg-type]
        names += [run.name for run in page.program_runs]
        if not (token := page.next_page_token):
            return names


async def test_a_partner_lists_its_own_runs_in_pages(runs: tuple[str, str], partner: PartnerClient) -> None:
    first = await partner.client.runner.ListRuns(run_pb.ListRunsRequest(page_size=2))
    assert [r.name for r in first.program_runs] == [
        "programRuns/a",
        "programRuns/b",
    ] and first.next_page_token
    rest = await partner.client.runner.ListRuns(
        run_pb.ListRunsRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [r.name for r in rest.program_runs] == ["programRuns/c"] and not rest.next_page_token


async def test_runs_filter_by_machine_and_state(runs: tuple[str, str], partner: PartnerClient) -> None:
    vending, gone = runs
    assert await _all(partner.client, machine=vending) == ["programRuns/a", "programRuns/b"]
    assert await _all(partner.client, machine=gone) == ["programRuns/c"]
    assert await _all(partner.client, state=FAILED) == ["programRuns/c"]
    assert await _all(partner.client, state=RUNNING, machine=gone) == []


async def test_runs_are_listed_to_their_partner_and_the_admin_only(
    runs: tuple[str, str], other_partner: PartnerClient, admin: MeshClient, anonymous: MeshClient
) -> None:
    vending, _ = runs
    assert await _all(other_partner.client) == ["programRuns/r"]
    assert await _all(other_partner.client, machine=vending) == []  # another partner's machine: nothing
    assert len(await _all(admin)) == 4
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _all(anonymous)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_bad_filter_or_token_is_invalid(partner: PartnerClient) -> None:
    for request in (
        run_pb.ListRunsRequest(machine="vending-1"),
        run_pb.ListRunsRequest(state=99),  # type: ignore[arg-type]
        run_pb.ListRunsRequest(page_token="forged"),
        run_pb.ListRunsRequest(page_size=-1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await partner.client.runner.ListRuns(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request


async def test_brewmesh_runs_list_shows_them(
    runs: tuple[str, str], mesh: MeshUnderTest, partner: PartnerClient
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "brewmesh"), "runs", "list", "--address", f"127.0.0.1:{mesh.port}", "--state", "failed",
        env={**os.environ, "BREWMESH_KEY": partner.key}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    lines = out.decode().splitlines()
    assert process.returncode == 0 and lines[0].split() == ["NAME", "MACHINE", "RECIPE", "STATE", "UPDATED"]
    assert [line.split()[0] for line in lines[1:]] == ["programRuns/c"] and "failed" in lines[1]


async def test_brewmesh_runs_get_and_watch_show_one_run(
    runs: tuple[str, str], mesh: MeshUnderTest, partner: PartnerClient
) -> None:
    env = {**os.environ, "BREWMESH_KEY": partner.key}
    target = ("--address", f"127.0.0.1:{mesh.port}")

    async def brewmesh(*args: str) -> tuple[int | None, str]:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "brewmesh"), *args, *target, env=env, stdout=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(30):
            out, _ = await process.communicate()
        return process.returncode, out.decode()

    code, shown = await brewmesh("runs", "get", "c")
    run = json.loads(shown)
    assert code == 0 and run["name"] == "programRuns/c" and run["state"] == "STATE_FAILED"
    # The run has ended: watch prints every event, one JSON object a line, and exits.
    code, watched = await brewmesh("runs", "watch", "programRuns/c")
    events = [json.loads(line) for line in watched.splitlines()]
    assert code == 0 and events[0]["event"] == "run_requested" and events[-1]["event"] == "failed"
    code, resumed = await brewmesh("runs", "watch", "c", "--after-sequence", events[0]["sequence"])
    assert code == 0 and [json.loads(line) for line in resumed.splitlines()] == events[1:]
