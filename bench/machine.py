"""The benchmark's machine, written with the partner SDK: it brews instantly.

    python -m bench.machine --port PORT [--burst-events N]

Two program run handlers:
- `instant`: emits `finished` at once (run-to-finished latency);
- `burst`: waits for the caller's `go` signal, then emits `tick` N times
  (attribute `i`) and `finished` (event deliveries to many watchers: they
  all connect before `go`).
Serves ProgramRunner, health and reflection (the SDK's server) until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from brewmesh.sdk import ContextEvent, Machine, Program

INSTANT = "instant"
BURST = "burst"
GO = "go"
TICK = "tick"
DEFAULT_BURST_EVENTS = 1000


def build(burst_events: int) -> Machine:
    machine = Machine()

    @machine.program_run_handler(INSTANT)
    async def instant(program: Program) -> None:
        await program.context.emit("finished")

    @machine.program_run_handler(BURST, handles=[GO])
    async def burst(program: Program) -> None:
        go = asyncio.Event()

        def on_go(event: ContextEvent) -> None:
            go.set()

        program.context.on(GO, on_go)
        await go.wait()
        for i in range(burst_events):
            await program.context.emit(TICK, i=i)
        await program.context.emit("finished")

    return machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--burst-events", type=int, default=DEFAULT_BURST_EVENTS)
    args = parser.parse_args()
    # Per-run INFO lines would cost the machine time in a latency benchmark.
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(build(args.burst_events).serve(args.port))


if __name__ == "__main__":
    main()
