"""Translation between runner protos and the program-run domain."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from brewmesh.runner.v1 import program_runner_pb2 as pb
from brewmesh.services.runner.program_runs import Origin, Program, ProgramRun, RunEvent, run_name
from brewmesh.struct_values import to_struct


def _time(moment: Any) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def program_proto(program: Program) -> pb.Program:
    return pb.Program(program_id=program.program_id, parameters=to_struct(program.parameters))


def run_proto(run: ProgramRun) -> pb.ProgramRun:
    return pb.ProgramRun(
        name=run.name,
        machine=run.request.machine,
        recipe=run.request.recipe,
        volume_ml=run.request.volume_ml,
        program=program_proto(run.program),
        state=pb.ProgramRun.State.ValueType(int(run.state)),
        failure_reason=run.failure_reason,
        context=to_struct(run.context),
        last_sequence=run.last_sequence,
        create_time=_time(run.create_time),
        update_time=_time(run.update_time),
        api_type=run.target.api_type,
    )


def event_proto(event: RunEvent) -> pb.ProgramEvent:
    return pb.ProgramEvent(
        run=run_name(event.run_id),
        sequence=event.sequence,
        event=event.event,
        attributes=to_struct(event.attributes),
        context_changes=to_struct(event.context_changes),
        origin=pb.Origin.ValueType(int(event.origin)),
        state=pb.ProgramRun.State.ValueType(int(event.state)),
        time=_time(event.time),
    )


def machine_origin(origin: int) -> Origin:
    return Origin(origin) if origin in Origin._value2member_map_ else Origin.UNSPECIFIED
