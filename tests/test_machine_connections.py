"""The runner's connections to partner machines: one per machine, kept while runs use it, and
closed once no call used it for a while (a machine's old endpoint or caller token, once its runs
are over, holds no connection for as long as the runner runs).

Connections are counted as the kernel sees them (/proc/net/tcp and tcp6, where grpc's dual-stack
sockets put IPv4 ones): what a machine's operator sees.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from brewmesh.machines import REFERENCE_MACHINES
from brewmesh.sdk import Machine
from brewmesh.services.runner.machine_link import MachineLink
from brewmesh.services.runner.program_runs import MachineTarget, Program, ProgramRun, RunRequest, State

IDLE = 60.0
CALL_SECONDS = 10.0
VENDING = REFERENCE_MACHINES["vending"]
TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
LOOPBACK = ("0100007F", "0000000000000000FFFF00000100007F")  # 127.0.0.1, and as IPv4-mapped IPv6
ESTABLISHED = "01"


class Clock:
    """The link's idea of time, moved on by the test (no test waits five minutes)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def connections_to(port: int) -> int:
    """Established TCP connections from this host to 127.0.0.1:`port` (the client ends)."""
    count = 0
    for table in TCP_TABLES:
        for line in table.read_text().splitlines()[1:] if table.exists() else ():  # tcp6: IPv6 may be off
            _, _, remote, state, *_ = line.split()
            address, _, hex_port = remote.partition(":")
            count += address in LOOPBACK and int(hex_port, 16) == port and state == ESTABLISHED
    return count


@asynccontextmanager
async def vending_machine() -> AsyncIterator[Machine]:
    """A vending machine: a run brews until its takeout is requested."""
    machine = VENDING.build(0.0)
    await machine.start("127.0.0.1:0")
    try:
        yield machine
    finally:
        await machine.stop(grace=0)


def run_on(machine: Machine, run_id: str, token: str = "") -> ProgramRun:
    target = MachineTarget(f"127.0.0.1:{machine.port}", False, VENDING.api_type, VENDING.handles, token)
    now = datetime.now(UTC)
    request = RunRequest(run_id, "partners/acme/coffeeMachines/v-1", "recipes/acme:lungo", 200)
    return ProgramRun(request, Program("lungo"), target, State.PENDING, "", {}, 0, 0, now, now)


async def test_a_machine_channel_no_call_used_for_the_idle_time_is_closed_and_opened_again_on_the_next() -> (
    None
):
    clock = Clock()
    link = MachineLink(idle_seconds=IDLE, clock=clock)
    try:
        async with vending_machine() as quiet, vending_machine() as busy:
            await link.run(run_on(quiet, "quiet-1"), CALL_SECONDS)
            brewing = run_on(busy, "busy-1")
            await link.run(brewing, CALL_SECONDS)
            watch = link.watch(brewing, 0)
            first = await anext(watch)  # the stream is open: the busy machine's channel is in use
            assert first.event
            # A call that returned went over an established connection: no wait needed.
            assert (connections_to(quiet.port), connections_to(busy.port)) == (1, 1)

            clock.now += IDLE  # neither channel was used since; one has a call in flight
            await link.get_run(run_on(busy, "busy-1"), CALL_SECONDS)
            await link.closed_idle()  # that call closed the quiet channel, in a task of its own
            assert connections_to(quiet.port) == 0
            assert connections_to(busy.port) == 1  # the open stream kept its channel

            await link.signal(brewing, "takeout_requested", {}, CALL_SECONDS)
            rest = [event.event async for event in watch]
            assert "takeout_ready" in rest, rest  # the run went on over the same channel
            reopened = await link.get_run(run_on(quiet, "quiet-1"), CALL_SECONDS)
            assert reopened.name == "programRuns/quiet-1"  # the next call opens a new channel
            assert connections_to(quiet.port) == 1
    finally:
        await link.close()
