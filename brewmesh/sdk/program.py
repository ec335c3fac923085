"""What a machine's handler sees of a run: the program and its context.

The context is the two-way stream of principle 3: the handler listens with
`on` to the events the upper level signals (`takeout_requested`,
`order_canceled`, ...), and speaks with `emit` (its own events) and `set`
(keys on the run's context, e.g. `takeout_ready = true`). An event nobody
listens to is recorded and otherwise ignored; that is not an error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from brewmesh.names import SNAKE_RE, SNAKE_RULE
from brewmesh.sdk.runs import CONTEXT_SET, MACHINE, RunRecord

log = logging.getLogger(__name__)

# Names the SDK records itself: `started` when the handler begins, and
# `context_set` for every `set`. The other lifecycle names (`finished`,
# `canceled`, `failed`) a program may emit: they end the run.
SDK_EVENTS = frozenset({"started", CONTEXT_SET})


@dataclass(frozen=True)
class ContextEvent:
    """An event the upper level signalled to the run."""

    name: str
    attributes: dict[str, Any]
    sequence: int


# A callback may be a plain function or return an awaitable (async def, or a
# lambda returning `program.context.emit(...)`); the SDK awaits it.
Callback = Callable[[ContextEvent], Awaitable[object] | None]


def check_event_name(name: str, what: str = "event name") -> None:
    if not SNAKE_RE.fullmatch(name):
        raise ValueError(f"'{name}' is not a valid {what}: use {SNAKE_RULE}")


class ProgramContext:
    """The run's context as the program uses it: `on`, `off`, `emit`, `set`, `get`."""

    def __init__(self, run: RunRecord, declared: frozenset[str] | None = None) -> None:
        self._run = run
        self._declared = declared
        self._callbacks: dict[str, list[Callback]] = {}

    def on(self, event: str, callback: Callback) -> None:
        """Handle `event` when the upper level signals it; callbacks run in the order added.

        Callbacks registered before the handler's first real pause (its first
        `await` of something that takes time) are in place when `Run` returns,
        so a signal sent right after `Run` finds them. A callback should be
        quick: it runs while the caller's `Signal` waits.
        """
        check_event_name(event)
        if self._declared is not None and event not in self._declared:
            # Still honoured here, but the mesh runner forwards only the
            # events a machine declares, so this one would never arrive.
            log.warning("run %s handles '%s', which the machine does not declare", self._run.name, event)
        self._callbacks.setdefault(event, []).append(callback)

    def off(self, event: str) -> None:
        """Stop handling `event`: later signals of it are recorded, not handled."""
        self._callbacks.pop(event, None)

    def handles(self, event: str) -> bool:
        return bool(self._callbacks.get(event))

    def callbacks(self, event: str) -> list[Callback]:
        return list(self._callbacks.get(event, ()))

    async def emit(self, event: str, **attributes: Any) -> int:
        """Record the machine's own event; returns its sequence number.

        `finished`, `canceled` and `failed` (give a `reason`) end the run;
        nothing can be emitted after that (RunEnded).
        """
        check_event_name(event)
        if event in SDK_EVENTS:
            hint = (
                "use set(key, value)" if event == CONTEXT_SET else "the SDK emits it when the handler begins"
            )
            raise ValueError(f"'{event}' is recorded by the SDK itself: {hint}")
        return self._run.record(event, MACHINE, attributes).sequence

    async def set(self, key: str, value: Any) -> int:
        """Set `key` on the run's context (a `context_set` event); returns its sequence number."""
        check_event_name(key, "context key")
        return self._run.record(CONTEXT_SET, MACHINE, context_changes={key: value}).sequence

    def get(self, key: str, default: Any = None) -> Any:
        return self._run.context.get(key, default)

    @property
    def values(self) -> dict[str, Any]:
        """A copy of the run's context."""
        return dict(self._run.context)


@dataclass(frozen=True)
class Program:
    """A run as its handler sees it: what to brew, and the run's context."""

    run_id: str
    name: str
    machine: str
    recipe: str
    volume_ml: int
    program_id: str
    parameters: dict[str, Any]
    api_type: str
    context: ProgramContext = field(repr=False)
