"""The café machine: it brews and finishes; the order can be modified while it brews.

Handles `modify_requested` while brewing: attribute `takeout` (`counter` or
`contactless`) sets `takeout_mode` on the run's context; anything else is
answered with `modify_rejected`. Handles `order_canceled` (the run ends
`canceled`).
"""

from __future__ import annotations

import asyncio

from brewmesh.machines.common import DEFAULT_BREW_SECONDS, ReferenceMachine, brew_time, cancel
from brewmesh.sdk import ContextEvent, Machine, Program

API_TYPE = "cafe"
HANDLES = ("modify_requested", "order_canceled")
EMITS = ("brewing_started", "brewing_finished", "modify_rejected")
TAKEOUT_MODES = ("counter", "contactless")


def build(brew_seconds: float = DEFAULT_BREW_SECONDS, caller_token: str | None = None) -> Machine:
    machine = Machine(caller_token=caller_token)

    @machine.program_run_handler(API_TYPE, handles=HANDLES)
    async def run(program: Program) -> None:
        program.context.on("modify_requested", lambda event: modify(program, event))
        program.context.on("order_canceled", lambda event: cancel(program, event))
        await program.context.set("takeout_mode", "counter")
        await program.context.emit(
            "brewing_started", program_id=program.program_id, volume_ml=program.volume_ml
        )
        await asyncio.sleep(brew_time(program, brew_seconds))
        program.context.off("modify_requested")  # the drink is made: too late to change it
        await program.context.emit("brewing_finished", takeout_mode=program.context.get("takeout_mode"))

    return machine


async def modify(program: Program, event: ContextEvent) -> None:
    mode = event.attributes.get("takeout")
    unsupported = sorted(set(event.attributes) - {"takeout"})
    if mode not in TAKEOUT_MODES or unsupported:
        reason = f"this café can change only 'takeout', to one of {', '.join(TAKEOUT_MODES)}"
        await program.context.emit("modify_rejected", reason=reason)
        return
    await program.context.set("takeout_mode", mode)


REFERENCE = ReferenceMachine(
    API_TYPE, "brews and finishes; contactless takeout on request", HANDLES, EMITS, build
)
