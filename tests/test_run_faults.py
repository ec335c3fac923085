"""Faults never hang a caller: lost machines fail runs, a restarted runner resumes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from brewmesh.client import MeshClient, connect
from brewmesh.partners.v1 import partners_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.settings import Option, option_of
from tests.conftest import MeshUnderTest, PartnerClient, launch, start_machine_process, start_mesh_process
from tests.fleet import create_recipe, names, read_to_end, read_until, register_machines, run_request

NS = "my-coffee-company"
VENDING = f"partners/{NS}/coffeeMachines/vending-1"


async def partner_of(address: str, admin_key: str) -> tuple[MeshClient, str]:
    async with connect(address, key=admin_key) as admin:
        created = await admin.partners.CreatePartner(
            partners_pb2.CreatePartnerRequest(
                namespace=NS, partner=partners_pb2.Partner(display_name="My Coffee")
            )
        )
    return connect(address, key=created.api_key), created.api_key


async def test_machine_killed_mid_run_fails_the_run_for_every_watcher(tmp_path: Path) -> None:
    mesh = start_mesh_process(tmp_path / "data", BREWMESH_MACHINE_RESUME_SECONDS="1.5")
    machine = start_machine_process("vending", brew_seconds=60)
    try:
        partner, _ = await partner_of(mesh.address, mesh.admin_key)
        await register_machines(
            partner, NS, {"vending-1": ("vending", machine.address, ("takeout_requested",))}
        )
        recipe = await create_recipe(partner, NS, "lungo")
        run = await partner.runner.Run(run_request("k-1", VENDING, recipe))
        watchers = [partner.runner.Watch(run_pb.WatchRequest(run=run.name)) for _ in range(2)]
        for watch in watchers:
            await read_until(watch, "brewing_started")
        machine.kill()
        started = time.monotonic()
        endings = [await read_to_end(watch, timeout=20) for watch in watchers]
        assert all(names(ending)[-1] == "failed" for ending in endings)
        assert time.monotonic() - started < 15
        failed = await partner.runner.GetRun(run_pb.GetRunRequest(name=run.name))
        assert failed.state == run_pb.ProgramRun.STATE_FAILED
        assert machine.address in failed.failure_reason and "lost contact" in failed.failure_reason
        await partner.channel.close(None)
    finally:
        machine.stop()
        mesh.stop()


async def test_runner_killed_mid_run_resumes_and_watchers_get_exactly_the_missing_events(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    mesh = start_mesh_process(data)
    machine = start_machine_process("vending", brew_seconds=1.5)
    try:
        partner, key = await partner_of(mesh.address, mesh.admin_key)
        await register_machines(
            partner, NS, {"vending-1": ("vending", machine.address, ("takeout_requested",))}
        )
        recipe = await create_recipe(partner, NS, "lungo")
        run = await partner.runner.Run(run_request("r-1", VENDING, recipe))
        seen = await read_until(partner.runner.Watch(run_pb.WatchRequest(run=run.name)), "brewing_started")
        await partner.channel.close(None)
        mesh.kill()
        # The machine goes on brewing while the runner is down.
        await asyncio.sleep(2)
        mesh = start_mesh_process(data, port=mesh.port)
        partner = connect(mesh.address, key=key)
        resumed = partner.runner.Watch(run_pb.WatchRequest(run=run.name, after_sequence=seen[-1].sequence))
        missing = await read_until(resumed, "brewing_finished")
        await partner.runner.Signal(run_pb.SignalRequest(run=run.name, event="takeout_requested"))
        missing += await read_to_end(resumed)
        everything = await read_to_end(partner.runner.Watch(run_pb.WatchRequest(run=run.name)))
        assert [e.sequence for e in seen + missing] == [e.sequence for e in everything]
        assert names(seen + missing) == names(everything)
        assert names(everything).count("brewing_finished") == 1 and names(everything)[-1] == "finished"
        await partner.channel.close(None)
    finally:
        machine.stop()
        mesh.stop()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture
async def silent_machine(partner: PartnerClient, silent_endpoint: str) -> AsyncIterator[str]:
    await register_machines(partner.client, NS, {"mute": ("legacy", silent_endpoint, ())})
    yield f"partners/{NS}/coffeeMachines/mute"


async def test_a_machine_that_never_answers_fails_the_run_within_the_deadline(
    partner: PartnerClient, silent_machine: str
) -> None:
    recipe = await create_recipe(partner.client, NS, "lungo")
    started = time.monotonic()
    run = await partner.client.runner.Run(run_request("mute-1", silent_machine, recipe), timeout=3)
    assert time.monotonic() - started < 3
    assert run.state == run_pb.ProgramRun.STATE_FAILED
    assert "DEADLINE_EXCEEDED" in run.failure_reason
    events = await read_to_end(partner.client.runner.Watch(run_pb.WatchRequest(run=run.name)))
    assert names(events) == ["run_requested", "failed"]


KEEPALIVE, RESUME = option_of("machine_keepalive"), option_of("machine_resume")
KEEPALIVE_ENV, RESUME_ENV = KEEPALIVE.env, RESUME.env
KEEPALIVE_SECONDS, RESUME_SECONDS = 1.0, 1.5
FROZEN_BOUND = 2 * KEEPALIVE_SECONDS + RESUME_SECONDS
"""A silent connection is noticed within two keepalives; the run fails a resume window later."""


@pytest.fixture
def short_machine_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short keepalive and resume window for the runner the `mesh` fixture starts next
    (in this process, or as its own process, which inherits the environment)."""
    monkeypatch.setenv(KEEPALIVE_ENV, str(KEEPALIVE_SECONDS))
    monkeypatch.setenv(RESUME_ENV, str(RESUME_SECONDS))


@pytest.mark.usefixtures("short_machine_bounds")
async def test_a_frozen_machine_fails_its_run_within_the_keepalive_bound(
    mesh: MeshUnderTest, partner: PartnerClient
) -> None:
    machine = start_machine_process("vending", brew_seconds=60)
    try:
        await register_machines(
            partner.client, NS, {"vending-1": ("vending", machine.address, ("takeout_requested",))}
        )
        recipe = await create_recipe(partner.client, NS, "lungo")
        run = await partner.client.runner.Run(run_request("frozen-1", VENDING, recipe))
        watch = partner.client.runner.Watch(run_pb.WatchRequest(run=run.name))
        await read_until(watch, "brewing_started")
        # Stopped, not killed: its connection stays open and nothing on it answers.
        os.kill(machine.process.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        ending = await read_to_end(watch, timeout=FROZEN_BOUND + 30)
        took = time.monotonic() - frozen
        failed = await partner.client.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    finally:
        os.kill(machine.process.pid, signal.SIGCONT)
        machine.kill()
    assert names(ending)[-1] == "failed"
    assert took < FROZEN_BOUND + 1.5, f"the run failed {took:.1f} s after the machine froze"
    assert failed.state == run_pb.ProgramRun.STATE_FAILED
    assert VENDING in failed.failure_reason and machine.address in failed.failure_reason


@pytest.mark.parametrize(("option", "value"), [(KEEPALIVE, "0.5"), (RESUME, "soon")])
def test_a_bad_machine_bound_stops_the_start_with_one_line_naming_it(
    tmp_path: Path, option: Option, value: str
) -> None:
    _, process = launch(["up", "--data-dir", str(tmp_path / "data")], 0, **{option.env: value})
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"brewmesh up: {option.flag} (${option.env}): ") and value in last
    assert "Traceback" not in output
