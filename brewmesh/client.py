"""A small client helper: a channel that authenticates, and typed stubs.

async with connect("127.0.0.1:50051", key=api_key) as mesh:
    recipe = await mesh.recipes.GetRecipe(GetRecipeRequest(name=...))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from grpc_status import rpc_status

from brewmesh.bus.v1 import event_bus_pb2, event_bus_pb2_grpc
from brewmesh.call_observer import counted_channel
from brewmesh.errors import FieldViolation
from brewmesh.keyed_channel import KeyedChannel
from brewmesh.metrics import Metrics
from brewmesh.partners.v1 import partners_pb2, partners_pb2_grpc
from brewmesh.recipes.v1 import (
    formatters_pb2,
    formatters_pb2_grpc,
    layouts_pb2,
    layouts_pb2_grpc,
    recipes_pb2,
    recipes_pb2_grpc,
)
from brewmesh.runner.v1 import program_runner_pb2, program_runner_pb2_grpc

_KEEPALIVE = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]

DEFAULT_DEADLINE_SECONDS = 30.0
"""A unary call with no deadline of its own gets this one (streams have none)."""
RETRIED_VERBS = ("Get", "List", "Search", "Check", "Format", "Put")
"""Methods safe to send twice (reads, and Puts that replace): retried when UNAVAILABLE."""
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
_SERVICES = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (recipes_pb2, "RecipeService"),
        (layouts_pb2, "LayoutService"),
        (formatters_pb2, "FormatterService"),
        (partners_pb2, "PartnerService"),
        (program_runner_pb2, "ProgramRunner"),
        (event_bus_pb2, "EventBus"),
    )
]


def service_config(deadline_seconds: float = DEFAULT_DEADLINE_SECONDS) -> str:
    """gRPC service config: a default deadline for unary calls, retries for the idempotent ones."""
    unary = [(s.full_name, m.name) for s in _SERVICES for m in s.methods if not m.server_streaming]
    timeout = f"{deadline_seconds:g}s"

    def names(methods: list[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"service": service, "method": method} for service, method in methods]

    retried = [(s, m) for s, m in unary if m.startswith(RETRIED_VERBS)]
    once = [(s, m) for s, m in unary if not m.startswith(RETRIED_VERBS)]
    return json.dumps(
        {
            "methodConfig": [
                {"name": names(retried), "timeout": timeout, "retryPolicy": RETRY_POLICY},
                {"name": names(once), "timeout": timeout},
            ]
        }
    )


def channel(
    address: str,
    key: str | None = None,
    tls: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    keepalive: list[tuple[str, int]] | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    counted_by: Metrics | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel to `address`, sending `key` with every call when given.

    Unary calls without a deadline get `deadline_seconds`; reads and Puts are
    retried when the server is UNAVAILABLE (`service_config`). `interceptors`
    (tracing) run on every call; the key is added as each call is made
    (brewmesh.keyed_channel), before them. `counted_by`: metrics that count
    every call, by method and final code (brewmesh.call_observer).

    `keepalive`: the channel's keepalive options (`brewmesh.keepalive.client_options`);
    default: a ping after 30 s of quiet.

    TLS with `credentials` (e.g. `grpc.ssl_channel_credentials(ca_pem)`, or
    `Tls.channel_credentials()` for mTLS) when given, else with the system's
    roots if `tls`, else plaintext.
    """
    chain = list(interceptors) or None
    if credentials is None and tls:
        credentials = grpc.ssl_channel_credentials()
    options = [*(keepalive or _KEEPALIVE), ("grpc.service_config", service_config(deadline_seconds))]
    if credentials is not None:
        opened = grpc.aio.secure_channel(address, credentials, options=options, interceptors=chain)
    else:
        opened = grpc.aio.insecure_channel(address, options=options, interceptors=chain)
    if counted_by is not None:
        opened = counted_channel(opened, counted_by)
    return KeyedChannel(opened, key) if key else opened


@dataclass
class MeshClient:
    """Typed stubs of every brewmesh API over one channel."""

    channel: grpc.aio.Channel
    recipes: recipes_pb2_grpc.RecipeServiceAsyncStub = field(init=False)
    layouts: layouts_pb2_grpc.LayoutServiceAsyncStub = field(init=False)
    formatters: formatters_pb2_grpc.FormatterServiceAsyncStub = field(init=False)
    partners: partners_pb2_grpc.PartnerServiceAsyncStub = field(init=False)
    runner: program_runner_pb2_grpc.ProgramRunnerAsyncStub = field(init=False)
    bus: event_bus_pb2_grpc.EventBusAsyncStub = field(init=False)

    def __post_init__(self) -> None:
        # Over a grpc.aio channel, each generated stub is typed as its AsyncStub.
        self.recipes = recipes_pb2_grpc.RecipeServiceStub(self.channel)
        self.layouts = layouts_pb2_grpc.LayoutServiceStub(self.channel)
        self.formatters = formatters_pb2_grpc.FormatterServiceStub(self.channel)
        self.partners = partners_pb2_grpc.PartnerServiceStub(self.channel)
        self.runner = program_runner_pb2_grpc.ProgramRunnerStub(self.channel)
        self.bus = event_bus_pb2_grpc.EventBusStub(self.channel)

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.channel.close()


def connect(
    address: str,
    key: str | None = None,
    tls: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    counted_by: Metrics | None = None,
) -> MeshClient:
    """Typed stubs over `channel(...)` (see there)."""
    opened = channel(
        address, key, tls, credentials, interceptors=interceptors, deadline_seconds=deadline_seconds,
        counted_by=counted_by,
    )  # fmt: skip
    return MeshClient(opened)


def field_violations(error: grpc.aio.AioRpcError) -> list[FieldViolation]:
    """The `google.rpc.BadRequest` field violations of an INVALID_ARGUMENT error."""
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(error)
    found: list[FieldViolation] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return found
