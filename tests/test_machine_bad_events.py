"""A partner's machine is held to the bounds of a client: an event the mesh cannot record fails
the run, saying why, and nothing of it is stored.

The machine is built on the SDK (which checks event names itself), so the bad
values are what the SDK passes on: too many values, nesting too deep, a
number JSON cannot carry.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from brewmesh.partners.v1 import partners_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from brewmesh.sdk import Machine, Program
from brewmesh.struct_values import MAX_DEPTH, MAX_VALUES
from tests.conftest import PartnerClient
from tests.fleet import create_recipe, names, read_to_end, register_machines, run_request
from tests.test_coffee_machines import wait_for_status

MACHINE_ID = "careless-1"
NESTED: dict[str, Any] = {}
_inner = NESTED
for _ in range(MAX_DEPTH):
    _inner["deeper"] = {}
    _inner = _inner["deeper"]

BAD_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "too many values": {"readings": list(range(MAX_VALUES + 1))},
    "nested too deep": {"nested": NESTED},
    "not a JSON number": {"temperature": math.nan},
}


@pytest.fixture
async def careless_machine() -> AsyncIterator[str]:
    """A machine whose `careless` program reports `warming_up` with the attributes the run's
    `bad` parameter names, then finishes."""
    machine = Machine()

    @machine.program_run_handler("careless")
    async def run(program: Program) -> None:
        await program.context.emit("warming_up", **BAD_ATTRIBUTES[program.parameters["bad"]])
        await program.context.emit("finished")

    port = await machine.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await machine.stop(grace=0)


@pytest.mark.parametrize("bad", BAD_ATTRIBUTES)
async def test_an_event_past_the_bounds_fails_the_run_and_is_not_stored(
    partner: PartnerClient, careless_machine: str, bad: str
) -> None:
    client, namespace = partner.client, partner.namespace
    machine = f"partners/{namespace}/coffeeMachines/{MACHINE_ID}"
    await register_machines(client, namespace, {MACHINE_ID: ("careless", careless_machine, ())})
    await wait_for_status(client, machine, partners_pb2.SERVING_STATUS_SERVING)
    recipe = await create_recipe(client, namespace, "careless", bad=bad)
    run = await client.runner.Run(run_request("careless", machine, recipe))
    events = await read_to_end(client.runner.Watch(run_pb.WatchRequest(run=run.name)))
    assert "warming_up" not in names(events) and names(events)[-1] == "failed"
    reason = str(events[-1].attributes["reason"])
    assert reason.startswith("the machine sent an event the mesh cannot record") and "attributes" in reason
    assert len(reason) < 2000
    ended = await client.runner.GetRun(run_pb.GetRunRequest(name=run.name))
    assert ended.state == run_pb.ProgramRun.STATE_FAILED
