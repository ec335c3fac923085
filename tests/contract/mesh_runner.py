"""The mesh runner as a contract target: the same suite through the proxy.

One mesh (in this process, data in a temporary directory) with the three
reference machines registered by a partner; each target runs its programs
on one of them through the runner, so the runner's side of the proxy is held
to the same promise as the machines' side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from brewmesh.client import connect
from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.mesh import Mesh
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.sdk import Machine
from brewmesh.settings import Settings
from tests.conftest import create_partner
from tests.contract.targets import HOLD_BREW_SECONDS, RunnerTarget, nothing_to_do, request_takeout
from tests.fleet import create_recipe, register_machines

if TYPE_CHECKING:
    from brewmesh.runner.v1.program_runner_pb2_grpc import ProgramRunnerAsyncStub as Stub

NS = "contract-suite"


@dataclass(frozen=True)
class MeshFleet:
    address: str
    key: str
    quick_recipe: str
    held_recipe: str


@pytest.fixture(scope="session")
async def mesh_fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshFleet]:
    data_dir: Path = tmp_path_factory.mktemp("contract-mesh")
    mesh = await Mesh.start(Settings(data_dir=data_dir))
    machines: list[Machine] = []
    try:
        async with connect(f"127.0.0.1:{mesh.port}", key=mesh.admin_key) as admin:
            partner = await create_partner(mesh, admin, NS)
        registered = {}
        for kind, reference in REFERENCE_MACHINES.items():
            machine = reference.build(0.0)
            machines.append(machine)
            port = await machine.start("127.0.0.1:0")
            registered[f"{kind}-1"] = (kind, f"127.0.0.1:{port}", reference.handles)
        await register_machines(partner.client, NS, registered)
        quick = await create_recipe(partner.client, NS, "lungo-quick", brew_seconds=0)
        held = await create_recipe(partner.client, NS, "lungo-held", brew_seconds=HOLD_BREW_SECONDS)
        await partner.client.channel.close()
        yield MeshFleet(f"127.0.0.1:{mesh.port}", partner.key, quick, held)
    finally:
        await mesh.stop(grace=1)
        for machine in machines:
            await machine.stop(grace=1)


def _through_the_runner(
    fleet: MeshFleet, kind: str, complete: Callable[[Stub, str], Awaitable[None]]
) -> RunnerTarget:
    def build(run_id: str, hold: bool) -> pb.RunRequest:
        return pb.RunRequest(
            run_id=run_id,
            machine=f"partners/{NS}/coffeeMachines/{kind}-1",
            recipe=fleet.held_recipe if hold else fleet.quick_recipe,
            volume_ml=250,
        )

    return RunnerTarget(
        address=fleet.address,
        run_request=build,
        complete=complete,
        handles=frozenset(REFERENCE_MACHINES[kind].handles),
        key=fleet.key,
    )


@pytest.fixture(scope="session")
def mesh_runner_vending_target(mesh_fleet: MeshFleet) -> RunnerTarget:
    return _through_the_runner(mesh_fleet, "vending", request_takeout)


@pytest.fixture(scope="session")
def mesh_runner_cafe_target(mesh_fleet: MeshFleet) -> RunnerTarget:
    return _through_the_runner(mesh_fleet, "cafe", nothing_to_do)


@pytest.fixture(scope="session")
def mesh_runner_legacy_target(mesh_fleet: MeshFleet) -> RunnerTarget:
    return _through_the_runner(mesh_fleet, "legacy", nothing_to_do)


MESH_TARGET_FIXTURES = ["mesh_runner_vending_target", "mesh_runner_cafe_target", "mesh_runner_legacy_target"]
