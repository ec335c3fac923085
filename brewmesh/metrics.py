"""Prometheus metrics of one mesh process, and the endpoint that serves them.

Each process (or each in-process mesh, in tests) has its own registry, so two
meshes in one interpreter never mix their figures. RPC metrics follow the
names of go-grpc-prometheus, which dashboards already know; brewmesh's own
are prefixed `brewmesh_`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from brewmesh.event_backend import GroupState

log = logging.getLogger(__name__)

# Latency buckets from 0.5 ms to 10 s: brewmesh calls are mostly single-digit milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")


class Increment(Protocol):
    """Adds `amount` (1 unless given) to one counter's series."""

    def __call__(self, amount: float = 1) -> None: ...


@dataclass
class Metrics:
    """Every instrument of a process, on a registry of its own."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.server_handled = Counter(
            "grpc_server_handled_total", "RPCs completed on the server, by status code.",
            [*RPC_LABELS, "grpc_code"], registry=r,
        )  # fmt: skip
        self.server_latency = Histogram(
            "grpc_server_handling_seconds", "Time from an RPC's start to its status, on the server.",
            RPC_LABELS, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.server_open_streams = Gauge(
            "grpc_server_open_streams", "Server-streaming RPCs in progress.", RPC_LABELS, registry=r
        )
        self.client_handled = Counter(
            "grpc_client_handled_total", "RPCs this process made that completed, by status code.",
            [*RPC_LABELS, "grpc_code"], registry=r,
        )  # fmt: skip
        self.client_latency = Histogram(
            "grpc_client_handling_seconds", "Time from an outgoing RPC's start to its status.",
            RPC_LABELS, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.events_fired = Counter(
            "brewmesh_events_fired_total", "Events committed by this process.", ["api", "type"], registry=r
        )
        self.events_delivered = Counter(
            "brewmesh_events_delivered_total", "Events handed to a listener group's member.",
            ["api", "group"], registry=r,
        )  # fmt: skip
        self.events_dead_lettered = Counter(
            "brewmesh_events_dead_lettered_total", "Events a listener group gave up on (dead letters).",
            ["api", "group"], registry=r,
        )  # fmt: skip
        self.runs_started = Counter(
            "brewmesh_runs_started_total", "Program runs started on a machine.", registry=r
        )
        self.runs_ended = Counter(
            "brewmesh_runs_ended_total", "Program runs that reached a final state, by state.",
            ["state"], registry=r,
        )  # fmt: skip
        self.machine_up = Gauge(
            "brewmesh_machine_up", "1 if the machine's last health check answered SERVING, else 0.",
            ["machine"], registry=r,
        )  # fmt: skip
        self._increments: dict[tuple[Counter, tuple[str, ...]], Increment] = {}

    def increment(self, counter: Counter, *labels: str) -> Increment:
        """`counter`'s increment for `labels`, looked up once: for what counts every event.

        labels() takes a lock and builds a key on every call, which costs more than the
        increment itself.
        """
        increment = self._increments.get((counter, labels))
        if increment is None:
            increment = self._increments[(counter, labels)] = counter.labels(*labels).inc
        return increment


GROUP_LABELS = ("api", "namespace", "listener")
SCRAPE_TIMEOUT_SECONDS = 5.0
GroupStates = Callable[[], Awaitable[list[GroupState]]]
"""Every listener group's state, read from the bus."""


class ListenerGroupCollector(Collector):
    """Each listener group's lag, pending and dead letters, read from the bus at scrape time.

    Scrapes arrive on the endpoint's thread; the bus lives on the event loop,
    so the read is handed to the loop and awaited with a bound. Nothing is
    read between scrapes.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, states: Callable[[], Awaitable[list[GroupState]]]
    ) -> None:
        self._loop = loop
        self._states = states

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registration asks for the names; without describe it would collect, on the loop's thread.
        yield from _group_families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag, age, pending, dead = families = _group_families()
        now_ns = time.time_ns()
        for state in self._read():
            labels = [state.group.api, state.group.namespace, state.group.listener]
            lag.add_metric(labels, state.lag_events)
            waited = 0 if state.oldest_waiting_ns is None else max(0, now_ns - state.oldest_waiting_ns)
            age.add_metric(labels, waited / 1e9)
            pending.add_metric(labels, state.pending)
            dead.add_metric(labels, state.dead_letters)
        yield from families

    def _read(self) -> list[GroupState]:
        future = asyncio.run_coroutine_threadsafe(_awaited(self._states), self._loop)
        try:
            return future.result(SCRAPE_TIMEOUT_SECONDS)
        except Exception as error:  # a scrape must answer: without the groups, then
            future.cancel()
            log.warning("listener group metrics are missing from this scrape: %s", error)
            return []


def _group_families() -> tuple[GaugeMetricFamily, ...]:
    lag = GaugeMetricFamily(
        "brewmesh_listener_lag_events", "Events waiting for the group.", labels=GROUP_LABELS
    )
    age = GaugeMetricFamily(
        "brewmesh_listener_lag_seconds", "How long the group's oldest waiting event has waited.",
        labels=GROUP_LABELS,
    )  # fmt: skip
    pending = GaugeMetricFamily(
        "brewmesh_listener_pending_events", "Events handed to a member, not yet acknowledged.",
        labels=GROUP_LABELS,
    )  # fmt: skip
    dead = GaugeMetricFamily(
        "brewmesh_listener_dead_letters", "Events the group gave up on.", labels=GROUP_LABELS
    )
    return lag, age, pending, dead


async def _awaited(states: GroupStates) -> list[GroupState]:
    return await states()


def rpc_labels(full_method: str, kind: str) -> tuple[str, str, str]:
    """`/pkg.Service/Method` as (service, method, kind) labels."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method, kind


class MetricsEndpoint:
    """`GET /metrics` (Prometheus text) on its own thread, as prometheus-client serves it."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        self.port: int = self._server.server_port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
