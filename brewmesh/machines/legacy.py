"""The legacy machine: it knows only run, state and cancel.

It brews without telling anyone and finishes; `order_canceled` ends the run
`canceled`. Every other signal is recorded and not handled.
"""

from __future__ import annotations

import asyncio

from brewmesh.machines.common import DEFAULT_BREW_SECONDS, ReferenceMachine, brew_time, cancel
from brewmesh.sdk import Machine, Program

API_TYPE = "legacy"
HANDLES = ("order_canceled",)
EMITS = ()


def build(brew_seconds: float = DEFAULT_BREW_SECONDS, caller_token: str | None = None) -> Machine:
    machine = Machine(caller_token=caller_token)

    @machine.program_run_handler(API_TYPE, handles=HANDLES)
    async def run(program: Program) -> None:
        program.context.on("order_canceled", lambda event: cancel(program, event))
        await asyncio.sleep(brew_time(program, brew_seconds))

    return machine


REFERENCE = ReferenceMachine(API_TYPE, "only run, state and cancel", HANDLES, EMITS, build)
