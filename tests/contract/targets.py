"""What the ProgramRunner contract suite runs against: anything serving the proto.

A target says where it is and how to drive it; the suite never looks
inside. Each target is a pytest fixture (any scope) yielding a RunnerTarget;
its name in TARGET_FIXTURES makes the whole suite run against it. To add the
mesh runner: write a fixture that starts the mesh and a machine, registers
the machine, and yields a RunnerTarget whose `run_request` names them; then
append the fixture's name to TARGET_FIXTURES.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from google.protobuf import struct_pb2

from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.runner.v1 import program_runner_pb2 as pb

if TYPE_CHECKING:
    from brewmesh.runner.v1.program_runner_pb2_grpc import ProgramRunnerAsyncStub as Stub

# Long enough that a held run outlives any test; it ends by cancel or at teardown.
HOLD_BREW_SECONDS = 600


async def nothing_to_do(stub: Stub, run: str) -> None:
    """For targets whose runs finish on their own."""


@dataclass(frozen=True)
class RunnerTarget:
    """An implementation of ProgramRunner under test, and how to drive its runs."""

    address: str
    # Builds a valid RunRequest for `run_id`. `hold=True`: the run must stay
    # non-terminal until it is canceled (e.g. a very long brew); False: the
    # run finishes promptly once `complete` was called.
    run_request: Callable[[str, bool], pb.RunRequest]
    # Whatever the run needs from the caller to finish (e.g. takeout approval).
    complete: Callable[[Stub, str], Awaitable[None]]
    # The events the target's program handles (Signal answers handled=true).
    handles: frozenset[str]
    # The caller event that cancels a run.
    cancel_event: str = "order_canceled"
    # Sent as `authorization: Bearer <key>` when set (the mesh runner needs it).
    key: str | None = None


def _machine_request(kind: str) -> Callable[[str, bool], pb.RunRequest]:
    def build(run_id: str, hold: bool) -> pb.RunRequest:
        parameters = struct_pb2.Struct()
        parameters.update({"brew_seconds": HOLD_BREW_SECONDS if hold else 0})
        return pb.RunRequest(
            run_id=run_id,
            machine=f"partners/contract-suite/coffeeMachines/{kind}-1",
            recipe="recipes/contract-suite:lungo",
            volume_ml=250,
            program=pb.Program(program_id="lungo", parameters=parameters),
            api_type=kind,
        )

    return build


async def request_takeout(stub: Stub, run: str) -> None:
    await stub.Signal(pb.SignalRequest(run=run, event="takeout_requested"), timeout=5)


@asynccontextmanager
async def _reference_machine(
    kind: str, complete: Callable[[Stub, str], Awaitable[None]]
) -> AsyncIterator[RunnerTarget]:
    """A reference machine served in this process on a free port."""
    reference = REFERENCE_MACHINES[kind]
    machine = reference.build(0.0)
    port = await machine.start("127.0.0.1:0")
    try:
        yield RunnerTarget(
            address=f"127.0.0.1:{port}",
            run_request=_machine_request(kind),
            complete=complete,
            handles=frozenset(reference.handles),
        )
    finally:
        await machine.stop(grace=1)


@pytest.fixture(scope="session")
async def vending_machine_target() -> AsyncIterator[RunnerTarget]:
    async with _reference_machine("vending", request_takeout) as target:
        yield target


@pytest.fixture(scope="session")
async def cafe_machine_target() -> AsyncIterator[RunnerTarget]:
    async with _reference_machine("cafe", nothing_to_do) as target:
        yield target


@pytest.fixture(scope="session")
async def legacy_machine_target() -> AsyncIterator[RunnerTarget]:
    async with _reference_machine("legacy", nothing_to_do) as target:
        yield target


TARGET_FIXTURES = ["vending_machine_target", "cafe_machine_target", "legacy_machine_target"]
