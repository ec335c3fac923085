"""Durable record of runs and their events (SQL on the service's store)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from brewmesh.errors import NotFound
from brewmesh.services.runner.program_runs import (
    MachineTarget,
    Origin,
    Program,
    ProgramRun,
    RunEvent,
    RunKey,
    RunRequest,
    State,
    failure_reason,
    next_state,
    run_name,
)
from brewmesh.storage import Migration, Row, Tx

NAMESPACE_OF_MACHINE = (
    "replace(replace(rtrim(machine, 'abcdefghijklmnopqrstuvwxyz0123456789_-'), 'partners/', ''),"
    " '/coffeeMachines/', '')"
)
"""`partners/{namespace}/coffeeMachines/{id}` -> `{namespace}` in portable SQL: no position
function is common to SQLite and PostgreSQL, but rtrim with a set of characters and replace are
(a machine id never holds '/', a namespace never 'partners/' nor '/coffeeMachines/')."""

MIGRATIONS = (
    Migration(
        "runner",
        1,
        (
            "CREATE TABLE program_runs ("
            " run_id TEXT PRIMARY KEY, machine TEXT NOT NULL, recipe TEXT NOT NULL,"
            " volume_ml INTEGER NOT NULL, program TEXT NOT NULL, endpoint TEXT NOT NULL,"
            " tls INTEGER NOT NULL, api_type TEXT NOT NULL, handled_events TEXT NOT NULL,"
            " state INTEGER NOT NULL, failure_reason TEXT NOT NULL, context TEXT NOT NULL,"
            " last_sequence INTEGER NOT NULL, machine_cursor INTEGER NOT NULL,"
            " create_time TEXT NOT NULL, update_time TEXT NOT NULL)",
            "CREATE INDEX program_runs_live ON program_runs (state)",
            "CREATE TABLE program_events ("
            " run_id TEXT NOT NULL REFERENCES program_runs (run_id), sequence INTEGER NOT NULL,"
            " event TEXT NOT NULL, attributes TEXT NOT NULL, context_changes TEXT NOT NULL,"
            " origin INTEGER NOT NULL, state INTEGER NOT NULL, time TEXT NOT NULL,"
            " PRIMARY KEY (run_id, sequence))",
        ),
    ),
    Migration("runner", 2, ("ALTER TABLE program_runs ADD COLUMN caller_token TEXT NOT NULL DEFAULT ''",)),
    # Run ids become unique per namespace (the partner whose machine runs it), not across the
    # mesh: a partner's run id says nothing about another partner's runs.
    Migration(
        "runner",
        3,
        (
            "CREATE TABLE program_runs_by_namespace ("
            " namespace TEXT NOT NULL, run_id TEXT NOT NULL, machine TEXT NOT NULL, recipe TEXT NOT NULL,"
            " volume_ml INTEGER NOT NULL, program TEXT NOT NULL, endpoint TEXT NOT NULL,"
            " tls INTEGER NOT NULL, api_type TEXT NOT NULL, handled_events TEXT NOT NULL,"
            " state INTEGER NOT NULL, failure_reason TEXT NOT NULL, context TEXT NOT NULL,"
            " last_sequence INTEGER NOT NULL, machine_cursor INTEGER NOT NULL,"
            " create_time TEXT NOT NULL, update_time TEXT NOT NULL, caller_token TEXT NOT NULL DEFAULT '',"
            " PRIMARY KEY (namespace, run_id))",
            f"INSERT INTO program_runs_by_namespace SELECT {NAMESPACE_OF_MACHINE}, run_id, machine, recipe,"
            " volume_ml, program, endpoint, tls, api_type, handled_events, state, failure_reason, context,"
            " last_sequence, machine_cursor, create_time, update_time, caller_token FROM program_runs",
            "CREATE TABLE program_events_by_namespace ("
            " namespace TEXT NOT NULL, run_id TEXT NOT NULL, sequence INTEGER NOT NULL,"
            " event TEXT NOT NULL, attributes TEXT NOT NULL, context_changes TEXT NOT NULL,"
            " origin INTEGER NOT NULL, state INTEGER NOT NULL, time TEXT NOT NULL,"
            " PRIMARY KEY (namespace, run_id, sequence),"
            " FOREIGN KEY (namespace, run_id) REFERENCES program_runs_by_namespace (namespace, run_id))",
            "INSERT INTO program_events_by_namespace SELECT r.namespace, e.run_id, e.sequence, e.event,"
            " e.attributes, e.context_changes, e.origin, e.state, e.time"
            " FROM program_events e JOIN program_runs_by_namespace r ON r.run_id = e.run_id",
            "DROP TABLE program_events",
            "DROP TABLE program_runs",
            "ALTER TABLE program_runs_by_namespace RENAME TO program_runs",
            "ALTER TABLE program_events_by_namespace RENAME TO program_events",
            "CREATE INDEX program_runs_live ON program_runs (state)",
        ),
    ),
)


def insert_run(tx: Tx, run: ProgramRun) -> None:
    r = run.request
    tx.execute(
        "INSERT INTO program_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            r.namespace,
            r.run_id,
            r.machine,
            r.recipe,
            r.volume_ml,
            json.dumps({"program_id": run.program.program_id, "parameters": run.program.parameters}),
            run.target.endpoint,
            int(run.target.tls),
            run.target.api_type,
            json.dumps(list(run.target.handled_events)),
            int(run.state),
            run.failure_reason,
            json.dumps(run.context),
            run.last_sequence,
            run.machine_cursor,
            run.create_time.isoformat(),
            run.update_time.isoformat(),
            run.target.caller_token,  # a follower resuming after a restart presents it again
        ),
    )


def find_run(tx: Tx, key: RunKey) -> ProgramRun | None:
    row = tx.fetchone("SELECT * FROM program_runs WHERE namespace = ? AND run_id = ?", _params(key))
    return _run(row) if row else None


def get_run(tx: Tx, key: RunKey) -> ProgramRun:
    run = find_run(tx, key)
    if run is None:
        raise NotFound(f"run '{run_name(key.run_id)}' does not exist in namespace '{key.namespace}'")
    return run


def runs_with_id(tx: Tx, run_id: str, limit: int) -> list[ProgramRun]:
    """Up to `limit` runs with this id, whatever their namespace (for the admin)."""
    rows = tx.fetchall(
        "SELECT * FROM program_runs WHERE run_id = ? ORDER BY namespace LIMIT ?", (run_id, limit)
    )
    return [_run(r) for r in rows]


def list_runs(
    tx: Tx, namespace: str | None, machine: str, state: State | None, after: RunKey | None, limit: int
) -> list[ProgramRun]:
    """Up to `limit` runs after `after` by (namespace, run id): of one namespace (None: all), on
    one machine ("" any), in one state (None: any)."""
    sql, params = "SELECT * FROM program_runs WHERE 1 = 1", list[object]()
    if namespace is not None:
        sql += " AND namespace = ?"
        params.append(namespace)
    if machine:
        sql += " AND machine = ?"
        params.append(machine)
    if state is not None:
        sql += " AND state = ?"
        params.append(int(state))
    if after is not None:
        sql += " AND (namespace > ? OR (namespace = ? AND run_id > ?))"
        params += [after.namespace, after.namespace, after.run_id]
    rows = tx.fetchall(f"{sql} ORDER BY namespace, run_id LIMIT ?", [*params, limit])
    return [_run(r) for r in rows]


def live_runs(tx: Tx) -> list[ProgramRun]:
    rows = tx.fetchall(
        "SELECT * FROM program_runs WHERE state IN (?, ?)", (int(State.PENDING), int(State.RUNNING))
    )
    return [_run(r) for r in rows]


def append_event(
    tx: Tx,
    run: ProgramRun,
    event: str,
    origin: Origin,
    attributes: dict[str, Any] | None = None,
    context_changes: dict[str, Any] | None = None,
    machine_sequence: int | None = None,
) -> tuple[ProgramRun, RunEvent] | None:
    """Record an event as the next sequence of `run` (as `tx` read or wrote it); None if the run
    is already terminal."""
    key = run.key
    if run.state.terminal:
        return None
    attributes, context_changes = attributes or {}, context_changes or {}
    now = datetime.now(UTC)
    state = next_state(run.state, event)
    recorded = RunEvent(
        key.run_id, run.last_sequence + 1, event, attributes, context_changes, origin, state, now
    )
    updated = replace(
        run,
        state=state,
        failure_reason=failure_reason(event, attributes) or run.failure_reason,
        context={**run.context, **context_changes},
        last_sequence=recorded.sequence,
        machine_cursor=machine_sequence if machine_sequence is not None else run.machine_cursor,
        update_time=now,
    )
    tx.execute(
        "UPDATE program_runs SET state = ?, failure_reason = ?, context = ?, last_sequence = ?,"
        " machine_cursor = ?, update_time = ? WHERE namespace = ? AND run_id = ?",
        (
            int(updated.state),
            updated.failure_reason,
            json.dumps(updated.context),
            updated.last_sequence,
            updated.machine_cursor,
            now.isoformat(),
            *_params(key),
        ),
    )
    # After the run's row is updated: a concurrent writer of the same run then loses on that row.
    tx.execute(
        "INSERT INTO program_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            *_params(key),
            recorded.sequence,
            event,
            json.dumps(attributes),
            json.dumps(context_changes),
            int(origin),
            int(state),
            now.isoformat(),
        ),
    )
    return updated, recorded


def advance_machine_cursor(tx: Tx, key: RunKey, machine_sequence: int) -> None:
    """Note a machine event we saw but do not re-record (e.g. the caller's own signal)."""
    tx.execute(
        "UPDATE program_runs SET machine_cursor = ?"
        " WHERE namespace = ? AND run_id = ? AND machine_cursor < ?",
        (machine_sequence, *_params(key), machine_sequence),
    )


def events_after(tx: Tx, key: RunKey, after: int, limit: int) -> list[RunEvent]:
    rows = tx.fetchall(
        "SELECT * FROM program_events WHERE namespace = ? AND run_id = ? AND sequence > ?"
        " ORDER BY sequence LIMIT ?",
        (*_params(key), after, limit),
    )
    return [_event(r) for r in rows]


def _params(key: RunKey) -> tuple[str, str]:
    return key.namespace, key.run_id


def _run(row: Row) -> ProgramRun:
    program = json.loads(row["program"])
    return ProgramRun(
        request=RunRequest(row["run_id"], row["machine"], row["recipe"], row["volume_ml"]),
        program=Program(program["program_id"], program["parameters"]),
        target=MachineTarget(
            row["endpoint"],
            bool(row["tls"]),
            row["api_type"],
            tuple(json.loads(row["handled_events"])),
            row["caller_token"],
        ),
        state=State(row["state"]),
        failure_reason=row["failure_reason"],
        context=json.loads(row["context"]),
        last_sequence=row["last_sequence"],
        machine_cursor=row["machine_cursor"],
        create_time=datetime.fromisoformat(row["create_time"]),
        update_time=datetime.fromisoformat(row["update_time"]),
    )


def _event(row: Row) -> RunEvent:
    return RunEvent(
        run_id=row["run_id"],
        sequence=row["sequence"],
        event=row["event"],
        attributes=json.loads(row["attributes"]),
        context_changes=json.loads(row["context_changes"]),
        origin=Origin(row["origin"]),
        state=State(row["state"]),
        time=datetime.fromisoformat(row["time"]),
    )
