"""The rules of a program run, one source for the mesh's runner and the machine SDK.

A partner's machine and the mesh's runner speak the same ProgramRunner
contract, so they must agree on what a run id is, which events change a
run's state, and how much a run may brew; both import them from here.
"""

from __future__ import annotations

from typing import Final

from brewmesh.names import ID_COMPONENT_RE, ID_COMPONENT_RULE
from brewmesh.runner.v1 import program_runner_pb2 as pb

RUN_ID_RE: Final = ID_COMPONENT_RE
"""A run id: a resource id component (AIP-122), as the caller chooses it."""
RUN_ID_RULE: Final = ID_COMPONENT_RULE
RUN_NAME_PREFIX: Final = "programRuns/"
MAX_VOLUME_ML: Final = 5000
"""The most a recipe or a run may pour, in millilitres."""

LIFECYCLE: Final[dict[str, pb.ProgramRun.State.ValueType]] = {
    "started": pb.ProgramRun.STATE_RUNNING,
    "finished": pb.ProgramRun.STATE_FINISHED,
    "canceled": pb.ProgramRun.STATE_CANCELED,
    "failed": pb.ProgramRun.STATE_FAILED,
}
"""The event names the proto gives a meaning, and the state each moves a run to."""
