"""Fixtures of the ProgramRunner contract suite: the target, a stub, runs to drive."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import pytest

from brewmesh.client import channel
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from tests.contract.mesh_runner import (  # noqa: F401 (fixtures used by name)
    MESH_TARGET_FIXTURES,
    mesh_fleet,
    mesh_runner_cafe_target,
    mesh_runner_legacy_target,
    mesh_runner_vending_target,
)
from tests.contract.targets import (  # noqa: F401 (fixtures used by name)
    TARGET_FIXTURES,
    RunnerTarget,
    cafe_machine_target,
    legacy_machine_target,
    vending_machine_target,
)

if TYPE_CHECKING:
    from brewmesh.runner.v1.program_runner_pb2_grpc import ProgramRunnerAsyncStub as Stub

TERMINAL = {pb.ProgramRun.STATE_FINISHED, pb.ProgramRun.STATE_CANCELED, pb.ProgramRun.STATE_FAILED}


# Every implementation of ProgramRunner the suite holds to the contract.
ALL_TARGETS = [*TARGET_FIXTURES, *MESH_TARGET_FIXTURES]


@pytest.fixture(params=ALL_TARGETS, ids=lambda name: name.removesuffix("_target"))
def target(request: pytest.FixtureRequest) -> RunnerTarget:
    found = request.getfixturevalue(request.param)
    assert isinstance(found, RunnerTarget)
    return found


@pytest.fixture
async def runner(target: RunnerTarget) -> AsyncIterator[Stub]:
    ch = channel(target.address, target.key)
    # The stubs' overloads pick the sync type for an aio channel; it is the async one.
    yield program_runner_pb2_grpc.ProgramRunnerStub(ch)
    await ch.close()


@dataclass
class Runs:
    """Starts runs on the target; cancels the held ones still going at teardown."""

    target: RunnerTarget
    stub: Stub
    held: list[str] = field(default_factory=list)

    async def held_run(self) -> pb.ProgramRun:
        """A run that stays going until it is canceled."""
        run = await self.stub.Run(self.target.run_request(new_run_id(), True), timeout=5)
        self.held.append(run.name)
        return run

    async def quick_run(self) -> pb.ProgramRun:
        """A run that finishes promptly; `complete` gives it what it needs to."""
        return await self.stub.Run(self.target.run_request(new_run_id(), False), timeout=5)

    async def complete(self, run: str) -> None:
        await self.target.complete(self.stub, run)

    async def cleanup(self) -> None:
        for name in self.held:
            run = await self.stub.GetRun(pb.GetRunRequest(name=name), timeout=5)
            if run.state not in TERMINAL:
                try:
                    await self.stub.Signal(
                        pb.SignalRequest(run=name, event=self.target.cancel_event), timeout=5
                    )
                except grpc.aio.AioRpcError as error:
                    # It may have ended in between; anything else is a failure.
                    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error


@pytest.fixture
async def runs(target: RunnerTarget, runner: Stub) -> AsyncIterator[Runs]:
    started = Runs(target, runner)
    yield started
    await started.cleanup()


def new_run_id() -> str:
    return f"contract-{uuid.uuid4().hex[:16]}"
