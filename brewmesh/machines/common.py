"""What the reference machines share: brew time and cancellation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from brewmesh.sdk import ContextEvent, Machine, Program

DEFAULT_BREW_SECONDS = 2.0
MAX_BREW_SECONDS = 600.0


class MachineBuilder(Protocol):
    """Builds a machine that brews for `brew_seconds`, serving only `caller_token`'s holder if given."""

    def __call__(self, brew_seconds: float = ..., caller_token: str | None = None) -> Machine: ...


@dataclass(frozen=True)
class ReferenceMachine:
    """A reference machine as the CLI shows it: what it handles and emits."""

    api_type: str
    summary: str
    handles: tuple[str, ...]
    emits: tuple[str, ...]
    build: MachineBuilder


def brew_time(program: Program, default: float) -> float:
    """Seconds to brew: the program's `brew_seconds` parameter, else the machine's default."""
    value = program.parameters.get("brew_seconds", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_BREW_SECONDS:
        raise ValueError(
            f"parameter brew_seconds must be a number of seconds from 0 to {MAX_BREW_SECONDS:.0f}"
        )
    return float(value)


async def cancel(program: Program, event: ContextEvent) -> None:
    """Handle `order_canceled`: end the run as canceled, with the caller's reason if any."""
    reason = event.attributes.get("reason")
    await program.context.emit("canceled", **({"reason": reason} if reason else {}))
