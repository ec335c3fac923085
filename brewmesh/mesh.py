"""Composition root: builds a process hosting some components of the mesh.

The embedded mesh (`brewmesh up`) hosts all of them on one port with one
SQLite store and the event log in it. `brewmesh serve` hosts one component
per process; processes on one machine share the data directory (schema, API
keys and event log) and reach each other's services over gRPC.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from brewmesh import bus_service, event_log
from brewmesh.apis import ApiRegistry
from brewmesh.auth import Authenticator, KeyCheckInterceptor, KeyLookup, load_admin_key
from brewmesh.event_log import SqliteEventLog
from brewmesh.events import Bus
from brewmesh.pagination import PageTokens
from brewmesh.runtime import Component, Runtime
from brewmesh.secret_files import read_or_create
from brewmesh.server import Server, Shutdown
from brewmesh.storage import SqliteStore
from services.partners.component import key_lookup

DB_FILE = "brewmesh.db"
TOKEN_SECRET_FILE = "page-token.secret"
TOKEN_SECRET_ENV = "BREWMESH_TOKEN_SECRET"


def all_components() -> list[Component]:
    """A fresh instance of every component, partners first (they hold the keys)."""
    from services.partners.component import component as partners
    from services.recipes.component import component as recipes
    from services.runner.component import component as runner

    return [partners(), recipes(), runner()]


def _token_secret(data_dir: Path) -> bytes:
    from_env = os.environ.get(TOKEN_SECRET_ENV)
    if from_env:
        return from_env.encode()
    secret, _ = read_or_create(data_dir / TOKEN_SECRET_FILE, lambda: secrets.token_hex(32))
    return secret.encode()


@dataclass
class Mesh:
    """A running process of the mesh: its runtime, server and components."""

    runtime: Runtime
    server: Server
    components: Sequence[Component]
    admin_key: str
    admin_key_generated: bool

    @property
    def port(self) -> int:
        return self.server.port

    @classmethod
    async def start(
        cls,
        data_dir: Path,
        address: str = "127.0.0.1:0",
        components: Sequence[Component] | None = None,
        peers: dict[str, str] | None = None,
    ) -> Mesh:
        """Start a process of the mesh; `peers` says where components hosted elsewhere are."""
        components = list(all_components() if components is None else components)
        data_dir.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(data_dir / DB_FILE)
        # Every process applies the whole schema: a shared data directory may be
        # opened first by any of them.
        await store.migrate([*event_log.MIGRATIONS, *(m for c in all_components() for m in c.migrations)])
        registry = ApiRegistry()
        for component in components:
            for api in component.apis:
                registry.register(api)
        admin_key, generated = load_admin_key(data_dir)
        shutdown = Shutdown()
        runtime = Runtime(
            data_dir=data_dir,
            store=store,
            bus=Bus(SqliteEventLog(store), registry, service="+".join(c.name for c in components)),
            auth=Authenticator(admin_key, key_lookup(store)),
            page_tokens=PageTokens(_token_secret(data_dir)),
            shutdown=shutdown,
            peers=dict(peers or {}),
        )
        for component in components:
            if component.start:
                await component.start(runtime)
        bindings = [b for c in components for b in c.bindings(runtime)]
        bindings.append(bus_service.binding(runtime.bus, registry, runtime.auth, shutdown))
        server = Server(bindings, address, shutdown, interceptors=[KeyCheckInterceptor(runtime.auth)])
        mesh = cls(runtime, server, components, admin_key, generated)
        await server.start()
        for component in components:  # the components hosted here are reached here
            runtime.peers.setdefault(component.name, f"127.0.0.1:{server.port}")
        return mesh

    async def stop(self, grace: float = 5.0) -> None:
        await self.server.stop(grace)
        for component in self.components:
            if component.stop:
                await component.stop(self.runtime)
        await self.runtime.bus.close()
        await self.runtime.store.close()


__all__ = ["KeyLookup", "Mesh", "all_components"]
