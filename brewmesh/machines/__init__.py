"""Reference machines on the partner SDK: vending, café and legacy.

Each is a few lines on `brewmesh.sdk` and handles only the events it uses;
`brewmesh machine --kind KIND` serves one as its own process. A program's
`brew_seconds` parameter overrides the machine's brew time for one run.
"""

from brewmesh.machines import cafe, legacy, vending
from brewmesh.machines.common import DEFAULT_BREW_SECONDS, ReferenceMachine

REFERENCE_MACHINES: dict[str, ReferenceMachine] = {
    m.api_type: m for m in (vending.REFERENCE, cafe.REFERENCE, legacy.REFERENCE)
}

__all__ = ["DEFAULT_BREW_SECONDS", "REFERENCE_MACHINES", "ReferenceMachine"]
