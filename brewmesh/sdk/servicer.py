"""ProgramRunner served by a machine: Run, GetRun, Watch and Signal over its runs.

The same contract as the mesh runner's (see program_runner.proto): Run is
idempotent on a client-chosen run id, Watch is resumable with no gap and no
duplicate and ends once the run ended and every event was sent, Signal
records the caller's event and says whether the program handles it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import TypeAlias, TypeVar

import grpc

from brewmesh import names
from brewmesh.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    Unavailable,
    Unimplemented,
    Violations,
)
from brewmesh.run_rules import LIFECYCLE, MAX_VOLUME_ML, RUN_ID_RE, RUN_ID_RULE
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from brewmesh.sdk.execution import SHUTDOWN_REASON, Execution
from brewmesh.sdk.handlers import Handlers, Registration
from brewmesh.sdk.program import SDK_EVENTS, ContextEvent, Program, ProgramContext
from brewmesh.sdk.runs import CALLER, RUN_PREFIX, RunRecord, RunStore, state_name
from brewmesh.server import Shutdown
from brewmesh.struct_values import check_struct, from_struct

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ProgramRunner"].full_name
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Context: TypeAlias = grpc.aio.ServicerContext[_Req, _Resp]
"""A servicer method's context: `Context[Request, Response]`."""

PROGRAM_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
MACHINE_RE = re.compile(r"partners/[a-z][a-z0-9-]{1,62}/coffeeMachines/[a-z0-9_-]{1,63}")
CALLER_RESERVED = frozenset({*LIFECYCLE, *SDK_EVENTS})


class ProgramRunnerServicer(program_runner_pb2_grpc.ProgramRunnerServicer):
    def __init__(self, handlers: Handlers, store: RunStore, shutdown: Shutdown) -> None:
        self.handlers = handlers
        self.store = store
        self.shutdown = shutdown

    async def Run(  # noqa: N802
        self, request: pb.RunRequest, context: Context[pb.RunRequest, pb.ProgramRun]
    ) -> pb.ProgramRun:
        run_id, registration = self._check_run(request)
        normalised = _normalised(request, run_id, registration.api_type)
        existing = self.store.get(run_id)
        if existing is not None:
            return _replay(existing, normalised)
        run = RunRecord(run_id, normalised, registration.api_type)
        execution = Execution(run, _program(run, registration), registration.handler)
        self.store.add(run)
        execution.start()
        # Let the handler run up to its first pause, so the callbacks it
        # registers first are in place for a Signal sent right after Run.
        await asyncio.sleep(0)
        return run.to_proto()

    async def ListRuns(  # noqa: N802
        self, request: pb.ListRunsRequest, context: Context[pb.ListRunsRequest, pb.ListRunsResponse]
    ) -> pb.ListRunsResponse:
        """A machine need not list its runs (UNIMPLEMENTED): the mesh's runner lists every run."""
        raise Unimplemented("a machine does not list its runs: ask the mesh's ProgramRunner.ListRuns")

    async def GetRun(  # noqa: N802
        self, request: pb.GetRunRequest, context: Context[pb.GetRunRequest, pb.ProgramRun]
    ) -> pb.ProgramRun:
        return self._find("name", request.name).to_proto()

    async def Watch(  # noqa: N802
        self, request: pb.WatchRequest, context: Context[pb.WatchRequest, pb.ProgramEvent]
    ) -> AsyncIterator[pb.ProgramEvent]:
        run = self._find("run", request.run)
        v = Violations()
        if request.after_sequence < 0:
            v.add("after_sequence", f"{request.after_sequence} is negative: use 0 for every event")
        elif request.after_sequence > run.last_sequence:
            v.add(
                "after_sequence",
                f"{request.after_sequence} is beyond the run's last event ({run.last_sequence}): "
                "pass the last sequence you received",
            )
        v.raise_if_any()
        sent = request.after_sequence
        while True:
            for event in run.events_after(sent):
                yield event
                sent = event.sequence
            if sent < run.last_sequence:
                continue  # more arrived while we were sending
            if run.terminal:
                return
            if run.closed or self.shutdown.started:
                raise Unavailable(f"the machine is shutting down: resume with after_sequence={sent}")
            await run.changed()

    async def Signal(  # noqa: N802
        self, request: pb.SignalRequest, context: Context[pb.SignalRequest, pb.SignalResponse]
    ) -> pb.SignalResponse:
        v = Violations()
        run_id = _check_run_name(v, "run", request.run)
        _check_signal_event(v, request.event)
        attributes = check_struct(v, "attributes", request.attributes)
        v.raise_if_any()
        run = self._get(request.run, run_id)
        if run.terminal or run.execution is None:
            raise FailedPrecondition(
                f"run '{run.name}' has ended ({state_name(run.state)}): it takes no more signals"
            )
        handled = run.execution.program.context.handles(request.event)
        recorded = run.record(request.event, CALLER, attributes)
        task = run.execution.dispatch(ContextEvent(request.event, attributes, recorded.sequence))
        if task is not None:
            # Answer once the program handled it, so its effects (e.g.
            # `canceled`) are recorded before the caller hears back; wait()
            # neither raises the callback's errors nor cancels it.
            await asyncio.wait([task])
        # On a machine the level below is the program itself: an event is
        # passed on exactly when the program handles it.
        return pb.SignalResponse(sequence=recorded.sequence, forwarded=handled, handled=handled)

    async def shut_down(self) -> None:
        """Fail every run still going (its watchers see the end), then wake the rest."""
        executions = [run.execution for run in self.store.active() if run.execution is not None]
        await asyncio.gather(*(e.abort(SHUTDOWN_REASON) for e in executions))
        self.store.close()

    def _check_run(self, request: pb.RunRequest) -> tuple[str, Registration]:
        v = Violations()
        run_id = request.run_id or uuid.uuid4().hex
        if not RUN_ID_RE.fullmatch(run_id):
            v.add("run_id", f"'{request.run_id}' is not a valid run id: use {RUN_ID_RULE}, or leave it empty")
        names.check_resource_name(v, "recipe", request.recipe, "recipes")
        if request.machine and not MACHINE_RE.fullmatch(request.machine):
            example = "'partners/my-coffee-company/coffeeMachines/m1'"
            v.add(
                "machine", f"'{request.machine}' is not a machine name: use e.g. {example}, or leave it empty"
            )
        if not 0 <= request.volume_ml <= MAX_VOLUME_ML:
            v.add(
                "volume_ml",
                f"{request.volume_ml} is out of range: 1 to {MAX_VOLUME_ML} ml, or 0 for the default",
            )
        _check_program(v, request.program)
        check_struct(v, "program.parameters", request.program.parameters)
        self.handlers.check(v, request.api_type)
        v.raise_if_any()
        return run_id, self.handlers.resolve(request.api_type)

    def _find(self, field: str, name: str) -> RunRecord:
        v = Violations()
        run_id = _check_run_name(v, field, name)
        v.raise_if_any()
        return self._get(name, run_id)

    def _get(self, name: str, run_id: str | None) -> RunRecord:
        run = self.store.get(run_id or "")
        if run is None:
            raise NotFound(
                f"run '{name}' is not known to this machine: it never ran here, or it ended before "
                f"this machine's last {self.store.keep_finished} ended runs (or the machine restarted)"
            )
        return run


def _check_run_name(v: Violations, field: str, name: str) -> str | None:
    if not name:
        v.add(field, "is required: a run name like 'programRuns/my-run-1'")
        return None
    run_id = name.removeprefix(RUN_PREFIX)
    if not name.startswith(RUN_PREFIX) or not RUN_ID_RE.fullmatch(run_id):
        v.add(field, f"'{name}' is not a run name: use 'programRuns/' and a run id of {RUN_ID_RULE}")
        return None
    return run_id


def _check_signal_event(v: Violations, event: str) -> None:
    if not event:
        v.add("event", "is required: an event name in lower_snake_case, e.g. 'takeout_requested'")
    elif names.check_snake(v, "event", event, "event name") and event in CALLER_RESERVED:
        v.add(
            "event",
            f"'{event}' is recorded by the machine, not signalled by a caller "
            "(to ask for a cancellation, signal e.g. 'order_canceled')",
        )


def _check_program(v: Violations, program: pb.Program) -> None:
    if not program.program_id:
        v.add("program.program_id", "is required: the machine program to run, e.g. 'lungo' (from the recipe)")
    elif not PROGRAM_ID_RE.fullmatch(program.program_id):
        v.add(
            "program.program_id",
            f"'{program.program_id}' is not a program id: use 1 to 100 letters, digits, '-', '_' or '.'",
        )


def _normalised(request: pb.RunRequest, run_id: str, api_type: str) -> pb.RunRequest:
    """The request as the run keeps it: with its run id and the api type it was dispatched as."""
    stored = pb.RunRequest()
    stored.CopyFrom(request)
    stored.run_id = run_id
    stored.api_type = api_type
    return stored


def _replay(run: RunRecord, request: pb.RunRequest) -> pb.ProgramRun:
    """The same request again returns the run; a different one under its id is refused."""
    if _fingerprint(run.request) != _fingerprint(request):
        raise AlreadyExists(
            f"run '{run.name}' exists with a different request (recipe '{run.request.recipe}', "
            f"volume {run.request.volume_ml} ml, program '{run.request.program.program_id}'): "
            "choose a new run_id for a new run"
        )
    return run.to_proto()


def _fingerprint(request: pb.RunRequest) -> bytes:
    return request.SerializeToString(deterministic=True)


def _program(run: RunRecord, registration: Registration) -> Program:
    request = run.request
    return Program(
        run_id=run.run_id,
        name=run.name,
        machine=request.machine,
        recipe=request.recipe,
        volume_ml=request.volume_ml,
        program_id=request.program.program_id,
        parameters=from_struct(request.program.parameters),
        api_type=run.api_type,
        context=ProgramContext(run, registration.handles),
    )
