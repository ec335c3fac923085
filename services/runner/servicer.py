"""ProgramRunner as the mesh serves it: a proxy to partner machines."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TypeAlias, TypeVar

import grpc

from brewmesh.auth import Principal, bearer_key, check_namespace_access
from brewmesh.errors import AlreadyExists, FailedPrecondition, NotFound, Violations, quote
from brewmesh.names import check_resource_name
from brewmesh.pagination import paging_query, read_page
from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.runner.v1 import program_runner_pb2_grpc
from brewmesh.runtime import Runtime
from brewmesh.services.runner import run_store
from brewmesh.services.runner.follower import MACHINE_CALL_SECONDS, Follower, machine_of
from brewmesh.services.runner.machine_link import MachineLink
from brewmesh.services.runner.program_runs import (
    LIFECYCLE,
    MACHINE_NAME_PREFIX,
    RUN_NAME_PREFIX,
    MachineTarget,
    Origin,
    Program,
    ProgramRun,
    RunKey,
    RunRef,
    RunRequest,
    State,
    check_event_name,
    check_run_id,
    check_volume,
    machine_namespace,
    parse_run_name,
)
from brewmesh.services.runner.recorder import RunRecorder
from brewmesh.services.runner.resolution import Resolver
from brewmesh.services.runner.run_feed import RunFeed
from brewmesh.services.runner.run_protos import run_proto
from brewmesh.storage import Conflict, Tx
from brewmesh.struct_values import check_struct

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Context: TypeAlias = grpc.aio.ServicerContext[_Req, _Resp]
"""A servicer method's context: `Context[Request, Response]`."""


class ProgramRunnerServicer(program_runner_pb2_grpc.ProgramRunnerServicer):
    def __init__(
        self,
        rt: Runtime,
        resolver: Resolver,
        link: MachineLink,
        recorder: RunRecorder,
        feed: RunFeed,
        follower: Follower,
    ) -> None:
        self.rt = rt
        self.resolver = resolver
        self.link = link
        self.recorder = recorder
        self.feed = feed
        self.follower = follower

    async def Run(  # noqa: N802
        self, request: pb.RunRequest, context: Context[pb.RunRequest, pb.ProgramRun]
    ) -> pb.ProgramRun:
        principal = await self.rt.auth.require_any(context)
        asked = _check_run_request(request)
        check_namespace_access(principal, machine_namespace(asked.machine))
        existing = await self.rt.store.lookup(lambda tx: run_store.find_run(tx, asked.key))
        if existing is not None:
            return run_proto(_same_run(existing, asked))
        budget = _budget(context)
        target, (program, default_volume) = await self.resolver.run_inputs(
            asked.machine, asked.recipe, budget, bearer_key(context.invocation_metadata() or ())
        )
        run = await self._create(asked, program, target, asked.volume_ml or default_volume)
        if run.state == State.PENDING:
            run = await self._start_on_machine(run, _budget(context))
        return run_proto(run)

    async def _create(
        self, asked: RunRequest, program: Program, target: MachineTarget, volume: int
    ) -> ProgramRun:
        now = datetime.now(UTC)
        request = RunRequest(asked.run_id, asked.machine, asked.recipe, volume)
        run = ProgramRun(request, program, target, State.PENDING, "", {}, 0, 0, now, now)

        def create(tx: Tx) -> ProgramRun:
            run_store.insert_run(tx, run)
            tx.after_commit(lambda: self.feed.created(asked.key))
            tx.after_commit(self.rt.metrics.runs_started.inc)
            attributes = {"machine": asked.machine, "recipe": asked.recipe, "volume_ml": volume}
            recorded = self.recorder.stage(tx, run, "run_requested", Origin.RUNNER, attributes)
            assert recorded is not None
            return recorded[0]

        try:
            return await self.rt.store.quick_write(create)
        except Conflict:  # the same run id, created concurrently
            existing = await self.rt.store.lookup(lambda tx: run_store.get_run(tx, asked.key))
            return _same_run(existing, asked)

    async def _start_on_machine(self, run: ProgramRun, budget: float) -> ProgramRun:
        try:
            await self.link.run(run, budget)
        except grpc.aio.AioRpcError as error:
            problem = f"{error.code().name}: {error.details()}"
            reason = f"{machine_of(run)} did not start the run ({problem})"
            failed = await self.recorder.fail(run.key, reason)
            return failed[0] if failed else run
        current = await self.rt.store.lookup(lambda tx: run_store.get_run(tx, run.key))
        self.follower.follow(run.key, started=True, known=current)
        return current

    async def GetRun(  # noqa: N802
        self, request: pb.GetRunRequest, context: Context[pb.GetRunRequest, pb.ProgramRun]
    ) -> pb.ProgramRun:
        run = await self._visible_run(context, "name", request.name)
        return run_proto(run)

    async def ListRuns(  # noqa: N802
        self, request: pb.ListRunsRequest, context: Context[pb.ListRunsRequest, pb.ListRunsResponse]
    ) -> pb.ListRunsResponse:
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        if request.machine:
            _check_machine(v, request.machine)
        state = _listed_state(v, request.state)
        query = paging_query("ListRuns", machine=request.machine, state=str(request.state))
        # The same rule as every run RPC: a partner reads its own runs, the admin every run.
        namespace = None if principal.is_admin else str(principal.namespace)
        shown, token = await read_page(
            v, self.rt.store, self.rt.page_tokens, request, query,
            lambda tx, after, limit: run_store.list_runs(
                tx, namespace, request.machine, state, _page_key(after), limit
            ),
            lambda run: str(run.key),
        )  # fmt: skip
        return pb.ListRunsResponse(program_runs=[run_proto(run) for run in shown], next_page_token=token)

    async def Watch(  # noqa: N802
        self, request: pb.WatchRequest, context: Context[pb.WatchRequest, pb.ProgramEvent]
    ) -> AsyncIterator[pb.ProgramEvent]:
        if request.after_sequence < 0:
            v = Violations()
            v.add(
                "after_sequence",
                f"is {request.after_sequence}: use 0 for every event, or the last sequence seen",
            )
            v.raise_if_any()
        run = await self._visible_run(context, "run", request.run)
        if request.after_sequence > run.last_sequence:
            v = Violations()
            v.add(
                "after_sequence",
                f"is {request.after_sequence}, beyond the run's last event ({run.last_sequence}): "
                "pass the last sequence you received",
            )
            v.raise_if_any()
        async for event in self.feed.watch(run.key, request.after_sequence):
            yield event
        if self.rt.shutdown.started:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the runner is shutting down: resume with after_sequence"
            )

    async def Signal(  # noqa: N802
        self, request: pb.SignalRequest, context: Context[pb.SignalRequest, pb.SignalResponse]
    ) -> pb.SignalResponse:
        v = Violations()
        check_event_name(v, "event", request.event)
        if request.event in {*LIFECYCLE, "context_set"}:
            v.add(
                "event",
                f"{quote(request.event)} is recorded by the machine, not signalled by a caller "
                "(to ask for a cancellation, signal e.g. 'order_canceled')",
            )
        attributes = check_struct(v, "attributes", request.attributes)
        v.raise_if_any()
        run = await self._visible_run(context, "run", request.run)
        recorded = await self.recorder.record(run.key, request.event, Origin.CALLER, attributes)
        if recorded is None:
            raise FailedPrecondition(f"run '{run.name}' is {run.state.name.lower()}: it takes no more events")
        sequence = recorded[1].sequence
        if request.event not in run.target.handled_events:
            return pb.SignalResponse(sequence=sequence, forwarded=False, handled=False)
        try:
            reply = await self.link.signal(run, request.event, attributes, _budget(context))
        except grpc.aio.AioRpcError as error:
            note = {"event": request.event, "reason": f"{error.code().name}: {error.details()}"}
            await self.recorder.record(run.key, "signal_not_delivered", Origin.RUNNER, note)
            return pb.SignalResponse(sequence=sequence, forwarded=False, handled=False)
        return pb.SignalResponse(sequence=sequence, forwarded=True, handled=reply.handled)

    async def _visible_run(self, context: Context[_Req, _Resp], field_path: str, name: str) -> ProgramRun:
        """The run `name` names for the caller of GetRun, Watch or Signal (see `_find_visible`)."""
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        ref = parse_run_name(v, field_path, name)
        v.raise_if_any()
        assert ref is not None
        run = await self.rt.store.lookup(lambda tx: _find_visible(tx, principal, ref))
        if run is None:
            raise NotFound(f"run {quote(name)} does not exist among the runs {principal.describe()} may read")
        return run


def _listed_state(v: Violations, state: int) -> State | None:
    if state == State.UNSPECIFIED:
        return None
    if state not in State._value2member_map_:
        v.add("state", f"{state} is not a run state: use one of STATE_PENDING .. STATE_FAILED")
        return None
    return State(state)


def _page_key(after: str) -> RunKey | None:
    namespace, sep, run_id = after.partition(":")
    return RunKey(namespace, run_id) if sep else None


def _find_visible(tx: Tx, principal: Principal, ref: RunRef) -> ProgramRun | None:
    """The one rule that keeps runs private to their partner.

    Run ids are unique per namespace (`RunKey`), and a partner's names resolve among its own
    runs only: another partner's run is, to it, a run that does not exist, with the same
    answer whether or not it does (and `Run` with that id creates the caller's own run). The
    admin reads any run; an id that several namespaces use must then be qualified.
    """
    if ref.namespace is not None:
        return (
            run_store.find_run(tx, RunKey(ref.namespace, ref.run_id))
            if principal.may_read(ref.namespace)
            else None
        )
    if not principal.is_admin:
        return run_store.find_run(tx, RunKey(str(principal.namespace), ref.run_id))
    runs = run_store.runs_with_id(tx, ref.run_id, 2)
    if len(runs) > 1:
        raise FailedPrecondition(
            f"run id {quote(ref.run_id)} is used in more than one namespace: name the run with its"
            f" namespace, e.g. '{RUN_NAME_PREFIX}{runs[0].key}'"
        )
    return runs[0] if runs else None


def _check_run_request(request: pb.RunRequest) -> RunRequest:
    v = Violations()
    check_run_id(v, request.run_id)
    _check_machine(v, request.machine)
    check_resource_name(v, "recipe", request.recipe, "recipes")
    check_volume(v, request.volume_ml)
    v.raise_if_any()
    return RunRequest(request.run_id or uuid.uuid4().hex, request.machine, request.recipe, request.volume_ml)


def _check_machine(v: Violations, machine: str) -> None:
    if not machine.startswith(MACHINE_NAME_PREFIX) or "/coffeeMachines/" not in machine:
        v.add(
            "machine",
            f"{quote(machine)} is not a machine: use e.g. 'partners/my-coffee-company/coffeeMachines/m1'",
        )


def _same_run(existing: ProgramRun, asked: RunRequest) -> ProgramRun:
    same = (existing.request.machine, existing.request.recipe) == (asked.machine, asked.recipe) and (
        asked.volume_ml in (0, existing.request.volume_ml)
    )
    if not same:
        raise AlreadyExists(
            f"run '{existing.name}' already exists for another machine, recipe or volume: "
            "choose another run_id"
        )
    return existing


def _budget(context: Context[_Req, _Resp]) -> float:
    """Time for one downstream call: what is left of the caller's deadline, at most 5 s."""
    remaining = context.time_remaining()
    if remaining is None:
        return MACHINE_CALL_SECONDS
    return max(0.05, min(MACHINE_CALL_SECONDS, remaining - 0.1))
