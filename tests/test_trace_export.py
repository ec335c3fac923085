"""`OTEL_EXPORTER_OTLP_ENDPOINT` sends a `brewmesh up` process's spans to a collector over OTLP.

The collector is an OTLP/gRPC TraceService in this test, on a free port,
recording what it is sent, as a real collector receives it. The mesh's
last spans arrive even though the process stops before its exporter's next
scheduled batch: a graceful stop flushes them (the SDK's exit hook).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.conftest import checked_once


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent, with its resource's service.name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []

    def Export(  # noqa: N802 (gRPC method name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append((attributes.get("service.name", ""), span.name))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(ThreadPoolExecutor(2))
    received = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(received, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield received, port
    server.stop(grace=0)


def test_a_meshs_spans_reach_the_collector_it_is_given(
    tmp_path: Path, collector: tuple[Collector, int]
) -> None:
    received, collector_port = collector
    exporting = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # no scheduled export during the test: only the flush at stop
    }
    code, output = checked_once(["up", "--data-dir", str(tmp_path / "data")], **exporting)
    assert code == 0, output
    checks = [service for service, name in received.spans if name == "/grpc.health.v1.Health/Check"]
    assert checks and set(checks) == {"brewmesh-mesh"}, received.spans
