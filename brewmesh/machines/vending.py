"""The vending machine: it brews, then waits for the buyer before it releases the cup.

Handles `takeout_requested` (release the cup: sets `takeout_ready` on the
run's context, emits `takeout_ready`, and the run finishes) and
`order_canceled` (until the cup is out: the run ends `canceled`).
"""

from __future__ import annotations

import asyncio

from brewmesh.machines.common import DEFAULT_BREW_SECONDS, ReferenceMachine, brew_time, cancel
from brewmesh.sdk import Machine, Program

API_TYPE = "vending"
HANDLES = ("takeout_requested", "order_canceled")
EMITS = ("brewing_started", "brewing_finished", "takeout_ready")


def build(brew_seconds: float = DEFAULT_BREW_SECONDS, caller_token: str | None = None) -> Machine:
    machine = Machine(caller_token=caller_token)

    @machine.program_run_handler(API_TYPE, handles=HANDLES)
    async def run(program: Program) -> None:
        takeout = asyncio.Event()
        program.context.on("takeout_requested", lambda _: takeout.set())
        program.context.on("order_canceled", lambda event: cancel(program, event))
        await program.context.emit(
            "brewing_started", program_id=program.program_id, volume_ml=program.volume_ml
        )
        await asyncio.sleep(brew_time(program, brew_seconds))
        await program.context.emit("brewing_finished")
        await takeout.wait()  # a request during brewing counts: it was remembered
        program.context.off("order_canceled")  # the cup is out: too late to cancel
        await program.context.set("takeout_ready", True)
        await program.context.emit("takeout_ready")

    return machine


REFERENCE = ReferenceMachine(API_TYPE, "brews, then waits for takeout approval", HANDLES, EMITS, build)
