"""Processes sharing a data directory take turns at its database without stalling.

Another process (here: a plain SQLite connection) holding the write lock
must make writes wait their turn, never fail them, and never stop this
process from answering other calls meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing

import pytest

from brewmesh.client import MeshClient
from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.mesh import DB_FILE, Mesh
from brewmesh.partners.v1 import partners_pb2
from brewmesh.recipes.v1 import recipes_pb2
from brewmesh.runner.v1 import program_runner_pb2 as run_pb
from tests.conftest import PartnerClient, embedded_only
from tests.fleet import create_recipe, names, read_to_end, register_machines, run_request
from tests.test_coffee_machines import wait_for_status

NS = "my-coffee-company"
MACHINE = f"partners/{NS}/coffeeMachines/m1"


async def wait_until_serving(client: MeshClient, machine: str) -> None:
    await wait_for_status(client, machine, partners_pb2.SERVING_STATUS_SERVING)


@pytest.fixture
async def machine_endpoint() -> AsyncIterator[str]:
    reference = REFERENCE_MACHINES["legacy"]
    machine = reference.build(0.05)
    port = await machine.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await machine.stop(grace=0)


@pytest.fixture
def other_process_lock(mesh: Mesh) -> Iterator[sqlite3.Connection]:
    """A connection to the mesh's database file, as another process would have."""
    with closing(sqlite3.connect(mesh.runtime.data_dir / DB_FILE, isolation_level=None)) as db:
        yield db
        if db.in_transaction:
            db.execute("ROLLBACK")


@embedded_only
async def test_a_run_waits_for_the_lock_while_reads_are_still_answered(
    partner: PartnerClient, machine_endpoint: str, other_process_lock: sqlite3.Connection
) -> None:
    client = partner.client
    handles = REFERENCE_MACHINES["legacy"].handles
    await register_machines(client, NS, {"m1": ("legacy", machine_endpoint, handles)})
    recipe = await create_recipe(client, NS, "lungo")
    await wait_until_serving(client, MACHINE)  # the health checker's own write is done

    other_process_lock.execute("BEGIN IMMEDIATE")  # holds the write lock
    starting = asyncio.ensure_future(client.runner.Run(run_request("while-locked", MACHINE, recipe)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(5):  # the event loop keeps answering reads meanwhile
        got = await client.recipes.GetRecipe(recipes_pb2.GetRecipeRequest(name=recipe), timeout=2)
        assert got.name == recipe
        await asyncio.sleep(0.05)
    # Five reads take well under a second; a loop stuck waiting for the lock takes seconds.
    assert loop.time() - started < 2, "the event loop stalled while another process held the lock"
    assert not starting.done(), "the run cannot have been recorded while the lock is held"
    other_process_lock.execute("COMMIT")

    run = await asyncio.wait_for(starting, 10)
    events = await read_to_end(client.runner.Watch(run_pb.WatchRequest(run=run.name)))
    assert names(events)[0] == "run_requested" and names(events)[-1] == "finished"
