"""What a service of the mesh gets from the process that hosts it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from brewmesh.auth import Authenticator, KeyLookup
from brewmesh.call_observer import ClientObservers
from brewmesh.errors import Unavailable
from brewmesh.events import Bus
from brewmesh.metrics import Metrics
from brewmesh.pagination import PageTokens
from brewmesh.server import ServiceBinding, Shutdown
from brewmesh.settings import Settings
from brewmesh.storage import Migration, Store
from brewmesh.tls import Tls, peer_credentials
from brewmesh.tracing import NO_TRACING, Tracing


def observed_calls(metrics: Metrics, tracing: Tracing) -> ClientObservers:
    """How a process's own calls are counted (`metrics`) and traced (`tracing`)."""
    return ClientObservers(metrics, tuple(tracing.client_interceptors()))


@dataclass
class Runtime:
    """Shared parts of one process: storage, bus, auth, paging, shutdown."""

    data_dir: Path
    store: Store
    bus: Bus
    auth: Authenticator
    page_tokens: PageTokens
    shutdown: Shutdown
    peers: dict[str, str] = field(default_factory=dict)
    """Where each component of the mesh is served (`recipes` -> `host:port`)."""
    tls: Tls | None = None
    """The process's TLS: it serves with it, and calls its peers and TLS machines with it."""
    hosted: frozenset[str] = frozenset()
    """The components this process hosts (reached at its own port)."""
    settings: Settings = field(default_factory=Settings)
    metrics: Metrics = field(default_factory=Metrics)
    tracing: Tracing = NO_TRACING

    def client_observers(self) -> ClientObservers:
        """For every channel this process opens: its calls are counted and traced."""
        return observed_calls(self.metrics, self.tracing)

    def address_of(self, component: str) -> str:
        address = self.peers.get(component)
        if address is None:
            raise Unavailable(f"no address is configured for the {component} service")
        return address

    def credentials_for(self, component: str) -> grpc.ChannelCredentials | None:
        """How to call `component`: plaintext, or TLS as a peer (or as itself, if hosted here)."""
        return peer_credentials(self.tls, hosted_here=component in self.hosted)


@dataclass(frozen=True)
class Component:
    """A service area (recipes, partners, runner, bus) as the host sees it.

    `apis` are the services it is authoritative for; `bindings` builds its
    servicers; `start` runs once storage is migrated (seed data, background
    tasks); `stop` runs after the server stopped.
    """

    name: str
    apis: Sequence[str]
    migrations: Sequence[Migration]
    bindings: Callable[[Runtime], list[ServiceBinding]]
    start: Callable[[Runtime], Awaitable[None]] | None = None
    stop: Callable[[Runtime], Awaitable[None]] | None = None
    key_lookup: Callable[[Store], KeyLookup] | None = None
    """For the component that owns the key table: how keys are checked in its process."""
