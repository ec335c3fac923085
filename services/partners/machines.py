"""Coffee machine fleets: where each machine's ProgramRunner is, what it handles."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum

from brewmesh import caller_tokens
from brewmesh.counts import check_count
from brewmesh.errors import NotFound, Violations, quote
from brewmesh.names import ID_COMPONENT_RE, ID_COMPONENT_RULE, check_snake
from brewmesh.services.partners.partners import get_partner, parse_partner_name
from brewmesh.storage import Migration, Row, Tx

MIGRATIONS = (
    Migration(
        "partners",
        2,
        (
            "CREATE TABLE coffee_machines ("
            " namespace TEXT NOT NULL REFERENCES partners (namespace) ON DELETE CASCADE,"
            " machine_id TEXT NOT NULL, api_type TEXT NOT NULL, endpoint TEXT NOT NULL,"
            " tls INTEGER NOT NULL, handled_events TEXT NOT NULL,"
            " serving_status INTEGER NOT NULL, status_time TEXT,"
            " PRIMARY KEY (namespace, machine_id))",
        ),
    ),
    Migration(
        "partners", 3, ("ALTER TABLE coffee_machines ADD COLUMN caller_token TEXT NOT NULL DEFAULT ''",)
    ),
)

API_TYPE_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
HOST_PORT_RE = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")
MAX_FLEET = 1000
MAX_HANDLED_EVENTS = 100


class ServingStatus(IntEnum):
    """Mirrors brewmesh.partners.v1.ServingStatus."""

    UNSPECIFIED = 0
    SERVING = 1
    NOT_SERVING = 2
    UNREACHABLE = 3


@dataclass(frozen=True)
class CoffeeMachine:
    namespace: str
    machine_id: str
    api_type: str
    endpoint: str
    tls: bool
    handled_events: tuple[str, ...]
    serving_status: ServingStatus = ServingStatus.UNSPECIFIED
    status_time: datetime | None = None
    caller_token: str = ""
    """What the runner presents to the machine (see brewmesh.caller_tokens); a secret."""

    @property
    def name(self) -> str:
        return machine_name(self.namespace, self.machine_id)


def machine_name(namespace: str, machine_id: str) -> str:
    return f"partners/{namespace}/coffeeMachines/{machine_id}"


def parse_machine_name(v: Violations, field: str, name: str) -> tuple[str, str] | None:
    parent, sep, machine_id = name.partition("/coffeeMachines/")
    namespace = parse_partner_name(Violations(), field, parent) if sep else None
    if namespace is None or not ID_COMPONENT_RE.fullmatch(machine_id):
        example = "'partners/my-coffee-company/coffeeMachines/m1'"
        v.add(
            field, f"{quote(name)} is not a machine name: use e.g. {example}; machine id {ID_COMPONENT_RULE}"
        )
        return None
    return namespace, machine_id


@dataclass(frozen=True)
class MachineSpec:
    """A machine as a partner declares it (no status)."""

    machine_id: str
    api_type: str
    endpoint: str
    tls: bool
    handled_events: tuple[str, ...]
    caller_token: str = ""


def check_fleet(v: Violations, namespace: str, specs: Sequence[tuple[str, MachineSpec]]) -> None:
    """Validate `(name as sent, spec)` pairs of a fleet under `partners/{namespace}`."""
    if not check_count(v, "coffee_machines", specs, MAX_FLEET, "machines"):
        return
    seen: set[str] = set()
    for i, (name, spec) in enumerate(specs):
        with v.under(f"coffee_machines[{i}]"):
            _check_machine(v, namespace, name, spec)
            if spec.machine_id in seen:
                v.add("name", f"{quote(name)} is listed twice: each machine once")
            seen.add(spec.machine_id)


def _check_machine(v: Violations, namespace: str, name: str, spec: MachineSpec) -> None:
    parsed = parse_machine_name(v, "name", name)
    if parsed and parsed[0] != namespace:
        v.add(
            "name",
            f"{quote(name)} is not under 'partners/{namespace}': a fleet holds only its partner's machines",
        )
    if not API_TYPE_RE.fullmatch(spec.api_type):
        v.add(
            "api_type",
            f"{quote(spec.api_type)} is not an api type: use lowercase letters, digits, '-' or '_'",
        )
    if not HOST_PORT_RE.fullmatch(spec.endpoint) or not 0 < int(spec.endpoint.rpartition(":")[2]) < 65536:
        v.add(
            "program_api.endpoint",
            f"{quote(spec.endpoint)} is not 'host:port', e.g. 'machine-7.example.com:50061'",
        )
    if not check_count(v, "handled_events", spec.handled_events, MAX_HANDLED_EVENTS, "events"):
        return
    _check_caller_token(v, spec)
    for j, event in enumerate(spec.handled_events):
        check_snake(v, f"handled_events[{j}]", event, "event name")
    if len(set(spec.handled_events)) != len(spec.handled_events):
        v.add("handled_events", "lists an event twice: list each once")


def _check_caller_token(v: Violations, spec: MachineSpec) -> None:
    if not spec.caller_token:
        return
    # The token is a secret: the messages never quote it.
    if not caller_tokens.is_valid(spec.caller_token):
        v.add("program_api.caller_token", f"is not a caller token: use {caller_tokens.TOKEN_RULE}")
    if not spec.tls:
        v.add(
            "program_api.caller_token",
            "needs program_api.tls true: the runner never sends a caller token in plaintext",
        )


def put_fleet(tx: Tx, namespace: str, specs: Sequence[MachineSpec]) -> list[CoffeeMachine]:
    """Replace the partner's fleet; a machine keeps its status unless its endpoint changed."""
    get_partner(tx, namespace)
    before = {m.machine_id: m for m in list_machines(tx, namespace, "", MAX_FLEET + 1)}
    tx.execute("DELETE FROM coffee_machines WHERE namespace = ?", (namespace,))
    for spec in specs:
        old = before.get(spec.machine_id)
        keep = old is not None and (old.endpoint, old.tls) == (spec.endpoint, spec.tls)
        status = old.serving_status if keep and old else ServingStatus.UNSPECIFIED
        status_time = old.status_time if keep and old else None
        tx.execute(
            "INSERT INTO coffee_machines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                namespace,
                spec.machine_id,
                spec.api_type,
                spec.endpoint,
                int(spec.tls),
                json.dumps(list(spec.handled_events)),
                int(status),
                status_time.isoformat() if status_time else None,
                spec.caller_token,
            ),
        )
    return list_machines(tx, namespace, "", MAX_FLEET + 1)


def get_machine(tx: Tx, namespace: str, machine_id: str) -> CoffeeMachine:
    row = tx.fetchone(
        "SELECT * FROM coffee_machines WHERE namespace = ? AND machine_id = ?", (namespace, machine_id)
    )
    if row is None:
        raise NotFound(f"machine '{machine_name(namespace, machine_id)}' does not exist")
    return _machine(row)


def list_machines(tx: Tx, namespace: str, after: str, limit: int) -> list[CoffeeMachine]:
    rows = tx.fetchall(
        "SELECT * FROM coffee_machines WHERE namespace = ? AND machine_id > ? ORDER BY machine_id LIMIT ?",
        (namespace, after, limit),
    )
    return [_machine(r) for r in rows]


def all_machines(tx: Tx) -> list[CoffeeMachine]:
    return [_machine(r) for r in tx.fetchall("SELECT * FROM coffee_machines ORDER BY namespace, machine_id")]


def record_status(tx: Tx, machine: CoffeeMachine, status: ServingStatus) -> CoffeeMachine | None:
    """Store a health-check result; the machine as before if its status changed, else None."""
    current = tx.fetchone(
        "SELECT serving_status, endpoint FROM coffee_machines WHERE namespace = ? AND machine_id = ?",
        (machine.namespace, machine.machine_id),
    )
    if current is None or current["endpoint"] != machine.endpoint:
        return None  # removed or re-pointed while we were checking
    now = datetime.now(UTC)
    tx.execute(
        "UPDATE coffee_machines SET serving_status = ?, status_time = ?"
        " WHERE namespace = ? AND machine_id = ?",
        (int(status), now.isoformat(), machine.namespace, machine.machine_id),
    )
    previous = ServingStatus(current["serving_status"])
    return replace(machine, serving_status=previous) if previous != status else None


def _machine(row: Row) -> CoffeeMachine:
    return CoffeeMachine(
        namespace=row["namespace"],
        machine_id=row["machine_id"],
        api_type=row["api_type"],
        endpoint=row["endpoint"],
        tls=bool(row["tls"]),
        handled_events=tuple(json.loads(row["handled_events"])),
        serving_status=ServingStatus(row["serving_status"]),
        status_time=datetime.fromisoformat(row["status_time"]) if row["status_time"] else None,
        caller_token=row["caller_token"],
    )
