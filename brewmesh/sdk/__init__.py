"""The partner SDK: implement a coffee machine's ProgramRunner in a few lines.

    from brewmesh.sdk import Machine, Program

    machine = Machine()

    @machine.program_run_handler("vending", handles=["order_canceled"])
    async def run(program: Program) -> None:
        program.context.on("order_canceled", lambda event: program.context.emit("canceled"))
        await program.context.emit("brewing_started")
        ...
        await program.context.set("takeout_ready", True)

    asyncio.run(machine.serve(50061))

The SDK records `started` before the handler begins and `finished` when it
returns (or `failed`, with the reason, when it raises). A program ends a run
itself by emitting `finished`, `canceled` or `failed`; cancellation is the
program's decision: handle e.g. `order_canceled` and emit `canceled`.
"""

from brewmesh.sdk.execution import RunHandler
from brewmesh.sdk.handlers import Registration
from brewmesh.sdk.machine import DEFAULT_PORT, Machine
from brewmesh.sdk.program import Callback, ContextEvent, Program, ProgramContext
from brewmesh.sdk.runs import RunEnded
from brewmesh.tls import Tls

__all__ = [
    "DEFAULT_PORT",
    "Callback",
    "ContextEvent",
    "Machine",
    "Program",
    "ProgramContext",
    "Registration",
    "RunEnded",
    "RunHandler",
    "Tls",
]
