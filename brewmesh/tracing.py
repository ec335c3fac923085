"""OpenTelemetry traces: a span per RPC served and made, and trace context carried in events.

A call's trace context travels in gRPC metadata (the instrumentation's
interceptors) and in each event it fires (`Event.traceparent`), so one run
is one trace: the caller's Run, the runner's look-ups at partners and
recipes, the machine's Run and the listeners of the run's events.

Spans are exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the
`otlp` extra installs the exporter); otherwise a process adds no interceptor
and costs nothing. Set it on every process of a mesh: a trace passes only
through processes that trace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from opentelemetry import context, trace
from opentelemetry.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = "traceparent"


def current_traceparent() -> str:
    """The W3C traceparent of the current span ("" outside a trace)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(_TRACEPARENT, "")


@contextmanager
def joined(traceparent: str) -> Iterator[None]:
    """Run the block in the trace `traceparent` names (as is, if it names none)."""
    if not traceparent:
        yield
        return
    token = context.attach(_PROPAGATOR.extract({_TRACEPARENT: traceparent}))
    try:
        yield
    finally:
        context.detach(token)


@dataclass(frozen=True)
class Tracing:
    """Where a process's spans go (nowhere: None): the interceptors of its server and channels."""

    provider: TracerProvider | None = None

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        if self.provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return [aio_server_interceptor(tracer_provider=self.provider)]  # type: ignore[no-untyped-call]

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        if self.provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        return list(aio_client_interceptors(tracer_provider=self.provider))  # type: ignore[no-untyped-call]

    def tracer(self, name: str) -> trace.Tracer:
        return (self.provider or trace.NoOpTracerProvider()).get_tracer(name)


NO_TRACING = Tracing()


def from_environment(service: str, environ: Mapping[str, str]) -> Tracing:
    """OTLP export when the environment names an endpoint; else no tracing."""
    if not environ.get(OTLP_ENDPOINT_ENV):
        return NO_TRACING
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "%s is set but the OTLP exporter is not installed (pip install 'brewmesh[otlp]'):"
            " no spans are exported",
            OTLP_ENDPOINT_ENV,
        )
        return NO_TRACING
    provider = SdkTracerProvider(resource=Resource.create({"service.name": f"brewmesh-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)
