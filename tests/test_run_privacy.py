"""Runs are private to their partner: run ids are per partner, so nothing a partner sends about
another partner's run (Run, GetRun, Watch, Signal) answers differently from an id never used."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from brewmesh.client import MeshClient
from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.sdk import Machine
from tests.conftest import PartnerClient
from tests.fleet import create_recipe, read_until, register_machines, run_request

TAKEN, UNUSED = "order-1", "never-used"


@dataclass
class Shop:
    """A partner with one vending machine and one recipe."""

    partner: PartnerClient
    machine: str
    recipe: str

    @property
    def runner(self) -> MeshClient:
        return self.partner.client


async def open_shop(partner: PartnerClient, machines: list[Machine]) -> Shop:
    vending = REFERENCE_MACHINES["vending"]
    machine = vending.build(0.2)
    port = await machine.start("127.0.0.1:0")
    machines.append(machine)
    declared = {"vending-1": ("vending", f"127.0.0.1:{port}", vending.handles)}
    await register_machines(partner.client, partner.namespace, declared)
    recipe = await create_recipe(partner.client, partner.namespace, "lungo")
    return Shop(partner, f"partners/{partner.namespace}/coffeeMachines/vending-1", recipe)


@pytest.fixture
async def shops(partner: PartnerClient, other_partner: PartnerClient) -> AsyncIterator[tuple[Shop, Shop]]:
    """Two partners' shops; the first has a run `order-1`, brewing and waiting for takeout."""
    machines: list[Machine] = []
    owner, rival = await open_shop(partner, machines), await open_shop(other_partner, machines)
    run = await owner.runner.runner.Run(run_request(TAKEN, owner.machine, owner.recipe))
    await read_until(owner.runner.runner.Watch(run_pb.WatchRequest(run=run.name)), "brewing_finished")
    yield owner, rival
    for machine in machines:
        await machine.stop(grace=0)


async def answer(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The status a call ends with, and its message."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def _read_all(stream: AsyncIterable[run_pb.ProgramEvent]) -> None:
    async for _ in stream:
        pass


PROBES: dict[str, Callable[[MeshClient, str], Awaitable[object]]] = {
    "GetRun": lambda client, name: client.runner.GetRun(run_pb.GetRunRequest(name=name), timeout=5),
    "Watch": lambda client, name: _read_all(client.runner.Watch(run_pb.WatchRequest(run=name), timeout=5)),
    "Signal": lambda client, name: client.runner.Signal(
        run_pb.SignalRequest(run=name, event="takeout_requested"), timeout=5
    ),
}


@pytest.mark.parametrize("rpc", sorted(PROBES))
@pytest.mark.parametrize("qualified", [False, True], ids=["plain name", "name with the owner's namespace"])
async def test_another_partners_run_answers_as_an_unused_id(
    shops: tuple[Shop, Shop], rpc: str, qualified: bool
) -> None:
    owner, rival = shops
    prefix = f"programRuns/{owner.partner.namespace}:" if qualified else "programRuns/"
    probe = PROBES[rpc]
    taken = await answer(probe(rival.runner, prefix + TAKEN))
    unused = await answer(probe(rival.runner, prefix + UNUSED))
    assert taken[0] == grpc.StatusCode.NOT_FOUND
    assert (taken[0], taken[1].replace(TAKEN, "<id>")) == (unused[0], unused[1].replace(UNUSED, "<id>"))
    await assert_untouched(owner)


async def test_run_with_another_partners_run_id_starts_the_callers_own_run(shops: tuple[Shop, Shop]) -> None:
    owner, rival = shops
    taken = await rival.runner.runner.Run(run_request(TAKEN, rival.machine, rival.recipe))
    unused = await rival.runner.runner.Run(run_request(UNUSED, rival.machine, rival.recipe))
    for run, run_id in ((taken, TAKEN), (unused, UNUSED)):
        assert run.name == f"programRuns/{run_id}" and run.machine == rival.machine
        assert run.state in (run_pb.ProgramRun.STATE_PENDING, run_pb.ProgramRun.STATE_RUNNING)
    # The rival's `order-1` is its own: signalling it reaches its run, never the owner's.
    signal = await rival.runner.runner.Signal(run_pb.SignalRequest(run=taken.name, event="takeout_requested"))
    assert signal.forwarded
    await assert_untouched(owner)


async def test_the_admin_names_a_run_id_two_partners_use_with_its_namespace(
    shops: tuple[Shop, Shop], admin: MeshClient
) -> None:
    owner, rival = shops
    await rival.runner.runner.Run(run_request(TAKEN, rival.machine, rival.recipe))
    await rival.runner.runner.Run(run_request("rival-only", rival.machine, rival.recipe))
    code, message = await answer(admin.runner.GetRun(run_pb.GetRunRequest(name=f"programRuns/{TAKEN}")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"programRuns/{owner.partner.namespace}:{TAKEN}" in message
    for shop in (owner, rival):
        name = f"programRuns/{shop.partner.namespace}:{TAKEN}"
        run = await admin.runner.GetRun(run_pb.GetRunRequest(name=name))
        assert run.machine == shop.machine and run.name == f"programRuns/{TAKEN}"
    unique = await admin.runner.GetRun(run_pb.GetRunRequest(name="programRuns/rival-only"))
    assert unique.machine == rival.machine  # an id only one namespace uses needs no namespace


async def assert_untouched(owner: Shop) -> None:
    """The owner's run is as the fixture left it: brewed, waiting for takeout, no one else's event."""
    run = await owner.runner.runner.GetRun(run_pb.GetRunRequest(name=f"programRuns/{TAKEN}"))
    assert run.machine == owner.machine and run.state == run_pb.ProgramRun.STATE_RUNNING
    events = await read_until(
        owner.runner.runner.Watch(run_pb.WatchRequest(run=run.name)), "brewing_finished", timeout=5
    )
    assert events[-1].sequence == run.last_sequence  # nothing after brewing_finished
