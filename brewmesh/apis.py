"""APIs and their declared events, read from the protos (the Lightbus model).

An API is a gRPC service plus the events its proto declares with the
`(brewmesh.bus.v1.event)` option. A process registers the APIs it serves and
becomes authoritative for them: only then may it fire their events. Firing
validates the event before it leaves the process.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field

from google.api import field_behavior_pb2
from google.protobuf import descriptor, descriptor_pool, message

import brewmesh
from brewmesh.bus.v1 import events_pb2

TYPE_URL_PREFIX = "type.googleapis.com/"
"""What `Any.Pack` puts before a message's full name in its `type_url`."""


class EventRefused(Exception):
    """An event that may not be fired: not authoritative, undeclared or incomplete.

    A programming error in the firing service, never a client's: it surfaces
    as INTERNAL if it happens while serving a request.
    """


@dataclass(frozen=True)
class EventSpec:
    """One declared event of an API."""

    api: str
    type: str
    payload: str
    description: str

    @functools.cached_property
    def type_url(self) -> str:
        """The `type_url` of its payload packed in an `Any` (as `Any.Pack` writes it)."""
        return f"{TYPE_URL_PREFIX}{self.payload}"

    @functools.cached_property
    def required_fields(self) -> tuple[descriptor.FieldDescriptor, ...]:
        """Looked up once: every fire checks them."""
        payload = descriptor_pool.Default().FindMessageTypeByName(self.payload)
        return tuple(f for f in payload.fields if _is_required(f))


def _is_required(fd: descriptor.FieldDescriptor) -> bool:
    behaviours = fd.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.REQUIRED in behaviours


def _load_all_stubs() -> None:
    # Importing every generated module puts every API into the descriptor pool.
    for info in pkgutil.walk_packages(brewmesh.__path__, "brewmesh."):
        if info.name.endswith("_pb2"):
            importlib.import_module(info.name)


def declared_apis() -> dict[str, dict[str, EventSpec]]:
    """Every API of the mesh (service full name) with its declared events."""
    _load_all_stubs()
    pool = descriptor_pool.Default()
    apis: dict[str, dict[str, EventSpec]] = {}
    for file_name in _stub_files():
        file = pool.FindFileByName(file_name)
        for service in file.services_by_name.values():
            declarations = service.GetOptions().Extensions[events_pb2.event]
            apis[service.full_name] = {
                d.type: EventSpec(service.full_name, d.type, d.payload, d.description) for d in declarations
            }
    return apis


def _stub_files() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(brewmesh.__path__, "brewmesh."):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(info.name)
            names.append(module.DESCRIPTOR.name)
    return names


@dataclass
class ApiRegistry:
    """The APIs this process serves, and the checks that guard firing."""

    declared: dict[str, dict[str, EventSpec]] = field(default_factory=declared_apis)
    served: set[str] = field(default_factory=set)

    def register(self, api: str) -> None:
        if api not in self.declared:
            raise EventRefused(f"cannot register unknown API '{api}': no such service in the protos")
        self.served.add(api)

    def spec(self, api: str, event_type: str) -> EventSpec:
        """The declaration of an event, for listening (any API)."""
        events = self.declared.get(api)
        if events is None:
            raise KeyError(f"unknown API '{api}'")
        if event_type not in events:
            raise KeyError(f"API '{api}' declares no event '{event_type}' (it declares: {sorted(events)})")
        return events[event_type]

    def check_fire(self, api: str, event_type: str, payload: message.Message) -> EventSpec:
        """The event's spec if this process may fire it as given, else EventRefused."""
        if api not in self.served:
            raise EventRefused(
                f"this process is not authoritative for API '{api}' (it serves: {sorted(self.served)}); "
                "only the process that registers an API fires its events"
            )
        events = self.declared[api]
        spec = events.get(event_type)
        if spec is None:
            raise EventRefused(
                f"API '{api}' declares no event '{event_type}' (it declares: {sorted(events)})"
            )
        if payload.DESCRIPTOR.full_name != spec.payload:
            raise EventRefused(
                f"event '{event_type}' of '{api}' carries {spec.payload}, not {payload.DESCRIPTOR.full_name}"
            )
        missing = [f.name for f in spec.required_fields if not _is_set(payload, f)]
        if missing:
            raise EventRefused(f"event '{event_type}' of '{api}' lacks required fields: {', '.join(missing)}")
        return spec


def _is_set(msg: message.Message, fd: descriptor.FieldDescriptor) -> bool:
    value = getattr(msg, fd.name)
    if fd.is_repeated:
        return len(value) > 0
    if fd.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
        return msg.HasField(fd.name)
    return bool(value)
