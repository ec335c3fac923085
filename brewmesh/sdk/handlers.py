"""Which handler runs a program: one per machine API type."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from brewmesh.errors import FailedPrecondition, Violations
from brewmesh.sdk.execution import RunHandler
from brewmesh.sdk.program import check_event_name

API_TYPE_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
API_TYPE_RULE = "1 to 63 lowercase letters, digits, '-' or '_', starting with a letter, e.g. 'vending'"


@dataclass(frozen=True)
class Registration:
    """A program run handler for one API type, and the events it declares it handles.

    `handles` is what a partner lists as the machine's `handled_events` when
    registering it with the mesh (the runner forwards only those); None means
    not declared.
    """

    api_type: str
    handler: RunHandler
    handles: frozenset[str] | None


class Handlers:
    """The machine's handlers by API type."""

    def __init__(self) -> None:
        self._by_api_type: dict[str, Registration] = {}

    def register(
        self, api_type: str, handler: RunHandler, handles: Iterable[str] | None = None
    ) -> Registration:
        if not API_TYPE_RE.fullmatch(api_type):
            raise ValueError(f"'{api_type}' is not a valid api type: use {API_TYPE_RULE}")
        if api_type in self._by_api_type:
            raise ValueError(f"a program run handler for api type '{api_type}' is already registered")
        if not callable(handler):
            raise TypeError(f"the handler for '{api_type}' must be an async function taking a Program")
        declared = None if handles is None else frozenset(handles)
        for event in declared or ():
            check_event_name(event)
        registration = Registration(api_type, handler, declared)
        self._by_api_type[api_type] = registration
        return registration

    def __iter__(self) -> Iterator[Registration]:
        return iter(self._by_api_type.values())

    def __len__(self) -> int:
        return len(self._by_api_type)

    def check(self, v: Violations, api_type: str) -> None:
        """Field problems with a request's `api_type` (format; empty when ambiguous)."""
        if not api_type:
            if len(self._by_api_type) > 1:
                v.add("api_type", f"is required: this machine serves several api types: {self._names()}")
        elif not API_TYPE_RE.fullmatch(api_type):
            v.add("api_type", f"'{api_type}' is not a valid api type: use {API_TYPE_RULE}")

    def resolve(self, api_type: str) -> Registration:
        """The handler for a checked `api_type`; FAILED_PRECONDITION if this machine has none."""
        if not self._by_api_type:
            raise FailedPrecondition(
                "this machine has no program run handler registered: it cannot run programs"
            )
        if not api_type and len(self._by_api_type) == 1:
            return next(iter(self._by_api_type.values()))
        found = self._by_api_type.get(api_type)
        if found is None:
            raise FailedPrecondition(
                f"this machine does not run programs of api type '{api_type}': it serves {self._names()}; "
                "check the api_type the machine is registered with"
            )
        return found

    def _names(self) -> str:
        return ", ".join(f"'{name}'" for name in sorted(self._by_api_type))
