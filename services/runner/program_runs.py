"""Program runs and their events (domain layer).

A run is a context with an ordered stream of events from three levels
(caller, runner, machine). Lifecycle events change the run's state; every
event may set context keys. Once terminal, a run takes no more events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

from brewmesh import run_rules
from brewmesh.errors import Violations, quote
from brewmesh.names import NAMESPACE_RE
from brewmesh.run_rules import MAX_VOLUME_ML, RUN_ID_RE

EVENT_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")


class State(IntEnum):
    """Mirrors brewmesh.runner.v1.ProgramRun.State."""

    UNSPECIFIED = 0
    PENDING = 1
    RUNNING = 2
    FINISHED = 3
    CANCELED = 4
    FAILED = 5

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.FINISHED, State.CANCELED, State.FAILED})
LIFECYCLE = {event: State(state) for event, state in run_rules.LIFECYCLE.items()}


class Origin(IntEnum):
    """Mirrors brewmesh.runner.v1.Origin."""

    UNSPECIFIED = 0
    CALLER = 1
    RUNNER = 2
    MACHINE = 3


@dataclass(frozen=True)
class Program:
    program_id: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRequest:
    """What a caller asked for; a retry with the same run id must ask the same."""

    run_id: str
    machine: str
    recipe: str
    volume_ml: int

    @property
    def namespace(self) -> str:
        """The partner whose machine runs it: the run is private to that partner."""
        return machine_namespace(self.machine)

    @property
    def key(self) -> RunKey:
        return RunKey(self.namespace, self.run_id)


@dataclass(frozen=True, order=True)
class RunKey:
    """Which run: a run id is its caller's choice, unique within the run's namespace (the
    partner whose machine runs it), so two partners may each have an `order-1`, and neither
    learns of the other's."""

    namespace: str
    run_id: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.run_id}"


@dataclass(frozen=True)
class RunRef:
    """A run as a request names it: `programRuns/{run_id}`, in the caller's own namespace
    (None), or `programRuns/{namespace}:{run_id}`, in the one named."""

    namespace: str | None
    run_id: str


MACHINE_NAME_PREFIX = "partners/"


def machine_namespace(machine: str) -> str:
    """The namespace of a machine name `partners/{namespace}/coffeeMachines/{id}`."""
    return machine.removeprefix(MACHINE_NAME_PREFIX).partition("/")[0]


@dataclass(frozen=True)
class MachineTarget:
    """Where the run's machine is and what it handles, resolved at Run time."""

    endpoint: str
    tls: bool
    api_type: str
    handled_events: tuple[str, ...]
    caller_token: str = ""
    """Presented to the machine on every call (see brewmesh.caller_tokens); a secret."""


@dataclass(frozen=True)
class ProgramRun:
    request: RunRequest
    program: Program
    target: MachineTarget
    state: State
    failure_reason: str
    context: dict[str, Any]
    last_sequence: int
    machine_cursor: int
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return run_name(self.request.run_id)

    @property
    def key(self) -> RunKey:
        return self.request.key


@dataclass(frozen=True)
class RunEvent:
    run_id: str
    sequence: int
    event: str
    attributes: dict[str, Any]
    context_changes: dict[str, Any]
    origin: Origin
    state: State
    time: datetime


RUN_NAME_PREFIX = "programRuns/"


def run_name(run_id: str) -> str:
    return f"{RUN_NAME_PREFIX}{run_id}"


def next_state(current: State, event: str) -> State:
    """The state after `event`: lifecycle events move it, others keep it."""
    return LIFECYCLE.get(event, current)


def failure_reason(event: str, attributes: dict[str, Any]) -> str:
    if event != "failed":
        return ""
    return str(attributes.get("reason") or "the machine reported a failure without a reason")


def parse_run_name(v: Violations, field_path: str, name: str) -> RunRef | None:
    namespace, _, run_id = name.removeprefix(RUN_NAME_PREFIX).rpartition(":")
    if (
        not name.startswith(RUN_NAME_PREFIX)
        or not RUN_ID_RE.fullmatch(run_id)
        or (namespace and not NAMESPACE_RE.fullmatch(namespace))
    ):
        v.add(
            field_path,
            f"{quote(name)} is not a run name: use 'programRuns/{{run_id}}', e.g. 'programRuns/order-42'"
            " (or 'programRuns/{namespace}:{run_id}', e.g. 'programRuns/my-coffee-company:order-42')",
        )
        return None
    return RunRef(namespace or None, run_id)


def check_run_id(v: Violations, run_id: str) -> None:
    if run_id and not RUN_ID_RE.fullmatch(run_id):
        v.add("run_id", f"{quote(run_id)} is not a run id: use 1 to 63 lowercase letters, digits, '-' or '_'")


def check_volume(v: Violations, volume_ml: int) -> None:
    if not 0 <= volume_ml <= MAX_VOLUME_ML:
        v.add(
            "volume_ml", f"is {volume_ml}: use 1 to {MAX_VOLUME_ML} ml, or 0 for the recipe's default volume"
        )


def check_event_name(v: Violations, field_path: str, event: str) -> None:
    if not EVENT_RE.fullmatch(event):
        v.add(
            field_path, f"{quote(event)} is not an event name: use lower_snake_case, e.g. 'takeout_requested'"
        )
