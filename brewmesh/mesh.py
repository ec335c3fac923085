"""Composition root: builds a process hosting some components of the mesh.

The embedded mesh (`brewmesh up`) hosts all of them on one port with one
store (SQLite in the data directory by default) and the embedded event log
in it. `brewmesh serve` hosts one component per process: each with a store
of its own (or its own tables in a shared PostgreSQL), events on Redis, and
the other services reached over gRPC. Only this module knows the services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brewmesh import bus_service, event_backend
from brewmesh.apis import ApiRegistry
from brewmesh.auth import ADMIN_KEY_FILE, Authenticator, KeyCheckInterceptor, KeyLookup, load_admin_key
from brewmesh.backends import DB_FILE, open_store, without_password
from brewmesh.call_observer import CallObserverInterceptor, ClientObservers
from brewmesh.cpu_affinity import confine, parse_cpus
from brewmesh.event_backend import EventBackend, GroupState
from brewmesh.events import Bus, BusSettings
from brewmesh.key_rotation import forget_rotated_keys
from brewmesh.metrics import ListenerGroupCollector, Metrics, MetricsEndpoint
from brewmesh.pagination import PageTokens
from brewmesh.remote_keys import RemoteKeys
from brewmesh.runtime import Component, Runtime, observed_calls
from brewmesh.secret_files import read_or_create
from brewmesh.server import Server, Shutdown, check_free
from brewmesh.settings import Settings
from brewmesh.startup import Setting, StartError, blame
from brewmesh.storage import Store
from brewmesh.tls import Tls, check_plaintext, load_tls, peer_credentials
from brewmesh.tracing import NO_TRACING, Tracing

log = logging.getLogger(__name__)

TOKEN_SECRET_FILE = "page-token.secret"


def all_components() -> list[Component]:
    """A fresh instance of every component, partners first (they hold the keys)."""
    from brewmesh.services.partners.component import component as partners
    from brewmesh.services.recipes.component import component as recipes
    from brewmesh.services.runner.component import component as runner

    return [partners(), recipes(), runner()]


def _token_secret(data_dir: Path, given: str | None) -> bytes:
    if given:
        return given.encode()
    secret, _ = read_or_create(data_dir / TOKEN_SECRET_FILE, lambda: secrets.token_hex(32))
    return secret.encode()


@dataclass(frozen=True)
class Backends:
    """Where state and events live: URLs, or None for the embedded defaults."""

    store_url: str | None = None
    bus_url: str | None = None
    bus: BusSettings = field(default_factory=BusSettings)

    @classmethod
    def of(cls, settings: Settings) -> Backends:
        tuning = BusSettings(
            settings.event_visibility_seconds, settings.event_max_deliveries, settings.event_retention
        )
        return cls(settings.store, settings.bus, tuning)


async def open_bus(backends: Backends, store: Store, registry: ApiRegistry) -> EventBackend:
    """The embedded log in `store`, or Redis Streams at `backends.bus_url`."""
    if not backends.bus_url:
        from brewmesh.backends.embedded_bus import EmbeddedEventBackend

        return EmbeddedEventBackend(store, backends.bus.retention)
    from brewmesh.backends.redis_bus import RedisEventBackend

    redis_bus = RedisEventBackend(backends.bus_url, store, sorted(registry.served), backends.bus.retention)
    await redis_bus.start()
    return redis_bus


@dataclass
class Mesh:
    """A running process of the mesh: its runtime, server and components."""

    runtime: Runtime
    server: Server
    components: Sequence[Component]
    admin_key: str
    admin_key_generated: bool
    remote_keys: RemoteKeys | None = None
    metrics_endpoint: MetricsEndpoint | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @classmethod
    async def start(
        cls,
        settings: Settings | None = None,
        components: Sequence[Component] | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> Mesh:
        """Start a process of the mesh hosting `components` (default: all), as `settings` say.

        It serves TLS if the settings give a certificate (and calls its peers
        with it); plaintext beyond loopback only if `insecure`. A start that
        fails raises StartError naming the setting at fault and undoes what it
        did: what it opened is closed, and an admin key it generated is not
        left behind, never shown.
        """
        settings = settings or Settings()
        check_free(settings.host, settings.port)  # the cheap checks before anything is touched
        tls = load_tls(settings.tls_cert, settings.tls_key, settings.tls_ca)
        check_plaintext(settings.host, tls, settings.insecure)
        if cpus := parse_cpus(settings.cpus or ""):
            confine(cpus)  # before the server, the store and the bus start their threads
        async with contextlib.AsyncExitStack() as undo:
            chosen = list(all_components() if components is None else components)
            mesh = await cls._start(undo, settings, chosen, tls, tracing)
            undo.pop_all()  # started: nothing to undo
        return mesh

    @classmethod
    async def _start(
        cls,
        undo: contextlib.AsyncExitStack,
        settings: Settings,
        components: list[Component],
        tls: Tls | None,
        tracing: Tracing,
    ) -> Mesh:
        data_dir, backends, peers = settings.data_dir, Backends.of(settings), settings.peers
        with blame(Setting.DATA_DIR, f"cannot use {data_dir} as the data directory"):
            data_dir.mkdir(parents=True, exist_ok=True)
        store = open_store(backends.store_url, data_dir)
        undo.push_async_callback(store.close)
        store_setting = Setting.STORE if backends.store_url else Setting.DATA_DIR
        with blame(store_setting, f"cannot use the store {store.description}"):
            # Each process applies the schema of what it hosts: a service owns its tables.
            await store.migrate([*event_backend.MIGRATIONS, *(m for c in components for m in c.migrations)])
        registry = ApiRegistry()
        for component in components:
            for api in component.apis:
                registry.register(api)
        owns_keys = any(c.key_lookup for c in components)
        with blame(Setting.DATA_DIR, f"cannot keep secrets in {data_dir}"):
            admin_key, generated = load_admin_key(data_dir, owns_keys, settings.admin_key)
            if generated:  # shown only once the mesh serves: a failed start must not keep it
                undo.callback((data_dir / ADMIN_KEY_FILE).unlink, missing_ok=True)
            token_secret = _token_secret(data_dir, settings.token_secret)
        metrics = Metrics()
        lookup, remote = _key_lookup(components, store, peers, tls, observed_calls(metrics, tracing))
        if remote:
            undo.push_async_callback(remote.close)
        bus_url = without_password(backends.bus_url or "")
        with blame(Setting.BUS, f"cannot use the event bus {bus_url}"):
            backend = await open_bus(backends, store, registry)
        service = "+".join(c.name for c in components)
        shutdown = Shutdown()
        runtime = Runtime(
            data_dir=data_dir,
            store=store,
            bus=Bus(backend, store, registry, service, backends.bus, metrics),
            auth=Authenticator(admin_key, lookup),
            page_tokens=PageTokens(token_secret),
            shutdown=shutdown,
            peers=dict(peers),
            tls=tls,
            hosted=frozenset(c.name for c in components),
            settings=settings,
            metrics=metrics,
            tracing=tracing,
        )
        undo.push_async_callback(runtime.bus.close)
        forget_rotated_keys(runtime.bus, runtime.auth)
        for component in components:
            if component.start:
                await component.start(runtime)
            if component.stop:
                undo.push_async_callback(component.stop, runtime)
        bindings = [b for c in components for b in c.bindings(runtime)]
        bindings.append(
            bus_service.binding(runtime.bus, registry, runtime.auth, shutdown, runtime.page_tokens)
        )
        interceptors = [
            # Outermost: every call is counted and logged, the refused ones too.
            CallObserverInterceptor(metrics, runtime.auth.caller_name),
            *tracing.server_interceptors(),
            KeyCheckInterceptor(runtime.auth),
        ]
        server = Server(
            bindings,
            settings.address,
            shutdown,
            interceptors=interceptors,
            tls=tls,
            insecure=settings.insecure,
        )
        endpoint = _metrics_endpoint(settings, runtime, registry)
        if endpoint:
            undo.callback(endpoint.stop)
        mesh = cls(runtime, server, components, admin_key, generated, remote, endpoint)
        await server.start()
        undo.push_async_callback(server.stop, 0)
        for component in components:  # the components hosted here are reached here
            runtime.peers.setdefault(component.name, f"127.0.0.1:{server.port}")
        if tls and len(components) > 1:
            await _check_own_certificate(server.port, tls)
        return mesh

    async def stop(self, grace: float = 5.0) -> None:
        """Drain calls for `grace` seconds, then stop every part, each within a bound.

        A stop must end even if a part is stuck (say, a call to a machine
        that never answers) or fails: a stuck step is logged with the await
        chains of the tasks still running, a failed one with its error, and
        the stop goes on.
        """
        await bounded_step("server", self.server.stop(grace), grace + STEP_SECONDS)
        for component in self.components:
            if component.stop:
                await bounded_step(component.name, component.stop(self.runtime), STEP_SECONDS)
        await bounded_step("event bus", self.runtime.bus.close(), STEP_SECONDS)
        if self.remote_keys:
            await bounded_step("key checks", self.remote_keys.close(), STEP_SECONDS)
        if self.metrics_endpoint:
            await asyncio.to_thread(self.metrics_endpoint.stop)
        await self.runtime.store.close()


STEP_SECONDS = 5.0
SELF_CHECK_SECONDS = 5.0


def _metrics_endpoint(settings: Settings, runtime: Runtime, registry: ApiRegistry) -> MetricsEndpoint | None:
    """Prometheus metrics on `metrics_port`, listener groups read from the bus at each scrape."""
    if settings.metrics_port is None:
        return None

    async def group_states() -> list[GroupState]:
        return [state for api in sorted(registry.declared) for state in await runtime.bus.backend.groups(api)]

    runtime.metrics.registry.register(ListenerGroupCollector(asyncio.get_running_loop(), group_states))
    with blame(Setting.METRICS_PORT, f"cannot serve metrics on {settings.host}:{settings.metrics_port}"):
        return MetricsEndpoint(runtime.metrics, settings.host, settings.metrics_port)


async def _check_own_certificate(port: int, tls: Tls) -> None:
    """The services hosted here call each other at 127.0.0.1: make sure TLS holds there."""
    address = f"127.0.0.1:{port}"
    async with grpc.aio.secure_channel(address, tls.own_credentials()) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=SELF_CHECK_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            raise StartError(
                Setting.TLS_CERT,
                f"the services of this process call each other at {address}, and TLS fails there"
                f" ({error.code().name}): the certificate needs the subject alternative name IP:127.0.0.1",
            ) from error


async def bounded_step(name: str, step: Awaitable[None], seconds: float) -> bool:
    """Run one stop step for at most `seconds`; False (and a logged report) if it failed or stalled.

    Either way the stop goes on, so the steps after it (closing the store) still run.
    """
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if done:
        if task.exception() is None:
            return True
        log.error("stopping %s failed; going on with the stop", name, exc_info=task.exception())
        return False
    stacks = "\n".join(_describe(t) for t in asyncio.all_tasks() if not t.done())
    log.error("stopping %s took over %.1f s; abandoning it. Running tasks:\n%s", name, seconds, stacks)
    task.cancel()
    return False


def _describe(task: asyncio.Task[Any]) -> str:
    """The task's chain of awaits, outermost first.

    Not Task.print_stack: it shows only the outermost frame of a suspended
    coroutine, and fails on grpc's compiled (Cython) frames, which have no line.
    """
    lines = [task.get_name()]
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            lines.append(f"  awaiting {type(awaited).__qualname__}")
            break
        lines.append(f"  {frame.f_code.co_qualname} ({frame.f_code.co_filename}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return "\n".join(lines)


def _key_lookup(
    components: Sequence[Component],
    store: Store,
    peers: dict[str, str],
    tls: Tls | None,
    observers: ClientObservers,
) -> tuple[KeyLookup, RemoteKeys | None]:
    """Keys are checked by the component that owns the key table: here, or over gRPC."""
    for component in components:
        if component.key_lookup:
            return component.key_lookup(store), None
    address = peers.get("partners")
    if address is None:
        raise StartError(
            Setting.PEERS, "a process without the partners service needs the address of the partners service"
        )
    remote = RemoteKeys(address, peer_credentials(tls), observers)
    return remote, remote


__all__ = ["DB_FILE", "Backends", "Mesh", "all_components"]
